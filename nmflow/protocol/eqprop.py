"""The EqProp learning unit's command set: commands, frame layouts, the link's geometry and
:class:`EqPropLinkModel`, the plain-Python twin of the link (docs/eqprop_protocol.md is the
specification, with byte-level examples).

The framing is the engine's (:mod:`nmflow.protocol.framing`, docs/contracts.md section 5):
``A5 | CMD | LEN (u16 LE) | PAYLOAD | CRC-8/SMBUS``, the same receiver rules (resynchronisation
on SYNC, field-by-field checks, the inter-byte timeout, one reply per burst, one request at a
time) and the same :class:`~nmflow.protocol.ErrorCode` values. Only the command bytes differ:
:class:`EqCommand` and :class:`EqReply` (a reply is its request's byte with bit 7 set).

Requests (``n0`` inputs, ``nN`` classes, ``L`` lanes, ``WB`` bytes per weight word)::

    CMD   name    LEN                      PAYLOAD
    0x31  INFO    0                        -
    0x32  LOAD_W  2 + n L WB, 1<=n<=R      start row (u16 LE), then n rows of the weight banks:
                                           row a holds word a of bank 0, 1, ..., L-1 (WB bytes
                                           LE two's complement each; the low weight_bits count)
    0x33  LOAD_B  2 + n WB, 1<=n<=RB       start (u16 LE), then n biases (WB bytes LE each)
    0x34  READ_W  4                        start row (u16 LE), n rows (u16 LE, 1..R)
    0x35  READ_B  4                        start (u16 LE), n biases (u16 LE, 1..RB)
    0x36  TRAIN   n0 + 1                   n0 input states (u0.F, one byte each), the label
    0x37  INFER   n0                       n0 input states
    0x38  SEED    4                        the LFSR state (u32 LE, nonzero)
    0x39  READ_C  4                        binary units only: start row (u16 LE), n rows (u16
                                           LE, 1..R) of the pair-code banks

Replies::

    0xB1  INFO    21 + 2 (N+1) + N         the :class:`EqPropInfo` (see :func:`encode_info`)
    0xB2  LOAD_W  0                        - (the rows are written)
    0xB3  LOAD_B  0
    0xB4  READ_W  n L WB                   the rows, as in LOAD_W
    0xB5  READ_B  n WB                     the biases
    0xB6  TRAIN   1                        the free phase's prediction (then the update is done)
    0xB7  INFER   1 + nN                   the prediction, then the nN output states of the
                                           free phase (u0.F bytes)
    0xB8  SEED    0
    0xB9  READ_C  n L WB                   the rows as in READ_W, each word a pair code (0..3)
    0xFF  ERROR   1                        an ErrorCode

Checks, in the order the link makes them: BAD_COMMAND (CMD; READ_C to a unit of real-valued
weights, which has no pair codes); BAD_LENGTH (LEN against the rule
above); BAD_VALUE on arrival of a TRAIN/INFER payload byte (an input with bits at or above
``state_bits``, a label ``>= nN``); TIMEOUT; BAD_CHECKSUM; then, after the CRC, BAD_VALUE for a
LOAD or READ that runs past its memory (``start + n > depth``), a READ count of 0 or above
R (RB), or a SEED of 0. A refused request changes nothing.
"""

from dataclasses import dataclass

from amaranth.lib import enum

from ..errors import NmflowError
from .framing import ErrorCode, FrameModel, encode_words, reply_enum, signed_words, u16

__all__ = ["EQ_VERSION", "BUFFER_BYTES", "INFO_FIXED", "EqCommand", "EqReply", "EqPropInfo",
           "LinkGeometry", "encode_info", "decode_info", "EqPropLinkModel"]

#: Version of this protocol, reported by INFO.
EQ_VERSION = 1
#: Bytes of the link's payload buffer (one iCE40 block RAM); sets the rows per LOAD frame.
BUFFER_BYTES = 512
#: Bytes of an INFO reply before the sizes and the learning-rate shifts.
INFO_FIXED = 21


