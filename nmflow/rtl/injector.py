"""The PCSA read stage with read-error injection (types 1, 2 and 3 of the thesis, Table 4.2).

:class:`PCSAErrorRead` is a read stage (docs/contracts.md, contract 6) that reads pair codes like
the ideal :class:`~nmflow.rtl.pcsa.PCSARead` and makes, lane by lane, the errors of an
:class:`~nmflow.golden.injector.ErrorInjection`: the arithmetic (fixed-point thresholds, one
31-bit LFSR per lane, the seeding, the two modes) is specified once in
:mod:`nmflow.golden.injector`, whose :class:`~nmflow.golden.injector.InjectedRead` is its golden
twin, bit for bit.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..errors import NmflowError
from ..golden.injector import LFSR_BITS, SEED_BITS, ErrorInjection, lane_salt
from .pcsa import read_row, ternary_row

__all__ = ["PCSAErrorRead", "error_config_layout", "config_payload"]


def error_config_layout(rate_bits):
    """A run-time configuration of the injector: thresholds ``t1``, ``t12``, ``t3`` (fractions of
    ``2^rate_bits``), the seed and the mode (``static`` = 1 for a static error map)."""
    t = unsigned(rate_bits + 1)
    return data.StructLayout({"t1": t, "t12": t, "t3": t, "seed": unsigned(SEED_BITS),
                              "static": 1})


def config_payload(injection):
    """The configuration beat (a dict for the layout) that sets ``injection`` at run time."""
    t1, t12, t3 = injection.thresholds()
    return {"t1": t1, "t12": t12, "t3": t3, "seed": injection.seed,
            "static": int(injection.mode == "static")}


class PCSAErrorRead(wiring.Component):
    """PCSA read of a row of pair codes with injected read errors.

    Parameters
    ----------
    lanes : int
    addr_bits : int
    injection : :class:`~nmflow.golden.injector.ErrorInjection`
        The configuration after reset: rates, seed, mode and ``rate_bits``.
    last_row : int
        Address of the memory's last row: in ``"static"`` mode the sources restart from the seed
        after it is read.

    Members
    -------
    i, o : see :class:`~nmflow.rtl.pcsa.ReadStageSignature`
    config : In(stream.Signature(error_config_layout(rate_bits), always_ready=True))
        A beat sets new thresholds, seed and mode; the sources restart from the new seed. Send
        it while no read is under way (the engine idle); reads from the third cycle after the
        beat on use the new configuration.

    Latency: :attr:`latency` = 1 cycle (the decision is registered). Throughput: one row per
    cycle. Cost per lane: a 31-bit LFSR, three ``rate_bits``-bit comparators and four flags:
    the comparisons are made one read ahead, on the state the next read uses, so that a read
    only selects among registered flags and the injector stays off the engine's critical path.
    """

    latency = 1

    def __init__(self, *, lanes, addr_bits, injection, last_row):
        if not isinstance(injection, ErrorInjection):
            raise TypeError(f"injection must be an ErrorInjection, not "
                            f"{type(injection).__name__}")
        if not isinstance(last_row, int) or not 0 <= last_row < (1 << addr_bits):
            raise NmflowError(f"last_row must be a row address of {addr_bits} bits, "
                             f"not {last_row!r}")
        self._lanes = lanes
        self._injection = injection
        self._last_row = last_row
        super().__init__({
            "i": In(stream.Signature(read_row(lanes, addr_bits), always_ready=True)),
            "o": Out(stream.Signature(ternary_row(lanes), always_ready=True)),
            "config": In(stream.Signature(error_config_layout(injection.rate_bits),
                                          always_ready=True)),
        })

    injection = property(lambda self: self._injection)

    def elaborate(self, platform):
        m = Module()
        inj = self._injection
        bits = inj.rate_bits
        t1_0, t12_0, t3_0 = inj.thresholds()

        t1 = Signal(bits + 1, init=t1_0)
        t12 = Signal(bits + 1, init=t12_0)
        t3 = Signal(bits + 1, init=t3_0)
        seed = Signal(SEED_BITS, init=inj.seed)
        static = Signal(init=int(inj.mode == "static"))
        pending = Signal()          # a new seed waits to be loaded into the sources
        cfg = self.config.payload
        m.d.sync += pending.eq(self.config.valid)
        with m.If(self.config.valid):
            m.d.sync += [t1.eq(cfg.t1), t12.eq(cfg.t12), t3.eq(cfg.t3), seed.eq(cfg.seed),
                         static.eq(cfg.static)]

        read = self.i.valid
        # The sources run one read ahead: ``ahead`` holds the state of the read after next and
        # ``flags`` the comparisons of the next read's draw, registered, so that a read only
        # selects among registered flags (the comparators' carry chains stay off the
        # memory-to-lanes path and the row address never reaches them). After a configuration
        # beat, ``pending`` loads the seed states and ``prime`` makes their comparisons; those
        # are also kept in ``seed_flags``, which a ``static`` restart (after the read of the last
        # row) puts back in one cycle, with the states one step past the seed.
        prime = Signal()
        m.d.sync += prime.eq(pending)
        # The engine reads the rows in address order (docs/contracts.md, contract 6), so whether
        # a read is of the last row is known one read before, and held in a register: the
        # restart that fans out to every lane's state then starts at a flip-flop.
        to_last = Signal(init=self._last_row == 0)
        with m.If(read):
            m.d.sync += to_last.eq(self.i.payload.addr == self._last_row - 1
                                   if self._last_row else 1)
        restart = static & read & to_last

        m.d.sync += self.o.valid.eq(read)
        # Each lane's source: a 31-bit Fibonacci LFSR, ``step`` bits per read, whose ``step``-step
        # next state is wiring and ``step`` XORs of two bits (the description's gateware face).
        lfsr = inj.lfsr
        step = lfsr.draw_steps

        def advance(state):
            return lfsr.next(state, step)

        init = inj.states(self._lanes)
        for p, (code, weight) in enumerate(zip(self.i.payload.codes, self.o.payload)):
            start = (seed ^ Const(lane_salt(p), LFSR_BITS)) | 1
            ahead = Signal(LFSR_BITS, name=f"lfsr{p}", init=lfsr.step(int(init[p]), step))
            u0, sign0 = int(init[p]) & (inj.one - 1), int(init[p]) >> bits & 1
            first = (u0 < t1_0) | (u0 < t12_0) << 1 | (u0 < t3_0) << 2 | sign0 << 3
            flags = Signal(4, name=f"flags{p}", init=first)
            seed_flags = Signal(4, name=f"seed_flags{p}", init=first)
            u = ahead[:bits]
            draw = Cat(u < t1, u < t12, u < t3, ahead[bits])
            with m.If(pending):
                m.d.sync += ahead.eq(start)
            with m.Elif(prime):
                m.d.sync += [ahead.eq(advance(ahead)), flags.eq(draw), seed_flags.eq(draw)]
            with m.Elif(restart):
                m.d.sync += [ahead.eq(advance(start)), flags.eq(seed_flags)]
            with m.Elif(read):
                m.d.sync += [ahead.eq(advance(ahead)), flags.eq(draw)]
            flip, below12, appear, sign = flags

            # The ideal read, then the decision (see nmflow.golden.injector).
            nz, neg = code.bl ^ code.blb, code.blb & ~code.bl
            read_nz = Mux(nz, flip | ~below12, appear)
            read_neg = Mux(nz, neg ^ flip, sign)
            with m.If(read):
                m.d.sync += [weight.nz.eq(read_nz), weight.neg.eq(read_nz & read_neg)]
        return m
