"""The read stage: precharge sense amplifier (PCSA) read of 2T2R pair codes into ternary weights.

The read stage is the engine's seam for device models (docs/contracts.md, contract 6): the engine
takes a *read-stage factory* ``factory(lanes=..., addr_bits=...)`` that returns a component with
the signature of :class:`ReadStageSignature` and a ``latency`` attribute (cycles), and accounts for
that latency in its pipeline. :class:`PCSARead` is the ideal read; its golden twin is
:class:`nmflow.golden.pairs.IdealRead`.
"""

from amaranth.hdl import Module, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .weights import pair_row

__all__ = ["TernaryWeight", "ternary_row", "read_row", "ReadStageSignature", "PCSARead"]


class TernaryWeight(data.Struct):
    """A weight in {-1, 0, +1} as sign and magnitude: ``nz`` (non-zero) and ``neg`` (negative)."""
    nz: 1
    neg: 1


def ternary_row(lanes):
    """Layout of a row of ``lanes`` ternary weights."""
    return data.ArrayLayout(TernaryWeight, lanes)


def read_row(lanes, addr_bits):
    """Layout of a row read: its pair codes and its address in the weight memory."""
    return data.StructLayout({"codes": pair_row(lanes), "addr": unsigned(addr_bits)})


class ReadStageSignature(wiring.Signature):
    """What a read stage looks like from the outside.

    Members
    -------
    i : In(stream.Signature(read_row(lanes, addr_bits), always_ready=True))
        One row of pair codes per beat, with its row address, in the order the engine reads them.
    o : Out(stream.Signature(ternary_row(lanes), always_ready=True))
        The ternary weights read, one beat per input beat, ``latency`` cycles later. Between
        beats ``o.payload`` keeps the last beat's weights as long as ``i.payload`` keeps its row
        (the engine's digit-serial first layer uses them for a row's later digits, while the
        datapath holds the row's codes and its address): a registered stage updates its output
        only on a beat, a combinational one follows its input.
    """

    def __init__(self, lanes, addr_bits):
        super().__init__({
            "i": In(stream.Signature(read_row(lanes, addr_bits), always_ready=True)),
            "o": Out(stream.Signature(ternary_row(lanes), always_ready=True)),
        })


class PCSARead(wiring.Component):
    """Ideal PCSA read of a row of pair codes (combinational).

    The sense amplifier races the two branches of a pair: the branch whose device is in LRS
    discharges first, so (BL, BLb) = (LRS, HRS) reads +1 and (HRS, LRS) reads -1. With both in HRS
    neither output differentiates within the sense window: the read is 0 (a ternary weight from one
    sense operation). (LRS, LRS) is never programmed; the ideal read gives 0 for it too.

    Parameters
    ----------
    lanes : int
    addr_bits : int
        Width of the row address (unused by the ideal read).

    Members
    -------
    See :class:`ReadStageSignature`.

    Latency: :attr:`latency` = 0 cycles. Throughput: one row per cycle.
    """

    latency = 0

    def __init__(self, *, lanes, addr_bits):
        self._lanes = lanes
        super().__init__(ReadStageSignature(lanes, addr_bits))

    def elaborate(self, platform):
        m = Module()
        m.d.comb += self.o.valid.eq(self.i.valid)
        for code, weight in zip(self.i.payload.codes, self.o.payload):
            m.d.comb += [weight.nz.eq(code.bl ^ code.blb), weight.neg.eq(code.blb & ~code.bl)]
        return m
