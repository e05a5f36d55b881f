"""The board top shared by every nmflow board: the board's UART pins wired to a platform-free core.

:class:`BoardTop` takes any platform-free component with the two pin ports ``rx: In(1)`` and
``tx: Out(1)`` (and, if it likes, output-only status members such as
:class:`~nmflow.rtl.top.HostTop`'s ``idle`` and ``receiving``, which stay unconnected), constructs
it for the board's clock, requests the board's ``uart`` resource at the top level and connects it
through :class:`amaranth.lib.io.Buffer` instances. Each board module subclasses it
(:class:`~nmflow.boards.icebreaker.ICEBreakerTop`, :class:`~nmflow.boards.ulx3s.ULX3STop`).
"""

from amaranth.hdl import ClockDomain, Module
from amaranth.lib import io, wiring
from amaranth.lib.cdc import ResetSynchronizer
from amaranth.lib.wiring import In, Out

from ..errors import NmflowError
from .pll import RunClock

__all__ = ["BoardTop"]

#: The pin ports a core must have, and their exact members.
PINS = {"rx": In(1), "tx": Out(1)}


def _check_factory(top_factory):
    if not callable(top_factory):
        raise NmflowError(f"top_factory must be a callable taking clk_freq= and returning a "
                          f"component with ports rx and tx, not {top_factory!r}")


def _ports(members, prefix="", flipped=False):
    """``(name, member)`` of every port under ``members``, with its flow as seen from outside."""
    for name, member in members.items():
        if member.is_port:
            yield prefix + name, member.flip() if flipped else member
        else:
            yield from _ports(member.signature.members, f"{prefix}{name}.",
                              flipped != (member.flow == In))


def _refusal(core):
    """Why ``core`` cannot sit behind the board's pins, or ``None`` if it can."""
    if not isinstance(core, wiring.Component):
        return f"a {type(core).__name__}"
    ports = dict(_ports(core.signature.members))
    pins_ok = all(ports.get(name) == member for name, member in PINS.items())
    others_ok = all(member.flow == Out for name, member in ports.items() if name not in PINS)
    if pins_ok and others_ok:
        return None
    shown = ", ".join(f"{name}: {member!r}" for name, member in ports.items())
    return f"a component with {shown or 'no ports'}"


class BoardTop(wiring.Component):
    """A board top: the board's UART pins wired to a platform-free core.

    The core is built inside :meth:`elaborate`, when the platform and so the board's clock are
    known: ``top_factory(clk_freq=hz)``. The core runs in the ``sync`` domain: without ``pll``,
    the platform creates it from the board's oscillator with a power-on reset
    (``hz = platform.default_clk_frequency``); with ``pll``, a
    :class:`~nmflow.boards.pll.RunClock` makes it from the PLL's output (``hz`` is that output)
    and resets it until the PLL has locked.

    Parameters
    ----------
    top_factory : callable
        ``top_factory(clk_freq=hz)`` returns a :class:`~amaranth.lib.wiring.Component` whose
        signature has the pin ports ``rx: In(1)`` (UART input, idle high) and ``tx: Out(1)``
        (UART output, idle high) and otherwise only outputs (status, left unconnected), e.g.
        ``lambda clk_freq: HostTop(model, clk_freq=clk_freq)``.
    pll : :class:`~nmflow.boards.pll.PllSettings`, optional
        The PLL that makes the run clock of the board's oscillator; the oscillator itself when
        ``None``.
    constraint_hz : float, optional
        With ``pll``: the frequency nextpnr is asked to meet on the run clock (its output
        frequency when ``None``).

    Members
    -------
    The board top has no ports: it is the top of the design and owns the pins.

    Raises
    ------
    NmflowError
        If ``top_factory`` is not callable (at construction, before the board top exists), or
        the core it returns lacks ``rx: In(1)`` or ``tx: Out(1)`` or has another input (at
        elaboration).
    """

    #: Resource name of the host UART on the board.
    uart_resource = "uart"

    def __new__(cls, top_factory, *, pll=None, constraint_hz=None):
        # Checked before the object exists: a refused board top is never an unused elaboratable.
        _check_factory(top_factory)
        return super().__new__(cls, src_loc_at=1)

    def __init__(self, top_factory, *, pll=None, constraint_hz=None):
        self._top_factory = top_factory
        self._pll = pll
        self._constraint_hz = constraint_hz
        super().__init__({})

    def _make_core(self, clk_freq):
        core = self._top_factory(clk_freq=clk_freq)
        refusal = _refusal(core)
        if refusal is not None:
            raise NmflowError(f"top_factory must return a component with the ports rx: In(1) and "
                              f"tx: Out(1) and otherwise only outputs, not {refusal}")
        return core

    def elaborate(self, platform):
        m = Module()
        if self._pll is None:
            core = self._make_core(platform.default_clk_frequency)
        else:
            m.submodules.run_clock = run_clock = RunClock(self._pll)
            m.domains.sync = sync = ClockDomain("sync")
            m.d.comb += sync.clk.eq(run_clock.clock)
            # As the platform's own power-on reset: asserted at once, released on the clock.
            m.submodules.reset_sync = ResetSynchronizer(~run_clock.ready, domain="sync")
            # nextpnr times the run clock against this (the net keeps the domain's name).
            platform.add_clock_constraint(sync.clk, self._constraint_hz
                                          or float(self._pll.output_hz))
            core = self._make_core(float(self._pll.output_hz))
        m.submodules.core = core

        uart = platform.request(self.uart_resource, 0, dir="-")
        m.submodules.rx_buffer = rx_buffer = io.Buffer("i", uart.rx)
        m.submodules.tx_buffer = tx_buffer = io.Buffer("o", uart.tx)
        m.d.comb += [
            core.rx.eq(rx_buffer.i),
            tx_buffer.o.eq(core.tx),
        ]
        return m
