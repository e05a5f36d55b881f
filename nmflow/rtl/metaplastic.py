# amaranth: UnusedElaboratable=no
"""The fixed-point metaplastic update unit: hidden weights beside the engine's pair-code memory.

The unit applies the integer rule of :mod:`nmflow.golden.metafixed` (its golden twin,
:class:`~nmflow.golden.metafixed.MetaFixedRule`, bit for bit) to hidden weights ``W_h`` stored in
``w_format`` and, in the same pass, rewrites the binary weight ``sign(W_h)`` (+1 at zero) as a
pair code through the engine's write port, so that the next inference reads the new weights.

Addressing. The engine's memory holds ``engine_lanes`` pair codes per row (contract 2 of
docs/contracts.md). The unit has ``lanes`` lanes (a power of two dividing ``engine_lanes``): a
*group* is ``lanes`` consecutive synapses of one row, and group ``g`` is lanes
``[(g % k) * lanes, (g % k + 1) * lanes)`` of engine row ``g // k``, ``k = engine_lanes / lanes``
(:func:`group_of`). The hidden memory has one word of ``lanes`` hidden weights per group.

One beat of ``i`` (:func:`beat_layout`): ``addr`` (a group), ``op`` (``OP_UPDATE`` or
``OP_LOAD``), ``en`` (one bit per lane: a lane whose bit is 0, padding say, is neither read
into the rule nor written anywhere) and ``value`` (per lane: the update ``d`` in ``u_format``
for an update, the new ``W_h`` in ``w_format`` for a load; the low bits of the field). An
update with ``d = 0`` reads the hidden weights back unchanged. One beat of ``o``: the hidden
weights of the group after the beat (the stored ones in lanes whose ``en`` is 0).

Pipeline (no stall inside; ``o`` has a FIFO and a beat issues only with a free FIFO slot, a
credit, for it). A beat taken from ``i`` waits in an input register until it can issue (the
engine idle, a credit, no hazard, no bank conflict); every stage ends in a register::

    cycle t     beat issued from the input register: hidden word read (address to the memory)
    cycle t+1   W_h out of the memory, registered
    cycle t+2   |W_h|, table index (clamped) to the f_meta ROM; the shrink test registered
    cycle t+3   f out of the ROM, registered (the multiplier's input register)
    cycle t+4   p = d * f registered (the DSP on the iCE40); plain = round(d, s_plain), or for a
                load the new weight, registered
    cycle t+5   scaled = round(p, s_scaled); delta = scaled or plain, registered
    cycle t+6   saturating W_h - delta (a load: the value; a disabled lane: W_h), registered as W_h'
    cycle t+7   W_h' written to the hidden memory, pair code to the engine's memory, W_h' pushed
                into the FIFO
    cycle t+8   (at the earliest) the beat on ``o``

Latency: the write of a beat issued in cycle ``t`` happens in cycle ``t + 7`` (:attr:`latency`);
its result can be on ``o`` from cycle ``t + 8``; a beat taken from ``i`` issues a cycle later at
the earliest. Throughput: one beat (``lanes`` synapses) per cycle for consecutive groups, when
``o`` is drained and the FIFO has ``latency + 2`` slots or more (a beat holds its credit from
issue to pop; the default depth, 16, has them).

Storage (``storage``):

* ``"memory"``: one :class:`amaranth.lib.memory.Memory` of ``groups`` words (block RAM on the
  ECP5), initialised with ``init`` and writable through loads; a read and a write each cycle.
* ``"spram"``: single-port 16K x 16 SPRAMs (``SB_SPRAM256KA`` on the iCE40UP5K; the behavioural
  :class:`SPRAMModel` elsewhere, in Amaranth's simulator and in Verilog for Icarus). Each lane
  has two banks: even groups in bank 0, odd groups in bank 1, at address ``g >> 1``. The pipeline
  latency is odd (7), so for consecutive groups the read of cycle ``c`` (group ``g``) and the
  write of cycle ``c`` (group ``g - 7``) always hit different banks; a beat whose bank is being
  written in its cycle waits in the input register for that cycle. SPRAM cannot be initialised
  by the bitstream: load the hidden weights with ``OP_LOAD`` beats (:func:`load_beats`).

Hazards: a beat whose group is still in the pipeline (stages 1 .. 7) waits in the input
register until it is written, so a read always sees every earlier write. The comparisons are made
when the beat enters the input register (its group against the issuing beat and stages 1 .. 6),
and the match bits then shift along with the pipeline: the issue decision only ORs registers.
``i.ready`` is ``~(input register full) | issue``: it does not depend on ``i``'s payload.

The engine: beats issue only while the engine is ``idle`` (input ``idle``); start no inference
while ``busy`` is high (the integrator gates the engine's input with it). ``busy`` is a register:
high while the input register or a stage holds a beat.
"""

