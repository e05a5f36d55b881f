"""The host link protocol: the contract between the gateware and the host, below both
(docs/contracts.md, contract 5).

:class:`nmflow.rtl.hostlink.HostLink` implements it in gateware,
:class:`nmflow.boards.host.EngineLink` speaks it from the host, and :class:`LinkModel` is its
plain-Python twin, which the tests compare with the gateware's reply bytes using ``==``.

The commands, reply commands and error codes are :mod:`amaranth.lib.enum` enumerations with an
8-bit shape, so the same members are Python ints on the host and constants in the gateware; the
frame check is Amaranth's catalogued CRC-8/SMBUS (:data:`CRC`), computed with ``CRC.compute()``
on the host and by ``CRC.create()`` in the gateware. This module imports nothing of nmflow but
:mod:`nmflow.errors`.

Protocol, version 1
===================

Every frame, in both directions, is::

    offset   size   field
    0        1      SYNC    0xA5
    1        1      CMD     command (requests) or reply command (replies)
    2        2      LEN     payload length in bytes, little-endian (0 to 65535)
    4        LEN    PAYLOAD
    4+LEN    1      CRC     CRC-8/SMBUS of CMD, LEN and PAYLOAD (every byte but SYNC and CRC):
                            polynomial 0x07, initial value 0x00, not reflected, no final XOR
                            (the CRC of the ASCII bytes "123456789" is 0xF4)

Requests (host to board), :class:`Command`::

    CMD   name    LEN        PAYLOAD
    0x01  INFO    0          -
    0x02  INFER   n_inputs   one byte per input value, in input order, each < 2**input_bits

Replies (board to host), :class:`Reply`::

    CMD   name    LEN                          PAYLOAD
    0x81  INFO    7                            version (1), n_inputs (u16 LE), n_classes (u16 LE),
                                               input_bits (u8), score_bytes (u8)
    0x82  INFER   1 + n_classes * score_bytes  class (u8, the argmax, lowest index on ties), then
                                               score 0 .. score n_classes-1, each score_bytes
                                               bytes, little-endian two's complement
    0xFF  ERROR   1                            error code

``score_bytes = ceil(score_bits / 8)``. Error codes, :class:`ErrorCode`::

    0x01  BAD_COMMAND    CMD is not a request command
    0x02  BAD_LENGTH     LEN is not the command's length (INFO 0, INFER n_inputs)
    0x03  BAD_VALUE      an INFER payload byte is >= 2**input_bits
    0x04  BAD_CHECKSUM   CRC does not match
    0x05  TIMEOUT        a frame stopped mid-way: no byte for ``timeout`` cycles after its SYNC

Rules of the receiver:

1. While waiting for a frame, bytes other than SYNC are skipped silently (resynchronisation).
2. A frame is checked field by field as it arrives, in the order CMD, LEN, each payload byte, CRC;
   the first check that fails ends the frame with that error. A frame in progress with no new byte
   for ``timeout`` cycles ends with ``TIMEOUT``.
3. After an error the link discards every byte until the line has been quiet for ``timeout``
   cycles, then sends the ERROR reply. A burst of garbage therefore gets at most one reply (none if
   it holds no SYNC byte), and when any reply arrives the link is already waiting for the next
   frame. The line never stays blocked: at most ``timeout`` cycles after the last byte of any
   burst the link is hunting again (once its reply, if any, is out).
4. One request at a time: the host sends a frame and waits for its reply. Bytes that arrive while
   a good request is executed or answered are discarded, and so is everything after them until the
   line has been quiet for ``timeout`` cycles; they get no reply.
5. The engine only ever sees complete, valid input vectors: an INFER payload is buffered and fed to
   the engine only once its CRC has checked.
6. A character with a bad stop bit is dropped by the UART receiver; the frame it belonged to then
   fails its length, CRC or timeout check.

The timeout counts clock cycles since the last received byte (:class:`~nmflow.rtl.top.HostTop`
sets it from seconds, 20 ms by default). Hosts send each request as one burst and read its reply
before sending the next; they may resend after an ERROR reply at once.
"""

from dataclasses import dataclass

from amaranth.lib import enum
from amaranth.lib.crc import catalog

from .errors import NmflowError

__all__ = ["SYNC", "VERSION", "CRC", "Command", "Reply", "ErrorCode", "ERROR_TEXT", "Info",
           "HEADER_BYTES", "INFO_BYTES", "MAX_CLASSES", "MAX_INPUTS", "MAX_SCORE_BITS",
           "score_bytes", "encode_frame", "decode_frame",
           "info_request", "infer_request", "info_reply", "infer_reply", "error_reply",
           "encode_info", "decode_info", "encode_result", "decode_result", "LinkModel"]

