"""Build a bitstream for a board: Amaranth platform files, Yosys, nextpnr, the packer.

:func:`build` prepares the design with the board's Amaranth platform, runs the tool commands of
Amaranth's build plan one by one in a temporary directory beside ``out_dir`` (capturing every log),
reads utilisation and Fmax from the nextpnr log, and only then moves the products into ``out_dir``.
A reader of ``out_dir`` never sees a half-written bitstream, and a bitstream there always sits
beside the logs and the ``build.json`` of the run that made it.

Products in ``out_dir``
    ``<name>.bin`` (iCE40) or ``<name>.bit`` (ECP5)   the bitstream
    ``build.json``                                    :class:`BuildResult`, written last
    ``yosys.log``, ``nextpnr.log``, ``build.log``     Yosys' log, nextpnr's log, all tool output
    ``nextpnr_report.json``                           nextpnr's own JSON timing/utilisation report
    ``<name>.il``, ``<name>.ys``, ``<name>.pcf``/``.lpf``, ``build_<name>.sh``
                                                      the inputs, to read or to rerun by hand

After a failed build ``out_dir`` holds the logs and inputs of the failed run and no bitstream and no
``build.json`` (a previous bitstream there is removed: it no longer matches the logs beside it).

Timing target
    The design runs on the board clock (12 MHz on the iCEBreaker), but nextpnr is asked for more
    (``target_mhz``, 50 MHz on iCE40 and 130 MHz on ECP5 by default) with ``--timing-allow-fail``,
    so that it optimises for speed and reports the Fmax the design reaches. The board clock's
    constraint in the generated ``.pcf``/``.lpf`` is raised by the same ratio (nextpnr's ``--freq``,
    also passed, only covers clocks that have no constraint). The Fmax is then checked against the
    board clock, not the target.
"""

import hashlib
import json
import math
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from .. import limits
from ..errors import NmflowError
from ..fileio import make_folder, write_text
from ..toolchain import TOOLS, check_tools, tool_environment
from . import pll
from .catalog import BOARDS, get_board
from .report import (fit_error, overflows, parse_errors, parse_fmax, parse_fmax_by_clock,
                     parse_utilisation)

# BOARDS and get_board live in :mod:`nmflow.boards.catalog`; they are re-exported here for the
# callers that build.
__all__ = ["BOARDS", "BuildResult", "CLOCK_ATTEMPTS", "CLOCK_MARGIN", "DoesNotFit", "TooSlow",
           "build", "get_board", "pll_for"]

#: A PLL run clock must stay this far below nextpnr's post-route Fmax (nextpnr's timing is
#: static and worst-case, but the margin covers what it does not model: jitter, the PLL's own
#: tolerance).
CLOCK_MARGIN = 1.05

#: Place-and-route runs ``clock_mhz="auto"`` makes at most.
CLOCK_ATTEMPTS = 3

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_PCF_FREQUENCY = re.compile(r"^(\s*set_frequency\s+\S+\s+)([0-9.eE+-]+)(\s*)$")
_LPF_FREQUENCY = re.compile(r'^(\s*FREQUENCY\s+(?:PORT|NET)\s+"[^"]*"\s+)([0-9.eE+-]+)'
                            r'(\s*HZ\s*;\s*)$')


class DoesNotFit(NmflowError):
    """A design that place and route could not fit on the board: the one-line message, and the
    numbers, so that a caller can act on them without reading the message.

    Members
    -------
    board : :class:`~nmflow.boards.board.Board`
    needs : dict
        ``{cell type: (used, available)}`` of every resource that overflowed.
    """

    def __init__(self, message, *, board, needs):
        super().__init__(message)
        self.board, self.needs = board, dict(needs)

    @property
    def block_rams(self):
        """Block RAMs the design needs, or ``None`` if they were not what overflowed."""
        used = self.needs.get(self.board.block_ram_type)
        return None if used is None else used[0]


