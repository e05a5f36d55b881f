"""The Equilibrium Propagation settling and learning unit: the fixed-point twin
(:mod:`nmflow.golden.eqprop_fixed`) in hardware, bit for bit, one sample at a time (batch 1).

Architecture (docs/eqprop_rtl.md has the figures)
-------------------------------------------------
* ``lanes`` (``L``, a power of two) multiply-accumulate lanes, each next to its own weight bank.
  Weight ``W_k[r, i]`` (row ``r`` = neuron of layer ``k+1``, column ``i`` = neuron of layer
  ``k``) lives in bank ``(r + i) mod L`` at address ``wbase_k + r * (n_k / L) + i // L``: the
  skewed layout puts the ``L`` weights of a row chunk (``r`` fixed, ``i = c L ... c L + L-1``)
  and the ``L`` weights of a column chunk (``i`` fixed, ``r = c L ... c L + L-1``) in ``L``
  different banks, so both ``W_{k-1} s_{k-1}`` and the transposed ``W_k^T s_{k+1}`` stream one
  chunk per cycle. A row chunk reads every bank at one address; a column chunk reads bank ``b``
  at ``wbase_k + (c L + ((b - j) mod L)) (n_k / L) + j // L`` for neuron ``j``.
* Binary weights: the weight banks hold the hidden weights and ``L`` code banks beside them
  (same addresses) the binary weights as pair codes; settling reads the codes, the update the
  hidden weights, and a hidden weight's write writes its code. The hidden banks are block RAM
  or, with ``storage="spram"``, one single-port RAM each (the host loads them; an update's chunk
  read waits while a weight is written).
* States ``u0.F`` live in ``L`` state banks (state ``i`` of a vector in bank ``i mod L``, row
  ``i // L``): the input ``x`` and three copies of the layers, regions ``A`` (free phase, ``s*``),
  ``B`` (``+beta``, ends as ``s+``) and ``C`` (``-beta``, ends as ``s-``). A chunk read gives
  the ``L`` states of one row; lane ``b`` takes bank ``(b - j) mod L`` (a rotation by ``j mod L``)
  for both row and column chunks, which is the state its weight multiplies.
* Biases sit in one bias memory, read alongside a neuron's first chunk.
* Pipeline of a settling command: issue (addresses, registered) -> memory read -> rotation ->
  products -> adder tree -> accumulator and nudge -> rounding and clip -> state write and argmax
  (``PIPELINE_DEPTH`` = 7 cycles from issue to write). The output layer in a nudged phase takes
  one more command per neuron, which reads its old state for the nudge.
* Order: the twin's alternating order, odd state layers then even layers; between the two
  groups the sequencer waits as long as the even layers' first reads of what the odd ones wrote
  need (``EqPropPlan.drain_cycles``, 0 for 64-32-10 on 4 lanes), after the last group the whole
  pipeline drains.
* Output-side push (``EqPropPlan.push``, where the output layer's padded column chunks cost
  more than it): the output layer pushes ``W_{N-1}^T s_N`` chunk by chunk of layer ``N - 1``
  into a small feedback memory, one command per output neuron and chunk, and a neuron of layer
  ``N - 1`` takes its word with its bias instead of reading column chunks.
* Update (symmetric estimate): weight layer by layer, rows ``r`` in order, chunks in order,
  one parameter per cycle in the twin's order (row-major, then the biases), each with one
  16-bit draw of the 32-bit Galois LFSR (16 steps per cycle); ``D = s+_r s+_i - s-_r s-_i``,
  stochastic rounding of the shift ``r_W`` (``r_b`` for biases), saturation, written back,
  one pipeline stage each (``EqPropPlan.update_stages``).
* Inference and learning share the datapath: an inference is the free phase; the prediction is
  the argmax of the output states after it, the lowest index on ties (the twin's ``predict``).

Streams
-------
``i``: ``n_0 / L`` beats per sample, each with ``L`` input states (``x``); the last beat's
``label`` and ``train`` say what to do (``train = 0``: inference only). ``o``: one beat per
sample with the prediction, after the update when training. ``obs`` (only with
``observe=True``): after every settling step, the states of layers 1..N (region in use, rows
of ``L`` states, the last layer's row padded with zeros); after every update, the weight banks'
words row by row (layer by layer, rows ``r < n_{k+1}``, chunks in order; word ``b`` of a beat is
bank ``b``) and then the biases, one per beat in lane 0. :meth:`EqPropLayout.decode_weights`
turns the words back into matrices.

Components
----------
The numbers (formats, memory map, schedule, cycles, block RAM) are the plan's,
:class:`~nmflow.golden.eqprop_plan.EqPropPlan`. The unit joins four components:

* :class:`~nmflow.rtl.eqprop_sequencer.EqPropSequencer`: the state machine (input load, phases,
  layer order, settling steps, drains, copies, the update's walk, dumps);
* :class:`~nmflow.rtl.eqprop_settling.SettlingDatapath`: settling commands to new states;
* :class:`~nmflow.rtl.eqprop_update.UpdateDatapath`: ``D``, the LFSR draw, rounding,
  saturation, write-back;
* :class:`~nmflow.rtl.eqprop_memories.EqPropMemories`: weight banks, bias memory, state banks
  and the host port.

The sequencer and the settling datapath both read the memories, each driving zero outside its
own states, so their addresses are OR-ed; a new state from the settling datapath takes the state
write port (the sequencer never writes states while the pipeline is busy).
"""

