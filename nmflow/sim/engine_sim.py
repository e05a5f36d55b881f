"""Simulate the engine's Verilog under cocotb against the golden model.

The Verilog comes from :func:`nmflow.rtl.verilog.write_engine_verilog` (the ``verilog`` step):
simulation reads it, checked against its ``engine.json``, and never writes it.
"""

import threading
import os
import time
from pathlib import Path

import numpy as np

from ..fileio import atomic_path, make_folder, write_bytes, write_json
from ..rtl.verilog import read_engine_verilog
from .runner import run_cocotb

__all__ = ["simulate_engine", "read_progress"]



def cycle_figures(cycles, finish=None):
    """What a simulation measured of the engine's speed, from each inference's cycles (first
    input beat to last result beat) and ``finish`` (the cycle of its last result beat):

    * ``cycles_per_inference``: the first inference's cycles (it found the engine idle);
    * ``cycles_back_to_back``: the mean of the later ones' (offered behind another, their inputs
      load while it computes, so they take longer from their first beat), ``None`` for one;
    * ``interval_cycles``: the mean cycles between consecutive last result beats (the
      throughput), ``None`` for one inference or without ``finish``.
    """
    cycles = np.asarray(cycles)
    out = {"cycles_per_inference": float(cycles[0]) if len(cycles) else None,
           "cycles_back_to_back": float(cycles[1:].mean()) if len(cycles) > 1 else None,
           "interval_cycles": None}
    if finish is not None and len(finish) > 1:
        out["interval_cycles"] = float(np.diff(np.asarray(finish)).mean())
    return out


def read_progress(path):
    """The last complete line of a testbench's progress file as ``(images_done, sim_cycles,
    seconds)``, or ``None`` if there is none yet."""
    try:
        text = Path(path).read_text()
    except OSError:
        return None
    lines = text.split("\n")[:-1]           # a line without its newline is still being written
    if not lines:
        return None
    try:
        done, cycles, seconds = lines[-1].split()
        return int(done), int(cycles), float(seconds)
    except ValueError:
        return None


def _run_watching(run, progress_path, images, progress, poll=0.25):
    """Run ``run()`` in a thread; meanwhile call ``progress(done, images, cycles_per_second)``
    whenever the testbench's progress file says something new. Returns what ``run`` returned."""
    box = {}

    def target():
        try:
            box["result"] = run()
        except BaseException as error:           # handed over to the caller's thread
            box["error"] = error

    thread = threading.Thread(target=target, name="nmflow-sim", daemon=True)
    thread.start()
    last = None
    while thread.is_alive():
        thread.join(poll)
        state = read_progress(progress_path)
        if state is not None and state != last:
            done, cycles, seconds = state
            progress(done, images, round(cycles / seconds, 1) if seconds > 0 else 0.0)
            last = state
    if "error" in box:
        raise box["error"]
    return box["result"]