@dataclass
class BuildResult:
    """What a successful build produced and what nextpnr said about it.

    Members
    -------
    board, device : str
        Board name and FPGA device.
    bitstream : Path
        The bitstream in ``out_dir``.
    logic_cells, logic_cells_total : int
        Logic cells used / present (iCE40 ``ICESTORM_LC``; ECP5 LUT4s, ``TRELLIS_COMB``).
    block_rams, block_rams_total : int
        Block RAMs used / present (``ICESTORM_RAM``, ``DP16KD``).
    dsps, dsps_total : int
        Multiplier blocks used / present (``ICESTORM_DSP``, ``MULT18X18D``).
    fmax_mhz : float or None
        Post-route maximum frequency (the lowest over the clocks); None without a timing report.
    fmax_by_clock : dict
        Clock net -> post-route Fmax in MHz.
    clock_mhz, target_mhz : float
        The clock the design runs on (``run_clock_mhz``: the PLL's output, or the board's
        oscillator), and the target nextpnr was given.
    oscillator_mhz : float
        The board's oscillator.
    pll : dict or None
        The PLL settings (:meth:`nmflow.boards.pll.PllSettings.to_dict`), None on the oscillator.
    clock_attempts : list of dict
        With ``clock_mhz="auto"``: each place and route tried, ``{"clock_mhz", "fmax_mhz"}``, in
        order; the build's is the last one without ``"kept": false`` (a step back up that did
        not meet its clock, which leaves the build before it in place).
    reused : bool
        True if :func:`build` (``reuse=True``) found this build already in ``out_dir``, made from
        the same inputs, and ran no tool; the figures and ``seconds`` are that build's.
    utilisation : dict
        Every line of nextpnr's device utilisation: cell type -> ``{"used", "total", "percent"}``.
    seconds : float
        Wall time of the whole build; ``step_seconds`` has it per step (prepare, yosys, ...).
    seed : int or None
        The nextpnr seed, None for nextpnr's default.
    out_dir, yosys_log, nextpnr_log, build_log : Path
        Where the products and logs are.
    bitstream_sha256 : str
        Hex SHA-256 of the bitstream (``nmflow program`` loads only the bitstream its build
        wrote).
    """
    board: str
    device: str
    bitstream: Path
    logic_cells: int
    logic_cells_total: int
    block_rams: int
    block_rams_total: int
    dsps: int
    dsps_total: int
    fmax_mhz: float | None
    clock_mhz: float
    target_mhz: float
    utilisation: dict
    seconds: float
    seed: int | None
    out_dir: Path
    yosys_log: Path
    nextpnr_log: Path
    build_log: Path
    fmax_by_clock: dict = field(default_factory=dict)
    step_seconds: dict = field(default_factory=dict)
    bitstream_sha256: str | None = None
    oscillator_mhz: float | None = None
    pll: dict | None = None
    clock_attempts: list = field(default_factory=list)
    reused: bool = False

    @property
    def meets_clock(self):
        """True if the post-route Fmax reaches the run clock (None without a timing report)."""
        return None if self.fmax_mhz is None else self.fmax_mhz >= self.clock_mhz

    @property
    def run_clock_mhz(self):
        """The clock the design runs on: the PLL's output, or the board's oscillator."""
        return self.clock_mhz

    @property
    def clock_margin(self):
        """Post-route Fmax over the run clock (None without a timing report)."""
        return None if self.fmax_mhz is None else round(self.fmax_mhz / self.clock_mhz, 4)

    def to_dict(self):
        """The result as plain JSON types (paths as strings), in field order."""
        result = {}
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            result[name] = str(value) if isinstance(value, Path) else value
        result["meets_clock"] = self.meets_clock
        result["run_clock_mhz"] = self.run_clock_mhz
        result["clock_margin"] = self.clock_margin
        return result

    def to_json(self):
        """The result as a JSON document (the content of ``build.json``)."""
        return json.dumps(self.to_dict(), indent=2) + "\n"