from amaranth.hdl import Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from ..golden.eqprop_fixed import LFSR, init_params
from ..golden.eqprop_layout import EqPropLayout
from ..golden.eqprop_plan import PIPELINE_DEPTH, SPRAM_WORDS, EqPropPlan
from .eqprop_memories import EqPropMemories, host_words, weight_words
from .eqprop_sequencer import EqPropSequencer, input_layout, prediction_layout
from .eqprop_settling import SettlingDatapath
from .eqprop_update import UpdateDatapath


def lfsr_jump_columns(steps):
    """The images of the 32 unit states after ``steps`` steps of the unit's Galois LFSR
    (GF(2)-linear): :meth:`LFSR.jump <nmflow.lfsr.Lfsr.jump>` of
    :data:`nmflow.golden.eqprop_fixed.LFSR`."""
    return list(LFSR.jump(steps))


__all__ = ["EqPropLayout", "EqPropPlan", "EqPropUnit", "EqPropSynthTop", "PIPELINE_DEPTH",
           "lfsr_jump_columns", "choose_plan"]


class EqPropUnit(wiring.Component):
    """The EP settling and learning unit (see the module docstring).

    Parameters
    ----------
    config : :class:`~nmflow.golden.eqprop_fixed.FixedEqPropConfig`
        Network, formats, ``T``, ``K``, ``beta_shift``, learning-rate shifts, ``half`` and the
        LFSR seed; ``batch`` must be 1, the estimate symmetric and the rounding stochastic.
    lanes : int
        Multiply-accumulate lanes (a power of two; every size but the last a multiple of it).
    params : dict, optional
        Initial ``{"W": [...], "b": [...]}`` (raw); :func:`init_params` of ``config`` if None.
    observe : bool
        Add the ``obs`` stream (states after each step, weights after each update).
    board : :class:`~nmflow.boards.board.Board`, optional
        The board the unit is built for: refuse a network whose memories need more block RAMs
        than it has (:meth:`~nmflow.golden.eqprop_plan.EqPropPlan.check_fit`). None: no check.
    host_port : bool
        Add the parameter port of the host link (below); without it the unit is unchanged.
    push : bool or None
        The output layer's push (:class:`~nmflow.golden.eqprop_plan.EqPropPlan`); None: where
        the plan finds it worth it.
    storage : str or None
        Binary weights: where the hidden weights live (``"memory"`` or ``"spram"``,
        :data:`~nmflow.golden.eqprop_plan.STORAGES`). None: ``"memory"``, or ``"spram"`` when
        ``board`` has single-port RAMs and the hidden weights do not fit its block RAMs beside
        the rest. With ``"spram"`` the hidden weights are 0 after configuration: load them
        through the host port before training (the pair codes come from ``params``).

    Members
    -------
    i : In(stream.Signature(input layout))
    o : Out(stream.Signature(prediction layout))
    obs : Out(stream.Signature(obs layout)), only with ``observe``
    busy : Out(1)
    step : Out(1)
        High for one cycle at the end of every settling step.
    p_sel, p_addr, p_we, p_wdata, p_rdata, p_seed, p_seed_we : only with ``host_port``
        While the sequencer is idle: ``p_addr`` addresses the weight banks (``p_sel`` 0, a write
        ``p_we`` stores ``p_wdata[b]`` in bank ``b``, binary weights: and its pair code), the
        biases (1, ``p_wdata[0]``), the state banks (2, read only) or the pair codes (3, read
        only); ``p_rdata`` is the raw word(s) at ``p_addr`` in the second cycle after
        ``p_addr`` and ``p_sel`` are set and held. ``p_seed_we`` loads ``p_seed`` into the LFSR.
    """

    def __init__(self, config, *, lanes=4, params=None, observe=False, board=None,
                 host_port=False, push=None, storage=None):
        self.plan = plan = choose_plan(config, lanes, push, storage, board)
        if board is not None:
            plan.check_fit(board)
        self.params = init_params(config) if params is None else params
        self.observe = bool(observe)
        self.host_port = bool(host_port)
        self.i_layout, self.o_layout = input_layout(plan), prediction_layout(plan)
        self.obs_layout = host_words(plan)
        members = {
            "i": In(stream.Signature(self.i_layout)),
            "o": Out(stream.Signature(self.o_layout)),
            "busy": Out(1),
            "step": Out(1),
        }
        if observe:
            members["obs"] = Out(stream.Signature(self.obs_layout))
        if host_port:
            # parameter access while the unit is idle (the host link's LOAD, READ, SEED)
            members.update({
                "p_sel": In(2),              # 0 weight banks, 1 biases, 2 states (read only)
                "p_addr": In(plan.host_addr_bits),
                "p_we": In(1),
                "p_wdata": In(weight_words(plan)),
                "p_rdata": Out(self.obs_layout),
                "p_seed": In(32),
                "p_seed_we": In(1),
            })
        super().__init__(members)

    # the plan's numbers, read by the link, the testbenches and the tests ---------------------
    config = property(lambda self: self.plan.config)
    layout = property(lambda self: self.plan.layout)
    lanes = property(lambda self: self.plan.lanes)
    acc_format = property(lambda self: self.plan.acc_format)
    label_bits = property(lambda self: self.plan.label_bits)
    word_bits = property(lambda self: self.plan.word_bits)
    p_addr_bits = property(lambda self: self.plan.host_addr_bits)

    def ideal_cycles_per_step(self):
        return self.plan.ideal_cycles_per_step()

    def issue_cycles_per_step(self, nudged=False):
        """Cycles of one settling step as this unit schedules it (commands, drains, control)."""
        return self.plan.issue_cycles_per_step(nudged)

    def elaborate(self, platform):
        m = Module()
        plan, L = self.plan, self.plan.lanes
        m.submodules.sequencer = seq = EqPropSequencer(plan, observe=self.observe)
        m.submodules.settling = settle = SettlingDatapath(plan)
        m.submodules.update = update = UpdateDatapath(plan, seedable=self.host_port)
        m.submodules.memories = mem = EqPropMemories(plan, self.params,
                                                     host_port=self.host_port)

        wiring.connect(m, wiring.flipped(self.i), seq.i)
        wiring.connect(m, seq.o, wiring.flipped(self.o))
        if self.observe:
            wiring.connect(m, seq.obs, wiring.flipped(self.obs))
        m.d.comb += [self.busy.eq(seq.busy), self.step.eq(seq.step), mem.host.eq(seq.idle)]
        wiring.connect(m, seq.settle, settle.cmd)
        wiring.connect(m, seq.update, update.ctl)
        m.d.comb += [settle.region.eq(seq.region), settle.phase.eq(seq.phase),
                     settle.label.eq(seq.label), seq.prediction.eq(settle.prediction)]

        # reads: the sequencer's and the settling datapath's addresses (each zero when idle);
        # with binary weights the settling datapath reads the pair codes, the sequencer (for
        # the update and the dump) the hidden weights, and with observation the codes too
        m.d.comb += [mem.biases.addr.eq(seq.biases.addr | settle.biases.addr),
                     mem.states.addr.eq(seq.states.addr | settle.states.addr)]
        for client in (seq, settle):
            m.d.comb += [client.biases.data.eq(mem.biases.data),
                         client.states.data.eq(mem.states.data)]
        if plan.config.weights == "binary":
            dump = seq.codes.addr if self.observe else 0
            m.d.comb += [mem.weights.addr[b].eq(seq.weights.addr) for b in range(L)]
            m.d.comb += [mem.codes.addr[b].eq(dump | settle.weights.addr[b]) for b in range(L)]
            m.d.comb += [seq.weights.data.eq(mem.weights.data),
                         settle.weights.data.eq(mem.codes.data)]
            if self.observe:
                m.d.comb += seq.codes.data.eq(mem.codes.data)
        else:
            m.d.comb += [mem.weights.addr[b].eq(seq.weights.addr | settle.weights.addr[b])
                         for b in range(L)]
            m.d.comb += [client.weights.data.eq(mem.weights.data) for client in (seq, settle)]
        if plan.storage == "spram":
            m.d.comb += seq.weight_writing.eq(update.weight_write.en.any())
        m.d.comb += [update.weight_words.eq(mem.weights.data),
                     update.bias_word.eq(mem.biases.data),
                     update.state_words.eq(mem.states.data)]

        # writes: the settling datapath's new state, else the sequencer's rows; the update's
        # parameters
        with m.If(settle.writing):
            m.d.comb += _write(mem.state_write, settle.state_write)
        with m.Else():
            m.d.comb += _write(mem.state_write, seq.state_write)
        wiring.connect(m, update.weight_write, mem.weight_write)
        wiring.connect(m, update.bias_write, mem.bias_write)

        if self.host_port:
            m.d.comb += [mem.p_sel.eq(self.p_sel), mem.p_addr.eq(self.p_addr),
                         mem.p_we.eq(self.p_we), mem.p_wdata.eq(self.p_wdata),
                         self.p_rdata.eq(mem.p_rdata), update.seed.eq(self.p_seed),
                         update.seed_we.eq(seq.idle & self.p_seed_we)]
        return m


