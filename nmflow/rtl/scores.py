"""Score-and-argmax unit: the last layer's integer scores, the running argmax, the result stream."""

from amaranth.hdl import Module, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..golden.plan import index_bits

__all__ = ["ScoreArgmax", "result_layout"]


def result_layout(n_classes, score_bits):
    """One beat of the engine's result stream: a class index, its score, the argmax, the last flag."""
    cw = index_bits(n_classes)
    return data.StructLayout({
        "index": unsigned(cw), "score": signed(score_bits), "cls": unsigned(cw), "last": unsigned(1),
    })


class ScoreArgmax(wiring.Component):
    """Scores ``scale * acc + offset`` of the last layer, their argmax, and the result beats.

    Each class's pre-activation arrives with its affine; the unit multiplies (a DSP multiplier),
    adds the offset, stores the score and keeps the running maximum, the lowest index winning ties
    (the first class always loads the maximum). When the sequencer raises ``start``, the unit sends
    ``n_classes`` result beats from registers (nothing combinational reaches the consumer),
    ``busy`` until the last one is taken.

    Parameters
    ----------
    plan : :class:`~nmflow.golden.plan.EnginePlan`

    Members
    -------
    i : In(stream.Signature({"acc", "scale", "offset", "index"}, always_ready=True))
        One class per beat, every class once and in class order; at least one cycle apart, and two
        apart when ``plan.split_argmax`` (then the compare and the update of the maximum take a
        cycle each); none from ``start`` until ``busy`` falls.
    stored : Out(1)
        Strobe: a score was stored (the class has completed).
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
            "i": In(stream.Signature(data.StructLayout({
                "acc": plan.acc_format.shape(), "scale": plan.scale_format.shape(),
                "offset": plan.offset_format.shape(), "index": plan.neuron_bits,
            }), always_ready=True)),
            "stored": Out(1),
            "start": In(1),
            "o": Out(stream.Signature(result_layout(plan.n_classes, plan.model.score_bits))),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        plan = self._plan
        n_classes = plan.n_classes
        score_shape = plan.score_format.shape()
        # The scores wait in a shift register, in class order: a score stored shifts them along,
        # and so does a result beat sent. No read multiplexer, and no write decoder.
        scores = [Signal(score_shape, name=f"score{j}") for j in range(n_classes)]
        shift, shift_in = Signal(), Signal(score_shape)
        with m.If(shift):
            m.d.sync += [scores[j].eq(scores[j + 1]) for j in range(n_classes - 1)]
            m.d.sync += scores[-1].eq(shift_in)
        best = Signal(score_shape)
        best_index = Signal(self.o.payload.cls.shape())

        # -- multiply, add, compare ----------------------------------------------------------------
        beat = self.i.payload
        product = Signal(signed(plan.acc_bits + plan.scale_format.width))
        offset = Signal(plan.offset_format.shape())
        p_valid = Signal()
        p_index = Signal(plan.neuron_bits)
        m.d.sync += [product.eq(beat.acc * beat.scale), offset.eq(beat.offset),
                     p_valid.eq(self.i.valid), p_index.eq(beat.index)]
        score = Signal(score_shape)
        s_valid = Signal()
        s_index = Signal(plan.neuron_bits)
        m.d.sync += [score.eq(product + offset), s_valid.eq(p_valid), s_index.eq(p_index)]
        if plan.split_argmax:
            # Compare in one cycle and update the running maximum in the next: a shorter path
            # than both in one cycle.
            a_valid, a_greater = Signal(), Signal()
            a_index = Signal.like(s_index)
            a_score = Signal(score_shape)
            m.d.sync += [a_valid.eq(s_valid), a_index.eq(s_index), a_score.eq(score),
                         a_greater.eq((s_index == 0) | (score > best))]
            m.d.comb += [shift.eq(a_valid), shift_in.eq(a_score)]
            with m.If(a_valid):
                with m.If(a_greater):
                    m.d.sync += [best.eq(a_score), best_index.eq(a_index)]
            m.d.comb += self.stored.eq(a_valid)
        else:
            m.d.comb += [shift.eq(s_valid), shift_in.eq(score)]
            with m.If(s_valid):
                with m.If((s_index == 0) | (score > best)):
                    m.d.sync += [best.eq(score), best_index.eq(s_index)]
            m.d.comb += self.stored.eq(s_valid)

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
                m.d.comb += shift.eq(1)         # (nothing is stored while the results go out)
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