def _check_args(name, seed, target_mhz, board, timeout):
    if not isinstance(name, str) or not _NAME.match(name):
        raise NmflowError(f"name must be letters, digits and underscores, not starting with a "
                          f"digit, not {name!r}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)
                             or not 0 <= seed <= limits.SEED):
        raise NmflowError(f"seed must be None or an integer from 0 to {limits.SEED}, "
                          f"not {seed!r}")
    if target_mhz is None:
        target_mhz = board.target_mhz
    if (isinstance(target_mhz, bool) or not isinstance(target_mhz, (int, float))
            or not math.isfinite(target_mhz) or target_mhz < board.clock_mhz):
        raise NmflowError(f"target_mhz must be a number at least the {board.name} clock "
                          f"({board.clock_mhz:g} MHz), not {target_mhz!r}")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                                or not timeout > 0):
        raise NmflowError(f"timeout must be None or a positive number of seconds, "
                          f"not {timeout!r}")
    return float(target_mhz)


def _options(value, parameter):
    """Normalise extra tool options given as a string or a sequence of strings."""
    if isinstance(value, str):
        return tuple(value.split())
    if not all(isinstance(item, str) for item in value):
        raise NmflowError(f"{parameter} must be a string or a sequence of strings, not {value!r}")
    return tuple(value)


def _retarget(text, ratio, target_mhz, pattern):
    """Scale every clock frequency of a constraint file by ``ratio``, keeping the original."""
    lines = []
    for line in text.splitlines():
        match = pattern.match(line)
        if match:
            head, value, tail = match.groups()
            lines.append(f"# board clock: {line.strip()} (nmflow asks nextpnr for "
                         f"{target_mhz:g} MHz, so that it reports the Fmax the design reaches)")
            lines.append(f"{head}{float(value) * ratio:.10g}{tail}")
        else:
            lines.append(line)
    return "\n".join(lines) + "\n"


def _run(tool, argv, cwd, env, log, timeout, log_hint):
    """Run one tool command, appending its output to ``log``.

    Returns ``(exit status, None)``, or ``(None, message)`` if the tool could not run or did not
    finish in time.
    """
    log.write(f"$ {' '.join(argv)}\n")
    log.flush()
    try:
        completed = subprocess.run(argv, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, timeout=timeout)
    except FileNotFoundError:
        return None, f"{argv[0]} not found: run 'make setup' (pip install -r requirements.txt)"
    except subprocess.TimeoutExpired:
        return None, f"{tool} did not finish within {timeout:g} s; see {log_hint}"
    finally:
        log.write("\n")
        log.flush()
    return completed.returncode, None


def _first_error(path):
    try:
        errors = parse_errors(Path(path).read_text(errors="replace"))
    except FileNotFoundError:
        return None
    return errors[0] if errors else None


