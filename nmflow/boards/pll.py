"""The run clock: a PLL from the board's oscillator to the frequency the design meets.

A board's oscillator (12 MHz on the iCEBreaker, 25 MHz on the ULX3S) is far below what the engine
reaches after routing, so a build can run its ``sync`` domain from the FPGA's PLL instead:

* iCE40 (``SB_PLL40_PAD``, simple feedback): ``f_out = f_in * (DIVF + 1) / ((DIVR + 1) * 2**DIVQ)``
  with the phase detector at ``f_in / (DIVR + 1)`` in 10-133 MHz, the VCO at
  ``f_in * (DIVF + 1) / (DIVR + 1)`` in 533-1066 MHz, ``DIVQ`` 1-6 and the output in 16-275 MHz
  (Lattice TN1251, the ranges icepll enforces); ``FILTER_RANGE`` follows the phase detector.
* ECP5 (``EHXPLLL``, feedback from ``CLKOP``): ``f_out = f_in * CLKFB_DIV / CLKI_DIV`` with the
  phase detector at ``f_in / CLKI_DIV`` in 3.125-400 MHz, the VCO at ``f_out * CLKOP_DIV`` in
  400-800 MHz and the output in 3.125-400 MHz (Lattice TN1263, the ranges ecppll enforces).

:func:`solve` finds the settings of the highest frequency the PLL makes at or below a request;
:class:`RunClock` is the board-side circuit: the PLL on the oscillator's pad, and a ``ready``
that rises once the PLL has locked and then held its lock for 15 us (the iCE40's block RAMs read
as zero for about 3 us after configuration; Amaranth's own power-on reset waits as long).
"""

from dataclasses import asdict, dataclass
from fractions import Fraction

from amaranth.hdl import ClockDomain, ClockSignal, Const, Elaboratable, Instance, Module, Signal
from amaranth.lib import io
from amaranth.lib.cdc import FFSynchronizer

from ..errors import NmflowError

__all__ = ["PllSettings", "RunClock", "frequencies", "solve"]

#: Microseconds the ``sync`` reset is held after the PLL locks.
RESET_US = 15


@dataclass(frozen=True)
class PllSettings:
    """One PLL configuration: the family, the divider settings, and the frequencies they give.

    Members
    -------
    family : str
        ``"ice40"`` or ``"ecp5"``.
    input_hz, output_hz : Fraction
        The oscillator, and the exact output frequency the dividers make of it.
    vco_hz, pfd_hz : Fraction
        The VCO and phase-detector frequencies (in range by construction).
    dividers : dict
        iCE40: ``DIVR``, ``DIVF``, ``DIVQ``, ``FILTER_RANGE``; ECP5: ``CLKI_DIV``, ``CLKFB_DIV``,
        ``CLKOP_DIV``, ``CLKOP_CPHASE``.
    """
    family: str
    input_hz: Fraction
    output_hz: Fraction
    vco_hz: Fraction
    pfd_hz: Fraction
    dividers: dict

    @property
    def output_mhz(self):
        return float(self.output_hz) / 1e6

    def to_dict(self):
        """Plain JSON types: the frequencies in MHz, the dividers as they are."""
        result = asdict(self)
        for name in ("input_hz", "output_hz", "vco_hz", "pfd_hz"):
            result[name.replace("_hz", "_mhz")] = round(float(result.pop(name)) / 1e6, 6)
        return result


def _ice40_filter(pfd_hz):
    # The loop filter setting for the phase-detector frequency (icepll's table).
    for limit, setting in ((17e6, 1), (26e6, 2), (44e6, 3), (66e6, 4), (101e6, 5)):
        if pfd_hz < limit:
            return setting
    return 6


def _ice40(input_hz):
    for divr in range(16):
        pfd = Fraction(input_hz) / (divr + 1)
        if not 10e6 <= pfd <= 133e6:
            continue
        for divf in range(128):
            vco = pfd * (divf + 1)
            if not 533e6 <= vco <= 1066e6:
                continue
            for divq in range(1, 7):
                out = vco / 2 ** divq
                if 16e6 <= out <= 275e6:
                    yield PllSettings("ice40", Fraction(input_hz), out, vco, pfd,
                                      {"DIVR": divr, "DIVF": divf, "DIVQ": divq,
                                       "FILTER_RANGE": _ice40_filter(pfd)})