#: First byte of every frame, in both directions.
SYNC = 0xA5
#: Protocol version reported by INFO.
VERSION = 1
#: Bytes of a frame around its payload: SYNC, CMD, LEN_LO, LEN_HI before it and CRC after it.
HEADER_BYTES = 5
#: Payload bytes of an INFO reply.
INFO_BYTES = 7
#: Limits of the link: the class travels in one byte, lengths in two, scores in at most 8 bytes.
MAX_CLASSES = 256
MAX_INPUTS = 0xFFFF
MAX_SCORE_BITS = 64

#: The frame check, CRC-8/SMBUS over bytes (:class:`amaranth.lib.crc.Parameters`): polynomial
#: 0x07, initial value 0, no reflection, no final XOR. ``CRC.compute(data)`` on the host,
#: ``CRC.create()`` (a byte per cycle) in the gateware; ``CRC.compute(b"123456789") == 0xF4``.
CRC = catalog.CRC8_SMBUS(data_width=8)


class Command(enum.IntEnum, shape=8):
    """Request commands (host to board)."""
    INFO = 0x01
    INFER = 0x02


class Reply(enum.IntEnum, shape=8):
    """Reply commands (board to host): a request's command with bit 7 set, or ``ERROR``."""
    INFO = 0x81
    INFER = 0x82
    ERROR = 0xFF


class ErrorCode(enum.IntEnum, shape=8):
    """The one-byte payload of an ``ERROR`` reply."""
    BAD_COMMAND = 0x01
    BAD_LENGTH = 0x02
    BAD_VALUE = 0x03
    BAD_CHECKSUM = 0x04
    TIMEOUT = 0x05


#: What each error code means, for messages.
ERROR_TEXT = {
    ErrorCode.BAD_COMMAND: "unknown command",
    ErrorCode.BAD_LENGTH: "wrong payload length for the command",
    ErrorCode.BAD_VALUE: "an input value does not fit input_bits",
    ErrorCode.BAD_CHECKSUM: "checksum mismatch",
    ErrorCode.TIMEOUT: "incomplete frame (inter-byte timeout)",
}


def score_bytes(score_bits):
    """Bytes per score on the link: ``ceil(score_bits / 8)``, sign-extended two's complement."""
    return (score_bits + 7) // 8


def encode_frame(command, payload=b""):
    """One frame: ``SYNC, command, len(payload) (u16 LE), payload, CRC``.

    Raises
    ------
    ValueError
        If ``command`` is not a byte or ``payload`` is longer than 65535 bytes.
    """
    payload = bytes(payload)
    if not 0 <= command <= 0xFF:
        raise ValueError(f"command must be a byte (0 to 255), not {command!r}")
    if len(payload) > 0xFFFF:
        raise ValueError(f"payload must be at most 65535 bytes long, not {len(payload)}")
    body = bytes([command]) + len(payload).to_bytes(2, "little") + payload
    return bytes([SYNC]) + body + bytes([CRC.compute(body)])


def decode_frame(frame):
    """Decode exactly one frame into ``(command, payload)``.

    Raises
    ------
    NmflowError
        If ``frame`` does not start with SYNC, its length disagrees with its LEN field, or its CRC
        does not match.
    """
    frame = bytes(frame)
    if len(frame) < HEADER_BYTES or frame[0] != SYNC:
        raise NmflowError(f"frame must start with the sync byte 0x{SYNC:02X} and hold at least "
                          f"{HEADER_BYTES} bytes, not {frame[:8].hex(' ') or 'nothing'}")
    length = int.from_bytes(frame[2:4], "little")
    if len(frame) != HEADER_BYTES + length:
        raise NmflowError(f"frame must hold {HEADER_BYTES + length} bytes (LEN = {length}), "
                          f"not {len(frame)}")
    expected = CRC.compute(frame[1:-1])
    if frame[-1] != expected:
        raise NmflowError(f"frame checksum must be 0x{expected:02X}, not 0x{frame[-1]:02X}")
    return frame[1], frame[4:-1]


@dataclass(frozen=True)
class Info:
    """What an INFO reply tells: the protocol version and the engine's sizes.

    Members
    -------
    version : int
    n_inputs : int
        Input values per inference (the INFER payload length).
    n_classes : int
        Scores per inference.
    input_bits : int
        Each input value is below ``2 ** input_bits``.
    score_bytes : int
        Bytes per score in an INFER reply.
    """
    version: int
    n_inputs: int
    n_classes: int
    input_bits: int
    score_bytes: int

    @property
    def infer_reply_length(self):
        """Payload bytes of an INFER reply: the class and every score."""
        return 1 + self.n_classes * self.score_bytes


def encode_info(info):
    """INFO reply payload: ``version, n_inputs (u16 LE), n_classes (u16 LE), input_bits,
    score_bytes``."""
    return (bytes([info.version]) + info.n_inputs.to_bytes(2, "little")
            + info.n_classes.to_bytes(2, "little") + bytes([info.input_bits, info.score_bytes]))