class EqCommand(enum.IntEnum, shape=8):
    """Requests to the EP unit's link."""
    INFO = 0x31
    LOAD_W = 0x32
    LOAD_B = 0x33
    READ_W = 0x34
    READ_B = 0x35
    TRAIN = 0x36
    INFER = 0x37
    SEED = 0x38
    READ_C = 0x39


#: Replies: the request byte with bit 7 set, or ERROR (payload: an ErrorCode).
EqReply = reply_enum("EqReply", EqCommand, error=True, module=__name__)


@dataclass(frozen=True)
class EqPropInfo:
    """What INFO tells: sizes, formats, T, K, beta_shift, lr shifts, lanes, memory depths and
    the largest LOAD/READ counts (R rows, RB biases)."""
    version: int
    sizes: tuple
    lanes: int
    state_bits: int
    state_frac: int
    weight_bits: int
    weight_frac: int
    T: int
    K: int
    beta_shift: int
    half: bool
    lr_shifts: tuple
    wdepth: int
    bdepth: int
    rows_per_frame: int
    biases_per_frame: int

    @property
    def word_bytes(self):
        return (self.weight_bits + 7) // 8


class LinkGeometry:
    """The numbers of an EqProp link: memory depths, buffer size, frame rules. Shared by the
    gateware, the twin and the host; :func:`nmflow.golden.eqprop_board.link_geometry` makes it
    from a fixed-point configuration and the unit's memory map.

    Parameters
    ----------
    sizes : tuple of int
        Neurons per layer, inputs first.
    lanes : int
        The unit's lanes (words per weight row).
    state_format, weight_format : :class:`~nmflow.fixedpoint.FixedFormat`
        The unit's state (``u0.F``) and weight formats.
    T, K, beta_shift, half, lr_shifts
        The unit's settling steps, nudged steps, ``beta = 2**-beta_shift``, hard-sigmoid flag and
        learning-rate shifts (reported by INFO).
    wdepth, bdepth : int
        Rows of the weight banks and biases.
    binary : bool
        The unit's weights are binary: it keeps pair codes beside the hidden weights, and
        answers READ_C.
    buffer_bytes : int
        The link's payload buffer (at least ``sizes[0] + 1`` bytes are kept).

    Raises
    ------
    NmflowError
        If the network does not fit the link (more than 8-bit states, weights wider than 4 bytes,
        more than 256 classes, 254 layers or 65535 neurons a layer).
    """

    def __init__(self, *, sizes, lanes, state_format, weight_format, T, K, beta_shift, half,
                 lr_shifts, wdepth, bdepth, binary=False, buffer_bytes=BUFFER_BYTES):
        self.lanes, self.sizes = lanes, tuple(sizes)
        self.binary = bool(binary)
        #: the requests the link takes (the others are BAD_COMMAND)
        self.commands = frozenset(c for c in EqCommand if binary or c != EqCommand.READ_C)
        self.wdepth, self.bdepth = wdepth, bdepth
        if state_format.width > 8:
            raise NmflowError(f"state format must have at most 8 bits (one byte per input on "
                              f"the link), not {state_format.width}")
        if sizes[-1] > 256 or len(sizes) > 255 or max(sizes) > 0xFFFF:
            raise NmflowError(f"sizes must fit the link (at most 256 classes, 254 layers, "
                              f"65535 neurons a layer), not {list(sizes)}")
        self.state_bits, self.weight_bits = state_format.width, weight_format.width
        self.word_bytes = (weight_format.width + 7) // 8
        if self.word_bytes not in (1, 2, 4):
            raise NmflowError(f"weight format must be at most 16 or 25 to 32 bits wide (1, 2 or "
                              f"4 bytes a word on the link), not {weight_format.width}")
        self.n_inputs, self.n_classes = sizes[0], sizes[-1]
        self.rows_per_frame = max(1, min((buffer_bytes - 2) // (lanes * self.word_bytes),
                                         wdepth))
        self.biases_per_frame = max(1, min((buffer_bytes - 2) // self.word_bytes, bdepth))
        self.buffer_bytes = max(buffer_bytes, sizes[0] + 1)
        self.info = EqPropInfo(
            EQ_VERSION, tuple(sizes), lanes, state_format.width, state_format.frac_bits,
            weight_format.width, weight_format.frac_bits, T, K, beta_shift, half,
            tuple(lr_shifts), wdepth, bdepth, self.rows_per_frame, self.biases_per_frame)

    def length_ok(self, command, length):
        """Does LEN ``length`` fit ``command`` (the BAD_LENGTH rule)?"""
        L, wb = self.lanes, self.word_bytes
        if command == EqCommand.INFO:
            return length == 0
        if command in (EqCommand.READ_W, EqCommand.READ_B, EqCommand.READ_C, EqCommand.SEED):
            return length == 4
        if command == EqCommand.INFER:
            return length == self.n_inputs
        if command == EqCommand.TRAIN:
            return length == self.n_inputs + 1
        unit, most = (L * wb, self.rows_per_frame) if command == EqCommand.LOAD_W \
            else (wb, self.biases_per_frame)
        n, rest = divmod(length - 2, unit)
        return length > 2 and rest == 0 and 1 <= n <= most

    def byte_ok(self, command, index, value):
        """Is byte ``index`` of a ``command`` payload in range (checked on arrival): an input
        state below ``2**state_bits``, a TRAIN label below ``n_classes``?"""
        if command not in (EqCommand.TRAIN, EqCommand.INFER):
            return True
        if index < self.n_inputs:
            return not value >> self.state_bits
        return value < self.n_classes

    def argument_problem(self, command, first, count):
        """Why a LOAD or READ of ``count`` rows (biases) from ``first`` is refused after its CRC
        (BAD_VALUE), or ``None``."""
        weights = command in (EqCommand.LOAD_W, EqCommand.READ_W, EqCommand.READ_C)
        depth, most = (self.wdepth, self.rows_per_frame) if weights \
            else (self.bdepth, self.biases_per_frame)
        if command in (EqCommand.READ_W, EqCommand.READ_B, EqCommand.READ_C) \
                and not 1 <= count <= most:
            return f"count must be from 1 to {most}, not {count}"
        if first + count > depth:
            return f"start + count must be at most {depth}, not {first + count}"
        return None

    def reply_length(self, command, count=0):
        L, wb = self.lanes, self.word_bytes
        return {EqCommand.INFO: len(encode_info(self.info)), EqCommand.LOAD_W: 0,
                EqCommand.LOAD_B: 0, EqCommand.READ_W: count * L * wb,
                EqCommand.READ_C: count * L * wb, EqCommand.READ_B: count * wb,
                EqCommand.TRAIN: 1, EqCommand.INFER: 1 + self.n_classes,
                EqCommand.SEED: 0}[command]


def encode_info(info):
    """INFO reply payload: version, N+1, lanes, state_bits, state_frac, weight_bits, weight_frac,
    beta_shift, half (u8 each), T, K, wdepth, bdepth, R, RB (u16 LE each; 21 bytes so far), then
    the N+1 sizes (u16 LE) and the N learning-rate shifts (u8)."""
    head = bytes([info.version, len(info.sizes), info.lanes, info.state_bits, info.state_frac,
                  info.weight_bits, info.weight_frac, info.beta_shift, int(info.half)])
    head += b"".join(int(v).to_bytes(2, "little") for v in
                     (info.T, info.K, info.wdepth, info.bdepth, info.rows_per_frame,
                      info.biases_per_frame))
    return head + b"".join(int(n).to_bytes(2, "little") for n in info.sizes) \
        + bytes(int(e) for e in info.lr_shifts)


def decode_info(payload):
    payload = bytes(payload)
    if len(payload) < INFO_FIXED:
        raise NmflowError(f"INFO reply payload must hold at least {INFO_FIXED} bytes, not "
                          f"{len(payload)}")
    n = payload[1]
    if len(payload) != INFO_FIXED + 2 * n + max(n - 1, 0):
        raise NmflowError(f"INFO reply payload must hold {INFO_FIXED + 3 * n - 1} bytes for "
                          f"{n} layers, not {len(payload)}")
    u16 = [int.from_bytes(payload[9 + 2 * k:11 + 2 * k], "little") for k in range(6)]
    sizes = tuple(int.from_bytes(payload[INFO_FIXED + 2 * k:INFO_FIXED + 2 * k + 2], "little")
                  for k in range(n))
    lr = tuple(payload[INFO_FIXED + 2 * n:])
    return EqPropInfo(payload[0], sizes, payload[2], payload[3], payload[4], payload[5],
                      payload[6], u16[0], u16[1], payload[7], bool(payload[8]), lr, u16[2],
                      u16[3], u16[4], u16[5])


class EqPropLinkModel(FrameModel):
    """What :class:`~nmflow.rtl.eqprop_link.EqPropHostTop` answers, burst by burst (the receiver
    rules of :class:`~nmflow.protocol.framing.FrameModel`), for a link of ``geometry`` (a
    :class:`LinkGeometry`) in front of ``board``: what the board holds and does, without bytes
    (:class:`nmflow.golden.eqprop_board.EqPropBoardTwin`: ``write_rows``, ``write_biases``,
    ``read_rows``, ``read_biases``, ``read_codes``, ``seed``, ``train``, ``infer``).
    """

    def __init__(self, geometry, board):
        self.geometry, self.board = geometry, board

    def accepts(self, command):
        return command in self.geometry.commands

    def length_ok(self, command, length):
        return self.geometry.length_ok(EqCommand(command), length)

    def byte_ok(self, command, index, value):
        return self.geometry.byte_ok(EqCommand(command), index, value)

    def execute(self, command, payload):
        command = EqCommand(command)
        reply = self._execute(command, payload)
        if isinstance(reply, ErrorCode):
            return reply
        return EqReply(command | 0x80), reply

    def _execute(self, command, payload):
        g, board = self.geometry, self.board
        L, wb = g.lanes, g.word_bytes
        if command == EqCommand.INFO:
            return encode_info(g.info)
        if command == EqCommand.SEED:
            seed = int.from_bytes(payload, "little")
            if seed == 0:
                return ErrorCode.BAD_VALUE
            board.seed(seed)
            return b""
        if command in (EqCommand.LOAD_W, EqCommand.LOAD_B):
            words = signed_words(payload, wb, (len(payload) - 2) // wb, bits=g.weight_bits,
                                 offset=2)
            first = u16(payload, 0)
            count = len(words) // L if command == EqCommand.LOAD_W else len(words)
            if g.argument_problem(command, first, count) is not None:
                return ErrorCode.BAD_VALUE
            if command == EqCommand.LOAD_W:
                board.write_rows(first, [words[r * L:(r + 1) * L] for r in range(count)])
            else:
                board.write_biases(first, words)
            return b""
        if command in (EqCommand.READ_W, EqCommand.READ_B, EqCommand.READ_C):
            first, count = u16(payload, 0), u16(payload, 2)
            if g.argument_problem(command, first, count) is not None:
                return ErrorCode.BAD_VALUE
            if command == EqCommand.READ_W:
                words = [w for row in board.read_rows(first, count) for w in row]
            elif command == EqCommand.READ_C:
                words = [w for row in board.read_codes(first, count) for w in row]
            else:
                words = board.read_biases(first, count)
            return encode_words(words, wb)
        x = list(payload[:g.n_inputs])
        if command == EqCommand.INFER:
            prediction, outputs = board.infer(x)
            return bytes([prediction]) + bytes(int(v) for v in outputs)
        return bytes([board.train(x, payload[g.n_inputs])])
