"""The EqProp unit's update datapath: the symmetric estimate, one parameter a cycle.

For weight ``W_k[r, i]``: ``D = s+_r s+_i - s-_r s-_i``; for bias ``b_k[r]``: ``D = s+_r - s-_r``
(the states of the ``+beta`` and ``-beta`` phases). The change is ``D`` shifted right by the
layer's ``r_W`` (``r_b``) with stochastic rounding: up iff ``(u << r) < (rest << 16)``, ``u``
a 16-bit draw of the 32-bit Galois LFSR (16 steps per parameter) and ``rest`` the bits shifted
out (a left shift when ``r <= 0``). The sum with the old value saturates to the weight format
and is written back. One stage per cycle (:data:`~nmflow.golden.eqprop_plan.UPDATE_PIPELINE`):
the issue registers the two products of ``D``, the old value and the draw; then ``D``; the
decay; the rounding; the ``f_meta`` product and choice; the sum, saturation and write
(:attr:`~nmflow.golden.eqprop_plan.EqPropPlan.update_stages`: the stages a configuration uses).
The LFSR persists across samples, as in the twin's training run.

With a decay (``decay_shift = d``) a weight's change also takes ``W 2^-d`` off, rounded with the
step in the one stochastic rounding: the ``decay`` stage (before the rounding) makes the
numerator ``(D << (R - r_W)) - (W << (R - d))`` over ``2^R``, ``R = max(r_W, d)``; with
metaplasticity (``m > 0``, binary weights) a weight's change that moves it toward 0 is scaled by
the ``f_meta`` table entry of ``|W|`` (read from a table memory at the issue, its address
``min(|W| >> shift, size - 1)`` registered after the weight chunk is loaded):
``-(((-change) f + 2^(F-1)) >> F)`` with ``F`` the table's fraction bits (the twin's
:func:`~nmflow.golden.eqprop_fixed.meta_rule`). Biases take the plain change.
"""

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..golden.eqprop_fixed import LFSR, meta_rule
from .eqprop_memories import state_words, update_addr_shape, weight_words, write_signature
from .eqprop_settling import bank_of, neuron_shape

__all__ = ["UpdateDatapath", "update_control_signature"]


def update_control_signature(plan):
    """What the sequencer tells the update datapath, cycle by cycle (seen from the sequencer).

    ``take_*`` strobes load the datapath's operand registers from the memories' read data:
    ``take_plus_row`` / ``take_minus_row`` the state ``s_{k+1}[row]`` of the ``+beta`` /
    ``-beta`` region (bank ``row mod L``), ``take_plus_chunk`` a chunk of ``L`` weights and the
    ``s+`` chunk of the layer below, ``take_minus_chunk`` (after it, before the chunk's first
    issue) the ``s-`` chunk, ``take_old_bias``
    the bias. ``issue_weight`` updates the weight of column ``chunk L + lane`` of ``row`` (old
    value from the weight chunk, ``D`` from the registers), ``issue_bias`` the bias of ``row``
    (``s-_r`` from the state read data). ``kind`` is ``2 k`` (weights of layer ``k``) or
    ``2 k + 1`` (its biases) and ``addr`` the parameter's address; both 0 but at an issue.
    """
    L = plan.lanes
    return wiring.Signature({
        "take_plus_row": Out(1), "take_minus_row": Out(1), "take_plus_chunk": Out(1),
        "take_minus_chunk": Out(1), "take_old_bias": Out(1),
        "issue_weight": Out(1), "issue_bias": Out(1),
        "kind": Out(range(2 * plan.N)), "row": Out(neuron_shape(plan)),
        "lane": Out(range(max(L, 2))), "addr": Out(update_addr_shape(plan)),
    })


def _weight_shifts(plan, k):
    """``(R, a, b)`` of layer ``k``'s weights: the change is the numerator
    ``(D << a) - (W << b)`` shifted right by ``R`` (the twin's
    :func:`~nmflow.golden.eqprop_fixed.decay_numerator`: ``R = max(r_W, d)``, ``a = R - r_W``,
    ``b = R - d``); without a decay ``(r_W, 0, None)``."""
    r, d = plan.config.update_shifts(k)[0], plan.config.decay_shift
    if not d:
        return r, 0, None
    R = max(r, d)
    return R, R - r, R - d


