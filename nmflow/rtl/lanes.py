"""GXNOR lanes and the pipelined popcount adder tree next to the weight memory."""

from amaranth.hdl import Module, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import exact_log2

from ..errors import NmflowError, check_int

from ..golden.plan import check_lanes
from .pcsa import ternary_row

__all__ = ["GXNORPopcount", "check_lanes"]


class GXNORPopcount(wiring.Component):
    """``lanes`` GXNOR lanes and ``pe`` pipelined adder trees: the sums of one row of ternary
    weights (``pe`` neurons side by side, ``simd = lanes / pe`` weights each) times one chunk of
    ``simd`` activations, which every neuron shares.

    Each lane takes a ternary weight (from the engine's read stage, see :mod:`nmflow.rtl.pcsa`)
    and gates its activation ``x``: the product is 0 if the weight is 0, ``x`` if it is +1 and
    ``-x`` if it is -1 (for ``x`` in {-1, 0, +1} this is the GXNOR of Laborieux's thesis, Table
    4.1: reference [T] of docs/contracts.md; for the first layer, ``x`` is a k-bit pixel). Lane
    ``q * simd + s`` multiplies activation ``s`` for neuron ``q``. Each neuron's tree adds its
    products, one register per level: for hidden layers it is the popcount of the +1 products
    minus the popcount of the -1 products.

    Parameters
    ----------
    lanes : int
        Power of two, 1 to 1024.
    x_bits : int
        Width of the signed activations ``x`` (at least 2).
    tag_shape : shape-like
        Side information carried along with each row, unchanged (sequencer flags).
    pe : int
        Neurons per row, a power of two dividing ``lanes``.

    Members
    -------
    i : In(stream.Signature({"weights", "x", "tag"}, always_ready=True))
    o : Out(stream.Signature({"sums", "tag"}, always_ready=True))
        ``sums[q]``: neuron ``q``'s sum.

    Latency: :attr:`latency` = 1 + log2(simd) cycles; log2(simd) with 2-bit activations and
    at least two lanes a neuron (a ternary product is a function of four bits: it goes straight
    into the first adder, saving a register per lane). Throughput: one row per cycle.
    """

    def __init__(self, lanes, x_bits, tag_shape=unsigned(1), *, pe=1):
        check_lanes(lanes)
        check_int("x_bits", x_bits, 2)
        if not isinstance(pe, int) or pe < 1 or pe & (pe - 1) or pe > lanes:
            raise NmflowError(f"pe must be a power of two dividing lanes = {lanes}, not {pe!r}")
        self._lanes = lanes
        self._pe = pe
        self._simd = lanes // pe
        self._x_bits = x_bits
        self._tag_shape = tag_shape
        self._levels = exact_log2(self._simd)
        in_layout = data.StructLayout({
            "weights": ternary_row(lanes),
            "x": data.ArrayLayout(signed(x_bits), self._simd),
            "tag": tag_shape,
        })
        out_layout = data.StructLayout({"sums": data.ArrayLayout(self.sum_shape, pe),
                                        "tag": tag_shape})
        super().__init__({
            "i": In(stream.Signature(in_layout, always_ready=True)),
            "o": Out(stream.Signature(out_layout, always_ready=True)),
        })

    @property
    def sum_shape(self):
        # |x| <= 2**(x_bits-1), one more bit per level of the tree.
        return signed(self._x_bits + self._levels)

    @property
    def registered_products(self):
        """Whether the products have a register of their own (all but 2-bit activations)."""
        return self._x_bits > 2 or self._levels == 0

    @property
    def latency(self):
        return int(self.registered_products) + self._levels

    def elaborate(self, platform):
        m = Module()
        simd = self._simd
        weights, xs = self.i.payload.weights, self.i.payload.x
        valid, tag = self.i.valid, self.i.payload.tag
        if self.registered_products:
            valid, tag = Signal(name="valid0"), Signal(self._tag_shape, name="tag0")
            m.d.sync += [valid.eq(self.i.valid), tag.eq(self.i.payload.tag)]
        for depth in range(self._levels):
            next_valid = Signal(name=f"valid{depth + 1}")
            next_tag = Signal(self._tag_shape, name=f"tag{depth + 1}")
            m.d.sync += [next_valid.eq(valid), next_tag.eq(tag)]
            valid, tag = next_valid, next_tag

        for q in range(self._pe):
            # Lanes: gate and sign each activation by its ternary weight (registered, unless
            # the product goes straight into the first adder).
            width = self._x_bits
            domain = m.d.sync if self.registered_products else m.d.comb
            level = [Signal(signed(width), name=f"product{q}_{s}") for s in range(simd)]
            for s in range(simd):
                weight, x = weights[q * simd + s], xs[s]
                with m.If(~weight.nz):
                    domain += level[s].eq(0)
                with m.Elif(weight.neg):
                    domain += level[s].eq(-x)
                with m.Else():
                    domain += level[s].eq(x)
            # Adder tree: one register per level.
            for depth in range(self._levels):
                width += 1
                pairs = [Signal(signed(width), name=f"sum{q}_{depth + 1}_{n}")
                         for n in range(len(level) // 2)]
                for n, total in enumerate(pairs):
                    m.d.sync += total.eq(level[2 * n] + level[2 * n + 1])
                level = pairs
            m.d.comb += self.o.payload.sums[q].eq(level[0])

        m.d.comb += [self.o.valid.eq(valid), self.o.payload.tag.eq(tag)]
        return m
