"""The iCE40UP5K's single-port RAM, ``SB_SPRAM256KA`` (16K x 16), and a behavioural model of it
for simulation: the metaplastic unit's hidden weights and the engine's ``"spram"`` weight memory
are built from it."""

from amaranth.hdl import Elaboratable, Module, Mux, Signal, unsigned
from amaranth.lib.memory import Memory

from ..golden.plan import SPRAM_BITS, SPRAM_WORDS

__all__ = ["SPRAM", "SPRAMModel", "SPRAM_WORDS", "SPRAM_BITS"]


class SPRAMModel(Elaboratable):
    """A behavioural model of the iCE40UP5K's ``SB_SPRAM256KA`` for simulation (not a
    description of the silicon): 16,384 words of 16 bits, one port, the primitive's port names.

    In a cycle with ``CHIPSELECT`` high and ``WREN`` high, the nibbles whose ``MASKWREN`` bit is
    set take ``DATAIN`` at ``ADDRESS``; with ``WREN`` low, ``DATAOUT`` shows the word at
    ``ADDRESS`` from the next cycle on (one cycle of read latency). After a write ``DATAOUT`` is
    undefined on the silicon (Yosys's simulation model of the primitive makes it ``x``): here it
    shows the bitwise inverse of the word it held, until the next read, so that a design which
    uses a read's word after a write fails its tests. ``DATAOUT`` holds its value otherwise. ``STANDBY``, ``SLEEP`` and ``POWEROFF`` (active low) are accepted and must be
    0, 0, 1: the model does not model power states. ``depth`` may be smaller than 16,384 to keep
    simulations light (addresses beyond it are not stored).
    """

    def __init__(self, depth=SPRAM_WORDS):
        self.depth = depth
        self.ADDRESS = Signal(14)
        self.DATAIN = Signal(16)
        self.MASKWREN = Signal(4)
        self.WREN = Signal()
        self.CHIPSELECT = Signal()
        self.STANDBY = Signal()
        self.SLEEP = Signal()
        self.POWEROFF = Signal(init=1)
        self.DATAOUT = Signal(16)

    def elaborate(self, platform):
        m = Module()
        m.submodules.mem = mem = Memory(shape=unsigned(16), depth=self.depth, init=[])
        wr = mem.write_port(granularity=4)
        rd = mem.read_port(transparent_for=())
        active = self.CHIPSELECT & ~self.STANDBY & ~self.SLEEP & self.POWEROFF
        written = Signal()                  # DATAOUT undefined: a write since the last read
        with m.If(active):
            m.d.sync += written.eq(self.WREN)
        m.d.comb += [wr.addr.eq(self.ADDRESS), wr.data.eq(self.DATAIN), rd.addr.eq(self.ADDRESS),
                     wr.en.eq(Mux(active & self.WREN, self.MASKWREN, 0)),
                     rd.en.eq(active & ~self.WREN),
                     self.DATAOUT.eq(Mux(written, ~rd.data, rd.data))]
        return m


class SPRAM(Elaboratable):
    """One 16K x 16 single-port RAM: ``SB_SPRAM256KA`` on an iCE40 platform, else
    :class:`SPRAMModel`. The same signals either way."""

    def __init__(self, depth=SPRAM_WORDS):
        self.model = SPRAMModel(depth)
        for name in ("ADDRESS", "DATAIN", "MASKWREN", "WREN", "CHIPSELECT", "STANDBY", "SLEEP",
                     "POWEROFF", "DATAOUT"):
            setattr(self, name, getattr(self.model, name))

    def elaborate(self, platform):
        from amaranth.vendor import LatticeICE40Platform
        if isinstance(platform, LatticeICE40Platform):
            from amaranth.hdl import Instance
            m = Module()
            m.submodules.spram = Instance(
                "SB_SPRAM256KA", i_ADDRESS=self.ADDRESS, i_DATAIN=self.DATAIN,
                i_MASKWREN=self.MASKWREN, i_WREN=self.WREN, i_CHIPSELECT=self.CHIPSELECT,
                i_CLOCK=self._clock(), i_STANDBY=self.STANDBY, i_SLEEP=self.SLEEP,
                i_POWEROFF=self.POWEROFF, o_DATAOUT=self.DATAOUT)
            return m
        return self.model

    @staticmethod
    def _clock():
        from amaranth.hdl import ClockSignal
        return ClockSignal("sync")