from types import SimpleNamespace

import numpy as np
from amaranth.hdl import Cat, Const, Elaboratable, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory, WritePort
from amaranth.lib.wiring import In, Out

from ..errors import NmflowError
from ..golden.metafixed import DEFAULT_U_FORMAT, DEFAULT_W_FORMAT, MetaFixedRule
from ..golden.pairs import MINUS, PLUS, MemoryMap
from ..golden.plan import SPRAM_BITS, SPRAM_WORDS, EnginePlan, index_bits
from ..lfsr import Lfsr
from .spram import SPRAM, SPRAMModel
from .weights import pair_row

__all__ = ["MetaplasticUnit", "SPRAMModel", "SPRAM", "MetaplasticSynthTop", "beat_layout",
           "OP_UPDATE", "OP_LOAD", "STORAGES", "SPRAM_WORDS", "SPRAM_BITS", "SPRAM_COUNT",
           "group_of", "hidden_groups", "load_beats", "update_beats", "check_signs"]

OP_UPDATE, OP_LOAD = 0, 1
STORAGES = ("memory", "spram")
#: One SB_SPRAM256KA: 16,384 words of 16 bits; the iCE40UP5K has four.
SPRAM_COUNT = 4
#: The stimulus of :class:`MetaplasticSynthTop`: a 32-bit Fibonacci LFSR shifting right, tapping
#: state bits 0, 1, 21 and 31 (not of maximal length; it only has to keep the logic busy).
_STIMULUS = Lfsr(32, 1 << 31 | 1 << 21 | 1 << 1 | 1)


def _is_pow2(n):
    return isinstance(n, int) and not isinstance(n, bool) and n >= 1 and n & (n - 1) == 0


def beat_layout(lanes, addr_bits, value_bits):
    """One beat of the update stream."""
    return data.StructLayout({"addr": unsigned(addr_bits), "op": 1, "en": unsigned(lanes),
                              "value": data.ArrayLayout(signed(value_bits), lanes)})


def group_of(row, lane, engine_lanes, lanes):
    """The group holding synapse ``lane`` of engine row ``row``, and its lane in the group."""
    k = engine_lanes // lanes
    return row * k + lane // lanes, lane % lanes


def hidden_groups(hidden, mmap, lanes):
    """Hidden weights (a list of int arrays ``[out, in]`` per layer, raw ``w_format``) laid out
    as the unit's memory: ``(words [groups, lanes] int64, en [groups, lanes] bool)``; padding
    synapses are 0 and not enabled."""
    words = np.zeros((mmap.rows, mmap.lanes), dtype=np.int64)
    en = np.zeros((mmap.rows, mmap.lanes), dtype=bool)
    for k, w in enumerate(hidden):
        w = np.asarray(w, dtype=np.int64)
        words[mmap.layer_rows(k)] = mmap.scatter(k, w)
        en[mmap.layer_rows(k)] = mmap.scatter(k, np.ones(w.shape, dtype=bool), fill=False)
    return words.reshape(-1, lanes), en.reshape(-1, lanes)


