"""Score-and-argmax unit: the last layer's integer scores, the running argmax, the result stream."""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..golden.plan import index_bits

__all__ = ["ScoreArgmax", "result_layout", "score_group_layout"]


def result_layout(n_classes, score_bits):
    """One beat of the engine's result stream: a class index, its score, the argmax, the last flag."""
    cw = index_bits(n_classes)
    return data.StructLayout({
        "index": unsigned(cw), "score": signed(score_bits), "cls": unsigned(cw), "last": unsigned(1),
    })


def score_group_layout(plan):
    """A group of ``pe`` classes as the score unit takes it: each pre-activation with its affine,
    the group's index, and ``end`` on the last group (whose classes past ``n_classes`` are
    padding)."""
    return data.StructLayout({
        "acc": data.ArrayLayout(plan.acc_format.shape(), plan.pe),
        "scale": data.ArrayLayout(plan.scale_format.shape(), plan.pe),
        "offset": data.ArrayLayout(plan.offset_format.shape(), plan.pe),
        "group": plan.group_bits, "end": 1,
    })


class ScoreArgmax(wiring.Component):
    """Scores ``scale * acc + offset`` of the last layer, their argmax, and the result beats.

    Each group of ``pe`` classes arrives with their affines; the unit multiplies (a multiplier per
    class of the group, DSPs), adds the offsets, stores the scores and keeps the running maximum,
    the lowest index winning ties: a pipelined tree picks the group's best (the lower class on a
    tie, padding classes never), which then replaces the running maximum if it is greater (the
    first group always loads it). When the sequencer raises ``start``, the unit sends
    ``n_classes`` result beats from registers (nothing combinational reaches the consumer),
    ``busy`` until the last one is taken.

    Parameters
    ----------
    plan : :class:`~nmflow.golden.plan.EnginePlan`

    Members
    -------
    i : In(stream.Signature(score_group_layout(plan), always_ready=True))
        One group per beat, every group once and in order; at least one cycle apart, and two
        apart when ``plan.split_argmax`` (then the compare and the update of the maximum take a
        cycle each); none from ``start`` until ``busy`` falls.
    stored : Out(1)
        Strobe: a group's scores were stored and compared (the group has completed).
    start : In(1)
        Strobe: send the results (every score is stored).
    o : Out(stream.Signature(result_layout(n_classes, score_bits)))
        ``n_classes`` beats: class ``index``, its ``score``, the argmax ``cls`` (on every beat) and
        ``last`` on the final beat. Backpressure is respected.
    busy : Out(1)
        From the cycle after ``start`` until the last result beat was taken (a register): no
        score may be stored meanwhile.

    Latency: the stages ``multiply``, ``add offset`` and ``argmax`` of
    :data:`nmflow.golden.plan.PIPELINE` from a beat on ``i`` to ``stored``.
    """

    def __init__(self, plan):
        self._plan = plan
        super().__init__({
            "i": In(stream.Signature(score_group_layout(plan), always_ready=True)),
            "stored": Out(1),
            "start": In(1),
            "o": Out(stream.Signature(result_layout(plan.n_classes, plan.model.score_bits))),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        plan = self._plan
        n_classes, pe = plan.n_classes, plan.pe
        score_shape = plan.score_format.shape()
        cls_shape = self.o.payload.cls.shape()
        # The scores wait in a shift register, in class order: a group stored shifts them along by
        # ``pe``, and a result beat sent by one. No read multiplexer, and no write decoder.
        length = plan.groups[-1] * pe
        scores = [Signal(score_shape, name=f"score{j}") for j in range(length)]
        store, emit_shift = Signal(), Signal()
        store_in = [Signal(score_shape, name=f"store_in{q}") for q in range(pe)]
        with m.If(store):
            m.d.sync += [scores[j].eq(scores[j + pe]) for j in range(length - pe)]
            m.d.sync += [scores[length - pe + q].eq(store_in[q]) for q in range(pe)]
        with m.Elif(emit_shift):
            m.d.sync += [scores[j].eq(scores[j + 1]) for j in range(length - 1)]

        # -- multiply, add ---------------------------------------------------------------------------
        beat = self.i.payload
        product_shape = signed(plan.acc_bits + plan.scale_format.width)
        products = [Signal(product_shape, name=f"product{q}") for q in range(pe)]
        offsets = [Signal(plan.offset_format.shape(), name=f"offset{q}") for q in range(pe)]
        p_valid, p_end = Signal(), Signal()
        p_group = Signal(plan.group_bits)
        m.d.sync += [products[q].eq(beat.acc[q] * beat.scale[q]) for q in range(pe)]
        m.d.sync += [offsets[q].eq(beat.offset[q]) for q in range(pe)]
        m.d.sync += [p_valid.eq(self.i.valid), p_group.eq(beat.group), p_end.eq(beat.end)]
        group_scores = [Signal(score_shape, name=f"group_score{q}") for q in range(pe)]
        s_valid, s_end = Signal(), Signal()
        s_group = Signal(plan.group_bits)
        m.d.sync += [group_scores[q].eq(products[q] + offsets[q]) for q in range(pe)]
        m.d.sync += [s_valid.eq(p_valid), s_group.eq(p_group), s_end.eq(p_end)]
        m.d.comb += [store.eq(s_valid)] + [store_in[q].eq(group_scores[q]) for q in range(pe)]

        # -- the group's best: a tree, one register per level; the left (lower) class wins a tie,
        # and a padding class (past n_classes, in the last group) never wins -------------------
        last_real = (n_classes - 1) % pe          # the last group's last real class
        candidates = []
        for q in range(pe):
            present = Signal(name=f"present{q}")
            m.d.comb += present.eq(1 if q <= last_real else ~s_end)
            candidates.append((group_scores[q], Const(q, range(max(pe, 2))), present))
        level = 0
        valid, group = s_valid, s_group
        while len(candidates) > 1:
            level += 1
            merged = []
            for n in range(len(candidates) // 2):
                (ls, li, lp), (rs, ri, rp) = candidates[2 * n], candidates[2 * n + 1]
                score = Signal(score_shape, name=f"best{level}_{n}")
                index = Signal(range(max(pe, 2)), name=f"best_index{level}_{n}")
                present = Signal(name=f"best_present{level}_{n}")
                right = rp & (~lp | (rs > ls))
                m.d.sync += [score.eq(Mux(right, rs, ls)), index.eq(Mux(right, ri, li)),
                             present.eq(lp | rp)]
                merged.append((score, index, present))
            next_valid = Signal(name=f"tree_valid{level}")
            next_group = Signal(plan.group_bits, name=f"tree_group{level}")
            m.d.sync += [next_valid.eq(valid), next_group.eq(group)]
            candidates, valid, group = merged, next_valid, next_group
        g_score, g_index, _ = candidates[0]
        g_class = Signal(cls_shape)
        m.d.comb += g_class.eq(Cat(g_index[:plan.pe_bits], group) if pe > 1 else group)

        best = Signal(score_shape)
        best_index = Signal(cls_shape)
        if plan.split_argmax:
            # Compare in one cycle and update the running maximum in the next: a shorter path
            # than both in one cycle.
            a_valid, a_greater = Signal(), Signal()
            a_class = Signal(cls_shape)
            a_score = Signal(score_shape)
            m.d.sync += [a_valid.eq(valid), a_class.eq(g_class), a_score.eq(g_score),
                         a_greater.eq((group == 0) | (g_score > best))]
            with m.If(a_valid & a_greater):
                m.d.sync += [best.eq(a_score), best_index.eq(a_class)]
            m.d.comb += self.stored.eq(a_valid)
        else:
            with m.If(valid & ((group == 0) | (g_score > best))):
                m.d.sync += [best.eq(g_score), best_index.eq(g_class)]
            m.d.comb += self.stored.eq(valid)

        # -- result beats --------------------------------------------------------------------------
        emitting = self.busy
        emit = Signal(range(max(n_classes, 2)))
        emit_done = Signal()
        with m.If(self.start):
            m.d.sync += emitting.eq(1)
        with m.If(emitting & (~self.o.valid | self.o.ready)):
            with m.If(emit_done):
                m.d.sync += self.o.valid.eq(0)
                with m.If(~self.o.valid | self.o.payload.last):
                    m.d.sync += [emit.eq(0), emit_done.eq(0), emitting.eq(0)]
            with m.Else():
                m.d.comb += emit_shift.eq(1)    # (nothing is stored while the results go out)
                m.d.sync += [
                    self.o.valid.eq(1),
                    self.o.payload.index.eq(emit),
                    self.o.payload.score.eq(scores[0]),
                    self.o.payload.cls.eq(best_index),
                    self.o.payload.last.eq(emit == n_classes - 1),
                    emit.eq(emit + 1),
                    emit_done.eq(emit == n_classes - 1),
                ]
        return m
