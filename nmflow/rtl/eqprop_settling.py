"""The EqProp unit's settling datapath: one command a cycle, from its addresses to the new state.

A settling command is one chunk of one neuron's pre-activation (or, in a nudged phase, the
read of an output neuron's old state). Its stages (:data:`~nmflow.golden.eqprop_plan.
SETTLING_PIPELINE`), one cycle each: the issue computes the memory addresses and registers them;
the memories read; the states are rotated onto the lanes; the lanes multiply (binary weights:
the pair codes' ``+s``, ``-s`` or 0 as the ideal sense amplifier reads them, summed in
groups of :data:`BINARY_GROUP` lanes); the adder tree sums them in pairs and then the pairs
(binary weights: the groups, then the chunk's sum times ``a_k``); the accumulator adds the sum (a
self-read instead registers the output neuron's nudge); after the neuron's last command the
nudge and the rounding's half are added, the sum shifted and clipped, and the new state written
back in the next cycle. :data:`~nmflow.golden.eqprop_plan.PIPELINE_DEPTH` cycles from the issue
to the write.

With the plan's output-side push (:attr:`~nmflow.golden.eqprop_plan.EqPropPlan.push`) a
:data:`PUSH` command reads an output neuron's row chunk of weights and its state; the rotation
turns the weights (lane ``l`` takes bank ``(l + o) mod L``: neuron ``cL + l``) and broadcasts
the state, the lanes multiply as for any chunk, and each lane adds its product to its feedback
sum; after the chunk's last output neuron the ``L`` sums go to the feedback memory (row ``c``,
:data:`~nmflow.golden.eqprop_plan.FEEDBACK_DEPTH` cycles after the issue), which layer
``N - 1``'s first row chunk reads like the bias (binary weights: the word times ``a_{N-1}``).
"""

from amaranth.hdl import Array, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..golden.eqprop_plan import FREE, MINUS, PLUS
from ..golden.pairs import MINUS as CODE_MINUS
from ..golden.pairs import PLUS as CODE_PLUS
from .eqprop_memories import (bias_addr_shape, code_words, read_signature, state_addr_shape,
                              state_words, weight_addr_shape, weight_words, write_signature)

__all__ = ["SettlingDatapath", "settling_command_layout", "SELF", "ROW", "COLUMN", "PUSH",
           "neuron_shape", "chunk_shape", "bank_of"]

#: Lanes whose binary ``+-s`` the products stage sums before the adder tree sums the groups.
BINARY_GROUP = 4

#: ``part`` of a settling command: the output neuron's old state (for the nudge), a row chunk
#: (``W_{k-1} s_{k-1}``, ``L`` inputs from below), a column chunk (``W_k^T s_{k+1}``, ``L``
#: feedbacks from above), a push (output neuron ``neuron``'s state times its row chunk
#: ``chunk`` of weights, into the feedback sums of layer ``N - 1``).
SELF, ROW, COLUMN, PUSH = 0, 1, 2, 3


def neuron_shape(plan):
    """A neuron index within a state layer (one more value: the update's row counter)."""
    return range(max(plan.max_neurons + 1, 2))


def chunk_shape(plan):
    return range(max(max(plan.layout.chunks), 2) + 1)


def bank_of(value, plan):
    """The bank of state or weight index ``value``: ``value mod L`` (a 1-bit 0 for one lane)."""
    lg = plan.lane_bits
    return value[:lg] if lg else Const(0, 1)


def settling_command_layout(plan):
    """A settling command: ``layer`` one-hot (bit ``k - 1`` for state layer ``k``), its
    ``part`` (:data:`SELF`, :data:`ROW`, :data:`COLUMN`), ``neuron`` and ``chunk`` within the
    part, and ``last``: the neuron's last command (its state is written after it)."""
    return data.StructLayout({
        "layer": unsigned(plan.N), "part": unsigned(2), "neuron": neuron_shape(plan),
        "chunk": chunk_shape(plan), "last": 1,
    })


