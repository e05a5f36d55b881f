"""The EqProp unit's sequencer: one state machine that runs a sample from its input beats to its
prediction.

``IDLE`` takes the first input beat, ``LOAD`` the others (``x`` into the state banks' first
rows); ``CLEAR`` zeroes region A (the free phase starts from ``s = 0``). A phase is ``T``
(free) or ``K`` (nudged) settling steps; a step issues the settling commands of every state
layer in :attr:`~nmflow.golden.eqprop_plan.EqPropPlan.blocks` (``LAYERk``: each neuron's
self-read in a nudged phase's output layer, its row chunks, its column chunks; ``PUSH``: the
output layer's push, chunk by chunk of layer ``N - 1``, output neuron by output neuron) with a
drain after a group where the plan has one (``DRAINi``, :attr:`~nmflow.golden.eqprop_plan.
EqPropPlan.drain_cycles`), then ``STEP_END`` (the ``step`` pulse; with
observation the states go out on ``obs``) and ``STEP_NEXT`` (the next step, or the phase's end).
After the free phase an inference sends its prediction; a training sample copies region A into
region B (``COPY``) for the ``+beta`` phase, then into region C for the ``-beta`` phase, and
then walks the parameters for the update (``Uk_*``, layer by layer, row by row, chunk by chunk,
then the layer's biases; with single-port hidden banks a chunk's read waits in ``Uk_CH0`` while
a weight is written), dumps the parameters with observation (binary weights: then the pair
codes), and sends its prediction.
"""

from amaranth.hdl import Const, Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..golden.eqprop_plan import FREE, PLUS, PUSH as PUSH_BLOCK
from .eqprop_memories import (bias_addr_shape, code_words, host_words, read_signature,
                              state_addr_shape, state_words, weight_addr_shape, weight_words,
                              write_signature)
from .eqprop_settling import (COLUMN, PUSH, ROW, SELF, chunk_shape, neuron_shape,
                              settling_command_layout)
from .eqprop_update import update_control_signature

__all__ = ["EqPropSequencer", "input_layout", "prediction_layout"]


def input_layout(plan):
    """An input beat: ``L`` input states, and the sample's ``label`` and ``train`` (taken from
    its last beat)."""
    return data.StructLayout({"x": data.ArrayLayout(plan.state_format.shape(), plan.lanes),
                              "label": unsigned(plan.label_bits), "train": 1})


def prediction_layout(plan):
    return data.StructLayout({"label": unsigned(plan.label_bits)})


