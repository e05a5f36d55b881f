"""Threshold and activation unit: integer pre-activation to a sign or ternary activation."""

from amaranth.hdl import Module, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..errors import check_int

__all__ = ["ThresholdUnit"]


class ThresholdUnit(wiring.Component):
    """Apply the activation rule of contract 1 (BatchNorm folded into integer thresholds).

    ``sign``: ``+1 if acc >= t_hi else -1``. ``ternary``: ``+1 if acc >= t_hi``, ``-1 if
    acc < t_lo``, else 0. The activation is a 2-bit signed value.

    Parameters
    ----------
    acc_bits : int
        Width of the signed pre-activation.
    tag_shape : shape-like
        Side information carried along, unchanged.

    Members
    -------
    i : In(stream.Signature({"acc", "t_hi", "t_lo", "ternary", "tag"}, always_ready=True))
    o : Out(stream.Signature({"act", "tag"}, always_ready=True))

    Latency: :attr:`latency` = 1 cycle. Throughput: one activation per cycle.
    """

    latency = 1

    def __init__(self, acc_bits, tag_shape=unsigned(1)):
        check_int("acc_bits", acc_bits, 2)
        self._tag_shape = tag_shape
        in_layout = data.StructLayout({
            "acc": signed(acc_bits), "t_hi": signed(acc_bits), "t_lo": signed(acc_bits),
            "ternary": 1, "tag": tag_shape,
        })
        out_layout = data.StructLayout({"act": signed(2), "tag": tag_shape})
        super().__init__({
            "i": In(stream.Signature(in_layout, always_ready=True)),
            "o": Out(stream.Signature(out_layout, always_ready=True)),
        })

    def elaborate(self, platform):
        m = Module()
        p = self.i.payload
        at_or_above = p.acc >= p.t_hi
        below = p.acc < p.t_lo
        act = Signal(signed(2))
        with m.If(at_or_above):
            m.d.comb += act.eq(1)
        with m.Elif(below | ~p.ternary):
            m.d.comb += act.eq(-1)
        with m.Else():
            m.d.comb += act.eq(0)
        m.d.sync += [
            self.o.valid.eq(self.i.valid),
            self.o.payload.act.eq(act),
            self.o.payload.tag.eq(p.tag),
        ]
        return m
