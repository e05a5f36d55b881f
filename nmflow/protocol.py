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

Protocol, version 2 (3 with the metaplastic unit)
=================================================

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
    0x04  UPDATE  3+lanes*ub group (u16 LE), mask (u8), one update d per lane (raw u_format,
                             ub = u_bits/8 bytes LE two's complement); metaplastic boards only
    0x05  LOAD    3+lanes*wb group (u16 LE), mask (u8), one hidden weight per lane (raw w_format,
                             wb = w_bits/8 bytes); metaplastic boards only
    0x06  READ    4          row (u16 LE), count (u16 LE): rows of the engine's pair-code memory
                             to read back; metaplastic boards only

Replies (board to host), :class:`Reply`::

    CMD   name    LEN                          PAYLOAD
    0x81  INFO    8                            version (2), n_inputs (u16 LE), n_classes (u16 LE),
                                               input_bits (u8), score_bytes (u8), rate_bits (u8:
                                               the injector's, 0 for a board without injector);
                                               version 3 (metaplastic unit) adds 9 bytes: lanes
                                               (u8), groups (u16 LE), w_bits, w_frac, u_bits,
                                               u_frac (u8 each), engine_lanes (u16 LE): LEN 17
    0x82  INFER   1 + n_classes * score_bytes  class (u8, the argmax, lowest index on ties), then
                                               score 0 .. score n_classes-1, each score_bytes
                                               bytes, little-endian two's complement
    0x83  ERRORS  0                            - (the configuration is applied)
    0x84  UPDATE  lanes * wb                   the group's hidden weights after the update
    0x85  LOAD    lanes * wb                   the group's hidden weights after the load
    0x86  READ    count * row_bytes            the rows' pair codes as stored, row after row;
                                               each row row_bytes = ceil(engine_lanes / 4) bytes,
                                               little-endian, lane p in bits 2p+1..2p (BL high)
    0xFF  ERROR   1                            error code

UPDATE applies the metaplastic rule (:class:`~nmflow.golden.metafixed.MetaFixedRule`) to the
enabled lanes of a group of the unit's hidden weights, LOAD writes them; both write the binary
weights ``sign(W_h)`` into the engine in the same pass and reply with the group's hidden weights
afterwards (an UPDATE of zeros reads them back). READ reads rows of the engine's weight memory
itself, through the engine's own read port while it is idle: the binary weights the next
inference will use, as pair codes (:mod:`nmflow.golden.pairs`). See docs/contracts.md, section 5.4.

ERRORS sets the read-error injector (:mod:`nmflow.golden.injector`) at run time: ``t1``, ``t2``
and ``t3`` are the type 1, 2 and 3 error rates as fixed-point fractions of ``2**rate_bits``
(``t = round(p * 2**rate_bits)``), ``seed`` the sources' seed (below ``2**31``) and ``mode`` 0 for
``per_read`` or 1 for ``static``. The injector then holds ``t1``, ``t12 = t1 + t2`` and ``t3``,
and its sources restart from the new seed (so the next inference draws exactly as the golden
twin :class:`~nmflow.golden.injector.InjectedRead` does, freshly made). The reply comes once the
configuration is applied; the engine is idle then (one request at a time).

``score_bytes = ceil(score_bits / 8)``. Error codes, :class:`ErrorCode`::

    0x01  BAD_COMMAND    CMD is not a request command (ERRORS on a board without injector,
                         UPDATE, LOAD and READ on a board without the metaplastic unit)
    0x02  BAD_LENGTH     LEN is not the command's length (INFO 0, INFER n_inputs, ERRORS 17)
    0x03  BAD_VALUE      an INFER payload byte is >= 2**input_bits; an ERRORS payload with a
                         threshold > 2**rate_bits, t1 + t2 > 2**rate_bits, seed >= 2**31 or
                         mode > 1; an UPDATE or LOAD with group >= groups or a mask bit at or
                         above lanes; a READ with count 0, row + count > rows or count *
                         row_bytes > 65535 (checked once the frame's CRC has checked)
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
           "errors_request", "errors_reply", "META_VERSION", "META_INFO_BYTES", "MetaInfo",
           "encode_meta", "decode_meta_reply", "update_request", "load_request", "meta_reply",
           "encode_read", "read_request", "read_reply", "decode_read_reply", "READ_BYTES"]

#: First byte of every frame, in both directions.
SYNC = 0xA5
#: Protocol version reported by INFO.
VERSION = 2
#: Bytes of a frame around its payload: SYNC, CMD, LEN_LO, LEN_HI before it and CRC after it.
HEADER_BYTES = 5
#: Payload bytes of an INFO reply.
INFO_BYTES = 8
#: Protocol version reported by a board with the metaplastic unit (version 2 plus UPDATE, LOAD,
#: READ and the INFO tail), and the payload bytes of its INFO reply.
META_VERSION = 3
META_INFO_BYTES = 17
#: Payload bytes of a READ request: row and count (u16 LE each).
READ_BYTES = 4
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
    UPDATE = 0x04
    LOAD = 0x05
    READ = 0x06


class Reply(enum.IntEnum, shape=8):
    """Reply commands (board to host): a request's command with bit 7 set, or ``ERROR``."""
    INFO = 0x81
    INFER = 0x82
    ERRORS = 0x83
    UPDATE = 0x84
    LOAD = 0x85
    READ = 0x86
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
class MetaInfo:
    """What a board with the metaplastic update unit tells in the tail of its INFO reply.

    Members
    -------
    lanes : int
        Synapses per group (the unit's lanes), 1 to 8: one mask bit and one value per lane.
    groups : int
        Groups of the unit's hidden memory, 1 to 65535 (UPDATE and LOAD address ``0 .. groups-1``).
    w_bits, w_frac : int
        Width and fraction bits of a hidden weight (``w_format``); ``w_bits`` is 8, 16, 24 or 32.
    u_bits, u_frac : int
        Width and fraction bits of an update (``u_format``); ``u_bits`` is 8, 16, 24 or 32.
    engine_lanes : int
        Pair codes per row of the engine's weight memory (the engine's lanes, a power of two
        from ``lanes`` to 256, ``groups`` a multiple of ``engine_lanes / lanes``): READ reads
        :attr:`rows` rows of :attr:`row_bytes` bytes.
    """
    lanes: int
    groups: int
    w_bits: int
    w_frac: int
    u_bits: int
    u_frac: int
    engine_lanes: int

    def problem(self):
        """Why a link cannot carry these sizes, or ``None``."""
        checks = (("lanes", 1, 8), ("groups", 1, 0xFFFF), ("w_frac", 0, self.w_bits - 1),
                  ("u_frac", 0, self.u_bits - 1), ("engine_lanes", 1, 256))
        for name in ("w_bits", "u_bits"):
            value = getattr(self, name)
            if not isinstance(value, int) or value not in (8, 16, 24, 32):
                return f"{name} must be 8, 16, 24 or 32 (whole bytes on the link), not {value!r}"
        for name, low, high in checks:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                return f"{name} must be an integer between {low} and {high}, not {value!r}"
        e = self.engine_lanes
        if e & (e - 1) or e < self.lanes:
            return f"engine_lanes must be a power of two and at least lanes = {self.lanes}, not {e}"
        if self.groups % (e // self.lanes):
            return (f"groups must be a multiple of engine_lanes / lanes = {e // self.lanes} "
                    f"(whole rows), not {self.groups}")
        return None

    @property
    def rows(self):
        """Rows of the engine's weight memory."""
        return self.groups // (self.engine_lanes // self.lanes)

    @property
    def row_bytes(self):
        """Bytes of one row in a READ reply: two bits per pair code, ``ceil(engine_lanes / 4)``."""
        return -(-self.engine_lanes // 4)

    @property
    def max_read(self):
        """Most rows one READ can ask for: the reply's payload holds at most 65535 bytes."""
        return min(self.rows, 0xFFFF // self.row_bytes)

    def read_problem(self, row, count):
        """Why a board refuses a READ of ``count`` rows from ``row`` (BAD_VALUE), or ``None``."""
        if count < 1:
            return f"count must be at least 1, not {count}"
        if row + count > self.rows:
            return f"row + count must be at most rows = {self.rows}, not {row + count}"
        if count * self.row_bytes > 0xFFFF:
            return (f"count must be at most {0xFFFF // self.row_bytes} (a reply of 65535 bytes), "
                    f"not {count}")
        return None

    @property
    def w_bytes(self):
        return self.w_bits // 8

    @property
    def u_bytes(self):
        return self.u_bits // 8

    @property
    def update_length(self):
        """Payload bytes of an UPDATE request: group (u16), mask (u8), one update per lane."""
        return 3 + self.lanes * self.u_bytes

    @property
    def load_length(self):
        """Payload bytes of a LOAD request: group (u16), mask (u8), one hidden weight per lane."""
        return 3 + self.lanes * self.w_bytes

    @property
    def reply_length(self):
        """Payload bytes of an UPDATE or LOAD reply: one hidden weight per lane."""
        return self.lanes * self.w_bytes

    @classmethod
    def of_unit(cls, unit):
        """The sizes of a :class:`~nmflow.rtl.metaplastic.MetaplasticUnit` (or anything with its
        ``lanes``, ``groups`` and ``rule``)."""
        wf, uf = unit.rule.w_format, unit.rule.u_format
        return cls(unit.lanes, unit.groups, wf.width, wf.frac_bits, uf.width, uf.frac_bits,
                   unit.engine_lanes)


@dataclass(frozen=True)
class Info:
    """What an INFO reply tells: the protocol version and the engine's sizes.

    Members
    -------
    version : int
        :data:`VERSION`, or :data:`META_VERSION` for a board with the metaplastic unit.
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
    meta : :class:`MetaInfo` or None
        The metaplastic unit's sizes, ``None`` if the board has no unit (and refuses UPDATE and
        LOAD).
    """
    version: int
    n_inputs: int
    n_classes: int
    input_bits: int
    score_bytes: int
    rate_bits: int = 0
    meta: MetaInfo = None

    @property
    def infer_reply_length(self):
        """Payload bytes of an INFER reply: the class and every score."""
        return 1 + self.n_classes * self.score_bytes


def encode_info(info):
    """INFO reply payload: ``version, n_inputs (u16 LE), n_classes (u16 LE), input_bits,
    score_bytes, rate_bits``, then, with a metaplastic unit, ``lanes, groups (u16 LE), w_bits,
    w_frac, u_bits, u_frac, engine_lanes (u16 LE)``."""
    out = (bytes([info.version]) + info.n_inputs.to_bytes(2, "little")
           + info.n_classes.to_bytes(2, "little")
           + bytes([info.input_bits, info.score_bytes, info.rate_bits]))
    if info.meta is not None:
        meta = info.meta
        out += (bytes([meta.lanes]) + meta.groups.to_bytes(2, "little")
                + bytes([meta.w_bits, meta.w_frac, meta.u_bits, meta.u_frac])
                + meta.engine_lanes.to_bytes(2, "little"))
    return out


def decode_info(payload):
    """The :class:`Info` of an INFO reply payload: 8 bytes, or 17 for version 3 (metaplastic
    unit); :class:`NmflowError` otherwise."""
    payload = bytes(payload)
    meta = bool(payload) and payload[0] == META_VERSION
    expected = META_INFO_BYTES if meta else INFO_BYTES
    if len(payload) != expected:
        what = f"of version {META_VERSION} " if meta else ""
        raise NmflowError(f"INFO reply payload {what}must hold {expected} bytes, not "
                          f"{len(payload)}")
    tail = None
    if meta:
        tail = MetaInfo(lanes=payload[8], groups=int.from_bytes(payload[9:11], "little"),
                        w_bits=payload[11], w_frac=payload[12], u_bits=payload[13],
                        u_frac=payload[14],
                        engine_lanes=int.from_bytes(payload[15:17], "little"))
    return Info(version=payload[0], n_inputs=int.from_bytes(payload[1:3], "little"),
                n_classes=int.from_bytes(payload[3:5], "little"), input_bits=payload[5],
                score_bytes=payload[6], rate_bits=payload[7], meta=tail)


def encode_meta(group, mask, values, n_bytes):
    """UPDATE or LOAD request payload: ``group`` (u16 LE), ``mask`` (u8: bit p enables lane p),
    then each value as ``n_bytes`` little-endian two's complement bytes (updates in ``u_format``,
    hidden weights in ``w_format``, raw integers).

    Raises
    ------
    ValueError
        If ``group`` is not a u16, ``mask`` not a byte or a value does not fit ``n_bytes``.
    """
    if not 0 <= group <= 0xFFFF:
        raise ValueError(f"group must be between 0 and 65535, not {group!r}")
    if not 0 <= mask <= 0xFF:
        raise ValueError(f"mask must be a byte (0 to 255), not {mask!r}")
    out = bytearray(int(group).to_bytes(2, "little") + bytes([mask]))
    for value in values:
        try:
            out += int(value).to_bytes(n_bytes, "little", signed=True)
        except OverflowError:
            raise ValueError(f"value {int(value)} does not fit {8 * n_bytes} bits") from None
    return bytes(out)


def decode_meta_reply(payload, meta):
    """The hidden weights (a list of ``meta.lanes`` ints) of an UPDATE or LOAD reply payload."""
    payload = bytes(payload)
    if len(payload) != meta.reply_length:
        raise NmflowError(f"UPDATE or LOAD reply payload must hold {meta.reply_length} bytes, "
                          f"not {len(payload)}")
    n = meta.w_bytes
    return [int.from_bytes(payload[p * n:(p + 1) * n], "little", signed=True)
            for p in range(meta.lanes)]


def update_request(meta, group, mask, d):
    """An UPDATE request: updates ``d`` (``meta.lanes`` raw ``u_format`` ints) of ``group``."""
    return encode_frame(Command.UPDATE, encode_meta(group, mask, d, meta.u_bytes))


def load_request(meta, group, mask, w):
    """A LOAD request: hidden weights ``w`` (``meta.lanes`` raw ``w_format`` ints) of ``group``."""
    return encode_frame(Command.LOAD, encode_meta(group, mask, w, meta.w_bytes))


def meta_reply(command, meta, hidden):
    """The UPDATE or LOAD reply frame (``command`` is the request's) carrying ``hidden``."""
    reply = Reply.LOAD if command == Command.LOAD else Reply.UPDATE
    return encode_frame(reply, b"".join(int(w).to_bytes(meta.w_bytes, "little", signed=True)
                                        for w in hidden))


def encode_read(row, count):
    """READ request payload: ``row``, ``count`` (u16 LE each).

    Raises
    ------
    ValueError
        If either is not a u16.
    """
    for name, value in (("row", row), ("count", count)):
        if not 0 <= value <= 0xFFFF:
            raise ValueError(f"{name} must be between 0 and 65535, not {value!r}")
    return int(row).to_bytes(2, "little") + int(count).to_bytes(2, "little")


def read_request(row, count):
    """A READ request: ``count`` rows of the engine's pair-code memory from ``row``."""
    return encode_frame(Command.READ, encode_read(row, count))


def read_reply(meta, codes):
    """The READ reply frame for ``codes`` (``[count, engine_lanes]`` pair codes, 0 to 3)."""
    out = bytearray()
    for row in codes:
        word = 0
        for p, code in enumerate(row):
            word |= (int(code) & 3) << (2 * p)
        out += word.to_bytes(meta.row_bytes, "little")
    return encode_frame(Reply.READ, bytes(out))


def decode_read_reply(payload, meta, count):
    """The pair codes (a list of ``count`` lists of ``engine_lanes`` ints) of a READ reply."""
    payload = bytes(payload)
    n = meta.row_bytes
    if len(payload) != count * n:
        raise NmflowError(f"READ reply payload must hold {count * n} bytes ({count} rows of {n}), "
                          f"not {len(payload)}")
    rows = []
    for r in range(count):
        word = int.from_bytes(payload[r * n:(r + 1) * n], "little")
        rows.append([word >> (2 * p) & 3 for p in range(meta.engine_lanes)])
    return rows


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
    meta : :class:`MetaInfo` or None
        The metaplastic unit's sizes: the link then reports version 3 with the INFO tail and
        accepts UPDATE, LOAD and READ; ``None`` (the default) refuses them with ``BAD_COMMAND``.
    apply : callable or None
        ``apply(command, group, mask, values) -> hidden`` for each accepted UPDATE or LOAD
        (``command`` a :class:`Command`, ``values`` a list of ``lanes`` ints): the group's hidden
        weights after it (e.g. from :class:`~nmflow.golden.metafixed.MetaFixedRule`).
    read : callable or None
        ``read(row, count) -> codes`` for each accepted READ: ``count`` rows of
        ``engine_lanes`` pair codes of the engine's memory as it is then.
    """

    def __init__(self, n_inputs, input_bits, n_classes, score_bits, infer, *, rate_bits=0,
                 configure=None, meta=None, apply=None, read=None):
        self.info = Info(VERSION if meta is None else META_VERSION, n_inputs, n_classes,
                         input_bits, score_bytes(score_bits), rate_bits, meta)
        self._infer = infer
        self._configure = configure
        self._apply = apply
        self._read = read
        #: Every input vector handed to the engine so far, in order.
        self.fed = []
        #: Every ERRORS configuration applied so far, in order.
        self.configured = []
        #: Every accepted UPDATE or LOAD so far, in order: ``(command, group, mask, values)``.
        self.applied = []

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
        meta = info.meta
        commands = (Command.INFO, Command.INFER) + ((Command.ERRORS,) if info.rate_bits else ())
        if meta is not None:
            commands += (Command.UPDATE, Command.LOAD, Command.READ)
        if frame[0] not in commands:
            return error_reply(ErrorCode.BAD_COMMAND)
        if len(frame) < 3:
            return error_reply(ErrorCode.TIMEOUT)
        length = int.from_bytes(frame[1:3], "little")
        expected = {Command.INFO: 0, Command.INFER: info.n_inputs, Command.ERRORS: ERRORS_BYTES}
        if meta is not None:
            expected.update({Command.UPDATE: meta.update_length, Command.LOAD: meta.load_length,
                             Command.READ: READ_BYTES})
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
        if frame[0] == Command.READ:
            row, count = (int.from_bytes(payload[k:k + 2], "little") for k in (0, 2))
            if meta.read_problem(row, count) is not None:
                return error_reply(ErrorCode.BAD_VALUE)
            return read_reply(meta, self._read(row, count))
        if frame[0] in (Command.UPDATE, Command.LOAD):
            group = int.from_bytes(payload[:2], "little")
            mask = payload[2]
            if group >= meta.groups or mask >> meta.lanes:
                return error_reply(ErrorCode.BAD_VALUE)
            n = meta.w_bytes if frame[0] == Command.LOAD else meta.u_bytes
            values = [int.from_bytes(payload[3 + p * n:3 + (p + 1) * n], "little", signed=True)
                      for p in range(meta.lanes)]
            hidden = self._apply(Command(frame[0]), group, mask, values)
            self.applied.append((Command(frame[0]), group, mask, values))
            return meta_reply(frame[0], meta, hidden)
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