class EqPropSequencer(wiring.Component):
    """The unit's state machine (see the module docstring).

    Parameters
    ----------
    plan : :class:`~nmflow.golden.eqprop_plan.EqPropPlan`
    observe : bool
        Add ``obs`` and the dump states.

    Members
    -------
    i : In(stream.Signature(input_layout(plan)))
        Taken while idle with no prediction waiting, and while loading.
    o : Out(stream.Signature(prediction_layout(plan)))
    obs : Out(stream.Signature(host_words(plan))), only with ``observe``
    busy, step, idle : Out(1)
        Running a sample; the end of a settling step (one cycle); in ``IDLE`` (the host port
        may use the memories). ``idle`` is a register, set on every entry into ``IDLE`` and
        cleared on leaving it: it selects the host's addresses over the clients' in front of
        every memory, and decoded from the state it began the longest path of the ULX3S
        build at 16 lanes (the state decode, then the address multiplexers of the 16 code
        banks, then their distributed RAM).
    settle : Out(stream.Signature(settling_command_layout(plan), always_ready=True))
        Settling commands, one per cycle in the ``LAYERk`` states.
    region, phase, label : Out
        The state region being settled, the phase (``FREE``, ``PLUS``, ``MINUS``), the label.
    prediction : In(label_bits)
        The settling datapath's argmax, taken at the end of the free phase.
    update : Out(update_control_signature(plan))
    weights : Out(read_signature(one address for every bank, weight_words))
    codes : Out(read_signature(one address for every bank, code_words)), binary weights with
        ``observe`` only (the dump of the pair codes)
    weight_writing : In(1), with ``storage="spram"`` only
        A weight is written in this cycle (the single-port hidden banks cannot read).
    biases, states : Out(read_signature(...))
    state_write : Out(write_signature(state row address, state_words, one enable per bank))
        The sequencer's own memory accesses (input load, clear, copy, update reads, dumps);
        zero outside its states.
    """

    def __init__(self, plan, *, observe=False):
        self._plan = plan
        self._observe = bool(observe)
        L = plan.lanes
        members = {
            "i": In(stream.Signature(input_layout(plan))),
            "o": Out(stream.Signature(prediction_layout(plan))),
            "busy": Out(1), "step": Out(1), "idle": Out(1),
            "settle": Out(stream.Signature(settling_command_layout(plan), always_ready=True)),
            "region": Out(state_addr_shape(plan)), "phase": Out(2),
            "label": Out(plan.label_bits), "prediction": In(plan.label_bits),
            "update": Out(update_control_signature(plan)),
            "weights": Out(read_signature(weight_addr_shape(plan), weight_words(plan))),
            "biases": Out(read_signature(bias_addr_shape(plan), plan.weight_format.shape())),
            "states": Out(read_signature(state_addr_shape(plan), state_words(plan))),
            "state_write": Out(write_signature(state_addr_shape(plan), state_words(plan), L)),
        }
        if observe:
            members["obs"] = Out(stream.Signature(host_words(plan)))
            if plan.config.weights == "binary":
                members["codes"] = Out(read_signature(weight_addr_shape(plan), code_words(plan)))
        if plan.storage == "spram":
            members["weight_writing"] = In(1)
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        plan, cfg, lay = self._plan, self._plan.config, self._plan.layout
        # the registers: the settling walk (``neuron``, ``chunk`` of its ``part``), the update's
        # walk (``row``, ``chunk``, ``lane``: column ``chunk L + lane``), ``count`` for rows,
        # drains and dumps
        r = _Registers(
            neuron=neuron_shape(plan), chunk=chunk_shape(plan), part=2,
            steps_left=range(max(cfg.T, cfg.K) + 1), train=1, o_valid=1, obs_valid=1,
            obs_data=host_words(plan), row=neuron_shape(plan), lane=range(max(plan.lanes, 2)),
            count=range(max(lay.sdepth, lay.wdepth, lay.bdepth, *plan.drain_cycles) + 2),
            waddr=weight_addr_shape(plan))
        r.idle = Signal(init=1, name="idle")
        r.obs_ready = self.obs.ready if self._observe else Const(1)
        if self._observe:
            m.d.comb += [self.obs.valid.eq(r.obs_valid), self.obs.payload.eq(r.obs_data)]
        m.d.comb += [self.o.valid.eq(r.o_valid), self.update.row.eq(r.row),
                     self.update.lane.eq(r.lane), self.idle.eq(r.idle),
                     self.busy.eq(~r.idle),
                     self.settle.payload.neuron.eq(r.neuron),
                     self.settle.payload.chunk.eq(r.chunk), self.settle.payload.part.eq(r.part)]
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += r.o_valid.eq(0)

        with m.FSM(name="seq"):
            self._load(m, r)
            for index, block in enumerate(plan.blocks):
                if block == PUSH_BLOCK:
                    self._push(m, r, index)
                else:
                    self._settle_layer(m, r, index)
            self._step_end(m, r)
            self._copy(m, r)
            for k in range(plan.N):
                self._update_layer(m, r, k)
            after = "WDUMP_READ" if self._observe else "FINISH"
            # the last write leaves the update pipeline: one state per cycle of its latency
            waits = ["U_DONE"] + [f"U_DONE{n}" for n in range(2, plan.update_latency + 1)]
            for state, following in zip(waits, waits[1:] + [after]):
                with m.State(state):
                    m.d.sync += r.count.eq(0)
                    m.next = following
            if self._observe:
                self._dump_parameters(m, r)
            with m.State("FINISH"):
                m.d.sync += r.o_valid.eq(1)
                self._enter_idle(m, r)
        return m

    # -- helpers ---------------------------------------------------------------------------------
    @staticmethod
    def _enter_idle(m, r):
        """Go to ``IDLE`` (every transition into it, so that ``idle`` is the state's register)."""
        m.d.sync += r.idle.eq(1)
        m.next = "IDLE"

    def _first_part(self, k):
        """The first command of a neuron of state layer ``k``: the self-read of an output neuron
        in a nudged phase, else its first row chunk."""
        return Mux(self.phase != FREE, SELF, ROW) if k == self._plan.N else ROW

    def _start_layer(self, r, k):
        """Statements that enter block ``k`` of the step: state layer ``k``'s first neuron, or
        the push's first command."""
        if k == PUSH_BLOCK:
            return [r.neuron.eq(0), r.chunk.eq(0), r.part.eq(PUSH)]
        return [r.neuron.eq(0), r.chunk.eq(0), r.part.eq(self._first_part(k))]

    @staticmethod
    def _block_state(k):
        """The state that issues block ``k``."""
        return "PUSH" if k == PUSH_BLOCK else f"LAYER{k}"

    def _leave_block(self, m, r, index):
        """Statements and next state after the last command of block ``index``: its drain, or
        the next block."""
        order = self._plan.blocks
        if self._plan.drain_cycles[index]:
            m.d.sync += r.count.eq(0)
            m.next = f"DRAIN{index}"
        else:
            m.d.sync += self._start_layer(r, order[index + 1])
            m.next = self._block_state(order[index + 1])

    def _push(self, m, r, index):
        """``PUSH``: one command a cycle, ``neuron`` the output neuron (inner), ``chunk`` the
        chunk of layer ``N - 1`` (outer); then the drain or the next block."""
        plan = self._plan
        with m.State("PUSH"):
            m.d.comb += [self.settle.valid.eq(1), self.settle.payload.layer[plan.N - 1].eq(1)]
            with m.If(r.neuron == plan.n_classes - 1):
                m.d.comb += self.settle.payload.last.eq(1)
                m.d.sync += [r.neuron.eq(0), r.chunk.eq(r.chunk + 1)]
                with m.If(r.chunk == plan.push_chunks - 1):
                    self._leave_block(m, r, index)
            with m.Else():
                m.d.sync += r.neuron.eq(r.neuron + 1)
        self._drain(m, r, index)

    def _write_row(self, m, addr, words):
        """Write a whole state row (every bank) at ``addr``."""
        m.d.comb += self.state_write.addr.eq(addr)
        m.d.comb += [en.eq(1) for en in self.state_write.en]
        m.d.comb += [self.state_write.data[b].eq(words[b]) for b in range(self._plan.lanes)]

    def _dump(self, m, r, words, last, then, again):
        """The hold state of a dump: offer ``words`` on ``obs``; once taken, count, and go to
        ``then`` after the word numbered ``last``, else to ``again``."""
        with m.If(~r.obs_valid):
            m.d.sync += r.obs_valid.eq(1)
            m.d.sync += [r.obs_data[b].eq(words[b]) for b in range(self._plan.lanes)]
        with m.Elif(r.obs_ready):
            m.d.sync += [r.obs_valid.eq(0), r.count.eq(r.count + 1)]
            with m.If(r.count == last):
                m.d.sync += r.count.eq(0)
                m.next = then
            with m.Else():
                m.next = again

    # -- the states --------------------------------------------------------------------------
    def _load(self, m, r):
        """``IDLE``, ``LOAD``: the input beats into the state banks' first rows; ``CLEAR``."""
        plan, lay, cfg = self._plan, self._plan.layout, self._plan.config
        beat = self.i.payload
        first_layer = plan.blocks[0]
        with m.State("IDLE"):
            m.d.comb += self.i.ready.eq(~r.o_valid)
            m.d.sync += r.count.eq(0)
            with m.If(self.i.valid & ~r.o_valid):
                m.d.sync += r.idle.eq(0)
                self._write_row(m, 0, beat.x)
                m.d.sync += [r.count.eq(1), self.label.eq(beat.label), r.train.eq(beat.train)]
                if lay.x_rows == 1:
                    m.next = "CLEAR"
                    m.d.sync += r.count.eq(0)
                else:
                    m.next = "LOAD"
        with m.State("LOAD"):
            m.d.comb += self.i.ready.eq(1)
            with m.If(self.i.valid):
                self._write_row(m, r.count, beat.x)
                m.d.sync += [r.count.eq(r.count + 1), self.label.eq(beat.label),
                             r.train.eq(beat.train)]
                with m.If(r.count == lay.x_rows - 1):
                    m.d.sync += r.count.eq(0)
                    m.next = "CLEAR"
        with m.State("CLEAR"):
            # region A to zero: the free phase starts from s = 0
            self._write_row(m, lay.region_base(0) + r.count, [0] * plan.lanes)
            m.d.sync += r.count.eq(r.count + 1)
            with m.If(r.count == lay.region_rows - 1):
                m.d.sync += [self.region.eq(lay.region_base(0)), self.phase.eq(FREE),
                             r.steps_left.eq(cfg.T), *self._start_layer(r, first_layer)]
                m.next = self._block_state(first_layer)

    def _settle_layer(self, m, r, index):
        """``LAYERk`` (``k = blocks[index]``): one command a cycle, neuron by neuron; then
        the next layer of the group, or ``DRAINi``."""
        plan = self._plan
        k = plan.blocks[index]
        rows, cols = plan.row_chunks(k), plan.column_chunks(k)

        def next_neuron():
            with m.If(r.neuron == plan.sizes[k] - 1):
                self._leave_block(m, r, index)
            with m.Else():
                m.d.sync += [r.neuron.eq(r.neuron + 1), r.chunk.eq(0),
                             r.part.eq(self._first_part(k))]

        with m.State(f"LAYER{k}"):
            m.d.comb += [self.settle.valid.eq(1), self.settle.payload.layer[k - 1].eq(1)]
            with m.If(r.part == SELF):
                m.d.sync += [r.part.eq(ROW), r.chunk.eq(0)]
            with m.Elif(r.part == ROW):
                with m.If(r.chunk == rows - 1):
                    if cols:
                        m.d.sync += [r.part.eq(COLUMN), r.chunk.eq(0)]
                    else:
                        m.d.comb += self.settle.payload.last.eq(1)
                        next_neuron()
                with m.Else():
                    m.d.sync += r.chunk.eq(r.chunk + 1)
            if cols:
                with m.Else():
                    with m.If(r.chunk == cols - 1):
                        m.d.comb += self.settle.payload.last.eq(1)
                        next_neuron()
                    with m.Else():
                        m.d.sync += r.chunk.eq(r.chunk + 1)
        self._drain(m, r, index)

    def _drain(self, m, r, index):
        """``DRAINi`` after block ``index`` (if the plan drains there): wait, then the next
        block or ``STEP_END``."""
        order, drain = self._plan.blocks, self._plan.drain_cycles[index]
        if drain:
            with m.State(f"DRAIN{index}"):
                m.d.sync += r.count.eq(r.count + 1)
                with m.If(r.count == drain - 1):
                    m.d.sync += r.count.eq(0)
                    if index + 1 < len(order):
                        m.d.sync += self._start_layer(r, order[index + 1])
                        m.next = self._block_state(order[index + 1])
                    else:
                        m.next = "STEP_END"

    def _step_end(self, m, r):
        """``STEP_END``, the state dump (``SDUMP_*``), ``STEP_NEXT``: the next step, or the end
        of the phase (the prediction after the free phase; the next phase or the update)."""
        plan, lay = self._plan, self._plan.layout
        first_layer = plan.blocks[0]
        with m.State("STEP_END"):
            m.d.comb += self.step.eq(1)
            m.d.sync += [r.steps_left.eq(r.steps_left - 1), r.count.eq(0)]
            m.next = "SDUMP_READ" if self._observe else "STEP_NEXT"
        if self._observe:
            with m.State("SDUMP_READ"):
                m.d.comb += self.states.addr.eq(self.region + r.count)
                m.next = "SDUMP_HOLD"
            with m.State("SDUMP_HOLD"):
                self._dump(m, r, self.states.data, lay.region_rows - 1, "STEP_NEXT", "SDUMP_READ")
        with m.State("STEP_NEXT"):
            with m.If(r.steps_left != 0):
                m.d.sync += self._start_layer(r, first_layer)
                m.next = self._block_state(first_layer)
            with m.Elif(self.phase == FREE):
                m.d.sync += self.o.payload.label.eq(self.prediction)
                with m.If(r.train):
                    m.d.sync += [r.count.eq(0), self.region.eq(lay.region_base(1))]
                    m.next = "COPY_READ"
                with m.Else():
                    m.d.sync += r.o_valid.eq(1)
                    self._enter_idle(m, r)
            with m.Elif(self.phase == PLUS):
                m.d.sync += [r.count.eq(0), self.region.eq(lay.region_base(2))]
                m.next = "COPY_READ"
            with m.Else():
                m.d.sync += r.row.eq(0)
                m.next = "U0_TOP0"

    def _copy(self, m, r):
        """``COPY_*``: region A (``s*``) into the region in ``region``, row by row, then the
        nudged phase there."""
        plan, lay = self._plan, self._plan.layout
        first_layer = plan.blocks[0]
        first_part = PUSH if first_layer == PUSH_BLOCK else SELF if first_layer == plan.N else ROW
        with m.State("COPY_READ"):
            m.d.comb += self.states.addr.eq(lay.region_base(0) + r.count)
            m.next = "COPY_WRITE"
        with m.State("COPY_WRITE"):
            self._write_row(m, self.region + r.count, self.states.data)
            m.d.sync += r.count.eq(r.count + 1)
            with m.If(r.count == lay.region_rows - 1):
                # the output layer of a nudged phase starts with its self-read (``phase`` is
                # only being set in this cycle)
                m.d.sync += [r.steps_left.eq(plan.config.K), *self._start_layer(r, first_layer),
                             r.part.eq(first_part), self.phase.eq(self.phase + 1)]
                m.next = self._block_state(first_layer)
            with m.Else():
                m.next = "COPY_READ"

    def _update_layer(self, m, r, k):
        """``Uk_*``: the weights of layer ``k`` row by row (``TOP``: read ``s+_r``, ``s-_r``;
        ``CH``: read a chunk of weights and the ``s+``, ``s-`` chunks; ``T``: one weight a
        cycle), then its biases (``B``); then the next layer or ``U_DONE``. The chunk's weight
        address ``wbase_k + row chunks + chunk`` is a register (``waddr``), set at the row's
        start and counted up chunk by chunk: the read address goes to the memories (the SPRAMs
        at the die's edge) straight from it."""
        plan, lay = self._plan, self._plan.layout
        lg, ctl = plan.lane_bits, self.update
        chunks, rows = plan.sizes[k] // plan.lanes, plan.sizes[k + 1]
        weight_addr = r.waddr

        def row_state(region):
            return lay.region_base(region) + lay.soff[k + 1] + (r.row >> lg)

        def chunk_states(region):
            """The chunk of state layer ``k`` (``x`` for ``k = 0``) in a region."""
            return r.chunk if k == 0 else lay.region_base(region) + lay.soff[k] + r.chunk

        with m.State(f"U{k}_TOP0"):
            m.d.comb += self.states.addr.eq(row_state(1))
            m.next = f"U{k}_TOP1"
        with m.State(f"U{k}_TOP1"):
            m.d.comb += [self.states.addr.eq(row_state(2)), ctl.take_plus_row.eq(1)]
            m.d.sync += [r.chunk.eq(0), r.waddr.eq(lay.wbase[k] + r.row * chunks)]
            m.next = f"U{k}_TOP2"
        with m.State(f"U{k}_TOP2"):
            m.d.comb += ctl.take_minus_row.eq(1)
            m.next = f"U{k}_CH0"
        with m.State(f"U{k}_CH0"):
            m.d.comb += [self.states.addr.eq(chunk_states(1)), self.weights.addr.eq(weight_addr)]
            if plan.storage == "spram":
                # the hidden banks' one port is the write's in this cycle: read in the next
                with m.If(~self.weight_writing):
                    m.next = f"U{k}_CH1"
            else:
                m.next = f"U{k}_CH1"
        with m.State(f"U{k}_CH1"):
            m.d.comb += [self.states.addr.eq(chunk_states(2)), ctl.take_plus_chunk.eq(1)]
            m.next = f"U{k}_CH2"
        with m.State(f"U{k}_CH2"):
            m.d.comb += ctl.take_minus_chunk.eq(1)
            m.d.sync += r.lane.eq(0)
            m.next = f"U{k}_T"
        with m.State(f"U{k}_T"):
            m.d.comb += [ctl.issue_weight.eq(1), ctl.kind.eq(2 * k), ctl.addr.eq(weight_addr)]
            m.d.sync += r.lane.eq(r.lane + 1)
            with m.If(r.lane == plan.lanes - 1):
                with m.If(r.chunk == chunks - 1):
                    with m.If(r.row == rows - 1):
                        m.d.sync += r.row.eq(0)
                        m.next = f"U{k}_B0"
                    with m.Else():
                        m.d.sync += r.row.eq(r.row + 1)
                        m.next = f"U{k}_TOP0"
                with m.Else():
                    m.d.sync += [r.chunk.eq(r.chunk + 1), r.waddr.eq(r.waddr + 1)]
                    m.next = f"U{k}_CH0"
        # the biases of layer k
        with m.State(f"U{k}_B0"):
            m.d.comb += [self.states.addr.eq(row_state(1)),
                         self.biases.addr.eq(lay.bbase[k] + r.row)]
            m.next = f"U{k}_B1"
        with m.State(f"U{k}_B1"):
            m.d.comb += [self.states.addr.eq(row_state(2)), ctl.take_plus_row.eq(1),
                         ctl.take_old_bias.eq(1)]
            m.next = f"U{k}_B2"
        with m.State(f"U{k}_B2"):
            m.d.comb += [ctl.issue_bias.eq(1), ctl.kind.eq(2 * k + 1),
                         ctl.addr.eq(lay.bbase[k] + r.row)]
            with m.If(r.row == rows - 1):
                m.d.sync += r.row.eq(0)
                m.next = f"U{k + 1}_TOP0" if k + 1 < plan.N else "U_DONE"
            with m.Else():
                m.d.sync += r.row.eq(r.row + 1)
                m.next = f"U{k}_B0"

    def _dump_parameters(self, m, r):
        """``WDUMP*``, ``BDUMP*`` (binary weights: then ``CDUMP*``): the weights (rows
        ``r < n_{k+1}`` of every layer, in address order), the biases, and the pair codes in the
        weights' order, one beat each on ``obs``."""
        plan, lay = self._plan, self._plan.layout
        L = plan.lanes
        binary = plan.config.weights == "binary"
        self._dump_banks(m, r, "W", self.weights, "BDUMP_READ")
        with m.State("WDUMP_READ"):
            m.next = "WDUMP0_READ"
        with m.State("BDUMP_READ"):
            m.d.comb += self.biases.addr.eq(r.count)
            m.next = "BDUMP_HOLD"
        with m.State("BDUMP_HOLD"):
            words = [self.biases.data.as_unsigned()] + [0] * (L - 1)
            self._dump(m, r, words, lay.bdepth - 1, "CDUMP0_READ" if binary else "FINISH",
                       "BDUMP_READ")
        if binary:
            self._dump_banks(m, r, "C", self.codes, "FINISH")

    def _dump_banks(self, m, r, prefix, port, then):
        """``{prefix}DUMPk_*``: the words ``port`` reads at the weights' addresses (rows
        ``r < n_{k+1}`` of every layer ``k``), word ``b`` of a beat from bank ``b``; then
        ``then``."""
        plan, lay = self._plan, self._plan.layout
        sizes, N, L = plan.sizes, plan.N, plan.lanes
        for k in range(N):
            start, n = lay.wbase[k], sizes[k + 1] * (sizes[k] // L)
            with m.State(f"{prefix}DUMP{k}_READ"):
                m.d.comb += port.addr.eq(start + r.count)
                m.next = f"{prefix}DUMP{k}_HOLD"
            with m.State(f"{prefix}DUMP{k}_HOLD"):
                words = [w.as_unsigned() for w in port.data]
                self._dump(m, r, words, n - 1,
                           f"{prefix}DUMP{k + 1}_READ" if k + 1 < N else then,
                           f"{prefix}DUMP{k}_READ")


class _Registers:
    """The sequencer's registers, by name: ``_Registers(name=shape, ...)``."""

    def __init__(self, **shapes):
        for name, shape in shapes.items():
            setattr(self, name, Signal(shape, name=name))
