"""The iCEBreaker board top: a platform-free design with a UART, on the iCE40UP5K.

The iCEBreaker (1BitSquared) carries a Lattice iCE40UP5K-SG48 (5,280 logic cells, 30 block RAMs of
4 kbit, 4 SPRAMs of 256 kbit, 8 DSPs), a 12 MHz oscillator and an FTDI FT2232H whose second channel
is a UART to the host (pins 6 = FPGA receives, 9 = FPGA transmits).

:class:`BoardTop` is shared by every nmflow board: it takes any platform-free component with the
two pin ports ``rx: In(1)`` and ``tx: Out(1)``, constructs it for the board's clock, requests the
board's ``uart`` resource at the top level and connects it through :class:`amaranth.lib.io.Buffer`
instances.
"""

from amaranth.hdl import Elaboratable, Module
from amaranth.lib import io, wiring
from amaranth.lib.wiring import In, Out
from amaranth_boards.icebreaker import ICEBreakerPlatform

from ..errors import NmflowError
from .report import BoardInfo

__all__ = ["BoardTop", "ICEBreakerTop", "INFO"]


class BoardTop(wiring.Component):
    """A board top: the board's UART pins wired to a platform-free core.

    The core is built inside :meth:`elaborate`, when the platform and so the board's clock are
    known: ``top_factory(clk_freq=platform.default_clk_frequency)``. The core runs in the ``sync``
    domain, which the platform creates from the board's default clock with a power-on reset.

    Parameters
    ----------
    top_factory : callable
        ``top_factory(clk_freq=hz)`` returns a :class:`~amaranth.lib.wiring.Component` whose
        signature has exactly the pin ports ``rx: In(1)`` (UART input, idle high) and
        ``tx: Out(1)`` (UART output, idle high), e.g.
        ``lambda clk_freq: HostTop(model, clk_freq=clk_freq)``.

    Members
    -------
    The board top has no ports: it is the top of the design and owns the pins.

    Raises
    ------
    NmflowError
        If ``top_factory`` is not callable (at construction), or the core it returns does not have
        exactly the ports ``rx: In(1)`` and ``tx: Out(1)`` (at elaboration).
    """

    #: Resource name of the host UART on the board.
    uart_resource = "uart"

    def __init__(self, top_factory):
        if not callable(top_factory):
            self._MustUse__silence = True   # refused, so never elaborated: no "unused" warning
            raise NmflowError(f"top_factory must be a callable taking clk_freq= and returning a "
                              f"component with ports rx and tx, not {top_factory!r}")
        self._top_factory = top_factory
        super().__init__({})

    def _make_core(self, clk_freq):
        core = self._top_factory(clk_freq=clk_freq)
        expected = {"rx": In(1), "tx": Out(1)}
        members = getattr(getattr(core, "signature", None), "members", None)
        found = dict(members.items()) if members is not None else None
        if not isinstance(core, wiring.Component) or found != expected:
            if isinstance(core, Elaboratable):
                core._MustUse__silence = True   # refused, so never elaborated
            if found is None or not isinstance(core, wiring.Component):
                shown = f"a {type(core).__name__}"
            else:
                ports = ", ".join(f"{name}: {member!r}" for name, member in found.items())
                shown = f"a component with {ports or 'no ports'}"
            raise NmflowError(f"top_factory must return a component with exactly the ports "
                              f"rx: In(1) and tx: Out(1), not {shown}")
        return core

    def elaborate(self, platform):
        core = self._make_core(platform.default_clk_frequency)

        m = Module()
        m.submodules.core = core

        uart = platform.request(self.uart_resource, 0, dir="-")
        m.submodules.rx_buffer = rx_buffer = io.Buffer("i", uart.rx)
        m.submodules.tx_buffer = tx_buffer = io.Buffer("o", uart.tx)
        m.d.comb += [
            core.rx.eq(rx_buffer.i),
            tx_buffer.o.eq(core.tx),
        ]
        return m


class ICEBreakerTop(BoardTop):
    """The iCEBreaker top: the core's ``rx``/``tx`` on the FTDI UART (pins 6 and 9).

    The iCEBreaker's ``uart`` resource has the attributes ``IO_STANDARD=SB_LVTTL, PULLUP=1``, so an
    unconnected receive line idles high. See :class:`BoardTop` for the parameters.
    """


#: Facts about the iCEBreaker used for budget checks and builds.
INFO = BoardInfo(
    name="icebreaker",
    title="iCEBreaker",
    family="ice40",
    device="iCE40UP5K",
    platform=ICEBreakerPlatform,
    top=ICEBreakerTop,
    clock_hz=12_000_000,
    logic_cells=5280,
    logic_cell_type="ICESTORM_LC",
    block_rams=30,
    block_ram_bits=4096,
    block_ram_type="ICESTORM_RAM",
    dsps=8,
    dsp_type="ICESTORM_DSP",
    target_mhz=50.0,
    bitstream_suffix=".bin",
    # `-dsp` maps wide multiplications onto SB_MAC16 (the UltraPlus DSPs); Amaranth's synth_ice40
    # call does not pass it. `-device u` makes ABC optimise for UltraPlus timing.
    synth_opts=("-dsp", "-device", "u"),
)
