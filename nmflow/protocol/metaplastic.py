"""The metaplastic unit's command set on the engine's link (protocol version 4): UPDATE, LOAD and
READ, and the unit's sizes in the tail of the INFO reply (docs/contracts.md, section 5.4).

A board built with the metaplastic update unit (:mod:`nmflow.rtl.metaplastic`) speaks the
engine's command set (:mod:`nmflow.protocol.engine`) plus these three requests, on the shared
framing (:mod:`nmflow.protocol.framing`); a board without the unit refuses them with
``BAD_COMMAND``. UPDATE applies the metaplastic rule
(:class:`~nmflow.golden.metafixed.MetaFixedRule`) to the enabled lanes of a group of the unit's
hidden weights, LOAD writes them; both write the binary weights ``sign(W_h)`` into the engine in
the same pass and reply with the group's hidden weights afterwards (an UPDATE of zeros reads them
back). READ reads rows of the engine's weight memory itself, as pair codes
(:mod:`nmflow.golden.pairs`).
"""

from dataclasses import dataclass

from amaranth.lib import enum

from ..errors import NmflowError
from .framing import encode_frame, reply_enum, signed_words, u16

__all__ = ["METAPLASTIC_VERSION", "METAPLASTIC_INFO_BYTES", "READ_BYTES", "MetaplasticCommand",
           "MetaplasticReply", "MetaplasticInfo", "encode_group", "decode_group", "decode_group_reply",
           "update_request", "load_request", "encode_hidden", "group_reply", "encode_rows", "encode_read", "read_request",
           "read_reply", "decode_read_reply"]

#: Protocol version reported by a board with the metaplastic unit (the engine's version 2 plus
#: UPDATE, LOAD, READ and the INFO tail), and the payload bytes of its INFO reply. Version 4
#: added the engine's neurons per row (``engine_pe``) to the tail.
METAPLASTIC_VERSION = 4
METAPLASTIC_INFO_BYTES = 18
#: Payload bytes of a READ request: row and count (u16 LE each).
READ_BYTES = 4


class MetaplasticCommand(enum.IntEnum, shape=8):
    """Requests of the metaplastic command set (host to board)."""
    UPDATE = 0x04
    LOAD = 0x05
    READ = 0x06


#: Their replies: the request's command with bit 7 set.
MetaplasticReply = reply_enum("MetaplasticReply", MetaplasticCommand, module=__name__)


