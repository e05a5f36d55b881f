"""The EqProp unit's update datapath: the symmetric estimate, one parameter a cycle.

For weight ``W_k[r, i]``: ``D = s+_r s+_i - s-_r s-_i``; for bias ``b_k[r]``: ``D = s+_r - s-_r``
(the states of the ``+beta`` and ``-beta`` phases). The change is ``D`` shifted right by the
layer's ``r_W`` (``r_b``) with stochastic rounding: up iff ``(u << r) < (rest << 16)``, ``u``
a 16-bit draw of the 32-bit Galois LFSR (16 steps per parameter) and ``rest`` the bits shifted
out (a left shift when ``r <= 0``). The sum with the old value saturates to the weight format
and is written back in the next cycle (:data:`~nmflow.golden.eqprop_plan.UPDATE_PIPELINE`).
The LFSR persists across samples, as in the twin's training run.

With a decay (``decay_shift = d``) a weight's change also takes ``(W + 2^(d-1)) >> d`` off; with
metaplasticity (``m > 0``, binary weights) a weight's change that moves it toward 0 is scaled by
the ``f_meta`` table entry of ``|W|`` (read from a table memory at the issue, its address
``min(|W| >> shift, size - 1)``): ``-(((-change) f + 2^(F-1)) >> F)`` with ``F`` the table's
fraction bits (the twin's :func:`~nmflow.golden.eqprop_fixed.meta_rule`). Biases take the plain
change.
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
    ``s+`` chunk of the layer below, ``take_minus_chunk`` the ``s-`` chunk, ``take_old_bias``
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


def _change_bits(plan):
    """Bits of a parameter's change before the decay (signed): the largest ``|D|`` (a weight's
    ``s+ s+ - s- s-``, a bias's ``s+ - s-``) shifted by the layer's ``r``, one for the rounding's
    step up, the sign; at least the weight's width (the decay's term fits beside it)."""
    cfg, top = plan.config, plan.state_format.max_raw
    largest = 1
    for k in range(plan.N):
        for bound, shift in zip((top * top, top), cfg.update_shifts(k)):
            largest = max(largest, (bound >> shift) + 1 if shift > 0 else bound << -shift)
    return max(largest.bit_length(), plan.weight_format.width) + 1


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
        operands = self._operands(m)
        issue = self._issue(m, operands)
        self._round_and_write(m, issue)
        return m

    def _operands(self, m):
        """The registers the sequencer loads: ``s+_r``, ``s-_r``, the weight chunk, the ``s+``
        and ``s-`` chunks, the old bias."""
        plan, ctl = self._plan, self.ctl
        L = plan.lanes
        weight, state = plan.weight_format.shape(), plan.state_format.shape()
        row_state = Array(self.state_words)[bank_of(ctl.row, plan)] if plan.lane_bits \
            else self.state_words[0]
        ops = {
            "plus_row": Signal(state, name="plus_row_state"),
            "minus_row": Signal(state, name="minus_row_state"),
            "weights": [Signal(weight, name=f"weight_chunk{b}") for b in range(L)],
            "plus_chunk": [Signal(state, name=f"plus_chunk{b}") for b in range(L)],
            "minus_chunk": [Signal(state, name=f"minus_chunk{b}") for b in range(L)],
            "old_bias": Signal(weight, name="old_bias"),
            "row_state": row_state,
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
        with m.If(ctl.take_old_bias):
            m.d.sync += ops["old_bias"].eq(self.bias_word)
        return ops

    def _issue(self, m, ops):
        """The issue: ``D``, the old value and the bank of the parameter, registered with its
        kind, its address and a fresh draw of the LFSR."""
        plan, ctl = self._plan, self.ctl
        lg = plan.lane_bits
        delta_shape = plan.delta_format.shape()
        issuing = Signal()
        delta = Signal(delta_shape, name="delta")
        old = Signal(plan.weight_format.shape(), name="old_value")
        bank = Signal(range(max(plan.lanes, 2)))
        m.d.comb += issuing.eq(ctl.issue_weight | ctl.issue_bias)
        with m.If(ctl.issue_weight):
            weight_bank = bank_of(ctl.lane + ctl.row, plan)
            plus_i = Array(ops["plus_chunk"])[ctl.lane] if lg else ops["plus_chunk"][0]
            minus_i = Array(ops["minus_chunk"])[ctl.lane] if lg else ops["minus_chunk"][0]
            m.d.comb += [delta.eq(ops["plus_row"] * plus_i - ops["minus_row"] * minus_i),
                         old.eq(Array(ops["weights"])[weight_bank] if lg else ops["weights"][0]),
                         bank.eq(weight_bank)]
        with m.If(ctl.issue_bias):
            m.d.comb += [delta.eq(ops["plus_row"] - ops["row_state"]), old.eq(ops["old_bias"])]

        lfsr = Signal(32, init=plan.config.lfsr_seed)
        lfsr_next = LFSR.next(lfsr, LFSR.draw_steps)       # a draw: 16 steps in one cycle
        issued = {"valid": Signal(name="issued_valid"),
                  "kind": Signal.like(ctl.kind, name="issued_kind"),
                  "delta": Signal(delta_shape, name="issued_delta"),
                  "draw": Signal(plan.draw_bits, name="issued_draw"),
                  "old": Signal(plan.weight_format.shape(), name="issued_old"),
                  "bank": Signal.like(bank, name="issued_bank"),
                  "addr": Signal.like(ctl.addr, name="issued_addr")}
        m.d.sync += [issued["valid"].eq(issuing), issued["kind"].eq(ctl.kind),
                     issued["delta"].eq(delta), issued["old"].eq(old),
                     issued["bank"].eq(bank), issued["addr"].eq(ctl.addr)]
        if plan.config.m > 0:
            # the f_meta table entry of |old|, read at the issue, there with the issued value
            rule = meta_rule(plan.config)
            table = Memory(shape=unsigned(max(int(rule.table.max()).bit_length(), 1)),
                           depth=len(rule.table), init=[int(v) for v in rule.table])
            m.submodules.meta_table = table
            port = table.read_port()
            magnitude = Signal(plan.weight_format.width + 1)
            m.d.comb += magnitude.eq(Mux(old < 0, -old, old))
            index = magnitude >> rule.shift
            m.d.comb += port.addr.eq(Mux(index > len(rule.table) - 1, len(rule.table) - 1,
                                         index))
            issued["fmeta"] = port.data
        with m.If(issuing):
            m.d.sync += [lfsr.eq(lfsr_next), issued["draw"].eq(lfsr_next[:plan.draw_bits])]
        if self._seedable:
            with m.If(self.seed_we):
                m.d.sync += lfsr.eq(self.seed)
        return issued

    def _round_and_write(self, m, issued):
        """Stochastic rounding of ``D`` by the layer's shift, saturation, write-back."""
        plan, cfg = self._plan, self._plan.config
        wmin, wmax = plan.weight_format.min_raw, plan.weight_format.max_raw
        draw_bits, delta_bits = plan.draw_bits, plan.delta_format.width
        delta, draw = issued["delta"], issued["draw"]
        change = Signal(signed(_change_bits(plan)))
        for k in range(plan.N):
            for is_bias, shift in enumerate(cfg.update_shifts(k)):
                with m.If(issued["kind"] == 2 * k + is_bias):
                    if shift <= 0:
                        m.d.comb += change.eq(delta << -shift)
                    else:
                        rest = delta.as_unsigned()[:shift]
                        up = Cat(Const(0, shift), draw) < Cat(Const(0, draw_bits), rest)
                        m.d.comb += change.eq((delta >> shift) + up)
        old, is_bias = issued["old"], issued["kind"][0]
        if plan.update_latency > 1:
            # a register between the rounding and the rest (decay, f_meta, saturation)
            staged = {name: Signal.like(value, name=f"staged_{name}")
                      for name, value in issued.items() if name not in ("delta", "draw")}
            staged_change = Signal.like(change, name="staged_change")
            m.d.sync += [staged[name].eq(issued[name]) for name in staged]
            m.d.sync += staged_change.eq(change)
            issued = dict(issued, **staged)
            change, old, is_bias = staged_change, staged["old"], staged["kind"][0]
        if cfg.decay_shift:
            d = cfg.decay_shift
            decayed = Signal(signed(len(change) + 1))
            m.d.comb += decayed.eq(change - ((old + (1 << (d - 1))) >> d))
            change = Mux(is_bias, change, decayed)
        if cfg.m > 0:
            f_bits = meta_rule(cfg).f_bits
            shrink = ((old > 0) & (change < 0)) | ((old < 0) & (change > 0))
            scaled = Signal(signed(len(change) + 1))
            m.d.comb += scaled.eq(-(((-change) * issued["fmeta"] + (1 << (f_bits - 1)))
                                    >> f_bits))
            change = Mux(~is_bias & shrink, scaled, change)
        total = Signal(signed(max(len(change), plan.weight_format.width) + 1))
        m.d.comb += total.eq(old + change)
        new_param = Signal(plan.weight_format.shape())
        m.d.comb += new_param.eq(Mux(total < wmin, wmin, Mux(total > wmax, wmax, total)))
        m.d.comb += [self.weight_write.addr.eq(issued["addr"]), self.weight_write.data.eq(new_param),
                     self.bias_write.addr.eq(issued["addr"]), self.bias_write.data.eq(new_param),
                     self.bias_write.en.eq(issued["valid"] & is_bias)]
        m.d.comb += [self.weight_write.en[b].eq(issued["valid"] & ~is_bias & (issued["bank"] == b))
                     for b in range(plan.lanes)]