def build(top_factory, board, out_dir, *, name="top", seed=None, target_mhz=None,
          synth_opts=(), nextpnr_opts=(), check_timing=True, timeout=None, clock_mhz=None,
          first_clock_mhz=None, accept_clock=None, reuse=False):
    """Synthesise, place, route and pack a design for a board; return what nextpnr reported.

    Parameters
    ----------
    top_factory : callable
        ``top_factory(clk_freq=hz)`` returns the platform-free top, a component with the pin
        ports ``rx: In(1)`` and ``tx: Out(1)`` and otherwise only outputs (see
        :class:`~nmflow.boards.top.BoardTop`); it is called with the run clock (the board's
        ``default_clk_frequency`` without a PLL).
    board : str or Board
        ``"icebreaker"`` or ``"ulx3s"`` (a key of :data:`~nmflow.boards.catalog.BOARDS`), or a
        :class:`~nmflow.boards.board.Board`.
    out_dir : path
        Directory for the products (created if needed); other files in it are left alone.
    name : str
        Design name: the stem of the bitstream and of the generated files.
    seed : int, optional
        nextpnr placement seed (0 to 2**31-1); nextpnr's default when None.
    target_mhz : float, optional
        nextpnr's timing target, at least the board clock; the board's default when None.
    synth_opts, nextpnr_opts : str or sequence of str
        Extra options for Yosys' ``synth_<family>`` and for nextpnr, after the board's own.
    check_timing : bool
        Refuse a design whose post-route Fmax is below the run clock (it would run unreliably);
        with a PLL, below the run clock times :data:`CLOCK_MARGIN`.
    clock_mhz : None, float or "auto"
        The run clock. ``None``: the board's oscillator, no PLL. A number: the PLL's highest
        output at or below it (:func:`nmflow.boards.pll.solve`). ``"auto"``: place and route with
        the PLL at ``first_clock_mhz`` (the board's engine clock by default,
        :meth:`~nmflow.boards.board.Board.first_clock_mhz`); while the Fmax falls short of the run clock times :data:`CLOCK_MARGIN`,
        again at the highest PLL output at or below ``Fmax / CLOCK_MARGIN`` (after a step down
        that missed too, ``Fmax / CLOCK_MARGIN ** 2``: runs of one netlist spread by more than
        one margin; at most :data:`CLOCK_ATTEMPTS` runs; the board's oscillator if the PLL
        cannot go that low).
        After a step down, while runs are left, once more at the highest output at or below the
        kept build's ``Fmax / CLOCK_MARGIN`` if that is faster (another target places
        differently), kept only if it meets its clock.
        nextpnr is asked for ``max(target_mhz, run clock)`` on the PLL's output.
    first_clock_mhz : float, optional
        With ``clock_mhz="auto"``, the first run clock tried.
    accept_clock : callable, optional
        ``accept_clock(hz)`` is true for the PLL outputs the design can run at (a UART whose baud
        rate the clock must divide into within its tolerance); the PLL's highest output at or
        below a request that it accepts is taken.
    timeout : float, optional
        Seconds each tool may run, unlimited when None.
    reuse : bool
        Return the build already in ``out_dir`` instead of running the tools again, if it has
        its bitstream (with the SHA-256 its ``build.json`` records) and was made from exactly the
        inputs this call prepares (RTLIL, Yosys script, constraints, tool commands with the seed
        and the timing target, at the run clock that build ended at, from the same first clock):
        an interrupted benchmark or sweep resumes without redoing its finished builds.

    Returns
    -------
    BuildResult

    Raises
    ------
    NmflowError
        One line, for a bad argument, a missing tool (with the install hint), a design that does
        not fit (``design does not fit icebreaker (iCE40UP5K): needs 6017 logic cells
        (ICESTORM_LC), the device has 5280``), a design too slow for its run clock (naming the
        highest clock it meets), or a tool failure (naming the tool, its first error and the log
        file).
    """
    board = get_board(board)
    target_mhz = _check_args(name, seed, target_mhz, board, timeout)
    synth_opts = board.synth_opts + _options(synth_opts, "synth_opts")
    nextpnr_opts = _options(nextpnr_opts, "nextpnr_opts")
    settings = None
    if clock_mhz == "auto":
        first = board.first_clock_mhz() if first_clock_mhz is None else first_clock_mhz
        settings = _solve(board, _clock_number("first_clock_mhz", first) * 1e6,
                          accept=accept_clock)
    elif clock_mhz is not None:
        settings = pll_for(board, clock_mhz, accept=accept_clock)
    if reuse:
        reused = _reused(top_factory, board, Path(out_dir), name=name, target_mhz=target_mhz,
                         seed=seed, synth_opts=synth_opts, nextpnr_opts=nextpnr_opts,
                         clock_mhz=clock_mhz, settings=settings, accept_clock=accept_clock)
        if reused is not None:
            return reused
    started = time.monotonic()
    tool_environment()
    tool_paths = check_tools(board.tools)
    out_dir = Path(out_dir)
    make_folder(out_dir.parent)
    if out_dir.exists() and not out_dir.is_dir():
        raise NmflowError(f"output folder {str(out_dir)!r} is a file, not a folder")
    once = dict(top_factory=top_factory, board=board, out_dir=out_dir, name=name, seed=seed,
                target_mhz=target_mhz, synth_opts=synth_opts, nextpnr_opts=nextpnr_opts,
                check_timing=check_timing, timeout=timeout, tool_paths=tool_paths)

    if clock_mhz is None:
        result = _build_once(pll_settings=None, **once)
    elif clock_mhz == "auto":
        first_settings, attempts = settings, []
        for attempt in range(CLOCK_ATTEMPTS):
            try:
                result = _build_once(pll_settings=settings, **once)
                attempts.append({"clock_mhz": _mhz(settings), "fmax_mhz": result.fmax_mhz})
                break
            except TooSlow as error:
                attempts.append({"clock_mhz": _mhz(settings), "fmax_mhz": error.fmax_mhz})
                if attempt == CLOCK_ATTEMPTS - 1:
                    raise
                lower = error.fmax_mhz * 1e6 / CLOCK_MARGIN
                if attempt > 0:
                    # A step down missed too: two place and routes of one netlist differ by
                    # more than the margin (seen: 83.7 and 91.5 MHz on the ECP5, 38.6 and 36.8
                    # on the iCE40), so the last try keeps the margin twice.
                    lower /= CLOCK_MARGIN
                if lower < _lowest(board, accept_clock):
                    # Slower than any PLL output: the oscillator, if the design meets it.
                    result = _build_once(pll_settings=None, **once)
                    attempts.append({"clock_mhz": board.clock_mhz,
                                     "fmax_mhz": result.fmax_mhz})
                    break
                settings = _solve(board, lower, accept=accept_clock)
        if result.pll is not None:
            result = _step_up(result, settings, first_settings, attempts, board, out_dir,
                              accept_clock, once)
        result.clock_attempts = attempts
    else:
        result = _build_once(pll_settings=settings, **once)
    result.seconds = round(time.monotonic() - started, 3)
    write_text(out_dir / "build.json", result.to_json())
    return result


