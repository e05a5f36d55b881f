"""The framing every nmflow host link shares: frames, the CRC, error codes and the receiver's
rules, once (docs/contracts.md, sections 5.1-5.3, 5.5 and 5.6).

A frame, in both directions, is ``SYNC (0xA5) | CMD | LEN (u16 LE) | PAYLOAD | CRC``, the CRC
being CRC-8/SMBUS over ``CMD``, ``LEN`` and ``PAYLOAD``. What a command means is the business of
a command set (:mod:`~nmflow.protocol.engine`, :mod:`~nmflow.protocol.metaplastic`,
:mod:`~nmflow.protocol.eqprop`); how a frame is received, checked and answered is this module's.

:class:`FrameModel` is the plain-Python twin of a link's receiver (the rules of contract 5.6),
burst by burst; a command set subclasses it and says which commands exist, which lengths they
take, which payload bytes are refused on arrival and what a checked frame does. The gateware twin
is :class:`nmflow.rtl.framing.FrameReceiver` and :class:`~nmflow.rtl.framing.FrameSender`.
"""

from amaranth.lib import enum
from amaranth.lib.crc import catalog

from ..errors import NmflowError

__all__ = ["BAUD", "SYNC", "HEADER_BYTES", "MAX_PAYLOAD", "CRC", "ErrorCode", "ERROR_TEXT", "ERROR_REPLY",
           "reply_enum",
           "encode_frame", "decode_frame", "error_reply", "FrameModel", "u16", "signed_words",
           "encode_words"]

#: The links' baud rate unless a build and its host say otherwise: 1 Mbaud, 8.7 times 115,200.
#: Both boards' FTDI bridges make it exactly (3 MHz / 3: the FT2232H and the FT231X go to
#: 3 Mbaud), and every run clock the PLL gives divides into it within 1 % (42 MHz: 42 cycles a
#: bit; 115 MHz: 115; the oscillators, 12 and 25), where 3 Mbaud would be 4 % off on the ULX3S's
#: 25 MHz oscillator.
BAUD = 1_000_000

#: First byte of every frame, in both directions.
SYNC = 0xA5
#: Bytes of a frame around its payload: SYNC, CMD, LEN_LO, LEN_HI before it and CRC after it.
HEADER_BYTES = 5
#: Longest payload: LEN is a u16.
MAX_PAYLOAD = 0xFFFF

#: The frame check, CRC-8/SMBUS over bytes (:class:`amaranth.lib.crc.Parameters`): polynomial
#: 0x07, initial value 0, no reflection, no final XOR. ``CRC.compute(data)`` on the host,
#: ``CRC.create()`` (a byte per cycle) in the gateware; ``CRC.compute(b"123456789") == 0xF4``.
CRC = catalog.CRC8_SMBUS(data_width=8)


class ErrorCode(enum.IntEnum, shape=8):
    """The one-byte payload of an ``ERROR`` reply (reply command ``0xFF``), in every link."""
    BAD_COMMAND = 0x01
    BAD_LENGTH = 0x02
    BAD_VALUE = 0x03
    BAD_CHECKSUM = 0x04
    TIMEOUT = 0x05


#: The reply command of an error, in every link.
ERROR_REPLY = 0xFF

def reply_enum(name, commands, *, error=False, module=None):
    """The replies of a command set: an :mod:`amaranth.lib.enum` ``IntEnum`` named ``name`` with
    each request's member at its byte with bit 7 set (and ``ERROR = 0xFF`` if ``error``), 8 bits
    wide on the host and in the gateware (every value is at least 0x80)."""
    members = {command.name: command | 0x80 for command in commands}
    if error:
        members["ERROR"] = ERROR_REPLY
    return enum.IntEnum(name, members, module=module, qualname=name)


#: What each error code means, for messages.
ERROR_TEXT = {
    ErrorCode.BAD_COMMAND: "unknown command",
    ErrorCode.BAD_LENGTH: "wrong payload length for the command",
    ErrorCode.BAD_VALUE: "a payload value is out of range",
    ErrorCode.BAD_CHECKSUM: "checksum mismatch",
    ErrorCode.TIMEOUT: "incomplete frame (inter-byte timeout)",
}


