"""Precharge sense amplifier (PCSA) read stage: 2T2R pair codes to ternary weights."""

from amaranth.hdl import Module
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from .weights import pair_row

__all__ = ["TernaryWeight", "PCSARead"]


class TernaryWeight(data.Struct):
    """A weight in {-1, 0, +1} as sign and magnitude: ``nz`` (non-zero) and ``neg`` (negative)."""
    nz: 1
    neg: 1


class PCSARead(wiring.Component):
    """Ideal PCSA read of ``lanes`` pair codes (combinational).

    The sense amplifier races the two branches of a pair: the branch whose device is in LRS
    discharges first, so (BL, BLb) = (LRS, HRS) reads +1 and (HRS, LRS) reads -1. With both in HRS
    neither output differentiates within the sense window: the read is 0 (a ternary weight from one
    sense operation). (LRS, LRS) is never programmed; the ideal read gives 0 for it too.

    This is the seam for the device-error model: a later stage may flip a sign (type 1), read a
    +-1 as 0 (type 2) or a 0 as +-1 (type 3) between ``codes`` and ``weights``.

    Members
    -------
    codes : In(pair_row(lanes))
    weights : Out(ArrayLayout(TernaryWeight, lanes))

    Latency: 0 cycles.
    """

    def __init__(self, lanes):
        self._lanes = lanes
        super().__init__({
            "codes": In(pair_row(lanes)),
            "weights": Out(data.ArrayLayout(TernaryWeight, lanes)),
        })

    latency = 0

    def elaborate(self, platform):
        m = Module()
        for code, weight in zip(self.codes, self.weights):
            m.d.comb += [weight.nz.eq(code.bl ^ code.blb), weight.neg.eq(code.blb & ~code.bl)]
        return m