def simulate_engine(model_path, inputs, sim_dir, *, verilog_dir, model=None, lanes=None, pe=None,
                    waves=False, ready=1.0, valid=1.0, seed=0, progress=None, wall_seconds=None):
    """Run the engine testbench (:mod:`nmflow.sim.tb_engine`) on ``inputs``; return a summary.

    Parameters
    ----------
    model_path : path
        The hardware model the testbench (another process) loads as its golden model.
    inputs : integer array [N, n_inputs]
    sim_dir : path
        Where the vectors, the RTL outputs, the testbench's work folder and log go.
    verilog_dir : path
        The folder with ``engine.v`` and ``engine.json``, checked by
        :func:`~nmflow.rtl.verilog.read_engine_verilog` (refused with one line if they do not
        belong together, come from another model, or have other lanes than ``lanes``).
    model : :class:`~nmflow.golden.hwmodel.HardwareModel`, optional
        ``model_path`` already loaded (loaded here if not given).
    lanes : int, optional
        If given, the lanes the Verilog must have been generated with.
    pe : int, optional
        If given, the neurons per cycle the Verilog must have been generated with.
    waves : bool
        Record waves (FST with Icarus) in ``sim_dir/work``.
    ready, valid : float
        Probabilities that the result stream is ready in a cycle (random backpressure) and that
        the driver offers its next input beat in a cycle (random gaps).
    seed : int
        Seed of both patterns.
    progress : callable, optional
        ``progress(images_done, images, sim_cycles_per_second)``, called from this thread while
        the simulation runs (in another thread) whenever the testbench reports progress.
    wall_seconds : float, optional
        Kill the simulator after this long: the last resort behind the testbench's cycle
        watchdog (a simulator stuck in a zero-delay loop never reaches it). By default 60 s
        for start-up and compilation plus one second per 1,000 cycles the inputs should take
        (the simulation runs at 6,000-14,000 cycles per second).

    Returns
    -------
    dict
        ``images``, ``passed``, ``tests``, ``failed``, ``failures`` (messages), ``log``,
        ``seconds`` (wall clock, compilation included), ``outputs`` (``rtl_outputs.npz`` with
        classes, scores, ``acts{n}``, cycles and sim_cycles, or ``None`` if the testbench did not
        finish), ``lanes``, ``verilog`` and ``verilog_sha256`` (the file simulated and the
        checksum of what was compiled), ``ready``, ``valid``, ``seed``, and when the outputs
        exist the :func:`cycle_figures`, ``sim_cycles``, ``sim_cycles_per_second``.
    """
    from ..golden import hwmodel

    model = hwmodel.load(model_path) if model is None else model
    verilog = read_engine_verilog(verilog_dir, model=model, lanes=lanes, pe=pe)
    inputs = np.asarray(inputs, dtype=np.int64)
    sim_dir = Path(sim_dir).resolve()
    work = sim_dir / "work"
    inputs_path = sim_dir / "vectors.npz"
    make_folder(sim_dir)
    with atomic_path(inputs_path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, x=inputs)
    # The simulator compiles the very bytes whose checksum was checked and is recorded.
    source, config = work / "engine.v", work / "engine.json"
    write_bytes(source, verilog.text)
    write_json(config, verilog.config)
    out_path = sim_dir / "rtl_outputs.npz"
    out_path.unlink(missing_ok=True)
    progress_path = work / "progress.txt"
    progress_path.unlink(missing_ok=True)
    env = {"NMFLOW_TB_MODEL": Path(model_path).resolve(), "NMFLOW_TB_CONFIG": config,
           "NMFLOW_TB_INPUTS": inputs_path, "NMFLOW_TB_OUT": out_path,
           "NMFLOW_TB_READY": ready, "NMFLOW_TB_VALID": valid, "NMFLOW_TB_SEED": seed,
           "NMFLOW_TB_PROGRESS": progress_path}

    if wall_seconds is None:
        expected = len(inputs) * verilog.config["cycles_per_inference"] / (ready * valid)
        wall_seconds = 60 + expected / 1000

    def run():
        return run_cocotb(source, verilog.config["toplevel"], "nmflow.sim.tb_engine", work,
                          waves=waves, env=env, wall_seconds=wall_seconds)

    start = time.monotonic()
    if progress is None:
        result = run()
    else:
        result = _run_watching(run, progress_path, len(inputs), progress)
    seconds = time.monotonic() - start
    summary = {"images": int(len(inputs)), "passed": result.passed, "tests": result.tests,
               "failed": result.failed, "failures": result.failures, "log": str(result.log),
               "seconds": round(seconds, 2),
               "outputs": str(out_path) if out_path.is_file() else None,
               "lanes": verilog.config["lanes"], "pe": verilog.config["pe"], "verilog": str(verilog.path.resolve()),
               "verilog_sha256": verilog.sha256, "ready": ready, "valid": valid, "seed": seed,
               "killed_after": result.killed_after}
    if out_path.is_file():
        with np.load(out_path) as f:
            summary.update(cycle_figures(f["cycles"], f["finish"] if "finish" in f else None))
            summary["sim_cycles"] = int(f["sim_cycles"])
            summary["sim_cycles_per_second"] = round(int(f["sim_cycles"]) / seconds, 1)
        # The testbench's own clock (from reset to the last result): the simulator's speed
        # without its compilation.
        state = read_progress(progress_path)
        if state is not None and state[2] > 0:
            summary["simulator"] = os.environ.get("SIM", "icarus")
            summary["testbench_seconds"] = round(state[2], 2)
            summary["testbench_cycles_per_second"] = round(state[1] / state[2], 1)
    return summary