def _ecp5(input_hz):
    for clki_div in range(1, 129):
        pfd = Fraction(input_hz) / clki_div
        if not 3.125e6 <= pfd <= 400e6:
            continue
        for clkfb_div in range(1, 81):
            out = pfd * clkfb_div
            if not 3.125e6 <= out <= 400e6:
                continue
            for clkop_div in range(1, 129):
                vco = out * clkop_div
                if 400e6 <= vco <= 800e6:
                    yield PllSettings("ecp5", Fraction(input_hz), out, vco, pfd,
                                      {"CLKI_DIV": clki_div, "CLKFB_DIV": clkfb_div,
                                       "CLKOP_DIV": clkop_div,
                                       "CLKOP_CPHASE": (clkop_div - 1) // 2})


_FAMILIES = {"ice40": _ice40, "ecp5": _ecp5}
_CACHE = {}


def _all(family, input_hz):
    if family not in _FAMILIES:
        raise NmflowError(f"family must be one of {', '.join(_FAMILIES)}, not {family!r}")
    key = (family, int(input_hz))
    if key not in _CACHE:
        best = {}
        # Per output frequency, the settings whose VCO sits nearest the middle of its range
        # (the PLL's least jitter), then the smallest dividers.
        middle = 800e6 if family == "ice40" else 600e6
        for settings in _FAMILIES[family](input_hz):
            rank = (abs(settings.vco_hz - middle), tuple(settings.dividers.values()))
            if settings.output_hz not in best or rank < best[settings.output_hz][0]:
                best[settings.output_hz] = (rank, settings)
        _CACHE[key] = [best[hz][1] for hz in sorted(best)]
    return _CACHE[key]


def frequencies(family, input_hz):
    """Every output frequency (Hz, exact) the family's PLL makes of ``input_hz``, ascending."""
    return [settings.output_hz for settings in _all(family, input_hz)]


def solve(family, input_hz, request_hz, accept=None):
    """The settings of the highest PLL output at or below ``request_hz`` (and, with ``accept``, for
    which ``accept(output_hz)`` is true: a UART that must divide the clock into its baud rate).

    Raises
    ------
    NmflowError
        If the family's PLL cannot make a frequency that low from ``input_hz`` (one line, with
        its lowest output).
    """
    candidates = _all(family, input_hz)
    below = [settings for settings in candidates if settings.output_hz <= request_hz
             and (accept is None or accept(float(settings.output_hz)))]
    if not below:
        lowest = float(candidates[0].output_hz) / 1e6 if candidates else None
        raise NmflowError(f"clock must be at least the {family} PLL's lowest output from "
                          f"{int(input_hz) / 1e6:g} MHz ({lowest:g} MHz), not "
                          f"{float(request_hz) / 1e6:g} MHz")
    return below[-1]


class RunClock(Elaboratable):
    """A PLL on the board's oscillator, and a reset held until it has locked.

    Elaborated by a board top (:class:`~nmflow.boards.top.BoardTop`), which drives its ``sync``
    domain from ``clock`` and ``reset`` in place of the platform's default clock.

    Parameters
    ----------
    settings : PllSettings

    Members
    -------
    clock : Signal
        The PLL's output.
    ready : Signal
        Low from configuration until the PLL's lock has held for :data:`RESET_US` (a register
        clocked by ``clock``).
    locked : Signal
        The PLL's LOCK output, unsynchronised.
    """

    def __init__(self, settings):
        self.settings = settings
        self.clock = Signal()
        self.ready = Signal()
        self.locked = Signal()

    def elaborate(self, platform):
        m = Module()
        pin = platform.request(platform.default_clk, dir="-")
        dividers = self.settings.dividers
        if self.settings.family == "ice40":
            # The iCE40 PLL's reference is its pad (the oscillator's pin is the PLL's input).
            m.submodules.pll = Instance(
                "SB_PLL40_PAD",
                p_FEEDBACK_PATH="SIMPLE",
                p_DIVR=Const(dividers["DIVR"], 4), p_DIVF=Const(dividers["DIVF"], 7),
                p_DIVQ=Const(dividers["DIVQ"], 3),
                p_FILTER_RANGE=Const(dividers["FILTER_RANGE"], 3),
                i_PACKAGEPIN=pin.io, i_RESETB=Const(1), i_BYPASS=Const(0),
                o_PLLOUTGLOBAL=self.clock, o_LOCK=self.locked)
        else:
            m.submodules.clk_buf = buffer = io.Buffer("i", pin)
            m.submodules.pll = Instance(
                "EHXPLLL",
                a_FREQUENCY_PIN_CLKI=f"{float(self.settings.input_hz) / 1e6:g}",
                a_FREQUENCY_PIN_CLKOP=f"{self.settings.output_mhz:g}",
                a_ICP_CURRENT="12", a_LPF_RESISTOR="8", a_MFG_ENABLE_FILTEROPAMP="1",
                a_MFG_GMCREF_SEL="2",
                p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED", p_STDBY_ENABLE="DISABLED",
                p_DPHASE_SOURCE="DISABLED", p_OUTDIVIDER_MUXA="DIVA",
                p_CLKOP_ENABLE="ENABLED", p_CLKOP_FPHASE=0, p_FEEDBK_PATH="CLKOP",
                p_CLKI_DIV=dividers["CLKI_DIV"], p_CLKFB_DIV=dividers["CLKFB_DIV"],
                p_CLKOP_DIV=dividers["CLKOP_DIV"], p_CLKOP_CPHASE=dividers["CLKOP_CPHASE"],
                i_CLKI=buffer.i, i_CLKFB=self.clock, i_RST=Const(0), i_STDBY=Const(0),
                i_PHASESEL0=Const(0), i_PHASESEL1=Const(0), i_PHASEDIR=Const(1),
                i_PHASESTEP=Const(1), i_PHASELOADREG=Const(1), i_PLLWAKESYNC=Const(0),
                i_ENCLKOP=Const(0),
                o_CLKOP=self.clock, o_LOCK=self.locked)

        # ``ready`` rises once the lock (synchronised) has held for RESET_US.
        m.domains.run_por = ClockDomain("run_por", reset_less=True)
        m.d.comb += ClockSignal("run_por").eq(self.clock)
        locked = Signal()
        m.submodules.lock_sync = FFSynchronizer(self.locked, locked, o_domain="run_por")
        delay = int(RESET_US * 1e-6 * float(self.settings.output_hz)) + 1
        count = Signal(range(delay + 1))
        with m.If(~locked):
            m.d.run_por += count.eq(0)
        with m.Elif(count != delay):
            m.d.run_por += count.eq(count + 1)
        m.d.run_por += self.ready.eq(locked & (count == delay))
        return m
