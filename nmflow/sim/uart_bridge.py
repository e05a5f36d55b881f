"""A simulated board behind a TCP socket: pyserial's ``socket://`` URL talks to the gateware.

:class:`SimulatedBoard` runs any board top with UART pins (``rx``, ``tx``) and the status
outputs ``idle`` and ``receiving`` (the engine's :class:`~nmflow.rtl.top.HostTop`, the EqProp
unit's :class:`~nmflow.rtl.eqprop_link.EqPropHostTop`) in Amaranth's simulator, in a background thread, and serves one TCP connection at a time on ``127.0.0.1`` (an
ephemeral port, loopback only). Bytes from the socket are driven onto the ``rx`` pin bit by bit,
8N1 at ``divisor`` cycles per bit, back to back; the ``tx`` pin is decoded by a software UART and
each byte is sent back on the socket. So the host driver runs unchanged::

    with simulated_board(model, lanes=16, divisor=4) as url:
        with EngineLink(url) as link:
            cls, scores = link.infer(x)

    with eqprop_simulated_board(config, lanes=4) as url:
        with EqPropLink(url) as link:
            link.load(params)

The simulated clock is 1 MHz (``1 / SIM_CLOCK_HZ`` per cycle); the baud rate is
``SIM_CLOCK_HZ / divisor``. Simulated time does not follow wall time; the top's ``idle`` and
``receiving`` status outputs pace it. While the link is idle the simulation waits for bytes
without advancing; while a frame is half received it advances slowly (a few cycles per
millisecond of waiting for the rest), so a host's write split by the operating system does not
trip the link's timeout, yet a truly truncated frame times out within a bounded wall time; while
the gateware is busy it runs as fast as it can.
"""

import contextlib
import queue
import threading

from amaranth.sim import Simulator

from ..rtl.eqprop_link import EqPropHostTop
from ..rtl.top import HostTop
from ..rtl.uart import check_divisor
from .loopback import POLL_SECONDS, listen, serve_connections

__all__ = ["SimulatedBoard", "simulated_board", "eqprop_simulated_board", "SIM_CLOCK_HZ"]

#: Frequency of the simulated clock.
SIM_CLOCK_HZ = 1_000_000
#: Default link timeout in character times (10 bits).
DEFAULT_TIMEOUT_CHARS = 40
#: While a frame is half received and no byte is queued: cycles simulated per wait for bytes.
_WAIT_CHUNK = 16
_WAIT_SECONDS = 0.002
#: Longest wait of any thread on anything, so that stop requests are seen promptly.
_POLL = POLL_SECONDS
#: How long stop() waits for each thread.
_JOIN_SECONDS = 10.0


def _settle_cycles(divisor):
    """Cycles after the end of a stop bit until the link has surely seen the byte (the receiver
    reports it 3 cycles after mid-stop), with margin."""
    return 2 * divisor + 4


class _LineDriver:
    """Software UART transmitter: the ``rx`` pin level for each cycle."""

    def __init__(self, divisor):
        self.divisor = divisor
        self.levels = []

    @property
    def idle(self):
        return not self.levels

    def load(self, byte):
        bits = [0] + [(byte >> i) & 1 for i in range(8)] + [1]
        self.levels = [level for level in bits for _ in range(self.divisor)][::-1]

    def next_level(self):
        return self.levels.pop() if self.levels else 1


class _LineDecoder:
    """Software UART receiver sampling the ``tx`` pin once per cycle, mid-bit."""

    def __init__(self, divisor):
        self.divisor = divisor
        self.countdown = None           # None while idle
        self.index = 0
        self.value = 0
        self.frame_errors = 0

    @property
    def idle(self):
        return self.countdown is None

    def step(self, level):
        """Feed one cycle's level; return a byte when its stop bit has been sampled."""
        if self.countdown is None:
            if not level:
                self.countdown, self.index, self.value = self.divisor // 2, 0, 0
            return None
        self.countdown -= 1
        if self.countdown:
            return None
        self.countdown = self.divisor
        if self.index == 0 and level:               # glitch: not a start bit
            self.countdown = None
        elif 1 <= self.index <= 8:
            self.value |= level << (self.index - 1)
        elif self.index == 9:
            self.countdown = None
            if level:
                return self.value
            self.frame_errors += 1
        self.index += 1
        return None