def check_signs(hidden, model):
    """Refuse hidden weights whose binary weights (+1 at zero) are not the model's."""
    for k, (w, layer) in enumerate(zip(hidden, model.layers)):
        w = np.asarray(w)
        if w.shape != layer.weights.shape:
            raise NmflowError(f"hidden weights of layer {k} must have shape "
                              f"{list(layer.weights.shape)}, not {list(w.shape)}")
        bad = np.argwhere(np.where(w >= 0, 1, -1) != layer.weights)
        if len(bad):
            r, i = bad[0]
            raise NmflowError(f"hidden weights must have the signs of the model's weights: "
                              f"layer {k} [{r}, {i}] is {int(w[r, i])}, weight "
                              f"{int(layer.weights[r, i])}")


def load_beats(words, en):
    """``OP_LOAD`` beats (dicts for :func:`beat_layout`) writing every group."""
    return [{"addr": g, "op": OP_LOAD, "en": sum(int(b) << p for p, b in enumerate(en[g])),
             "value": [int(v) for v in words[g]]} for g in range(len(words))]


def update_beats(d, en, groups=None):
    """``OP_UPDATE`` beats applying updates ``d`` ([groups, lanes], raw ``u_format``)."""
    groups = range(len(d)) if groups is None else groups
    return [{"addr": int(g), "op": OP_UPDATE,
             "en": sum(int(b) << p for p, b in enumerate(en[g])),
             "value": [int(v) for v in d[g]]} for g in groups]


def _round_shift(x, s):
    """The twin's ``round_shift`` on an Amaranth signed value: nearest, ties toward +inf."""
    if s > 0:
        return (x + (1 << (s - 1))) >> s
    return x << (-s)


class _RegisterFIFO(Elaboratable):
    """A first-word-fall-through FIFO in flip-flops (no block RAM: the iCE40UP5K's 30 are
    taken by the engine and the f_meta tables). ``w_en`` must only be raised with room
    (the unit's credit rule guarantees it)."""

    def __init__(self, width, depth):
        self.width, self.depth = width, depth
        self.w_data, self.w_en = Signal(width), Signal()
        self.r_data, self.r_en, self.r_rdy = Signal(width), Signal(), Signal()
        self.level = Signal(range(depth + 1))

    def elaborate(self, platform):
        from amaranth.hdl import Array
        m = Module()
        slots = Array(Signal(self.width, name=f"slot{n}") for n in range(self.depth))
        wp, rp = Signal(range(self.depth)), Signal(range(self.depth))
        push = self.w_en
        pop = self.r_en & self.r_rdy
        m.d.comb += [self.r_rdy.eq(self.level != 0), self.r_data.eq(slots[rp])]
        with m.If(push):
            m.d.sync += [slots[wp].eq(self.w_data), wp.eq(wp + 1)]
        with m.If(pop):
            m.d.sync += rp.eq(rp + 1)
        m.d.sync += self.level.eq(self.level + push - pop)
        return m


