"""GXNOR lanes and the pipelined popcount adder tree next to the weight memory."""

from amaranth.hdl import Module, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import exact_log2

from ..errors import check_int

from ..golden.plan import check_lanes
from .pcsa import ternary_row

__all__ = ["GXNORPopcount", "check_lanes"]


class GXNORPopcount(wiring.Component):
    """``lanes`` GXNOR lanes and a pipelined adder tree: the sum of one row of ternary weights times
    one chunk of activations.

    Each lane takes a ternary weight (from the engine's read stage, see :mod:`nmflow.rtl.pcsa`)
    and gates its activation ``x``: the product is 0 if the weight is 0, ``x`` if it is +1 and
    ``-x`` if it is -1 (for ``x`` in {-1, 0, +1} this is the GXNOR of Laborieux's thesis, Table
    4.1: reference [T] of docs/contracts.md; for the first layer, ``x`` is a k-bit pixel). The tree adds the products, one register per level: for hidden layers
    it is the popcount of the +1 products minus the popcount of the -1 products.

    Parameters
    ----------
    lanes : int
        Power of two, 1 to 256.
    x_bits : int
        Width of the signed activations ``x`` (at least 2).
    tag_shape : shape-like
        Side information carried along with each row, unchanged (sequencer flags).

    Members
    -------
    i : In(stream.Signature({"weights", "x", "tag"}, always_ready=True))
    o : Out(stream.Signature({"sum", "tag"}, always_ready=True))

    Latency: :attr:`latency` = 1 + log2(lanes) cycles. Throughput: one row per cycle.
    """

    def __init__(self, lanes, x_bits, tag_shape=unsigned(1)):
        check_lanes(lanes)
        check_int("x_bits", x_bits, 2)
        self._lanes = lanes
        self._x_bits = x_bits
        self._tag_shape = tag_shape
        self._levels = exact_log2(lanes)
        in_layout = data.StructLayout({
            "weights": ternary_row(lanes),
            "x": data.ArrayLayout(signed(x_bits), lanes),
            "tag": tag_shape,
        })
        out_layout = data.StructLayout({"sum": self.sum_shape, "tag": tag_shape})
        super().__init__({
            "i": In(stream.Signature(in_layout, always_ready=True)),
            "o": Out(stream.Signature(out_layout, always_ready=True)),
        })

    @property
    def sum_shape(self):
        # |x| <= 2**(x_bits-1), one more bit per level of the tree.
        return signed(self._x_bits + self._levels)

    @property
    def latency(self):
        return 1 + self._levels

    def elaborate(self, platform):
        m = Module()
        # Lanes: gate and sign each activation by its ternary weight, registered.
        width = self._x_bits
        level = [Signal(signed(width), name=f"product{p}") for p in range(self._lanes)]
        for p, (weight, x) in enumerate(zip(self.i.payload.weights, self.i.payload.x)):
            with m.If(~weight.nz):
                m.d.sync += level[p].eq(0)
            with m.Elif(weight.neg):
                m.d.sync += level[p].eq(-x)
            with m.Else():
                m.d.sync += level[p].eq(x)
        valid = Signal(name="valid0")
        tag = Signal(self._tag_shape, name="tag0")
        m.d.sync += [valid.eq(self.i.valid), tag.eq(self.i.payload.tag)]

        # Adder tree: one register per level.
        for depth in range(self._levels):
            width += 1
            pairs = [Signal(signed(width), name=f"sum{depth + 1}_{n}")
                     for n in range(len(level) // 2)]
            for n, total in enumerate(pairs):
                m.d.sync += total.eq(level[2 * n] + level[2 * n + 1])
            next_valid = Signal(name=f"valid{depth + 1}")
            next_tag = Signal(self._tag_shape, name=f"tag{depth + 1}")
            m.d.sync += [next_valid.eq(valid), next_tag.eq(tag)]
            level, valid, tag = pairs, next_valid, next_tag

        m.d.comb += [
            self.o.valid.eq(valid),
            self.o.payload.sum.eq(level[0]),
            self.o.payload.tag.eq(tag),
        ]
        return m