def _step_up(result, settings, first_settings, attempts, board, out_dir, accept, once):
    """After the automatic clock stepped down, place and route once more at the PLL's highest
    output at or below the kept build's ``Fmax / CLOCK_MARGIN`` (never above the first clock
    tried) while that is faster than the kept clock and :data:`CLOCK_ATTEMPTS` allow: another
    run at another target places differently, and often meets a clock between the two. Built
    beside ``out_dir`` and installed there only if it meets its clock; the attempt is recorded
    either way. Returns the build kept."""
    while len(attempts) < CLOCK_ATTEMPTS and len(attempts) > 1:
        ceiling = min(result.fmax_mhz * 1e6 / CLOCK_MARGIN, float(first_settings.output_hz))
        try:
            higher = _solve(board, ceiling, accept=accept)
        except NmflowError:
            return result
        if _mhz(higher) <= _mhz(settings):
            return result
        side = out_dir.parent / f".{out_dir.name}.step-up"
        shutil.rmtree(side, ignore_errors=True)
        try:
            tried = _build_once(pll_settings=higher, **dict(once, out_dir=side))
        except NmflowError as error:            # too slow, or a routing failure: keep result
            shutil.rmtree(side, ignore_errors=True)
            attempts.append({"clock_mhz": _mhz(higher), "fmax_mhz": getattr(
                error, "fmax_mhz", None), "kept": False})
            return result
        for path in side.iterdir():             # the bitstream last
            if path.suffix != board.bitstream_suffix:
                os.replace(path, out_dir / path.name)
        for path in side.iterdir():
            os.replace(path, out_dir / path.name)
        side.rmdir()
        moved = {name: out_dir / Path(getattr(tried, name)).name for name in (
            "bitstream", "yosys_log", "nextpnr_log", "build_log")}
        result = replace(tried, out_dir=out_dir, **moved)
        attempts.append({"clock_mhz": _mhz(higher), "fmax_mhz": result.fmax_mhz})
        settings = higher
    return result


def _mhz(settings):
    return round(settings.output_mhz, 6)


#: The inputs :func:`_install` keeps beside a bitstream, which :func:`_reused` compares.
_INPUTS = ("{}.il", "{}.ys", "{}.pcf", "{}.lpf", "build_{}.sh")