def _change_bits(plan):
    """Bits of a parameter's change (signed): the largest ``|D|`` (a weight's
    ``s+ s+ - s- s-``, a bias's ``s+ - s-``) shifted by the layer's ``r``, one for the rounding's
    step up, the sign; at least the weight's width; with a decay one more (its term,
    ``|W| 2^-d``, is below ``2^(width - 1)``)."""
    cfg, top = plan.config, plan.state_format.max_raw
    largest = 1
    for k in range(plan.N):
        for bound, shift in zip((top * top, top), cfg.update_shifts(k)):
            largest = max(largest, (bound >> shift) + 1 if shift > 0 else bound << -shift)
    return max(largest.bit_length(), plan.weight_format.width) + 1 + (1 if cfg.decay_shift
                                                                       else 0)


class UpdateDatapath(wiring.Component):
    """Operand registers, ``D``, the LFSR draw, rounding, saturation and the write-back.

    Parameters
    ----------
    plan : :class:`~nmflow.golden.eqprop_plan.EqPropPlan`
    seedable : bool
        Add ``seed`` and ``seed_we`` (the host port's SEED).

    Members
    -------
    ctl : In(update_control_signature(plan))
    weight_words : In(weight_words(plan)), state_words : In(state_words(plan)),
    bias_word : In(weight)
        The memories' read data.
    weight_write : Out(write_signature(update_addr_shape, weight, one enable per bank))
    bias_write : Out(write_signature(update_addr_shape, weight))
        The parameter written back, the cycle after its issue.
    seed : In(32), seed_we : In(1), only if ``seedable``
        ``seed_we`` loads ``seed`` into the LFSR (never during an update).
    """

    def __init__(self, plan, *, seedable=False):
        self._plan = plan
        self._seedable = bool(seedable)
        weight = plan.weight_format.shape()
        members = {
            "ctl": In(update_control_signature(plan)),
            "weight_words": In(weight_words(plan)),
            "state_words": In(state_words(plan)),
            "bias_word": In(weight),
            "weight_write": Out(write_signature(update_addr_shape(plan), weight, plan.lanes)),
            "bias_write": Out(write_signature(update_addr_shape(plan), weight)),
        }
        if seedable:
            members.update({"seed": In(32), "seed_we": In(1)})
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        plan = self._plan
        stages = plan.update_stages
        ops = self._operands(m)
        s = self._issue(m, ops)
        s = self._delta(m, s)
        if "decay" in stages:
            s = self._decay(m, s)
        s = self._rounding(m, s)
        if "f_meta product" in stages:
            s = self._meta_product(m, s)
            s = self._meta_choice(m, s)
        self._write(m, s)
        return m

    @staticmethod
    def _register(m, values, stage):
        """The next stage's registers of ``values`` (a dict of values), named after it."""
        out = {}
        for name, value in values.items():
            out[name] = Signal.like(value, name=f"{stage}_{name}") if isinstance(value, Signal) \
                else Signal(value.shape(), name=f"{stage}_{name}")
            m.d.sync += out[name].eq(value)
        return out

    def _operands(self, m):
        """The registers the sequencer loads: ``s+_r``, ``s-_r``, the weight chunk (with, for
        metaplasticity, each weight's ``f_meta`` table address), the ``s+`` and ``s-`` chunks,
        the old bias; and ``bank``, the bank of the weight to issue.

        The ``s+`` and ``s-`` chunks are shift registers: each weight's issue shifts them down
        one lane, so that lane 0 always holds the states of the weight being issued and the
        products take them straight from registers (an ``L``-way multiplexer by the lane in
        front of the 8 x 8 multipliers was the ULX3S build's critical path at 16 lanes). The
        weight chunk stays as the banks give it (word ``b`` from bank ``b``: no rotation after
        the block RAMs' slow output); the issue picks the old value and its table address by
        ``bank``, a register: ``row mod L`` when the chunk is taken, counted up (mod ``L``) at
        each issue, the bank ``(lane + row) mod L`` of column ``chunk L + lane``."""
        plan, ctl = self._plan, self.ctl
        L = plan.lanes
        weight, state = plan.weight_format.shape(), plan.state_format.shape()
        row_state = Array(self.state_words)[bank_of(ctl.row, plan)] if plan.lane_bits \
            else self.state_words[0]
        ops = {
            "plus_row": Signal(state, name="plus_row_state"),
            "minus_row": Signal(state, name="minus_row_state"),
            "weights": [Signal(weight, name=f"weight_chunk{b}") for b in range(L)],   # by bank
            "plus_chunk": [Signal(state, name=f"plus_chunk{b}") for b in range(L)],
            "minus_chunk": [Signal(state, name=f"minus_chunk{b}") for b in range(L)],
            "old_bias": Signal(weight, name="old_bias"),
            "row_state": row_state,
            "bank": Signal(range(max(L, 2)), name="issue_bank"),
        }
        with m.If(ctl.take_plus_row):
            m.d.sync += ops["plus_row"].eq(row_state)
        with m.If(ctl.take_minus_row):
            m.d.sync += ops["minus_row"].eq(row_state)
        with m.If(ctl.take_plus_chunk):
            m.d.sync += [ops["weights"][b].eq(self.weight_words[b]) for b in range(L)]
            m.d.sync += [ops["plus_chunk"][b].eq(self.state_words[b]) for b in range(L)]
        with m.If(ctl.take_minus_chunk):
            m.d.sync += [ops["minus_chunk"][b].eq(self.state_words[b]) for b in range(L)]
            if plan.lane_bits:
                m.d.sync += ops["bank"].eq(bank_of(ctl.row, plan))
        with m.If(ctl.issue_weight):
            # the next lane's states into lane 0 (the chunk is never taken while issuing), the
            # next lane's bank
            m.d.sync += [regs[b].eq(regs[b + 1]) for regs in (ops["plus_chunk"],
                                                              ops["minus_chunk"])
                         for b in range(L - 1)]
            if plan.lane_bits:
                m.d.sync += ops["bank"].eq(ops["bank"] + 1)
        with m.If(ctl.take_old_bias):
            m.d.sync += ops["old_bias"].eq(self.bias_word)
        if plan.config.m > 0:
            # the f_meta table address of each weight of the chunk, min(|W| >> shift, size - 1),
            # registered from the chunk's registers (ready in the cycle after take_plus_chunk,
            # while take_minus_chunk loads the s- chunk)
            rule = meta_rule(plan.config)
            size = len(rule.table)
            ops["meta_index"] = [Signal(range(size), name=f"meta_index{b}") for b in range(L)]
            for b in range(L):
                word = ops["weights"][b]
                magnitude = Signal(plan.weight_format.width + 1, name=f"magnitude{b}")
                m.d.comb += magnitude.eq(Mux(word < 0, -word, word))
                index = magnitude >> rule.shift
                m.d.sync += ops["meta_index"][b].eq(Mux(index > size - 1, size - 1, index))
        return ops

    def _issue(self, m, ops):
        """Stage ``issue``: the two products of ``D`` (a bias: ``s+_r`` and ``s-_r``), the old
        value and the bank of the parameter, its kind and address and a fresh draw of the LFSR,
        registered; the ``f_meta`` table read of the weight's entry."""
        plan, ctl = self._plan, self.ctl
        sw = plan.state_format.width
        issuing = Signal()
        p_plus = Signal(2 * sw, name="product_plus")
        p_minus = Signal(2 * sw, name="product_minus")
        old = Signal(plan.weight_format.shape(), name="old_value")
        bank = Signal(range(max(plan.lanes, 2)))
        m.d.comb += issuing.eq(ctl.issue_weight | ctl.issue_bias)
        lg, weight_bank = plan.lane_bits, ops["bank"]
        with m.If(ctl.issue_weight):
            # lane 0 of the states' shift registers and bank ``weight_bank`` of the weights:
            # column ``chunk L + lane``
            m.d.comb += [p_plus.eq(ops["plus_row"] * ops["plus_chunk"][0]),
                         p_minus.eq(ops["minus_row"] * ops["minus_chunk"][0]),
                         old.eq(Array(ops["weights"])[weight_bank] if lg else ops["weights"][0]),
                         bank.eq(weight_bank)]
        with m.If(ctl.issue_bias):
            m.d.comb += [p_plus.eq(ops["plus_row"]), p_minus.eq(ops["row_state"]),
                         old.eq(ops["old_bias"])]

        lfsr = Signal(32, init=plan.config.lfsr_seed)
        lfsr_next = LFSR.next(lfsr, LFSR.draw_steps)       # a draw: 16 steps in one cycle
        draw = Signal(plan.draw_bits, name="issue_draw")
        with m.If(issuing):
            m.d.sync += [lfsr.eq(lfsr_next), draw.eq(lfsr_next[:plan.draw_bits])]
        if self._seedable:
            with m.If(self.seed_we):
                m.d.sync += lfsr.eq(self.seed)
        issued = self._register(m, {"valid": issuing, "kind": ctl.kind, "addr": ctl.addr,
                                    "bank": bank, "old": old, "p_plus": p_plus,
                                    "p_minus": p_minus}, "issued")
        issued["draw"] = draw
        if plan.config.m > 0:
            # the f_meta table entry of |old|, read at the issue (one cycle)
            rule = meta_rule(plan.config)
            table = Memory(shape=unsigned(max(int(rule.table.max()).bit_length(), 1)),
                           depth=len(rule.table), init=[int(v) for v in rule.table])
            m.submodules.meta_table = table
            port = table.read_port()
            index = ops["meta_index"]
            m.d.comb += port.addr.eq(Array(index)[weight_bank] if lg else index[0])
            issued["fmeta"] = port.data
        return issued

    def _delta(self, m, s):
        """Stage ``D``: ``s+_r s+_i - s-_r s-_i`` (a bias: ``s+_r - s-_r``)."""
        plan = self._plan
        delta = Signal(plan.delta_format.shape(), name="delta")
        m.d.comb += delta.eq(s["p_plus"] - s["p_minus"])
        values = {name: s[name] for name in ("valid", "kind", "addr", "bank", "old", "draw")}
        values["delta"] = delta
        if "fmeta" in s:
            values["fmeta"] = s["fmeta"]
        return self._register(m, values, "delta")

    def _decay(self, m, s):
        """Stage ``decay``: a weight's numerator ``(D << a) - (W << b)`` over ``2^R``
        (:func:`_weight_shifts`), so that the step and the decay are rounded together; a bias's
        is ``D``."""
        plan = self._plan
        delta, old = s["delta"], s["old"]
        shifts = [_weight_shifts(plan, k) for k in range(plan.N)]
        a_top = max(a for _, a, _ in shifts)
        b_top = max(b for _, _, b in shifts)
        width = max(len(delta) + a_top, plan.weight_format.width + b_top) + 1
        scaled = Signal(signed(len(delta) + a_top), name="scaled_delta")
        term = Signal(signed(plan.weight_format.width + b_top), name="decay_term")
        m.d.comb += scaled.eq(delta)
        for k, (_, a, b) in enumerate(shifts):
            with m.If(s["kind"] == 2 * k):
                m.d.comb += [scaled.eq(delta << a), term.eq(old << b)]
        numerator = Signal(signed(width), name="numerator")
        m.d.comb += numerator.eq(scaled - term)
        values = {name: value for name, value in s.items() if name != "delta"}
        values["delta"] = numerator
        return self._register(m, values, "decay")

    def _rounding(self, m, s):
        """Stage ``stochastic rounding``: ``D`` (with a decay, a weight's numerator) shifted by
        the layer's ``r`` (``r_W``, ``r_b``; with a decay a weight's ``R``), up iff
        ``(u << r) < (rest << 16)``."""
        plan, cfg = self._plan, self._plan.config
        draw_bits = plan.draw_bits
        delta, draw = s["delta"], s["draw"]
        change = Signal(signed(_change_bits(plan)), name="change")
        for k in range(plan.N):
            shifts = (_weight_shifts(plan, k)[0], cfg.update_shifts(k)[1])
            for is_bias, shift in enumerate(shifts):
                with m.If(s["kind"] == 2 * k + is_bias):
                    if shift <= 0:
                        m.d.comb += change.eq(delta << -shift)
                    else:
                        rest = delta.as_unsigned()[:shift]
                        up = Cat(Const(0, shift), draw) < Cat(Const(0, draw_bits), rest)
                        m.d.comb += change.eq((delta >> shift) + up)
        values = {name: value for name, value in s.items() if name not in ("delta", "draw")}
        values["change"] = change
        return self._register(m, values, "rounded")

    def _meta_product(self, m, s):
        """Stage ``f_meta product``: the change times the table's entry, and whether the change
        moves the weight toward 0."""
        old, change = s["old"], s["change"]
        product = Signal(signed(len(change) + len(s["fmeta"]) + 1), name="meta_product")
        m.d.comb += product.eq(change * s["fmeta"])
        shrink = Signal(name="shrink")
        m.d.comb += shrink.eq(((old > 0) & (change < 0)) | ((old < 0) & (change > 0)))
        values = {name: value for name, value in s.items() if name != "fmeta"}
        values.update(product=product, shrink=shrink)
        return self._register(m, values, "meta")

    def _meta_choice(self, m, s):
        """Stage ``f_meta choice``: a weight's change toward 0 becomes
        ``-(((-change) f + 2^(F-1)) >> F)``, which is ``(change f + 2^(F-1) - 1) >> F``."""
        f_bits = meta_rule(self._plan.config).f_bits
        change = s["change"]
        scaled = Signal(signed(len(change) + 1), name="scaled")
        m.d.comb += scaled.eq((s["product"] + ((1 << (f_bits - 1)) - 1)) >> f_bits)
        chosen = Signal(signed(len(change) + 1), name="chosen")
        m.d.comb += chosen.eq(Mux(~s["kind"][0] & s["shrink"], scaled, change))
        values = {name: value for name, value in s.items() if name not in ("product", "shrink")}
        values["change"] = chosen
        return self._register(m, values, "chosen")

    def _write(self, m, s):
        """Stage ``sum, saturation and write``: the old value plus the change, saturated to the
        weight format, to the parameter's memory; with single-port hidden banks
        (``storage="spram"``, stage ``write register``) registered first: the RAMs sit at the
        die's edge."""
        plan = self._plan
        wmin, wmax = plan.weight_format.min_raw, plan.weight_format.max_raw
        old, change, is_bias = s["old"], s["change"], s["kind"][0]
        width = plan.weight_format.width
        total = Signal(signed(max(len(change), width) + 1))
        m.d.comb += total.eq(old + change)
        # saturated where the bits above the weight's sign are not all its sign (the same as
        # comparing with wmin and wmax, without two more carry chains after the sum's)
        top = total[width - 1:]
        new_param = Signal(plan.weight_format.shape())
        m.d.comb += new_param.eq(Mux(top.all() | ~top.any(), total[:width],
                                     Mux(total[-1], wmin, wmax)))
        addr, valid, bank = s["addr"], s["valid"], s["bank"]
        if "write register" in plan.update_stages:
            r = self._register(m, {"new": new_param, "addr": addr, "valid": valid,
                                   "is_bias": is_bias, "bank": bank}, "write")
            new_param, addr, valid, is_bias, bank = (r["new"], r["addr"], r["valid"],
                                                     r["is_bias"], r["bank"])
        m.d.comb += [self.weight_write.addr.eq(addr), self.weight_write.data.eq(new_param),
                     self.bias_write.addr.eq(addr), self.bias_write.data.eq(new_param),
                     self.bias_write.en.eq(valid & is_bias)]
        m.d.comb += [self.weight_write.en[b].eq(valid & ~is_bias & (bank == b))
                     for b in range(plan.lanes)]