def encode_frame(command, payload=b""):
    """One frame: ``SYNC, command, len(payload) (u16 LE), payload, CRC``.

    Raises
    ------
    ValueError
        If ``command`` is not a byte or ``payload`` is longer than 65535 bytes.
    """
    payload = bytes(payload)
    if not 0 <= command <= 0xFF:
        raise NmflowError(f"command must be a byte (0 to 255), not {command!r}")
    if len(payload) > MAX_PAYLOAD:
        raise NmflowError(f"payload must be at most {MAX_PAYLOAD} bytes long, not {len(payload)}")
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


def error_reply(code):
    """The ERROR reply frame carrying an :class:`ErrorCode`."""
    return encode_frame(ERROR_REPLY, bytes([code]))


def u16(payload, offset):
    """The little-endian u16 at ``offset`` of ``payload``."""
    return int.from_bytes(payload[offset:offset + 2], "little")


def encode_words(words, n_bytes):
    """Each integer of ``words`` as ``n_bytes`` little-endian two's complement bytes (wrapped to
    ``8 * n_bytes`` bits: the caller checks the range)."""
    mask = (1 << 8 * n_bytes) - 1
    return b"".join((int(w) & mask).to_bytes(n_bytes, "little") for w in words)


def signed_words(payload, n_bytes, count, *, bits=None, offset=0):
    """``count`` little-endian two's complement words of ``n_bytes`` bytes from ``offset``;
    with ``bits``, only the low ``bits`` of each word count (sign at bit ``bits - 1``)."""
    bits = 8 * n_bytes if bits is None else bits
    out = []
    for k in range(count):
        start = offset + k * n_bytes
        value = int.from_bytes(payload[start:start + n_bytes], "little") & ((1 << bits) - 1)
        out.append(value - (1 << bits) if value >> (bits - 1) else value)
    return out


class FrameModel:
    """What a link answers, burst by burst: the receiver rules of docs/contracts.md section 5.6
    in plain Python, for a command set given by the subclass.

    A *burst* is a run of bytes sent back to back, followed by a quiet line long enough for the
    link's timeout to expire and any reply to finish. The link answers each burst with at most one
    frame:

    * bytes before a SYNC byte are skipped, silently;
    * a frame is checked field by field as it arrives, in the order CMD (:meth:`accepts`), LEN
      (:meth:`length_ok`), each payload byte (:meth:`byte_ok`), CRC; the first failing check
      gives an ERROR reply with its code; a frame still incomplete at the end of the burst gives
      ``TIMEOUT``;
    * a checked frame is :meth:`execute`\\ d: its reply, or an :class:`ErrorCode` for values
      refused as a whole after the CRC (``BAD_VALUE``);
    * everything in the burst after the first good or bad frame is discarded.
    """

    def accepts(self, command):
        """Is ``command`` (a byte) one of the link's requests?"""
        raise NotImplementedError

    def length_ok(self, command, length):
        """Does a payload of ``length`` bytes fit ``command``?"""
        raise NotImplementedError

    def byte_ok(self, command, index, value):
        """Is payload byte ``index`` of ``command`` in range, checked on arrival?"""
        return True

    def execute(self, command, payload):
        """Act on a checked frame: ``(reply command, reply payload)``, or an :class:`ErrorCode`
        (the request then changes nothing)."""
        raise NotImplementedError

    def burst(self, data):
        """The reply frame (``bytes``, empty if none) to one burst ``data``."""
        data = bytes(data)
        start = data.find(SYNC)
        if start < 0:
            return b""
        frame = data[start + 1:]
        if not frame:
            return error_reply(ErrorCode.TIMEOUT)
        command = frame[0]
        if not self.accepts(command):
            return error_reply(ErrorCode.BAD_COMMAND)
        if len(frame) < 3:
            return error_reply(ErrorCode.TIMEOUT)
        length = u16(frame, 1)
        if not self.length_ok(command, length):
            return error_reply(ErrorCode.BAD_LENGTH)
        payload = frame[3:3 + length]
        if not all(self.byte_ok(command, n, value) for n, value in enumerate(payload)):
            return error_reply(ErrorCode.BAD_VALUE)
        if len(frame) < 3 + length + 1:
            return error_reply(ErrorCode.TIMEOUT)
        if frame[3 + length] != CRC.compute(frame[:3 + length]):
            return error_reply(ErrorCode.BAD_CHECKSUM)
        reply = self.execute(command, payload)
        if isinstance(reply, ErrorCode):
            return error_reply(reply)
        return encode_frame(*reply)
