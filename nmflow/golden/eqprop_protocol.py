"""The host link of the EP learning unit: commands, frame layouts, and a plain-Python twin of the
link (docs/eqprop_protocol.md has the byte-level examples).

The framing is the engine's (:mod:`nmflow.protocol`, docs/contracts.md section 5), unchanged:
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
    0xFF  ERROR   1                        an ErrorCode

Checks, in the order the link makes them: BAD_COMMAND (CMD); BAD_LENGTH (LEN against the rule
above); BAD_VALUE on arrival of a TRAIN/INFER payload byte (an input with bits at or above
``state_bits``, a label ``>= nN``); TIMEOUT; BAD_CHECKSUM; then, after the CRC, BAD_VALUE for a
LOAD or READ that runs past its memory (``start + n > depth``), a READ count of 0 or above
R (RB), or a SEED of 0. A refused request changes nothing.
"""

from dataclasses import dataclass

import numpy as np
from amaranth.lib import enum

from ..errors import NmflowError
from ..protocol import CRC, SYNC, ErrorCode, encode_frame, error_reply
from .eqprop_layout import EqPropLayout

__all__ = ["EQ_VERSION", "BUFFER_BYTES", "EqCommand", "EqReply", "EqPropInfo", "LinkGeometry",
           "encode_info", "decode_info", "image_to_params", "params_to_image",
           "EqPropLinkModel", "INFO_FIXED"]

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