class SimulatedBoard:
    """A board top in simulation, served on a loopback TCP port.

    Parameters
    ----------
    make_top : callable
        ``make_top(clk_freq=, baud=, timeout=)`` (the clock in Hz, the baud rate, the link's
        timeout in seconds): the top, with pins ``rx``, ``tx`` and outputs ``idle`` and
        ``receiving``. :meth:`engine` and :meth:`eqprop` make the two nmflow boards.
    divisor : int
        Clock cycles per UART bit (small, 4 to 8, keeps the simulation fast).
    timeout : int or None
        The link's inter-byte timeout in cycles; ``None`` for 40 character times.

    Attributes
    ----------
    url : str
        ``socket://127.0.0.1:PORT``, valid after :meth:`start`. The two threads are named
        ``nmflow-sim-PORT`` and ``nmflow-sim-socket-PORT``.
    top : the board top
    frame_errors : int
        Characters on ``tx`` with a low stop bit (0 for correct gateware).
    """

    def __init__(self, make_top, *, divisor=4, timeout=None):
        self._divisor = check_divisor(divisor)
        if timeout is None:
            timeout = DEFAULT_TIMEOUT_CHARS * 10 * divisor
        self.top = make_top(clk_freq=SIM_CLOCK_HZ, baud=SIM_CLOCK_HZ / divisor,
                            timeout=timeout / SIM_CLOCK_HZ)
        self._stop = threading.Event()
        self._incoming = queue.Queue()
        self._conn = None
        self._conn_lock = threading.Lock()
        self._server = None
        self._threads = []
        self._error = None
        self._decoder = _LineDecoder(divisor)
        self.url = None

    @classmethod
    def engine(cls, model, *, lanes=16, pe=1, divisor=4, timeout=None, errors=None,
               metaplastic=None, memory="block", batch=None, batch_memory="block"):
        """The engine's board: ``HostTop(model, lanes=lanes, pe=pe, errors=errors,
        metaplastic=metaplastic, memory=memory, batch=batch, batch_memory=batch_memory)`` (a
        :class:`~nmflow.golden.hwmodel.HardwareModel`, the engine's folding, the read-error
        injector's :class:`~nmflow.golden.injector.ErrorInjection`, the metaplastic unit's
        arguments, the weight memory kind and the batch memory: see
        :class:`~nmflow.rtl.top.HostTop`)."""
        return cls(lambda **link: HostTop(model, lanes=lanes, pe=pe, errors=errors,
                                          metaplastic=metaplastic, memory=memory, batch=batch,
                                          batch_memory=batch_memory, **link),
                   divisor=divisor, timeout=timeout)

    @classmethod
    def eqprop(cls, config, *, lanes=4, params=None, divisor=4, timeout=None, storage=None):
        """The EqProp unit's board: ``EqPropHostTop(config, lanes=lanes, params=params,
        storage=storage)``."""
        return cls(lambda **link: EqPropHostTop(config, lanes=lanes, params=params,
                                                storage=storage, **link),
                   divisor=divisor, timeout=timeout)

    @property
    def frame_errors(self):
        return self._decoder.frame_errors

    # -- life cycle -----------------------------------------------------------------------------

    def start(self):
        """Build the simulator, open the listening socket and start both threads."""
        sim = Simulator(self.top)
        sim.add_clock(1 / SIM_CLOCK_HZ)
        sim.add_testbench(self._testbench)
        self._server, self.url = listen()
        port = self.url.rsplit(":", 1)[1]
        self._threads = [
            threading.Thread(target=self._simulate, args=(sim,), name=f"nmflow-sim-{port}",
                             daemon=True),
            threading.Thread(target=self._serve, name=f"nmflow-sim-socket-{port}", daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        return self

    def stop(self):
        """Stop both threads (bounded wait) and close the sockets.

        Raises
        ------
        RuntimeError
            If a thread did not stop in time, or the simulation failed (chained to its error).
        """
        self._stop.set()
        stuck = []
        for thread in self._threads:
            thread.join(_JOIN_SECONDS)
            if thread.is_alive():
                stuck.append(thread.name)
        self._close_connection()
        if self._server is not None:
            self._server.close()
        if self._error is not None:
            raise RuntimeError(f"simulated board failed: {self._error!r}") from self._error
        if stuck:
            raise RuntimeError(f"simulated board threads did not stop within {_JOIN_SECONDS:g} s: "
                               f"{', '.join(stuck)}")

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -- socket side ------------------------------------------------------------------------------

    def _serve(self):
        try:
            serve_connections(self._server, self._stop, attach=self._attach,
                              deliver=self._incoming.put, detach=self._close_connection)
        except OSError as error:
            if not self._stop.is_set():
                self._error = error

    def _attach(self, conn):
        with self._conn_lock:
            self._conn = conn

    def _send(self, byte):
        with self._conn_lock:
            if self._conn is not None:
                try:
                    self._conn.sendall(bytes([byte]))
                except OSError:
                    pass

    def _close_connection(self):
        with self._conn_lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    # -- simulation side --------------------------------------------------------------------------

    def _simulate(self, sim):
        try:
            sim.run()
        except BaseException as error:          # reported by stop()
            self._error = error
            self._close_connection()

    def _take(self, pending, wait):
        """Move newly arrived socket bytes into ``pending``; wait up to ``wait`` s for some."""
        try:
            pending += self._incoming.get(timeout=wait) if wait else self._incoming.get_nowait()
            while True:
                pending += self._incoming.get_nowait()
        except queue.Empty:
            pass

    async def _testbench(self, ctx):
        top, driver, decoder = self.top, _LineDriver(self._divisor), self._decoder
        pending = bytearray()
        ctx.set(top.rx, 1)

        async def tick():
            ctx.set(top.rx, driver.next_level())
            await ctx.tick()
            byte = decoder.step(ctx.get(top.tx))
            if byte is not None:
                self._send(byte)

        settle = 0
        while not self._stop.is_set():
            if driver.idle:
                self._take(pending, 0)
                if pending:
                    driver.load(pending.pop(0))
                    settle = _settle_cycles(self._divisor)
            if not driver.idle:
                await tick()
            elif settle:                                # the last byte is still in the receiver
                settle -= 1
                await tick()
            elif decoder.idle and ctx.get(top.idle):
                self._take(pending, _POLL)              # nothing to do: wait, time stands still
            elif ctx.get(top.receiving):
                self._take(pending, _WAIT_SECONDS)      # half a frame: the rest may be on its way
                if not pending:
                    for _ in range(_WAIT_CHUNK):
                        await tick()
            else:
                await tick()


@contextlib.contextmanager
def simulated_board(model, **kwargs):
    """Run ``HostTop(model)`` in simulation behind a loopback TCP port; yield its ``socket://`` URL.

    Keyword arguments are those of :meth:`SimulatedBoard.engine`. On exit the simulation and the
    server stop (bounded waits); a failure of the simulation is raised there as
    :class:`RuntimeError`.
    """
    with SimulatedBoard.engine(model, **kwargs) as board:
        yield board.url


@contextlib.contextmanager
def eqprop_simulated_board(config, **kwargs):
    """Run ``EqPropHostTop(config)`` in simulation (keyword arguments of
    :meth:`SimulatedBoard.eqprop`); yield its ``socket://`` URL, as :func:`simulated_board`."""
    with SimulatedBoard.eqprop(config, **kwargs) as board:
        yield board.url