class MetaplasticUnit(wiring.Component):
    """The metaplastic update unit (see the module text for the beats, pipeline and storage).

    Parameters
    ----------
    mmap : :class:`~nmflow.golden.pairs.MemoryMap` or :class:`~nmflow.golden.plan.EnginePlan`
        The engine's memory map: its lanes and rows.
    m : float
        Metaplasticity (>= 0); the ``f_meta`` table is built from it at elaboration by
        :func:`~nmflow.golden.metafixed.build_table`.
    lanes : int
        Synapses per beat, a power of two dividing the engine's lanes.
    w_format, u_format, table_size, input_bits, f_bits, kind :
        As :class:`~nmflow.golden.metafixed.MetaFixedRule`.
    storage : ``"memory"`` or ``"spram"``
    init : int array [groups, lanes], optional
        Initial hidden weights (``"memory"`` only; see :func:`hidden_groups`).
    fifo_depth : int, optional
        Depth of the result FIFO, a power of two >= 4; default the smallest with
        ``latency + 2`` slots (16), which keeps a drained ``o`` at full throughput. A producer
        that waits for each result (the host link) needs only 4.
    spram_depth : int
        Words of each simulated SPRAM (the model only; the silicon has 16,384).

    Members
    -------
    i : In(stream.Signature(beat_layout(lanes, group_bits, value_bits)))
    o : Out(stream.Signature(ArrayLayout(signed(w_width), lanes)))
    weights : In(WritePort.Signature(addr_bits, pair_row(engine_lanes), granularity=1))
        Connect to :class:`~nmflow.rtl.engine.InferenceEngine`'s ``weights`` (writable=True).
    idle : In(1)
        The engine's ``idle``: beats are taken only while it is high.
    busy : Out(1)
        A beat is in the input register or the pipeline (its writes are not all done).
    """

    latency = 7

    def __init__(self, mmap, m, *, lanes=2, w_format=DEFAULT_W_FORMAT,
                 u_format=DEFAULT_U_FORMAT, table_size=512, input_bits=None, f_bits=12,
                 kind="tanh", storage="memory", init=None, fifo_depth=None,
                 spram_depth=SPRAM_WORDS):
        if isinstance(mmap, EnginePlan):
            mmap = mmap.mmap
        if not isinstance(mmap, MemoryMap):
            raise NmflowError(f"mmap must be a MemoryMap or an EnginePlan, not "
                              f"{type(mmap).__name__}")
        if not _is_pow2(lanes):
            raise NmflowError(f"lanes must be a power of two, not {lanes!r}")
        if lanes > mmap.lanes:
            raise NmflowError(f"lanes must be at most the engine's lanes ({mmap.lanes}), "
                              f"not {lanes}")
        if storage not in STORAGES:
            raise NmflowError(f"storage must be one of {', '.join(STORAGES)}, not {storage!r}")
        self.rule = MetaFixedRule(m, w_format, u_format, table_size, input_bits, f_bits, kind)
        wf, uf = self.rule.w_format, self.rule.u_format
        # One update must not be able to cross more than the hidden weights' whole range.
        if uf.int_bits > wf.int_bits:
            raise NmflowError(f"w_format is too narrow for the update: {wf.describe()} spans "
                              f"[-{2 ** wf.int_bits}, {2 ** wf.int_bits}), an update of "
                              f"{uf.describe()} up to {2 ** uf.int_bits}")
        if fifo_depth is None:
            fifo_depth = 1 << (self.latency + 1).bit_length()
        if not _is_pow2(fifo_depth) or fifo_depth < 4:
            raise NmflowError(f"fifo_depth must be a power of two >= 4, not {fifo_depth!r}")
        self.mmap, self.lanes, self.storage = mmap, lanes, storage
        self.engine_lanes = mmap.lanes
        self.engine_pe = mmap.pe
        self.k = mmap.lanes // lanes
        self.groups = mmap.rows * self.k
        self.group_bits = index_bits(self.groups)
        self.addr_bits = index_bits(mmap.rows)
        self.fifo_depth = fifo_depth
        self.value_bits = max(wf.width, uf.width)
        if storage == "spram":
            if wf.width > SPRAM_BITS:
                raise NmflowError(f"w_format must be at most {SPRAM_BITS} bits wide with "
                                  f"storage 'spram', not {wf.describe()} ({wf.width} bits)")
            if 2 * lanes > SPRAM_COUNT:
                raise NmflowError(f"lanes must be at most {SPRAM_COUNT // 2} with storage "
                                  f"'spram' (two banks per lane, {SPRAM_COUNT} SPRAMs), "
                                  f"not {lanes}")
            bank_words = -(-self.groups // 2)
            if bank_words > SPRAM_WORDS:
                raise NmflowError(f"network does not fit the SPRAMs: {self.groups * lanes} "
                                  f"synapses need {bank_words} words per bank with {lanes} "
                                  f"lanes, an SPRAM holds {SPRAM_WORDS}")
            if not _is_pow2(spram_depth) or spram_depth > SPRAM_WORDS or spram_depth < bank_words:
                raise NmflowError(f"spram_depth must be a power of two from {bank_words} to "
                                  f"{SPRAM_WORDS}, not {spram_depth!r}")
            if init is not None:
                raise NmflowError("init must be None with storage 'spram' (SPRAM has no "
                                  "initial contents: load the hidden weights with OP_LOAD beats)")
        self.spram_depth = spram_depth
        if init is not None:
            init = np.asarray(init, dtype=np.int64)
            if init.shape != (self.groups, lanes):
                raise NmflowError(f"init must have shape [{self.groups}, {lanes}], not "
                                  f"{list(init.shape)}")
            if not wf.contains(init).all():
                raise NmflowError(f"init must lie in {wf.describe()}'s range "
                                  f"[{wf.min_raw}, {wf.max_raw}]")
        self.init = init
        super().__init__({
            "i": In(stream.Signature(beat_layout(lanes, self.group_bits, self.value_bits))),
            "o": Out(stream.Signature(data.ArrayLayout(signed(wf.width), lanes))),
            "weights": In(WritePort.Signature(addr_width=self.addr_bits,
                                              shape=pair_row(mmap.lanes), granularity=1)),
            "idle": In(1),
            "busy": Out(1),
        })

    @property
    def sprams(self):
        """SPRAMs the unit takes: two banks per lane with ``storage="spram"``, else 0."""
        return 2 * self.lanes if self.storage == "spram" else 0

    @property
    def memories(self):
        """The unit's block RAM memories as ``{name: (depth, width)}`` (for board fit checks):
        one f_meta table per lane, and the hidden weights with ``storage="memory"`` (the SPRAMs
        and the result FIFO are not block RAM)."""
        width = max(1, max(int(v) for v in self.rule.table).bit_length())
        out = {f"f_meta table {p}": (self.rule.table_size, width) for p in range(self.lanes)}
        if self.storage == "memory":
            out["hidden weights"] = (self.groups, self.lanes * self.rule.w_format.width)
        return out

    def elaborate(self, platform):
        m = Module()
        pipe = self._issue(m)
        self._storage(m, pipe)
        for p in range(self.lanes):
            self._rule_lane(m, pipe, p)
        self._outputs(m, pipe)
        return m

    @staticmethod
    def _stage_regs(name, shape, count, first=1):
        """Pipeline data registers (no reset: only the valid bits need one)."""
        return {n: Signal(shape, name=f"{name}{n}", reset_less=True)
                for n in range(first, first + count)}

    def _issue(self, m):
        """The input register, the issue decision (the engine idle, a credit, no hazard, no bank
        conflict), ``busy`` and the stage registers every lane shares (valid, group, op, enables,
        the beat's values up to stage 4). Returns them as a namespace for the other parts."""
        U, L = self.lanes, self.latency
        beat = self.i.payload
        # -- the input register: the beat waits here until it can issue --------------------------
        r_valid = Signal()
        r_addr = Signal(self.group_bits, reset_less=True)
        r_op = Signal(reset_less=True)
        r_en = Signal(U, reset_less=True)
        r_val = [Signal(signed(self.value_bits), name=f"r_val_{p}", reset_less=True)
                 for p in range(U)]

        # -- pipeline registers (stage n holds the beat issued n cycles ago) --------------------
        v = {n: Signal(name=f"v{n}") for n in range(1, L + 1)}
        g = self._stage_regs("g", self.group_bits, L)
        op = self._stage_regs("op", 1, L)
        en = self._stage_regs("en", U, L)
        val = [self._stage_regs(f"val_{p}_", signed(self.value_bits), 4) for p in range(U)]

        fifo = _RegisterFIFO(U * self.rule.w_format.width, self.fifo_depth)
        m.submodules.fifo = fifo

        # Credits: every issued beat holds one FIFO slot from issue to pop.
        credits = Signal(range(self.fifo_depth + 1), init=self.fifo_depth)
        pop = fifo.r_en & fifo.r_rdy
        # match[n]: the beat in stage n has the waiting beat's group (computed when the beat
        # enters the input register, then shifted along with the pipeline).
        match = {n: Signal(name=f"match{n}") for n in range(1, L + 1)}
        hazard = Cat(*match.values()).any()
        go = Signal()
        conflict = Const(0)
        if self.storage == "spram":
            # the write of this cycle takes the bank the waiting beat would read
            conflict = v[L] & (en[L] != 0) & (g[L][0] == r_addr[0])
        m.d.comb += go.eq(r_valid & self.idle & (credits != 0) & ~hazard & ~conflict)
        load = Signal()
        m.d.comb += [self.i.ready.eq(~r_valid | go), load.eq(self.i.valid & self.i.ready)]
        with m.If(load):
            m.d.sync += [r_valid.eq(1), r_addr.eq(beat.addr), r_op.eq(beat.op), r_en.eq(beat.en),
                         match[1].eq(go & (r_addr == beat.addr))]
            m.d.sync += [match[n].eq(v[n - 1] & (g[n - 1] == beat.addr)) for n in range(2, L + 1)]
            m.d.sync += [r_val[p].eq(beat.value[p]) for p in range(U)]
        with m.Else():
            m.d.sync += [match[1].eq(0)] + [match[n].eq(match[n - 1]) for n in range(2, L + 1)]
            with m.If(go):
                m.d.sync += r_valid.eq(0)
        m.d.sync += credits.eq(credits - go + pop)
        # busy, registered: the input register or a stage holds a beat in the next cycle
        busy = Signal()
        r_next = load | (r_valid & ~go)
        m.d.sync += busy.eq(r_next | go | Cat(*(v[n] for n in range(1, L))).any())
        m.d.comb += self.busy.eq(busy)

        m.d.sync += [v[1].eq(go), g[1].eq(r_addr), op[1].eq(r_op), en[1].eq(r_en)]
        m.d.sync += [val[p][1].eq(r_val[p]) for p in range(U)]
        for n in range(2, L + 1):
            m.d.sync += [v[n].eq(v[n - 1]), g[n].eq(g[n - 1]), op[n].eq(op[n - 1]),
                         en[n].eq(en[n - 1])]
        for p in range(U):
            m.d.sync += [val[p][n].eq(val[p][n - 1]) for n in range(2, 5)]

        ww = self.rule.w_format.width
        w_new = [Signal(signed(ww), name=f"w_new_{p}", reset_less=True) for p in range(U)]
        w1 = [Signal(signed(ww), name=f"w1_{p}") for p in range(U)]
        write_en = [Signal(name=f"wen_{p}") for p in range(U)]
        for p in range(U):
            m.d.comb += write_en[p].eq(v[L] & en[L][p])
        return SimpleNamespace(r_addr=r_addr, v=v, g=g, op=op, en=en, val=val, fifo=fifo,
                               w_new=w_new, w1=w1, write_en=write_en)

    def _storage(self, m, pipe):
        """The hidden weights: read in the issue cycle (the word in ``w1``, stage 1), written in
        stage L (``w_new`` where ``write_en``)."""
        U, L, ww = self.lanes, self.latency, self.rule.w_format.width
        g, r_addr = pipe.g, pipe.r_addr
        if self.storage == "memory":
            init = [] if self.init is None else [
                [int(x) for x in row] for row in self.init]
            mem = Memory(shape=data.ArrayLayout(signed(ww), U), depth=self.groups, init=init)
            m.submodules.hidden = mem
            # reading every cycle is harmless: stage 1 only takes the data of an issued beat
            rd = mem.read_port(transparent_for=())
            wr = mem.write_port(granularity=1)
            m.d.comb += [rd.addr.eq(r_addr), rd.en.eq(1), wr.addr.eq(g[L])]
            for p in range(U):
                m.d.comb += [pipe.w1[p].eq(rd.data[p]), wr.data[p].eq(pipe.w_new[p]),
                             wr.en[p].eq(pipe.write_en[p])]
            return
        for p in range(U):
            outs = []
            for b in range(2):
                ram = SPRAM(self.spram_depth)
                m.submodules[f"spram_l{p}_b{b}"] = ram
                write = pipe.write_en[p] & (g[L][0] == b)
                m.d.comb += [
                    ram.ADDRESS.eq(Mux(write, g[L][1:], r_addr[1:])),
                    ram.DATAIN.eq(pipe.w_new[p].as_unsigned()),
                    ram.MASKWREN.eq(0b1111), ram.WREN.eq(write),
                    ram.CHIPSELECT.eq(1),
                    ram.STANDBY.eq(0), ram.SLEEP.eq(0), ram.POWEROFF.eq(1)]
                outs.append(ram.DATAOUT[:ww].as_signed())
            m.d.comb += pipe.w1[p].eq(Mux(g[1][0], outs[1], outs[0]))

    def _rule_lane(self, m, pipe, p):
        """Lane ``p``'s rule, stages 1 to L - 1 (see the module text): the table index and the
        shrink test, the ROM, the product and the plain step, the rounding and the choice, the
        saturating subtract into ``w_new[p]``."""
        rule, L = self.rule, self.latency
        wf = rule.w_format
        ww, uw = wf.width, rule.u_format.width
        mag_bits = ww - 1
        op, en, val = pipe.op, pipe.en, pipe.val
        table = [int(x) for x in rule.table]
        f_shape = unsigned(max(1, max(table).bit_length()))
        index_width = max(1, (rule.table_size - 1).bit_length())
        w = self._stage_regs(f"w_{p}_", signed(ww), L - 2, first=2)      # w2 .. w{L-1}
        # stage 1: the stored word out of the memory, registered
        m.d.sync += w[2].eq(pipe.w1[p])
        for n in range(3, L):
            m.d.sync += w[n].eq(w[n - 1])
        # stage 2: |W_h|, the clamped table index to the ROM; the shrink test
        d2 = val[p][2][:uw].as_signed()
        a = Signal(unsigned(mag_bits + 1), name=f"a_{p}")
        m.d.comb += a.eq(Mux(w[2][-1], -w[2], w[2]))
        raw_index = Signal(unsigned(max(1, mag_bits + 1 - rule.shift)), name=f"raw_index_{p}")
        m.d.comb += raw_index.eq(a >> rule.shift)
        index = Signal(range(rule.table_size), name=f"index_{p}")
        if rule.table_size == 1 << index_width and len(raw_index) > index_width:
            beyond = raw_index[index_width:].any()
        else:
            beyond = raw_index > rule.table_size - 1
        m.d.comb += index.eq(Mux(beyond, rule.table_size - 1, raw_index))
        rom = Memory(shape=f_shape, depth=rule.table_size, init=table)
        m.submodules[f"fmeta_{p}"] = rom
        rp = rom.read_port(transparent_for=())
        m.d.comb += [rp.addr.eq(index), rp.en.eq(1)]
        sh = self._stage_regs(f"shrink_{p}_", 1, 3, first=3)              # shrink3 .. shrink5
        w_pos, w_neg = ~w[2][-1] & w[2].any(), w[2][-1]
        d_pos, d_neg = ~d2[-1] & d2.any(), d2[-1]
        m.d.sync += [sh[3].eq(((w_pos & d_pos) | (w_neg & d_neg)) & (op[2] == OP_UPDATE)),
                     sh[4].eq(sh[3]), sh[5].eq(sh[4])]
        # stage 3: f out of the ROM, registered (the multiplier's input register)
        f4 = Signal(f_shape, name=f"f4_{p}", reset_less=True)
        m.d.sync += f4.eq(rp.data)
        # stage 4: p = d * f registered; the plain step (or, for a load, the new weight)
        d4 = val[p][4][:uw].as_signed()
        prod = Signal(signed(uw + f_shape.width + 1), name=f"prod5_{p}", reset_less=True)
        plain_w = max(ww, uw + max(0, -rule.s_plain) + 1)
        plain = Signal(signed(plain_w), name=f"plain5_{p}", reset_less=True)
        m.d.sync += [prod.eq(d4 * f4),
                     plain.eq(Mux(op[4], val[p][4][:ww].as_signed(),
                                  _round_shift(d4, rule.s_plain)))]
        # stage 5: round the product, choose the step
        scaled = _round_shift(prod, rule.s_scaled)
        delta = Signal(signed(max(len(scaled), plain_w) + 1), name=f"delta6_{p}",
                       reset_less=True)
        m.d.sync += delta.eq(Mux(sh[5], scaled, plain))
        # stage 6: saturating subtract; a load takes the value, a disabled lane keeps W_h
        diff = Signal(signed(max(ww, len(delta)) + 2), name=f"diff_{p}")
        m.d.comb += diff.eq(w[L - 1] - delta)
        top = diff[ww - 1:]                     # in range iff these are all equal
        upd = Mux(top.all() | ~top.any(), diff[:ww].as_signed(),
                  Mux(diff[-1], wf.min_raw, wf.max_raw))
        m.d.sync += pipe.w_new[p].eq(Mux(en[L - 1][p],
                                         Mux(op[L - 1], delta[:ww].as_signed(), upd), w[L - 1]))

    def _outputs(self, m, pipe):
        """Stage L: the pair codes to the engine's memory, the result into the FIFO, the FIFO
        onto ``o``."""
        U, L = self.lanes, self.latency
        g, fifo, w_new = pipe.g, pipe.fifo, pipe.w_new
        seg = g[L][:self.k.bit_length() - 1] if self.k > 1 else Const(0, 1)
        m.d.comb += self.weights.addr.eq(g[L] >> (self.k.bit_length() - 1))
        for q in range(self.engine_lanes):
            p = q % U
            code = Mux(w_new[p][-1], MINUS, PLUS)
            m.d.comb += [self.weights.data[q].as_value().eq(code),
                         self.weights.en[q].eq(pipe.write_en[p] & (seg == q // U))]
        m.d.comb += [fifo.w_data.eq(Cat(*(x.as_unsigned() for x in w_new))),
                     fifo.w_en.eq(pipe.v[L]), self.o.valid.eq(fifo.r_rdy),
                     fifo.r_en.eq(self.o.ready), self.o.payload.as_value().eq(fifo.r_data)]


class MetaplasticSynthTop(wiring.Component):
    """A board core for synthesis figures: an :class:`~nmflow.rtl.engine.InferenceEngine`
    (``writable=True``) with the unit on its write port, both fed by a 32-bit LFSR (the engine's
    inputs; the unit's beats on consecutive groups with LFSR updates), the engine's results and
    the unit's results and ``busy`` XOR-reduced onto ``tx`` (so nothing is optimised away);
    ``rx`` is mixed into the LFSR. Not a host link: it only gives logic cells, RAMs and Fmax.

    ``MetaplasticSynthTop(model, m, engine_lanes=16, lanes=2, storage="spram", clk_freq=...)``
    (``clk_freq`` is ignored: the factory signature of :class:`~nmflow.boards.top.BoardTop`).
    """

    def __init__(self, model, m=10.0, *, engine_lanes=16, lanes=2, storage="spram",
                 memory="block", clk_freq=None, **rule):
        from .engine import InferenceEngine
        self._engine = InferenceEngine(model, lanes=engine_lanes, memory=memory, writable=True)
        self._unit = MetaplasticUnit(self._engine.plan, m, lanes=lanes, storage=storage, **rule)
        super().__init__({"rx": In(1), "tx": Out(1)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.engine = engine = self._engine
        m.submodules.unit = unit = self._unit
        wiring.connect(m, unit.weights, engine.weights)
        src = Signal(32, init=1)
        m.d.sync += src.eq(_STIMULUS.next(src) ^ self.rx << 31)     # rx joins the feedback
        group = Signal(unit.group_bits)
        with m.If(unit.i.valid & unit.i.ready):
            m.d.sync += group.eq(Mux(group == unit.groups - 1, 0, group + 1))
        m.d.comb += [unit.idle.eq(engine.idle), unit.i.valid.eq(src[0]),
                     unit.i.payload.addr.eq(group), unit.i.payload.op.eq(src[1] & src[2]),
                     unit.i.payload.en.eq(src[3:3 + unit.lanes] | 1), unit.o.ready.eq(src[5]),
                     engine.i.valid.eq(src[6] & ~unit.busy & ~unit.i.valid),
                     engine.i.payload.eq(src[8:8 + engine.input_bits]),
                     engine.o.ready.eq(src[7])]
        for p in range(unit.lanes):
            m.d.comb += unit.i.payload.value[p].eq(src.rotate_left(7 * p)[:unit.value_bits])
        out = Signal()
        m.d.sync += out.eq(unit.o.payload.as_value().xor() ^ unit.o.valid ^ unit.busy
                           ^ engine.o.payload.as_value().xor() ^ engine.o.valid)
        m.d.comb += self.tx.eq(out)
        return m