def choose_plan(config, lanes, push=None, storage=None, board=None):
    """The unit's :class:`EqPropPlan`; ``storage`` None: ``"memory"``, or ``"spram"`` when the
    weights are binary, the memories with block-RAM hidden weights need more block RAMs than
    ``board`` has, and it has a single-port RAM for every bank."""
    plan = EqPropPlan(config, lanes, push, storage or "memory")
    if storage is None and board is not None and config.weights == "binary" \
            and plan.block_rams(board) > board.block_rams \
            and lanes <= getattr(board, "sprams", 0) \
            and plan.layout.wdepth <= SPRAM_WORDS:
        plan = EqPropPlan(config, lanes, push, "spram")
    return plan


def _write(port, writer):
    """Statements that drive the write port ``port`` from the write request ``writer``."""
    return [port.addr.eq(writer.addr), port.data.eq(writer.data), port.en.eq(writer.en)]


class EqPropSynthTop(wiring.Component):
    """A minimal board core for synthesis figures: the unit fed by a 32-bit LFSR (inputs,
    labels, train/infer), its prediction and ``busy`` XOR-reduced onto ``tx`` (so nothing is
    optimised away); ``rx`` is mixed into the LFSR. Not a host link: it only gives logic cells,
    block RAMs and Fmax of the unit on a board.

    ``EqPropSynthTop(config, lanes=4, clk_freq=..., board=None)`` (``clk_freq`` is ignored: the
    factory signature of :class:`~nmflow.boards.top.BoardTop`; ``board`` as for the unit).
    """

    def __init__(self, config, *, lanes=4, clk_freq=None, board=None):
        self._unit = EqPropUnit(config, lanes=lanes, board=board)
        super().__init__({"rx": In(1), "tx": Out(1)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.unit = unit = self._unit
        src = Signal(32, init=1)
        m.d.sync += src.eq(LFSR.next(src) ^ self.rx)
        sw = unit.config.state.width
        for b in range(unit.lanes):
            m.d.comb += unit.i.payload.x[b].eq(src[(b * 5) % 24:(b * 5) % 24 + sw])
        m.d.comb += [unit.i.payload.label.eq(src[24:24 + unit.label_bits]),
                     unit.i.payload.train.eq(src[31]), unit.i.valid.eq(1),
                     unit.o.ready.eq(1)]
        out = Signal()
        m.d.sync += out.eq(unit.o.payload.label.xor() ^ unit.o.valid ^ unit.busy ^ unit.step)
        m.d.comb += self.tx.eq(out)
        return m
