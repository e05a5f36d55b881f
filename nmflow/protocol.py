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

Protocol, version 2
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
    0x03  ERRORS  17         the read-error injector's configuration (boards built with one):
                             t1, t2, t3 (each u32 LE), seed (u32 LE), mode (u8)

Replies (board to host), :class:`Reply`::

    CMD   name    LEN                          PAYLOAD
    0x81  INFO    8                            version (2), n_inputs (u16 LE), n_classes (u16 LE),
                                               input_bits (u8), score_bytes (u8), rate_bits (u8:
                                               the injector's, 0 for a board without injector)
    0x82  INFER   1 + n_classes * score_bytes  class (u8, the argmax, lowest index on ties), then
                                               score 0 .. score n_classes-1, each score_bytes
                                               bytes, little-endian two's complement
    0x83  ERRORS  0                            - (the configuration is applied)
    0xFF  ERROR   1                            error code

ERRORS sets the read-error injector (:mod:`nmflow.golden.injector`) at run time: ``t1``, ``t2``
and ``t3`` are the type 1, 2 and 3 error rates as fixed-point fractions of ``2**rate_bits``
(``t = round(p * 2**rate_bits)``), ``seed`` the sources' seed (below ``2**31``) and ``mode`` 0 for
``per_read`` or 1 for ``static``. The injector then holds ``t1``, ``t12 = t1 + t2`` and ``t3``,
and its sources restart from the new seed (so the next inference draws exactly as the golden
twin :class:`~nmflow.golden.injector.InjectedRead` does, freshly made). The reply comes once the
configuration is applied; the engine is idle then (one request at a time).

``score_bytes = ceil(score_bits / 8)``. Error codes, :class:`ErrorCode`::

    0x01  BAD_COMMAND    CMD is not a request command (ERRORS on a board without injector)
    0x02  BAD_LENGTH     LEN is not the command's length (INFO 0, INFER n_inputs, ERRORS 17)
    0x03  BAD_VALUE      an INFER payload byte is >= 2**input_bits; an ERRORS payload with a
                         threshold > 2**rate_bits, t1 + t2 > 2**rate_bits, seed >= 2**31 or
                         mode > 1 (checked once the frame's CRC has checked)
    0x04  BAD_CHECKSUM   CRC does not match
    0x05  TIMEOUT        a frame stopped mid-way: no byte for ``timeout`` cycles after its SYNC

Rules of the receiver:

1. While waiting for a frame, bytes other than SYNC are skipped silently (resynchronisation).
2. A frame is checked field by field as it arrives, in the order CMD, LEN, each payload byte, CRC;
   the first check that fails ends the frame with that error. (The values of an ERRORS
   payload are checked as a whole, after its CRC.) A frame in progress with no new byte
   for ``timeout`` cycles ends with ``TIMEOUT``.
3. After an error the link discards every byte until the line has been quiet for ``timeout``
   cycles, then sends the ERROR reply. A burst of garbage therefore gets at most one reply (none if
   it holds no SYNC byte), and when any reply arrives the link is already waiting for the next
   frame. The line never stays blocked: at most ``timeout`` cycles after the last byte of any
   burst the link is hunting again (once its reply, if any, is out).
4. One request at a time: the host sends a frame and waits for its reply. Bytes that arrive while
   a good request is executed or answered are discarded, and so is everything after them until the
   line has been quiet for ``timeout`` cycles; they get no reply.
5. The engine only ever sees complete, valid input vectors and configurations: an INFER or
   ERRORS payload is buffered and handed to the engine only once its CRC (and, for ERRORS, its
   values) have checked.
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
           "encode_info", "decode_info", "encode_result", "decode_result", "LinkModel",
           "ErrorsConfig", "ERRORS_BYTES", "MODES", "encode_errors", "decode_errors",
           "errors_request", "errors_reply"]

#: First byte of every frame, in both directions.
SYNC = 0xA5
#: Protocol version reported by INFO.
VERSION = 2
#: Bytes of a frame around its payload: SYNC, CMD, LEN_LO, LEN_HI before it and CRC after it.
HEADER_BYTES = 5
#: Payload bytes of an INFO reply.
INFO_BYTES = 8
#: Payload bytes of an ERRORS request: t1, t2, t3, seed (u32 LE each) and mode (u8).
ERRORS_BYTES = 17
#: ERRORS modes, by their byte value.
MODES = ("per_read", "static")
#: Bits of the injector's seed.
SEED_BITS = 31
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
    ERRORS = 0x03


class Reply(enum.IntEnum, shape=8):
    """Reply commands (board to host): a request's command with bit 7 set, or ``ERROR``."""
    INFO = 0x81
    INFER = 0x82
    ERRORS = 0x83
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
    ErrorCode.BAD_VALUE: "a payload value is out of range",
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
    rate_bits : int
        Fraction bits of the read-error injector's rates, 0 if the board has no injector (and
        refuses ERRORS).
    """
    version: int
    n_inputs: int
    n_classes: int
    input_bits: int
    score_bytes: int
    rate_bits: int = 0

    @property
    def infer_reply_length(self):
        """Payload bytes of an INFER reply: the class and every score."""
        return 1 + self.n_classes * self.score_bytes


def encode_info(info):
    """INFO reply payload: ``version, n_inputs (u16 LE), n_classes (u16 LE), input_bits,
    score_bytes, rate_bits``."""
    return (bytes([info.version]) + info.n_inputs.to_bytes(2, "little")
            + info.n_classes.to_bytes(2, "little")
            + bytes([info.input_bits, info.score_bytes, info.rate_bits]))


def decode_info(payload):
    """The :class:`Info` of an INFO reply payload; :class:`NmflowError` if it is not 8 bytes."""
    payload = bytes(payload)
    if len(payload) != INFO_BYTES:
        raise NmflowError(f"INFO reply payload must hold {INFO_BYTES} bytes, not {len(payload)}")
    return Info(version=payload[0], n_inputs=int.from_bytes(payload[1:3], "little"),
                n_classes=int.from_bytes(payload[3:5], "little"), input_bits=payload[5],
                score_bytes=payload[6], rate_bits=payload[7])


@dataclass(frozen=True)
class ErrorsConfig:
    """The payload of an ERRORS request: thresholds ``t1``, ``t2``, ``t3`` (fractions of
    ``2**rate_bits``), ``seed`` and ``mode`` (0 ``per_read``, 1 ``static``), as integers (not
    range-checked here: see :meth:`problem`)."""
    t1: int
    t2: int
    t3: int
    seed: int
    mode: int = 0

    def problem(self, rate_bits):
        """Why a board with ``rate_bits`` refuses this configuration (BAD_VALUE), or ``None``."""
        one = 1 << rate_bits
        for name in ("t1", "t2", "t3"):
            if getattr(self, name) > one:
                return f"{name} must be at most 2**rate_bits = {one}, not {getattr(self, name)}"
        if self.t1 + self.t2 > one:
            return f"t1 + t2 must be at most 2**rate_bits = {one}, not {self.t1 + self.t2}"
        if self.seed >> SEED_BITS:
            return f"seed must be below 2**{SEED_BITS}, not {self.seed}"
        if self.mode >= len(MODES):
            return f"mode must be 0 (per_read) or 1 (static), not {self.mode}"
        return None


def encode_errors(config):
    """ERRORS request payload: ``t1, t2, t3, seed`` (u32 LE each), ``mode`` (u8)."""
    return (b"".join(int(getattr(config, f)).to_bytes(4, "little")
                     for f in ("t1", "t2", "t3", "seed")) + bytes([config.mode]))


def decode_errors(payload):
    """The :class:`ErrorsConfig` of an ERRORS payload; :class:`NmflowError` if not 17 bytes."""
    payload = bytes(payload)
    if len(payload) != ERRORS_BYTES:
        raise NmflowError(f"ERRORS payload must hold {ERRORS_BYTES} bytes, not {len(payload)}")
    t1, t2, t3, seed = (int.from_bytes(payload[4 * k:4 * k + 4], "little") for k in range(4))
    return ErrorsConfig(t1, t2, t3, seed, payload[16])


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


def errors_request(config):
    """An ERRORS request carrying an :class:`ErrorsConfig`."""
    return encode_frame(Command.ERRORS, encode_errors(config))


def errors_reply():
    """The ERRORS reply frame (the acknowledgement, empty payload)."""
    return encode_frame(Reply.ERRORS)


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
    * a good frame gives its reply (an ERRORS frame whose values are out of range gives
      ``BAD_VALUE`` once its CRC has checked);
    * everything in the burst after the first good or bad frame is discarded.

    Parameters
    ----------
    n_inputs, input_bits, n_classes, score_bits : int
        The engine's sizes, as given to ``HostLink``.
    infer : callable
        ``infer(values) -> (cls, scores)`` for a list of ``n_inputs`` ints: the engine's result
        (e.g. from :func:`nmflow.golden.reference.reference`).
    rate_bits : int
        The injector's ``rate_bits``, 0 (the default) for a link without injector, which refuses
        ERRORS with ``BAD_COMMAND``.
    configure : callable or None
        ``configure(config)`` is called with the :class:`ErrorsConfig` of each accepted ERRORS
        request, before its reply: the twin's ``infer`` should read with the injector's golden
        twin made afresh from it (:class:`~nmflow.golden.injector.InjectedRead`).
    """

    def __init__(self, n_inputs, input_bits, n_classes, score_bits, infer, *, rate_bits=0,
                 configure=None):
        self.info = Info(VERSION, n_inputs, n_classes, input_bits, score_bytes(score_bits),
                         rate_bits)
        self._infer = infer
        self._configure = configure
        #: Every input vector handed to the engine so far, in order.
        self.fed = []
        #: Every ERRORS configuration applied so far, in order.
        self.configured = []

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
        commands = (Command.INFO, Command.INFER) + ((Command.ERRORS,) if info.rate_bits else ())
        if frame[0] not in commands:
            return error_reply(ErrorCode.BAD_COMMAND)
        if len(frame) < 3:
            return error_reply(ErrorCode.TIMEOUT)
        length = int.from_bytes(frame[1:3], "little")
        expected = {Command.INFO: 0, Command.INFER: info.n_inputs, Command.ERRORS: ERRORS_BYTES}
        if length != expected[frame[0]]:
            return error_reply(ErrorCode.BAD_LENGTH)
        payload = frame[3:3 + length]
        for value in payload if frame[0] == Command.INFER else b"":
            if value >> info.input_bits:
                return error_reply(ErrorCode.BAD_VALUE)
        if len(frame) < 3 + length + 1:
            return error_reply(ErrorCode.TIMEOUT)
        if frame[3 + length] != CRC.compute(frame[:3 + length]):
            return error_reply(ErrorCode.BAD_CHECKSUM)
        if frame[0] == Command.INFO:
            return info_reply(info)
        if frame[0] == Command.ERRORS:
            config = decode_errors(payload)
            if config.problem(info.rate_bits) is not None:
                return error_reply(ErrorCode.BAD_VALUE)
            self.configured.append(config)
            if self._configure is not None:
                self._configure(config)
            return errors_reply()
        values = list(payload)
        self.fed.append(values)
        cls, scores = self._infer(values)
        return infer_reply(cls, scores, info.score_bytes)