class EqReply(enum.IntEnum, shape=8):
    """Replies: the request byte with bit 7 set, or ERROR (payload: an ErrorCode)."""
    INFO = 0xB1
    LOAD_W = 0xB2
    LOAD_B = 0xB3
    READ_W = 0xB4
    READ_B = 0xB5
    TRAIN = 0xB6
    INFER = 0xB7
    SEED = 0xB8
    ERROR = 0xFF


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
    """The numbers of a link for ``config`` (a :class:`FixedEqPropConfig`) and ``lanes``: memory
    depths, buffer size, frame rules. Shared by the gateware, the model and the host."""

    def __init__(self, config, lanes, buffer_bytes=BUFFER_BYTES):
        self.config, self.lanes = config, lanes
        self.layout = lay = EqPropLayout(config.sizes, lanes)
        sizes = config.sizes
        if config.state.width > 8:
            raise NmflowError(f"state format must have at most 8 bits (one byte per input on "
                              f"the link), not {config.state.width}")
        if sizes[-1] > 256 or len(sizes) > 255 or max(sizes) > 0xFFFF:
            raise NmflowError(f"sizes must fit the link (at most 256 classes, 254 layers, "
                              f"65535 neurons a layer), not {list(sizes)}")
        self.word_bytes = (config.weight.width + 7) // 8
        if self.word_bytes not in (1, 2, 4):
            raise NmflowError(f"weight format must be at most 16 or 25 to 32 bits wide (1, 2 or "
                              f"4 bytes a word on the link), not {config.weight.width}")
        self.n_inputs, self.n_classes = sizes[0], sizes[-1]
        self.rows_per_frame = max(1, min((buffer_bytes - 2) // (lanes * self.word_bytes),
                                         lay.wdepth))
        self.biases_per_frame = max(1, min((buffer_bytes - 2) // self.word_bytes, lay.bdepth))
        self.buffer_bytes = max(buffer_bytes, sizes[0] + 1)
        self.info = EqPropInfo(
            EQ_VERSION, tuple(sizes), lanes, config.state.width, config.state.frac_bits,
            config.weight.width, config.weight.frac_bits, config.T, config.K, config.beta_shift,
            config.half, tuple(config.lr_shifts), lay.wdepth, lay.bdepth, self.rows_per_frame,
            self.biases_per_frame)

    def length_ok(self, command, length):
        """Does LEN ``length`` fit ``command`` (the BAD_LENGTH rule)?"""
        L, wb = self.lanes, self.word_bytes
        if command == EqCommand.INFO:
            return length == 0
        if command in (EqCommand.READ_W, EqCommand.READ_B, EqCommand.SEED):
            return length == 4
        if command == EqCommand.INFER:
            return length == self.n_inputs
        if command == EqCommand.TRAIN:
            return length == self.n_inputs + 1
        unit, most = (L * wb, self.rows_per_frame) if command == EqCommand.LOAD_W \
            else (wb, self.biases_per_frame)
        n, rest = divmod(length - 2, unit)
        return length > 2 and rest == 0 and 1 <= n <= most

    def reply_length(self, command, count=0):
        L, wb = self.lanes, self.word_bytes
        return {EqCommand.INFO: len(encode_info(self.info)), EqCommand.LOAD_W: 0,
                EqCommand.LOAD_B: 0, EqCommand.READ_W: count * L * wb,
                EqCommand.READ_B: count * wb, EqCommand.TRAIN: 1,
                EqCommand.INFER: 1 + self.n_classes, EqCommand.SEED: 0}[command]


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


def params_to_image(layout, params):
    """``(banks, biases)``: the weight banks (lists of raw words, padding 0) and the biases."""
    return layout.weight_image(params), layout.bias_image(params)


def image_to_params(layout, banks, biases):
    """``{"W": [...], "b": [...]}`` (int64) from weight banks and biases (padding ignored)."""
    W, b = [], []
    for k in range(layout.N):
        rows, cols = layout.sizes[k + 1], layout.sizes[k]
        w = np.zeros((rows, cols), dtype=np.int64)
        for r in range(rows):
            for i in range(cols):
                w[r, i] = banks[layout.bank(k, r, i)][layout.address(k, r, i)]
        W.append(w)
        start = layout.bbase[k]
        b.append(np.array(biases[start:start + rows], dtype=np.int64))
    return {"W": W, "b": b}


def _signed(value, bits):
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


class EqPropLinkModel:
    """What :class:`~nmflow.rtl.eqprop_link.EqPropHostTop` answers, burst by burst (a burst: bytes
    back to back, then a quiet line; see :class:`nmflow.protocol.LinkModel`), computed with the
    fixed-point twin. It holds the unit's memories (weight banks with their padding, biases) and
    the LFSR, as the board does after reset with ``params`` (the twin's ``init_params`` if None).
    """

    def __init__(self, config, lanes, *, params=None, buffer_bytes=BUFFER_BYTES):
        from . import eqprop_fixed as ef
        self.ef = ef
        self.geometry = g = LinkGeometry(config, lanes, buffer_bytes)
        self.config = config
        params = ef.init_params(config) if params is None else params
        self.banks, self.biases = params_to_image(g.layout, params)
        self.lfsr = ef.Lfsr32(config.lfsr_seed)

    @property
    def params(self):
        return image_to_params(self.geometry.layout, self.banks, self.biases)

    def burst(self, data):
        g, cfg = self.geometry, self.config
        data = bytes(data)
        start = data.find(SYNC)
        if start < 0:
            return b""
        frame = data[start + 1:]
        if not frame:
            return error_reply(ErrorCode.TIMEOUT)
        if frame[0] not in set(EqCommand):
            return error_reply(ErrorCode.BAD_COMMAND)
        command = EqCommand(frame[0])
        if len(frame) < 3:
            return error_reply(ErrorCode.TIMEOUT)
        length = int.from_bytes(frame[1:3], "little")
        if not g.length_ok(command, length):
            return error_reply(ErrorCode.BAD_LENGTH)
        payload = frame[3:3 + length]
        if command in (EqCommand.TRAIN, EqCommand.INFER):
            for n, value in enumerate(payload):
                if n < g.n_inputs and value >> cfg.state.width:
                    return error_reply(ErrorCode.BAD_VALUE)
                if n == g.n_inputs and value >= g.n_classes:
                    return error_reply(ErrorCode.BAD_VALUE)
        if len(frame) < 3 + length + 1:
            return error_reply(ErrorCode.TIMEOUT)
        if frame[3 + length] != CRC.compute(frame[:3 + length]):
            return error_reply(ErrorCode.BAD_CHECKSUM)
        reply = self._execute(command, payload)
        if isinstance(reply, ErrorCode):
            return error_reply(reply)
        return encode_frame(EqReply(command | 0x80), reply)

    def _execute(self, command, payload):
        g, cfg, ef = self.geometry, self.config, self.ef
        lay, L, wb, ww = g.layout, g.lanes, g.word_bytes, cfg.weight.width
        u16 = [int.from_bytes(payload[k:k + 2], "little") for k in range(0, len(payload) - 1, 2)]
        if command == EqCommand.INFO:
            return encode_info(g.info)
        if command == EqCommand.SEED:
            seed = int.from_bytes(payload, "little")
            if seed == 0:
                return ErrorCode.BAD_VALUE
            self.lfsr = ef.Lfsr32(seed)
            return b""
        if command in (EqCommand.LOAD_W, EqCommand.LOAD_B):
            words = [_signed(int.from_bytes(payload[k:k + wb], "little"), ww)
                     for k in range(2, len(payload), wb)]
            first = u16[0]
            if command == EqCommand.LOAD_W:
                n = len(words) // L
                if first + n > lay.wdepth:
                    return ErrorCode.BAD_VALUE
                for row in range(n):
                    for b in range(L):
                        self.banks[b][first + row] = words[row * L + b]
            else:
                if first + len(words) > lay.bdepth:
                    return ErrorCode.BAD_VALUE
                self.biases[first:first + len(words)] = words
            return b""
        if command in (EqCommand.READ_W, EqCommand.READ_B):
            first, n = u16
            depth, most = (lay.wdepth, g.rows_per_frame) if command == EqCommand.READ_W \
                else (lay.bdepth, g.biases_per_frame)
            if n == 0 or n > most or first + n > depth:
                return ErrorCode.BAD_VALUE
            if command == EqCommand.READ_W:
                words = [self.banks[b][first + row] for row in range(n) for b in range(L)]
            else:
                words = self.biases[first:first + n]
            return b"".join((int(w) & ((1 << 8 * wb) - 1)).to_bytes(wb, "little") for w in words)
        x = np.array(list(payload[:g.n_inputs]), dtype=np.int64).reshape(1, -1)
        params = self.params
        if command == EqCommand.INFER:
            out = ef.free_phase(cfg, params, x)[-1][0]
            return bytes([int(out.argmax())]) + bytes(int(v) for v in out)
        new, s_star = ef.train_step(cfg, params, x, [payload[g.n_inputs]], self.lfsr)
        banks, biases = params_to_image(lay, new)
        for k in range(lay.N):                  # the update writes the real rows only
            for r in range(cfg.sizes[k + 1]):
                for i in range(cfg.sizes[k]):
                    b, a = lay.bank(k, r, i), lay.address(k, r, i)
                    self.banks[b][a] = banks[b][a]
        self.biases = biases
        return bytes([int(s_star[-1][0].argmax())])