def _tag_layout(plan):
    """What travels with a command down the pipeline (with binary weights also ``wlayer``, the
    weight layer whose ``a_k`` scales the chunk)."""
    fields = {"valid": 1, "self_read": 1, "first": 1, "last": 1, "top": 1,
              "waddr": state_addr_shape(plan), "neuron": neuron_shape(plan)}
    if plan.config.weights == "binary":
        fields["wlayer"] = range(max(plan.N, 2))
    if plan.push:
        # a push command; a first row chunk of layer N - 1 (takes its feedback word)
        fields.update({"push": 1, "feedback": 1})
    return data.StructLayout(fields)


class SettlingDatapath(wiring.Component):
    """Settling commands in, new states out (see the module docstring).

    Parameters
    ----------
    plan : :class:`~nmflow.golden.eqprop_plan.EqPropPlan`

    Members
    -------
    cmd : In(stream.Signature(settling_command_layout(plan), always_ready=True))
        One command per cycle at most (``valid`` while the sequencer issues).
    region : In(range(sdepth))
        Base row of the state region the phase settles in.
    phase : In(2)
        :data:`~nmflow.golden.eqprop_plan.FREE`, ``PLUS`` or ``MINUS``: the output layer's nudge.
    label : In(label_bits)
        The sample's class (the nudge's target).
    weights, biases, states : Out(read_signature(...))
        The memory reads of the issued command: one address per weight bank (binary weights:
        per code bank, the pair codes), the bias of the neuron (with its first row chunk), one
        state row. Zero while ``cmd`` is not valid.
    state_write : Out(write_signature(state row address, state_words, one enable per bank))
        The new state of a neuron, to its bank; taken while ``writing``.
    writing : Out(1)
        A neuron's new state is being written (never while the sequencer writes states).
    prediction : Out(label_bits)
        Index of the largest output state written since the first output neuron, the lowest
        on ties (the argmax of the output layer after a full step).
    """

    def __init__(self, plan):
        self._plan = plan
        L = plan.lanes
        super().__init__({
            "cmd": In(stream.Signature(settling_command_layout(plan), always_ready=True)),
            "region": In(state_addr_shape(plan)),
            "phase": In(2),
            "label": In(plan.label_bits),
            "weights": Out(read_signature(
                data.ArrayLayout(weight_addr_shape(plan), L),
                code_words(plan) if plan.config.weights == "binary" else weight_words(plan))),
            "biases": Out(read_signature(bias_addr_shape(plan), plan.weight_format.shape())),
            "states": Out(read_signature(state_addr_shape(plan), state_words(plan))),
            "state_write": Out(write_signature(state_addr_shape(plan), state_words(plan), L)),
            "writing": Out(1),
            "prediction": Out(plan.label_bits),
        })

    def elaborate(self, platform):
        m = Module()
        plan = self._plan
        self._feedback = None
        if plan.push:
            # the push's feedback memory: row c holds the L feedback sums of chunk c
            m.submodules.feedback = memory = Memory(
                shape=data.ArrayLayout(plan.feedback_format.shape(), plan.lanes),
                depth=max(plan.push_chunks, 2), init=[])
            self._feedback = (memory.read_port(), memory.write_port())
        addressed = self._issue(m)
        stage = self._read_and_multiply(m, addressed)
        if plan.push:
            self._push_sums(m, stage)
        acc_sum, result = self._accumulate(m, self._adder_tree(m, stage))
        self._write(m, acc_sum, result)
        return m

    def _issue(self, m):
        """Stage ``issue``: the addresses of the command's reads, registered into the memory
        ports (zero after a cycle without a command), and its tag; returns the registered tag."""
        plan, lay, cmd = self._plan, self._plan.layout, self.cmd.payload
        L, lg, N, sizes = plan.lanes, plan.lane_bits, plan.N, plan.sizes
        binary = plan.config.weights == "binary"
        region, neuron, chunk = self.region, cmd.neuron, cmd.chunk
        issued = Signal(_tag_layout(plan))
        weights = Signal.like(self.weights.addr, name="issue_weight_addr")
        biases = Signal.like(self.biases.addr, name="issue_bias_addr")
        states = Signal.like(self.states.addr, name="issue_state_addr")
        m.d.comb += [issued.valid.eq(self.cmd.valid), issued.neuron.eq(neuron),
                     issued.last.eq(cmd.last)]
        if plan.push:
            feedback_addr = Signal.like(self._feedback[0].addr, name="issue_feedback_addr")
            m.d.sync += self._feedback[0].addr.eq(feedback_addr)
        for k in range(1, N + 1):
            rows, cols = plan.row_chunks(k), plan.column_chunks(k)
            own_row = region + lay.soff[k] + (neuron >> lg)
            with m.If(cmd.layer[k - 1]):
                m.d.comb += [issued.top.eq(k == N), issued.waddr.eq(own_row)]
                with m.If(cmd.part == SELF):
                    m.d.comb += [issued.self_read.eq(1), states.eq(own_row)]
                with m.Elif(cmd.part == ROW):
                    if binary:
                        m.d.comb += issued.wlayer.eq(k - 1)
                    row_addr = lay.wbase[k - 1] + neuron * rows + chunk
                    m.d.comb += [a.eq(row_addr) for a in weights]
                    m.d.comb += states.eq(chunk if k == 1
                                          else region + lay.soff[k - 1] + chunk)
                    m.d.comb += biases.eq(lay.bbase[k - 1] + neuron)
                    m.d.comb += issued.first.eq(chunk == 0)
                    if plan.push and k == N - 1:
                        m.d.comb += [feedback_addr.eq(neuron >> lg),
                                     issued.feedback.eq(chunk == 0)]
                if plan.push and k == N:
                    with m.Elif(cmd.part == PUSH):
                        # output neuron ``neuron``'s row chunk ``chunk`` and its state row; the
                        # feedback row ``chunk`` rides in ``waddr``
                        m.d.comb += [a.eq(lay.wbase[N - 1] + neuron * rows + chunk)
                                     for a in weights]
                        m.d.comb += [states.eq(own_row), issued.push.eq(1),
                                     issued.first.eq(neuron == 0), issued.waddr.eq(chunk)]
                if cols:
                    with m.Else():
                        if binary:
                            m.d.comb += issued.wlayer.eq(k)
                        # column chunk: bank b holds W_k[chunk L + (b - j) mod L, j]
                        stride = sizes[k] // L
                        for b in range(L):
                            offsets = Array([Const(((b - t) % L) * stride, 16)
                                             for t in range(L)])
                            m.d.comb += weights[b].eq(
                                lay.wbase[k] + chunk * sizes[k] + (neuron >> lg)
                                + offsets[bank_of(neuron, plan)])
                        m.d.comb += states.eq(region + lay.soff[k + 1] + chunk)
        # the registers of the issue: the memories take the addresses in the next cycle
        m.d.sync += [self.weights.addr.eq(weights), self.biases.addr.eq(biases),
                     self.states.addr.eq(states)]
        addressed = Signal(_tag_layout(plan))
        m.d.sync += addressed.eq(issued)
        return addressed

    def _read_and_multiply(self, m, issued):
        """Stages ``memory read and rotation`` and ``products``: lane ``b`` takes state bank
        ``(b - j) mod L``, the state its weight multiplies."""
        plan = self._plan
        L, lg = plan.lanes, plan.lane_bits
        weight, state = plan.weight_format.shape(), plan.state_format.shape()
        tag = _tag_layout(plan)
        words = self.states.data
        # stage: memory read (the tag waits for the words)
        reading = Signal(tag)
        m.d.sync += reading.eq(issued)
        # stage: rotation; the operands of the lanes
        operands = Signal(tag)
        lane_weight = [Signal(self.weights.data[b].shape(), name=f"lane_weight{b}")
                       for b in range(L)]
        lane_state = [Signal(state, name=f"lane_state{b}") for b in range(L)]
        bias = Signal(weight, name="operand_bias")
        own_state = Signal(state, name="operand_own_state")
        rotation = bank_of(reading.neuron, plan)
        own_word = Array(words)[rotation] if lg else words[0]
        for b in range(L):
            source = Array(words)[bank_of(Const(b + L, lg + 2) - rotation, plan)] if lg \
                else words[0]
            m.d.sync += [lane_weight[b].eq(self.weights.data[b]), lane_state[b].eq(source)]
            if plan.push:
                # a push: lane b takes the weight of neuron cL + b (bank (b + o) mod L) and
                # the output neuron's state
                pushed = Array(self.weights.data)[bank_of(Const(b, lg + 1) + rotation, plan)] \
                    if lg else self.weights.data[0]
                with m.If(reading.push):
                    m.d.sync += [lane_weight[b].eq(pushed), lane_state[b].eq(own_word)]
        m.d.sync += [operands.eq(reading), bias.eq(self.biases.data), own_state.eq(own_word)]
        feedback = None
        if plan.push:
            row = self._feedback[0].data
            feedback = Signal(plan.feedback_format.shape(), name="operand_feedback")
            m.d.sync += feedback.eq(0)
            with m.If(reading.feedback):
                m.d.sync += feedback.eq(Array(row)[rotation] if lg else row[0])
        # stage: products
        products = Signal(tag)
        lane_product = [Signal(plan.product_format.shape(), name=f"lane_product{b}")
                        for b in range(L)]
        product_bias = Signal(weight, name="product_bias")
        product_own = Signal(state, name="product_own_state")
        m.d.sync += [products.eq(operands), product_bias.eq(bias), product_own.eq(own_state)]
        self._feedback_word = feedback
        if plan.push:
            self._feedback_word = Signal.like(feedback, name="product_feedback")
            m.d.sync += self._feedback_word.eq(feedback)
        groups = None
        if plan.config.weights == "binary":
            # +s, -s or 0 by the pair code (the ideal PCSA read: BL's LRS wins +1, BLb's -1,
            # neither or both 0), summed here in groups of up to 4 lanes; the adder tree sums
            # the groups and the stage after it multiplies the chunk's sum by a_k once (the 16
            # lanes' sum in the tree's one stage was the ULX3S build's longest path); the
            # lanes' own +-s are registered only for the push's feedback sums
            signs = [Signal(plan.product_format.shape(), name=f"lane_sign{b}") for b in range(L)]
            for b in range(L):
                with m.Switch(lane_weight[b]):
                    with m.Case(CODE_PLUS):
                        m.d.comb += signs[b].eq(lane_state[b])
                    with m.Case(CODE_MINUS):
                        m.d.comb += signs[b].eq(-lane_state[b])
            if plan.push:
                m.d.sync += [lane_product[b].eq(signs[b]) for b in range(L)]
            size = min(L, BINARY_GROUP)
            groups = [Signal(signed(plan.product_format.width + (size - 1).bit_length()),
                             name=f"lane_group{g}") for g in range(L // size)]
            for g, group in enumerate(groups):
                total = signs[g * size]
                for sign in signs[g * size + 1:(g + 1) * size]:
                    total = total + sign
                m.d.sync += group.eq(total)
        else:
            m.d.sync += [lane_product[b].eq(lane_weight[b] * lane_state[b]) for b in range(L)]
        return products, lane_product, product_bias, product_own, groups

    def _adder_tree(self, m, stage):
        """Stages ``adder tree`` and ``tree's last sum``: real weights sum the products in pairs,
        then the pairs; binary weights sum the lanes' ``+-s`` into the chunk's sum, then
        multiply it by the weight layer's ``a_k``. Each registered with the tag, the bias and
        the own state."""
        products, lane_product, bias, own_state, groups = stage
        plan = self._plan
        binary = plan.config.weights == "binary"
        if binary:
            total = groups[0]
            for group in groups[1:]:
                total = total + group
            terms = [total]
        else:
            terms = [sum(lane_product[i:i + 2][1:], lane_product[i])
                     for i in range(0, len(lane_product), 2)]
        first = Signal.like(products, name="tree")
        first_terms = [Signal(plan.chunk_sum_format.shape() if binary
                              else signed(plan.product_format.width + 1), name=f"tree_term{i}")
                       for i in range(len(terms))]
        first_bias = Signal.like(bias, name="tree_bias")
        first_own = Signal.like(own_state, name="tree_own_state")
        m.d.sync += [first.eq(products), first_bias.eq(bias), first_own.eq(own_state)]
        m.d.sync += [reg.eq(term) for reg, term in zip(first_terms, terms)]
        if binary:
            alphas = plan.config.binary_alphas
            alpha = Array([Const(a, unsigned(max(a.bit_length(), 1))) for a in alphas])[
                first.wlayer] if len(alphas) > 1 else Const(alphas[0])
            total = first_terms[0] * alpha
        else:
            total = first_terms[0]
            for term in first_terms[1:]:
                total = total + term
        summed = Signal.like(products, name="summed")
        tree_sum = Signal(plan.acc_register_format.shape(), name="tree_sum")
        tree_bias = Signal.like(bias, name="summed_bias")
        tree_own = Signal.like(own_state, name="summed_own_state")
        m.d.sync += [summed.eq(first), tree_sum.eq(total), tree_bias.eq(first_bias),
                     tree_own.eq(first_own)]
        self._start = None
        if plan.push:
            # what a neuron's first row chunk starts from: its bias and (layer N - 1) its
            # feedback word, times a_{N-1} with binary weights; exact, as the twin's sum
            # (the product by a_{N-1} registered a stage before the sum with the bias: the two
            # in one cycle were a long path at 16 lanes on the ECP5)
            word = self._feedback_word
            term = word * Const(plan.config.binary_alphas[plan.N - 1]) if binary else word
            tree_feedback = Signal(plan.acc_register_format.shape(), name="tree_feedback")
            m.d.sync += tree_feedback.eq(term)
            self._start = Signal(plan.acc_register_format.shape(), name="summed_start")
            m.d.sync += self._start.eq((first_bias << plan.state_format.frac_bits)
                                       + tree_feedback)
        return summed, tree_sum, tree_bias, tree_own

    def _push_sums(self, m, stage):
        """The push's lanes (stage ``adder tree`` of a push command): lane ``l`` adds its
        product to the feedback sum of neuron ``cL + l`` (from 0 at the chunk's first output
        neuron); after the last, the ``L`` sums go to feedback row ``c`` in the next cycle."""
        products, lane_product = stage[0], stage[1]
        plan, L = self._plan, self._plan.lanes
        read, write = self._feedback
        sums = [Signal(plan.feedback_format.shape(), name=f"push_sum{b}") for b in range(L)]
        nexts = [Mux(products.first, 0, sums[b]) + lane_product[b] for b in range(L)]
        with m.If(products.valid & products.push):
            m.d.sync += [sums[b].eq(nexts[b]) for b in range(L)]
        we = Signal(name="feedback_we")
        waddr = Signal.like(write.addr, name="feedback_waddr")
        wdata = Signal.like(write.data, name="feedback_wdata")
        m.d.sync += [we.eq(products.valid & products.push & products.last),
                     waddr.eq(products.waddr)]
        m.d.sync += [wdata[b].eq(nexts[b]) for b in range(L)]
        m.d.comb += [write.addr.eq(waddr), write.data.eq(wdata), write.en.eq(we)]

    def _accumulate(self, m, stage):
        """Stage ``accumulator and nudge``: the first row chunk starts from the bias; a
        self-read takes the output neuron's old state and registers its nudge (with the
        rounding's half: ``2^(h-1) +- (y - s) << (13 - beta_shift)`` in a nudged phase); the last
        command hands the sum and the nudge on."""
        summed, total, bias, own_state = stage
        plan, cfg = self._plan, self._plan.config
        acc_shape = plan.acc_register_format.shape()
        acc_bits = plan.acc_register_format.width
        sfrac, wfrac = plan.state_format.frac_bits, plan.weight_format.frac_bits
        h = cfg.rescale_shift
        acc = Signal(acc_shape, name="acc")
        acc_next = Signal(acc_shape)
        start = bias << sfrac if self._start is None else self._start
        m.d.comb += acc_next.eq(Mux(summed.first, start, acc) + total)
        # the nudge of an output neuron in a nudged phase, from its old state
        target = Mux(summed.neuron == self.label, 1 << sfrac, 0)
        error = Signal(plan.error_format.shape())
        m.d.comb += error.eq(target - own_state)
        half = 1 << (h - 1)
        nudge = Signal(signed(acc_bits + 1), name="nudge")       # with the rounding's half
        nudge_next = Signal.like(nudge)
        m.d.comb += nudge_next.eq(half)
        with m.If(self.phase == PLUS):
            m.d.comb += nudge_next.eq(half + (error << (wfrac - cfg.beta_shift)))
        with m.Elif(self.phase == MINUS):
            m.d.comb += nudge_next.eq(half - (error << (wfrac - cfg.beta_shift)))
        result = {"valid": Signal(name="result_valid"), "top": Signal(name="result_top"),
                  "nudge": Signal.like(nudge, name="result_nudge"),
                  "waddr": Signal(state_addr_shape(plan), name="result_waddr"),
                  "neuron": Signal(neuron_shape(plan), name="result_neuron")}
        acc_sum = Signal(acc_shape)
        m.d.sync += result["valid"].eq(0)
        with m.If(summed.valid & ~summed.push if plan.push else summed.valid):
            with m.If(summed.self_read):
                m.d.sync += nudge.eq(nudge_next)
            with m.Else():
                m.d.sync += acc.eq(acc_next)
                with m.If(summed.last):
                    m.d.sync += [result["valid"].eq(1), acc_sum.eq(acc_next),
                                 result["nudge"].eq(Mux(summed.top & (self.phase != FREE),
                                                        nudge, half)),
                                 result["waddr"].eq(summed.waddr),
                                 result["neuron"].eq(summed.neuron),
                                 result["top"].eq(summed.top)]
        return acc_sum, result

    def _write(self, m, acc_sum, result):
        """Stages ``rounding and clip`` (``(acc + nudge + 2^(h-1)) >> h`` clipped to the state
        range, registered) and ``state write and argmax`` (the argmax of the output layer
        follows the writes)."""
        plan, cfg = self._plan, self._plan.config
        L, lg = plan.lanes, plan.lane_bits
        smax, h = plan.state_format.max_raw, cfg.rescale_shift
        acc_bits = plan.acc_register_format.width
        biased = Signal(signed(acc_bits + 2))
        m.d.comb += biased.eq(acc_sum + result["nudge"])
        shifted = Signal(signed(acc_bits + 2))
        m.d.comb += shifted.eq(biased >> h)
        clipped = Signal(plan.state_format.shape())
        sw = plan.state_format.width
        # the clip from the sign and the bits above the state's (the state is unsigned, smax
        # all ones: the same as comparing with 0 and smax, without more carry chains after the
        # sum's)
        m.d.comb += clipped.eq(Mux(shifted[-1], 0, Mux(shifted[sw:].any(), smax, shifted[:sw])))
        new_state = Signal(plan.state_format.shape(), name="new_state")
        valid, top = Signal(name="write_valid"), Signal(name="write_top")
        waddr = Signal(state_addr_shape(plan), name="write_addr")
        neuron = Signal(neuron_shape(plan), name="write_neuron")
        m.d.sync += [new_state.eq(clipped), valid.eq(result["valid"]), top.eq(result["top"]),
                     waddr.eq(result["waddr"]), neuron.eq(result["neuron"])]

        m.d.comb += [self.writing.eq(valid), self.state_write.addr.eq(waddr)]
        for b in range(L):
            m.d.comb += [self.state_write.en[b].eq(bank_of(neuron, plan) == b if lg else 1),
                         self.state_write.data[b].eq(new_state)]
        best_state = Signal(plan.state_format.shape())
        with m.If(valid & top):
            with m.If((neuron == 0) | (new_state > best_state)):
                m.d.sync += [best_state.eq(new_state), self.prediction.eq(neuron)]
