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
import queue
import threading

from ..rtl.eqprop_link import EqPropHostTop
from ..rtl.uart import check_divisor
from .uart_bridge import DEFAULT_TIMEOUT_CHARS, SIM_CLOCK_HZ, SimulatedBoard, _LineDecoder

__all__ = ["EqPropSimulatedBoard", "eqprop_simulated_board"]


class EqPropSimulatedBoard(SimulatedBoard):
    """``EqPropHostTop(config, lanes=lanes, params=params)`` in simulation at ``SIM_CLOCK_HZ``,
    ``divisor`` cycles per UART bit; ``timeout`` in cycles (40 character times if None)."""

    def __init__(self, config, *, lanes=4, params=None, divisor=4, timeout=None):
        self._divisor = check_divisor(divisor)
        if timeout is None:
            timeout = DEFAULT_TIMEOUT_CHARS * 10 * divisor
        self.top = EqPropHostTop(config, lanes=lanes, clk_freq=SIM_CLOCK_HZ,
                                 baud=SIM_CLOCK_HZ / divisor, timeout=timeout / SIM_CLOCK_HZ,
                                 params=params)
        self._stop = threading.Event()
        self._incoming = queue.Queue()
        self._conn = None
        self._conn_lock = threading.Lock()
        self._server = None
        self._threads = []
        self._error = None
        self._decoder = _LineDecoder(divisor)
        self.url = None


@contextlib.contextmanager
def eqprop_simulated_board(config, *, lanes=4, params=None, divisor=4, timeout=None):
    """Yield the ``socket://`` URL of a running :class:`EqPropSimulatedBoard`; stop it on exit."""
    board = EqPropSimulatedBoard(config, lanes=lanes, params=params, divisor=divisor,
                                 timeout=timeout)
    with board:
        yield board.url
