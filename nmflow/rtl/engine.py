"""Near-memory XNOR/GXNOR-popcount inference engine: the top of the inference datapath.

The engine is a few components joined by streams, built from one
:class:`~nmflow.golden.plan.EnginePlan`::

    i ─► Sequencer ─load─► ActivationStore ◄─acts─┐
             │ cmd                                 │
             └──────────► MACDatapath ─────────────┘   (weight memory, read stage, lanes, acc)
                              │ o (one beat per neuron)
                 ┌────────────┴────────────┐
           ThresholdUnit              ScoreArgmax ─► o
                 │ (write, trace)
           ActivationStore
"""

from functools import partial

from amaranth.hdl import Array, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import WritePort
from amaranth.lib.wiring import In, Out

from ..errors import NmflowError
from ..golden.hwmodel import HardwareModel
from ..golden.injector import ErrorInjection
from ..golden.plan import MEMORY_KINDS, WEIGHT_KINDS, EnginePlan, check_lanes, index_bits
from .activations import ActivationStore
from .datapath import MACDatapath
from .injector import PCSAErrorRead, error_config_layout
from .pcsa import PCSARead
from .scores import ScoreArgmax, result_layout
from .sequencer import Sequencer, tag_layout
from .threshold import ThresholdUnit
from .weights import PairReadSignature, pair_row

__all__ = ["InferenceEngine", "result_layout", "trace_layout"]


def trace_layout(n_layers, max_groups, pe=1):
    """One beat of the trace stream: a group's hidden activations as they are written to their
    buffer: neuron ``group * pe + q`` has ``acts[q]`` (padding neurons, past the layer's outputs,
    are to be ignored)."""
    return data.StructLayout({
        "layer": unsigned(index_bits(n_layers)), "group": unsigned(index_bits(max_groups)),
        "acts": data.ArrayLayout(signed(2), pe),
    })


def _pool(m, acts, valid, tag):
    """Max pooling of a group's activations over the pooling window's positions, which come one
    after the other (``tag.pool_first`` to ``tag.pool_last``): a register per neuron holds the
    maximum so far. Returns the pooled activations and their write strobe (at the last
    position)."""
    pooled = []
    for q, act in enumerate(acts):
        best = Signal(signed(2), name=f"pool{q}")
        value = Signal(signed(2), name=f"pooled{q}")
        m.d.comb += value.eq(Mux(tag.pool_first | (act > best), act, best))
        with m.If(valid):
            m.d.sync += best.eq(value)
        pooled.append(value)
    return pooled, valid & tag.pool_last


