"""A simulated EP board behind a loopback TCP port, for host code without hardware.

:class:`EqPropSimulatedBoard` is :class:`nmflow.sim.uart_bridge.SimulatedBoard` (the same
software UART on the pins, the same pacing by the top's ``idle`` and ``receiving`` outputs,
the same ``socket://`` URL) running an :class:`~nmflow.rtl.eqprop_link.EqPropHostTop` instead of
the engine's top::

    with eqprop_simulated_board(config, lanes=4) as url:
        with EqPropLink(url) as link:
            link.load(params)
"""

import contextlib

from ..rtl.eqprop_link import EqPropHostTop
from .uart_bridge import SimulatedBoard

__all__ = ["EqPropSimulatedBoard", "eqprop_simulated_board"]


class EqPropSimulatedBoard(SimulatedBoard):
    """``EqPropHostTop(config, lanes=lanes, params=params)`` in simulation at ``SIM_CLOCK_HZ``,
    ``divisor`` cycles per UART bit; ``timeout`` in cycles (40 character times if None)."""

    def __init__(self, config, *, lanes=4, params=None, divisor=4, timeout=None):
        self._serve_top(lambda **link: EqPropHostTop(config, lanes=lanes, params=params, **link),
                        divisor, timeout)


@contextlib.contextmanager
def eqprop_simulated_board(config, *, lanes=4, params=None, divisor=4, timeout=None):
    """Yield the ``socket://`` URL of a running :class:`EqPropSimulatedBoard`; stop it on exit."""
    board = EqPropSimulatedBoard(config, lanes=lanes, params=params, divisor=divisor,
                                 timeout=timeout)
    with board:
        yield board.url