def decode_info(payload):
    """The :class:`Info` of an INFO reply payload; :class:`NmflowError` if it is not 7 bytes."""
    payload = bytes(payload)
    if len(payload) != INFO_BYTES:
        raise NmflowError(f"INFO reply payload must hold {INFO_BYTES} bytes, not {len(payload)}")
    return Info(version=payload[0], n_inputs=int.from_bytes(payload[1:3], "little"),
                n_classes=int.from_bytes(payload[3:5], "little"), input_bits=payload[5],
                score_bytes=payload[6])


def encode_result(cls, scores, n_bytes):
    """INFER reply payload: the class (one byte), then each score as ``n_bytes`` little-endian
    two's complement bytes."""
    out = bytearray([cls])
    for score in scores:
        out += int(score).to_bytes(n_bytes, "little", signed=True)
    return bytes(out)


def decode_result(payload, n_classes, n_bytes):
    """``(cls, scores)`` of an INFER reply payload (scores as a list of Python ints)."""
    payload = bytes(payload)
    expected = 1 + n_classes * n_bytes
    if len(payload) != expected:
        raise NmflowError(f"INFER reply payload must hold {expected} bytes, not {len(payload)}")
    scores = [int.from_bytes(payload[1 + j * n_bytes:1 + (j + 1) * n_bytes], "little", signed=True)
              for j in range(n_classes)]
    return payload[0], scores


def info_request():
    """An INFO request frame."""
    return encode_frame(Command.INFO)


def infer_request(values):
    """An INFER request carrying ``values`` (one byte each, not range-checked here)."""
    return encode_frame(Command.INFER, bytes(int(v) for v in values))


def info_reply(info):
    """The INFO reply frame for an :class:`Info`."""
    return encode_frame(Reply.INFO, encode_info(info))


def infer_reply(cls, scores, n_bytes):
    """The INFER reply frame for a class and its scores, ``n_bytes`` bytes per score."""
    return encode_frame(Reply.INFER, encode_result(cls, scores, n_bytes))


def error_reply(code):
    """The ERROR reply frame carrying an :class:`ErrorCode`."""
    return encode_frame(Reply.ERROR, bytes([code]))


class LinkModel:
    """What :class:`~nmflow.rtl.hostlink.HostLink` answers, burst by burst.

    A *burst* is a run of bytes sent back to back (each byte's start bit right after the previous
    stop bit), followed by a quiet line long enough for the link's timeout to expire and any reply
    to finish. The link answers each burst with at most one frame (the receiver rules of this
    module's docstring):

    * bytes before a SYNC byte are skipped, silently;
    * a frame is checked field by field as it arrives (command, length, each input value, CRC);
      the first failing check gives an ERROR reply with its code; a frame still incomplete at the
      end of the burst gives ``TIMEOUT``;
    * a good frame gives its reply;
    * everything in the burst after the first good or bad frame is discarded.

    Parameters
    ----------
    n_inputs, input_bits, n_classes, score_bits : int
        The engine's sizes, as given to ``HostLink``.
    infer : callable
        ``infer(values) -> (cls, scores)`` for a list of ``n_inputs`` ints: the engine's result
        (e.g. from :func:`nmflow.golden.reference.reference`).
    """

    def __init__(self, n_inputs, input_bits, n_classes, score_bits, infer):
        self.info = Info(VERSION, n_inputs, n_classes, input_bits, score_bytes(score_bits))
        self._infer = infer
        #: Every input vector handed to the engine so far, in order.
        self.fed = []

    def burst(self, data):
        """The reply frame (``bytes``, empty if none) to one burst ``data``."""
        info = self.info
        data = bytes(data)
        start = data.find(SYNC)
        if start < 0:
            return b""
        frame = data[start + 1:]
        if not frame:
            return error_reply(ErrorCode.TIMEOUT)
        if frame[0] not in (Command.INFO, Command.INFER):
            return error_reply(ErrorCode.BAD_COMMAND)
        if len(frame) < 3:
            return error_reply(ErrorCode.TIMEOUT)
        length = int.from_bytes(frame[1:3], "little")
        if length != (info.n_inputs if frame[0] == Command.INFER else 0):
            return error_reply(ErrorCode.BAD_LENGTH)
        payload = frame[3:3 + length]
        for value in payload:
            if value >> info.input_bits:
                return error_reply(ErrorCode.BAD_VALUE)
        if len(frame) < 3 + length + 1:
            return error_reply(ErrorCode.TIMEOUT)
        if frame[3 + length] != CRC.compute(frame[:3 + length]):
            return error_reply(ErrorCode.BAD_CHECKSUM)
        if frame[0] == Command.INFO:
            return info_reply(info)
        values = list(payload)
        self.fed.append(values)
        cls, scores = self._infer(values)
        return infer_reply(cls, scores, info.score_bytes)