class InferenceEngine(wiring.Component):
    """A BNN/TNN inference engine reading its weights near memory, row by row.

    The weight memory holds every layer's weights as 2T2R pair codes (docs/contracts.md,
    contract 2), ``lanes`` codes per row, laid out by the plan's memory map. Each cycle the
    :class:`~nmflow.rtl.sequencer.Sequencer` issues one row; the
    :class:`~nmflow.rtl.datapath.MACDatapath` reads it, turns its pair codes into ternary weights
    through the read stage (the ideal :class:`~nmflow.rtl.pcsa.PCSARead` by default, or any read
    stage: contract 6), gates one chunk of activations from the
    :class:`~nmflow.rtl.activations.ActivationStore` (k-bit pixels in the first layer,
    {-1, 0, +1} after) in ``lanes`` GXNOR lanes, adds them in a pipelined popcount tree and
    accumulates the ``ceil(in / lanes)`` rows of a neuron. Hidden neurons go through the
    :class:`~nmflow.rtl.threshold.ThresholdUnit` into an activation buffer (two buffers, used in
    turn); the last layer's pre-activations become integer scores ``scale * a + offset`` in the
    :class:`~nmflow.rtl.scores.ScoreArgmax` unit, whose running argmax keeps the lowest index on
    ties. It computes exactly :func:`nmflow.golden.reference.reference` with the read stage's
    golden twin.

    Parameters
    ----------
    model : :class:`~nmflow.golden.hwmodel.HardwareModel`
    lanes : int
        GXNOR lanes, a power of two from 1 to 1024: pair codes read per cycle.
    pe : int
        Neurons computed side by side, each over ``lanes / pe`` of the lanes (a power of two,
        ``pe * pe <= lanes``: :func:`~nmflow.golden.plan.check_pe`). 1 by default.
    first_layer_bits : int or None
        Input bits the first layer takes per cycle (1 to ``input_bits``; None: all of them).
        The lanes are ``first_layer_bits + 1`` bits wide (2 at least: with 1 the adder trees
        are popcounts and the first layer is bit-serial); see
        :class:`~nmflow.golden.plan.EnginePlan`.
    memory : ``"block"``, ``"logic"`` or ``"spram"``
        How the memories are built (:data:`~nmflow.golden.plan.MEMORY_KINDS`); ``"spram"``
        (:data:`~nmflow.golden.plan.WEIGHT_KINDS`): the weight memory from the iCE40UP5K's
        SPRAMs, the other memories block RAM. SPRAM starts empty: the engine is then
        ``writable``, and every weight row must be written through ``weights`` (whole rows)
        before the first inference.
    buffers : ``"block"``, ``"logic"``, a dict or None
        How the activation store's buffers are built: the input buffer (``"inputs"``) and the two
        activation banks (``"activations"``), a kind for all or a dict ``{"inputs": kind,
        "activations": kind}``; None (the default): as ``memory``. They are shallow and wide
        (``lanes`` values a row), so block RAM holds them poorly: ``"logic"`` frees block RAMs
        for the weights of a wider engine, at a flip-flop per bit.
    max_weight_bits : int or None
        Memory budget: refuse a network whose weight memory needs more bits than this.
    read_stage : callable or None
        ``read_stage(lanes=, addr_bits=)`` returns the read stage: a component with the
        signature of :class:`~nmflow.rtl.pcsa.ReadStageSignature` and a ``latency`` attribute.
        The class itself may be passed (``PCSARead``, the default).
    writable : bool
        Add the weight memory's write port ``weights`` and its read-back port ``pairs``.
    errors : :class:`~nmflow.golden.injector.ErrorInjection` or None
        Read through the error-injecting :class:`~nmflow.rtl.injector.PCSAErrorRead` (one more
        cycle of read latency) with this configuration after reset, and add the ``errors`` port
        to change it at run time. ``None`` (the default) is the engine without an injector.

    Members
    -------
    i : In(stream.Signature(unsigned(input_bits)))
        Input values, one per beat; ``n_inputs`` beats start an inference.
    o : Out(stream.Signature(result_layout(n_classes, score_bits)))
        ``n_classes`` beats per inference: class ``index``, its ``score``, the argmax ``cls`` (on
        every beat) and ``last`` on the final beat. Backpressure is respected.
    trace : Out(stream.Signature(trace_layout(...), always_ready=True))
        Every hidden activation as it is written (for verification; unused on a board).
    idle : Out(1)
        High while the engine waits for the first input beat of an inference: nothing reads the
        weight memory, the time to use ``weights`` (results may still be going out on ``o``).
    weights : Out(WritePort.Signature(addr_width, pair_row(lanes), granularity=1)), if writable
        Rewrites a row of pair codes (one enable per lane) per cycle; an inference started after
        the write reads the new codes. Write only while ``idle``.
    pairs : In(:class:`~nmflow.rtl.weights.PairReadSignature`), if writable
        Reads a row of pair codes, as stored, through the memory's own read port; the row comes
        with ``valid`` two cycles after ``en``. Read only while ``idle`` (the engine's reads take
        the port first); the read-error injector does not see these reads.
    errors : In(stream.Signature(error_config_layout(rate_bits), always_ready=True)), if errors
        Sets the injector's thresholds, seed and mode (see
        :func:`~nmflow.rtl.injector.config_payload`); send it while ``idle``, and start the
        next inference no earlier than the third cycle after the beat.

    Latency and throughput: one inference takes :attr:`cycles_per_inference` cycles from its first
    input beat to its last result beat when the streams never stall, against
    :attr:`ideal_cycles` = sum over layers of ``ceil(in / lanes) * out`` row reads. The difference
    is the input load (``n_inputs``), the pipeline drain at each layer boundary
    (:attr:`drain_cycles`, from the stages of :data:`nmflow.golden.plan.PIPELINE`) and the result
    beats (``n_classes``, plus one to load the first into the output register). One inference
    computes at a time, but the next one loads its inputs while the results of the last go out
    (when ``n_inputs <= n_classes`` it waits for them before it computes). The figures are the
    plan's (:attr:`plan`).
    """

    def __init__(self, model, *, lanes=16, pe=1, first_layer_bits=None, memory="block", buffers=None, max_weight_bits=None,
                 read_stage=None, writable=False, errors=None):
        if not isinstance(model, HardwareModel):
            raise TypeError(f"model must be a HardwareModel, not {type(model).__name__}")
        check_lanes(lanes)
        if memory not in WEIGHT_KINDS:
            raise NmflowError(f"memory must be one of {', '.join(map(repr, WEIGHT_KINDS))}, "
                              f"not {memory!r}")
        if memory == "spram":
            writable = True                 # the rows come at run time, through ``weights``
        buffers = (memory if memory != "spram" else "block") if buffers is None else buffers
        if isinstance(buffers, str):
            buffers = {"inputs": buffers, "activations": buffers}
        if not isinstance(buffers, dict) or set(buffers) != {"inputs", "activations"}:
            raise NmflowError(f"buffers must be a memory kind or a dict with the keys 'inputs' and "
                             f"'activations', not {buffers!r}")
        kinds = [(f"buffers[{k!r}]", v) for k, v in buffers.items()]
        for name, kind in kinds:
            if kind not in MEMORY_KINDS:
                raise NmflowError(f"{name} must be one of {', '.join(map(repr, MEMORY_KINDS))}, "
                                 f"not {kind!r}")
        if errors is not None:
            if read_stage is not None:
                raise NmflowError("give either read_stage or errors, not both")
            if not isinstance(errors, ErrorInjection):
                raise TypeError(f"errors must be an ErrorInjection, not {type(errors).__name__}")
            read_stage = PCSAErrorRead
        read_stage = PCSARead if read_stage is None else read_stage
        if not callable(read_stage):
            raise TypeError(f"read_stage must be a callable taking lanes= and addr_bits=, "
                            f"not {read_stage!r}")
        latency = getattr(read_stage, "latency", None)
        if not isinstance(latency, int):
            raise NmflowError(f"read_stage must have an integer latency, not {latency!r}")
        plan = EnginePlan(model, lanes, pe=pe, read_latency=latency, first_layer_bits=first_layer_bits)
        if max_weight_bits is not None and plan.weight_bits > max_weight_bits:
            raise NmflowError(f"network does not fit the memory budget: its weights need "
                             f"{plan.weight_bits} bits ({plan.weight_rows} rows of {lanes} pair "
                             f"codes), the budget is {max_weight_bits} bits")
        self._plan = plan
        self._memory = memory
        self._buffers = dict(buffers)
        if errors is not None:
            read_stage = partial(PCSAErrorRead, injection=errors, last_row=plan.weight_rows - 1)
        self._read_stage = read_stage
        self._errors = errors
        self._writable = bool(writable)
        members = {
            "i": In(stream.Signature(unsigned(model.input_bits))),
            "o": Out(stream.Signature(result_layout(model.n_classes, model.score_bits))),
            "trace": Out(stream.Signature(trace_layout(plan.n_layers, max(plan.groups), pe),
                                          always_ready=True)),
            "idle": Out(1),
        }
        if writable:
            members["weights"] = Out(WritePort.Signature(addr_width=plan.addr_bits,
                                                         shape=pair_row(lanes), granularity=1))
            members["pairs"] = In(PairReadSignature(plan.addr_bits, lanes))
        if errors is not None:
            members["errors"] = In(stream.Signature(error_config_layout(errors.rate_bits),
                                                    always_ready=True))
        super().__init__(members)

    # -- parameters read back by tests, benches and board builds -------------------------------
    plan = property(lambda self: self._plan)
    model = property(lambda self: self._plan.model)
    lanes = property(lambda self: self._plan.lanes)
    pe = property(lambda self: self._plan.pe)
    first_layer_bits = property(lambda self: self._plan.first_layer_bits)
    memory = property(lambda self: self._memory)
    buffers = property(lambda self: dict(self._buffers))
    """How the store's buffers are built: ``{"inputs": kind, "activations": kind}``."""
    injection = property(lambda self: self._errors)
    n_inputs = property(lambda self: self._plan.n_inputs)
    n_classes = property(lambda self: self._plan.n_classes)
    input_bits = property(lambda self: self._plan.model.input_bits)
    score_bits = property(lambda self: self._plan.model.score_bits)
    acc_bits = property(lambda self: self._plan.acc_bits)
    weight_rows = property(lambda self: self._plan.weight_rows)
    weight_bits = property(lambda self: self._plan.weight_bits)
    memories = property(lambda self: self._plan.memories)
    popcount_latency = property(lambda self: self._plan.popcount_latency)
    ideal_cycles = property(lambda self: self._plan.ideal_cycles)
    drain_cycles = property(lambda self: self._plan.drain_cycles)
    cycles_per_inference = property(lambda self: self._plan.cycles_per_inference)

    def elaborate(self, platform):
        m = Module()
        plan = self._plan
        layers = plan.model.layers

        m.submodules.sequencer = seq = Sequencer(plan)
        m.submodules.store = store = ActivationStore(plan, **self._buffers)
        m.submodules.datapath = datapath = MACDatapath(
            plan, plan.memory_codes(), memory=self._memory, read_stage=self._read_stage,
            writable=self._writable)
        thresholds = []
        for q in range(plan.pe):
            thresholds.append(ThresholdUnit(plan.acc_bits, tag_layout(plan) if q == 0 else 1))
            m.submodules[f"threshold{q}" if plan.pe > 1 else "threshold"] = thresholds[q]
        m.submodules.scores = scores = ScoreArgmax(plan)

        wiring.connect(m, wiring.flipped(self.i), seq.i)
        wiring.connect(m, seq.load, store.load)
        wiring.connect(m, seq.cmd, datapath.cmd)
        wiring.connect(m, datapath.acts, store.read)
        wiring.connect(m, scores.o, wiring.flipped(self.o))
        if self._writable:
            wiring.connect(m, wiring.flipped(self.weights), datapath.weights)
            wiring.connect(m, wiring.flipped(self.pairs), datapath.pairs)
        if self._errors is not None:
            wiring.connect(m, wiring.flipped(self.errors), datapath.read_config)
        m.d.comb += self.idle.eq(seq.idle)

        # A completed group goes to the threshold units (hidden layers) or the score unit (last).
        group = datapath.o.payload
        ternary = Array(Const(ly.activation == "ternary") for ly in layers)[group.tag.layer]
        for q, threshold in enumerate(thresholds):
            m.d.comb += [
                threshold.i.valid.eq(datapath.o.valid & ~group.final),
                threshold.i.payload.acc.eq(group.acc[q]),
                threshold.i.payload.t_hi.eq(group.thr[q].t_hi),
                threshold.i.payload.t_lo.eq(group.thr[q].t_lo),
                threshold.i.payload.ternary.eq(ternary),
                threshold.i.payload.tag.eq(group.tag if q == 0 else 0),
                scores.i.payload.acc[q].eq(group.acc[q]),
                scores.i.payload.scale[q].eq(group.aff[q].scale),
                scores.i.payload.offset[q].eq(group.aff[q].offset),
            ]
        m.d.comb += [
            scores.i.valid.eq(datapath.o.valid & group.final),
            scores.i.payload.group.eq(group.tag.group),
            scores.i.payload.end.eq(group.tag.end),
        ]

        # Hidden activations go into the store (and out on the trace stream); a convolution's
        # go through the max pooling first (:func:`_pool`).
        written = thresholds[0].o
        tag = written.payload.tag
        acts = [threshold.o.payload.act for threshold in thresholds]
        write = written.valid
        if plan.has_conv:
            acts, write = _pool(m, acts, written.valid, tag)
            m.d.comb += store.write.payload.row.eq(tag.row)
        m.d.comb += [
            store.write.valid.eq(write),
            store.write.payload.layer.eq(tag.layer),
            store.write.payload.group.eq(tag.group),
            store.write.payload.end.eq(tag.end),
            self.trace.valid.eq(write),
            self.trace.payload.layer.eq(tag.layer),
            self.trace.payload.group.eq(tag.group),
        ]
        # The trace shows padding neurons (past a layer's outputs, in its last group) as 0.
        pe = plan.pe
        real = Array(Const((1 << (ly.n_out % pe or pe)) - 1, pe) for ly in layers)
        traced = Signal(pe)
        m.d.comb += traced.eq(Mux(tag.end, real[tag.layer], (1 << pe) - 1))
        for q, act in enumerate(acts):
            m.d.comb += [store.write.payload.acts[q].eq(act),
                         self.trace.payload.acts[q].eq(Mux(traced[q], act, 0))]

        m.d.comb += [
            seq.completed.eq(write),
            seq.scored.eq(scores.stored),
            scores.start.eq(seq.emit),
            seq.busy.eq(scores.busy),
        ]
        return m