@dataclass(frozen=True)
class MetaplasticInfo:
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
        from ``lanes`` to 1024, ``groups`` a multiple of ``engine_lanes / lanes``): READ reads
        :attr:`rows` rows of :attr:`row_bytes` bytes.
    engine_pe : int
        Neurons per row of the engine's weight memory (its ``pe``, a power of two with
        ``engine_pe ** 2 <= engine_lanes``): with ``engine_lanes`` and the model's sizes, where
        each weight lies (:class:`~nmflow.golden.pairs.MemoryMap`).
    """
    lanes: int
    groups: int
    w_bits: int
    w_frac: int
    u_bits: int
    u_frac: int
    engine_lanes: int
    engine_pe: int = 1

    def problem(self):
        """Why a link cannot carry these sizes, or ``None``."""
        checks = (("lanes", 1, 8), ("groups", 1, 0xFFFF), ("w_frac", 0, self.w_bits - 1),
                  ("u_frac", 0, self.u_bits - 1), ("engine_lanes", 1, 1024))
        for name in ("w_bits", "u_bits"):
            value = getattr(self, name)
            if not isinstance(value, int) or value not in (8, 16, 24, 32):
                return f"{name} must be 8, 16, 24 or 32 (whole bytes on the link), not {value!r}"
        for name, low, high in checks:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                return f"{name} must be an integer from {low} to {high}, not {value!r}"
        e = self.engine_lanes
        if e & (e - 1) or e < self.lanes:
            return f"engine_lanes must be a power of two and at least lanes = {self.lanes}, not {e}"
        pe = self.engine_pe
        if not isinstance(pe, int) or isinstance(pe, bool) or pe < 1 or pe & (pe - 1) \
                or pe * pe > e:
            return (f"engine_pe must be a power of two with engine_pe ** 2 <= engine_lanes = {e}, "
                    f"not {pe!r}")
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

    def encode(self):
        """The INFO reply's tail: ``lanes, groups (u16 LE), w_bits, w_frac, u_bits, u_frac,
        engine_lanes (u16 LE), engine_pe``."""
        return (bytes([self.lanes]) + self.groups.to_bytes(2, "little")
                + bytes([self.w_bits, self.w_frac, self.u_bits, self.u_frac])
                + self.engine_lanes.to_bytes(2, "little") + bytes([self.engine_pe]))

    @classmethod
    def decode(cls, tail):
        """The sizes in the 10-byte tail of a version 4 INFO reply."""
        return cls(lanes=tail[0], groups=u16(tail, 1), w_bits=tail[3], w_frac=tail[4],
                   u_bits=tail[5], u_frac=tail[6], engine_lanes=u16(tail, 7), engine_pe=tail[9])

    def length(self, command):
        """Payload bytes of a ``command`` request."""
        return {MetaplasticCommand.UPDATE: self.update_length,
                MetaplasticCommand.LOAD: self.load_length,
                MetaplasticCommand.READ: READ_BYTES}[command]

    @classmethod
    def of_unit(cls, unit):
        """The sizes of a :class:`~nmflow.rtl.metaplastic.MetaplasticUnit` (or anything with its
        ``lanes``, ``groups`` and ``rule``)."""
        wf, uf = unit.rule.w_format, unit.rule.u_format
        return cls(unit.lanes, unit.groups, wf.width, wf.frac_bits, uf.width, uf.frac_bits,
                   unit.engine_lanes, getattr(unit, "engine_pe", 1))


def encode_group(group, mask, values, n_bytes):
    """UPDATE or LOAD request payload: ``group`` (u16 LE), ``mask`` (u8: bit p enables lane p),
    then each value as ``n_bytes`` little-endian two's complement bytes (updates in ``u_format``,
    hidden weights in ``w_format``, raw integers).

    Raises
    ------
    ValueError
        If ``group`` is not a u16, ``mask`` not a byte or a value does not fit ``n_bytes``.
    """
    if not 0 <= group <= 0xFFFF:
        raise NmflowError(f"group must be between 0 and 65535, not {group!r}")
    if not 0 <= mask <= 0xFF:
        raise NmflowError(f"mask must be a byte (0 to 255), not {mask!r}")
    out = bytearray(int(group).to_bytes(2, "little") + bytes([mask]))
    for value in values:
        try:
            out += int(value).to_bytes(n_bytes, "little", signed=True)
        except OverflowError:
            raise NmflowError(f"value {int(value)} does not fit {8 * n_bytes} bits") from None
    return bytes(out)


def decode_group_reply(payload, info):
    """The hidden weights (a list of ``info.lanes`` ints) of an UPDATE or LOAD reply payload."""
    payload = bytes(payload)
    if len(payload) != info.reply_length:
        raise NmflowError(f"UPDATE or LOAD reply payload must hold {info.reply_length} bytes, "
                          f"not {len(payload)}")
    return signed_words(payload, info.w_bytes, info.lanes)


def decode_group(info, command, payload):
    """``(group, mask, values)`` of an UPDATE or LOAD request payload (``values``: one raw
    ``u_format`` update or ``w_format`` hidden weight per lane)."""
    n = info.w_bytes if command == MetaplasticCommand.LOAD else info.u_bytes
    return u16(payload, 0), payload[2], signed_words(payload, n, info.lanes, offset=3)


def update_request(info, group, mask, d):
    """An UPDATE request: updates ``d`` (``info.lanes`` raw ``u_format`` ints) of ``group``."""
    return encode_frame(MetaplasticCommand.UPDATE, encode_group(group, mask, d, info.u_bytes))


def load_request(info, group, mask, w):
    """A LOAD request: hidden weights ``w`` (``info.lanes`` raw ``w_format`` ints) of ``group``."""
    return encode_frame(MetaplasticCommand.LOAD, encode_group(group, mask, w, info.w_bytes))


def encode_hidden(info, hidden):
    """UPDATE or LOAD reply payload: the group's hidden weights (``w_bytes`` LE each)."""
    return b"".join(int(w).to_bytes(info.w_bytes, "little", signed=True) for w in hidden)


def group_reply(command, info, hidden):
    """The UPDATE or LOAD reply frame (``command`` is the request's) carrying ``hidden``."""
    return encode_frame(MetaplasticReply(command | 0x80), encode_hidden(info, hidden))


def encode_read(row, count):
    """READ request payload: ``row``, ``count`` (u16 LE each).

    Raises
    ------
    ValueError
        If either is not a u16.
    """
    for name, value in (("row", row), ("count", count)):
        if not 0 <= value <= 0xFFFF:
            raise NmflowError(f"{name} must be between 0 and 65535, not {value!r}")
    return int(row).to_bytes(2, "little") + int(count).to_bytes(2, "little")


def read_request(row, count):
    """A READ request: ``count`` rows of the engine's pair-code memory from ``row``."""
    return encode_frame(MetaplasticCommand.READ, encode_read(row, count))


def encode_rows(info, codes):
    """READ reply payload for ``codes`` (``[count, engine_lanes]`` pair codes, 0 to 3)."""
    out = bytearray()
    for row in codes:
        word = 0
        for p, code in enumerate(row):
            word |= (int(code) & 3) << (2 * p)
        out += word.to_bytes(info.row_bytes, "little")
    return bytes(out)


def read_reply(info, codes):
    """The READ reply frame for ``codes`` (``[count, engine_lanes]`` pair codes, 0 to 3)."""
    return encode_frame(MetaplasticReply.READ, encode_rows(info, codes))


def decode_read_reply(payload, info, count):
    """The pair codes (a list of ``count`` lists of ``engine_lanes`` ints) of a READ reply."""
    payload = bytes(payload)
    n = info.row_bytes
    if len(payload) != count * n:
        raise NmflowError(f"READ reply payload must hold {count * n} bytes ({count} rows of {n}), "
                          f"not {len(payload)}")
    rows = []
    for r in range(count):
        word = int.from_bytes(payload[r * n:(r + 1) * n], "little")
        rows.append([word >> (2 * p) & 3 for p in range(info.engine_lanes)])
    return rows