def _sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _reused(top_factory, board, out_dir, *, name, target_mhz, seed, synth_opts, nextpnr_opts,
            clock_mhz, settings, accept_clock):
    """The :class:`BuildResult` of the build in ``out_dir`` if this request would make it again
    (see :func:`build`'s ``reuse``), else None."""
    bitstream = out_dir / f"{name}{board.bitstream_suffix}"
    try:
        recorded = json.loads((out_dir / "build.json").read_text())
        if (not isinstance(recorded, dict) or recorded.get("board") != board.name
                or recorded.get("bitstream_sha256") != _sha256(bitstream)):
            return None
        if clock_mhz is None:
            final = None
        elif clock_mhz == "auto":
            attempts = recorded.get("clock_attempts") or [{}]
            if attempts[0].get("clock_mhz") != _mhz(settings):
                return None
            final = None if recorded.get("pll") is None else pll_for(
                board, recorded["clock_mhz"], accept=accept_clock)
        else:
            final = settings
        if (None if final is None else final.to_dict()) != recorded.get("pll"):
            return None
    except (OSError, ValueError, TypeError, KeyError, AttributeError, NmflowError):
        return None
    work = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.reuse-", dir=out_dir.parent))
    try:
        _prepare(top_factory, board, work, name, target_mhz, seed, synth_opts, nextpnr_opts,
                 final)
        for pattern in _INPUTS:
            made, kept = work / pattern.format(name), out_dir / pattern.format(name)
            if made.exists() != kept.exists() or (
                    made.exists() and made.read_bytes() != kept.read_bytes()):
                return None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    paths = {"bitstream": bitstream, "out_dir": out_dir, "yosys_log": out_dir / "yosys.log",
             "nextpnr_log": out_dir / "nextpnr.log", "build_log": out_dir / "build.log"}
    fields = {key: recorded[key] for key in BuildResult.__dataclass_fields__
              if key in recorded and key not in paths and key != "reused"}
    try:
        return BuildResult(**fields, **paths, reused=True)
    except TypeError:                       # a build.json without a field BuildResult needs
        return None


def _clock_number(parameter, value, others=""):
    if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
            or not value > 0):
        raise NmflowError(f"{parameter} must be {others}a positive number of MHz, not {value!r}")
    return float(value)


def _lowest(board, accept=None):
    """The board PLL's lowest output (Hz) that ``accept`` takes; infinity if it takes none."""
    return min((float(out) for out in pll.frequencies(board.family, board.clock_hz)
                if accept is None or accept(float(out))), default=math.inf)


def _solve(board, hz, name="clock", accept=None):
    lowest = _lowest(board, accept)
    if hz < lowest:
        what = "" if accept is None else " the design accepts"
        first = f"{lowest / 1e6:g} MHz" if lowest < math.inf else "(none)"
        raise NmflowError(f"{name} must be at least {first} (the lowest output{what} of the "
                          f"{board.name} PLL from its {board.clock_mhz:g} MHz oscillator), not "
                          f"{hz / 1e6:g} MHz")
    return pll.solve(board.family, board.clock_hz, hz, accept)


def pll_for(board, clock_mhz, name="clock_mhz", accept=None):
    """The PLL settings of a run clock of ``clock_mhz`` on ``board`` (its highest output at or
    below, among those ``accept`` takes); NmflowError naming ``name`` if the number is not one or
    the PLL cannot go that low."""
    board = get_board(board)
    return _solve(board, _clock_number(name, clock_mhz, "None, 'auto' or ") * 1e6, name, accept)


class TooSlow(NmflowError):
    """A design whose post-route Fmax falls short of what its run clock needs.

    Members
    -------
    fmax_mhz : float
    """

    def __init__(self, message, *, fmax_mhz):
        super().__init__(message)
        self.fmax_mhz = fmax_mhz


def _build_once(*, top_factory, board, out_dir, name, seed, target_mhz, synth_opts,
                nextpnr_opts, check_timing, timeout, tool_paths, pll_settings):
    """One synthesis, place and route and pack, with the run clock from ``pll_settings`` (the
    oscillator when None); the products installed in ``out_dir``."""
    started = time.monotonic()
    step_seconds = {}
    env = dict(os.environ)
    run_mhz = board.clock_mhz if pll_settings is None else _mhz(pll_settings)
    required_mhz = run_mhz if pll_settings is None else run_mhz * CLOCK_MARGIN
    work = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.build-", dir=out_dir.parent))
    try:
        commands = _prepare(top_factory, board, work, name, target_mhz, seed, synth_opts,
                            nextpnr_opts, pll_settings)
        step_seconds["prepare"] = round(time.monotonic() - started, 3)

        logs = {"yosys": f"{name}.rpt", "nextpnr": f"{name}.tim"}
        hints = {"yosys": out_dir / "yosys.log", "nextpnr": out_dir / "nextpnr.log"}
        failure = None
        with open(work / "build.log", "w") as log:
            for argv in commands:
                tool = argv[0]
                step = "yosys" if tool == "yosys" else (
                    "nextpnr" if tool.startswith("nextpnr") else "pack")
                step_started = time.monotonic()
                status, message = _run(tool, [tool_paths[tool], *argv[1:]], work, env, log,
                                       timeout, hints.get(step, out_dir / "build.log"))
                step_seconds[step] = round(time.monotonic() - step_started, 3)
                if status != 0:
                    failure = (step, tool, status, message)
                    break

        nextpnr_text = ""
        if (work / logs["nextpnr"]).exists():
            nextpnr_text = (work / logs["nextpnr"]).read_text(errors="replace")
        utilisation = parse_utilisation(nextpnr_text)
        fmax_by_clock = parse_fmax_by_clock(nextpnr_text)
        fmax = parse_fmax(nextpnr_text)

        error = None
        if failure is not None:
            step, tool, status, message = failure
            error = (fit_error(utilisation, board) if step == "nextpnr" else None) or message
            if error is None:
                has_log = step in logs and (work / logs[step]).exists()
                log_path = hints[step] if has_log else out_dir / "build.log"
                first = _first_error(work / logs[step]) if has_log else None
                detail = first if first else f"exit status {status}"
                error = f"{tool} failed for {board.name}: {detail}; see {log_path}"
        elif check_timing and fmax is not None and fmax < required_mhz:
            if pll_settings is None:
                error = (f"design too slow for {board.name}: reaches {fmax:.2f} MHz after "
                         f"routing, the board clock is {board.clock_mhz:g} MHz; see "
                         f"{hints['nextpnr']}")
            else:
                error = (f"design too slow for {board.name} at a {run_mhz:g} MHz run clock: "
                         f"reaches {fmax:.2f} MHz after routing, the clock needs "
                         f"{required_mhz:.2f} MHz ({CLOCK_MARGIN:g} x, the margin); choose a "
                         f"clock of at most {fmax / CLOCK_MARGIN:.2f} MHz or 'auto'; see "
                         f"{hints['nextpnr']}")

        _install(work, out_dir, name, board, logs, success=error is None)
        if error is not None:
            over = overflows(utilisation) if failure and failure[0] == "nextpnr" else []
            if over:
                raise DoesNotFit(error, board=board,
                                 needs={cell: (used, total) for cell, used, total in over})
            if failure is None and fmax is not None:
                raise TooSlow(error, fmax_mhz=fmax)
            raise NmflowError(error)

        def used(cell_type, default_total):
            row = utilisation.get(cell_type, {"used": 0, "total": default_total})
            return row["used"], row["total"]

        logic_cells, logic_cells_total = used(board.logic_cell_type, board.logic_cells)
        block_rams, block_rams_total = used(board.block_ram_type, board.block_rams)
        dsps, dsps_total = used(board.dsp_type, board.dsps)
        result = BuildResult(
            board=board.name, device=board.device,
            bitstream=out_dir / f"{name}{board.bitstream_suffix}",
            logic_cells=logic_cells, logic_cells_total=logic_cells_total,
            block_rams=block_rams, block_rams_total=block_rams_total,
            dsps=dsps, dsps_total=dsps_total,
            fmax_mhz=fmax, clock_mhz=run_mhz, target_mhz=target_mhz,
            utilisation=utilisation, seconds=round(time.monotonic() - started, 3), seed=seed,
            out_dir=out_dir, yosys_log=out_dir / "yosys.log",
            nextpnr_log=out_dir / "nextpnr.log", build_log=out_dir / "build.log",
            fmax_by_clock=fmax_by_clock, step_seconds=step_seconds,
            bitstream_sha256=hashlib.sha256(
                (out_dir / f"{name}{board.bitstream_suffix}").read_bytes()).hexdigest(),
            oscillator_mhz=board.clock_mhz,
            pll=None if pll_settings is None else pll_settings.to_dict())
        return result
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _prepare(top_factory, board, work, name, target_mhz, seed, synth_opts, nextpnr_opts,
             pll_settings=None):
    """Amaranth: elaborate the board top, write the RTLIL, the Yosys script, the constraints
    (retargeted to ``target_mhz``: the oscillator's, or with ``pll_settings`` the PLL output's)
    and the tool commands into ``work``; return the commands."""
    platform = board.platform()
    overrides = {"nextpnr_opts": ["--timing-allow-fail", "--freq", f"{target_mhz:g}",
                                  "--report", f"{name}_report.json",
                                  *(["--seed", str(seed)] if seed is not None else []),
                                  *board.nextpnr_opts, *nextpnr_opts]}
    if synth_opts:
        overrides["synth_opts"] = list(synth_opts)
    if pll_settings is None:
        top = board.top(top_factory)
        ratio = target_mhz / board.clock_mhz
    else:
        # The oscillator only feeds the PLL: its constraint stays; the PLL's output carries the
        # target (or the run clock, if that is higher).
        constraint = max(target_mhz * 1e6, float(pll_settings.output_hz))
        top = board.top(top_factory, pll=pll_settings, constraint_hz=constraint)
        ratio = 1.0
    plan = platform.prepare(top, name, **overrides)
    for filename in list(plan.files if ratio != 1.0 else ()):
        if filename.endswith(".pcf"):
            plan.files[filename] = _retarget(plan.files[filename], ratio, target_mhz,
                                             _PCF_FREQUENCY)
        elif filename.endswith(".lpf"):
            plan.files[filename] = _retarget(plan.files[filename], ratio, target_mhz,
                                             _LPF_FREQUENCY)
    for filename, content in plan.files.items():
        path = work / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, str):
            path.write_text(content)
        else:
            path.write_bytes(content)
    commands = json.loads(plan.files[f"{plan.script}.json"])["commands"]
    unknown = [argv[0] for argv in commands if argv[0] not in TOOLS]
    if unknown:
        raise NmflowError(f"the {board.name} build plan runs {unknown[0]!r}, a tool nmflow "
                          f"does not know; expected one of {', '.join(TOOLS)}")
    return commands


def _install(work, out_dir, name, board, logs, *, success):
    """Move the products of ``work`` into ``out_dir``: the bitstream last, only on success."""
    make_folder(out_dir)
    bitstream = f"{name}{board.bitstream_suffix}"
    # Whatever happens next, a previous bitstream no longer matches the logs about to arrive.
    for stale in ("build.json", bitstream):
        try:
            (out_dir / stale).unlink()
        except FileNotFoundError:
            pass
    renames = {
        logs["yosys"]: "yosys.log",
        logs["nextpnr"]: "nextpnr.log",
        "build.log": "build.log",
        f"{name}_report.json": "nextpnr_report.json",
    }
    for pattern in _INPUTS:
        renames[pattern.format(name)] = pattern.format(name)
    for source, target in renames.items():
        if (work / source).exists():
            os.replace(work / source, out_dir / target)
        else:
            # A product this run did not make must not be taken for one of this run.
            try:
                (out_dir / target).unlink()
            except FileNotFoundError:
                pass
    if success:
        os.replace(work / bitstream, out_dir / bitstream)
