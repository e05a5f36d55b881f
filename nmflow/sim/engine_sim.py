"""Simulate the engine's Verilog under cocotb against the golden model.

The Verilog comes from :func:`nmflow.rtl.verilog.write_engine_verilog` (the ``verilog`` step):
simulation reads it, checked against its ``engine.json``, and never writes it.

A long run can be split over the cores (``jobs``): the vectors are cut into contiguous chunks,
the Verilog is compiled once, and one simulator per chunk runs it side by side, each in a work
folder of its own. Their outputs are merged, in the order of the vectors, into one
``rtl_outputs.npz`` whose classes, scores and activations are those a single simulator gives.
Each chunk starts from reset, so its first inference finds the engine idle: the cycle figures
(:func:`cycle_figures`) count every chunk's first inference as one from idle and measure the
intervals between inferences within a chunk only.
"""

import base64
import contextlib
import hashlib
import io
import math
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from .. import limits
from ..errors import NmflowError, check_int
from ..fileio import atomic_path, make_folder, write_bytes, write_json
from ..jobs import Job, cluster_address, forget_result, run_jobs
from ..rtl.verilog import read_engine_verilog
from .runner import cached_build, run_cocotb, simulator

__all__ = ["simulate_engine", "read_progress", "cycle_figures", "chunk_starts", "check_jobs",
           "check_testbench", "TESTBENCHES"]

#: The engine's testbenches: ``bulk`` (:mod:`nmflow.sim.tb_engine_bulk`: stimulus, backpressure
#: and captures in gateware, Python woken a few times per run) and ``beat``
#: (:mod:`nmflow.sim.tb_engine`: Python drivers and monitors woken per beat).
TESTBENCHES = ("bulk", "beat")


def cycle_figures(cycles, finish=None, chunks=None):
    """What a simulation measured of the engine's speed, from each inference's cycles (first
    input beat to last result beat), ``finish`` (the cycle of its last result beat, counted
    from its simulator's reset) and ``chunks`` (the first inference of each simulator's chunk,
    ``[0]`` if not given: one simulator ran them all):

    * ``cycles_per_inference``: the cycles of each chunk's first inference (it found the engine
      idle), their mean over the chunks;
    * ``cycles_back_to_back``: the mean of the other ones' (offered behind another, their
      inputs load while it computes, so they take longer from their first beat), ``None`` if
      there are none;
    * ``interval_cycles``: the mean cycles between the last result beats of consecutive
      inferences of one chunk (the throughput), ``None`` without two such inferences or
      without ``finish``.
    """
    cycles = np.asarray(cycles)
    first = np.zeros(len(cycles), dtype=bool)
    starts = [0] if chunks is None else [int(start) for start in np.asarray(chunks).reshape(-1)]
    first[[start for start in starts if 0 <= start < len(cycles)]] = True
    out = {"cycles_per_inference": float(cycles[first].mean()) if first.any() else None,
           "cycles_back_to_back": float(cycles[~first].mean()) if (~first).any() else None,
           "interval_cycles": None}
    if finish is not None and len(finish) == len(cycles) > 1:
        within = np.diff(np.asarray(finish))[~first[1:]]
        if len(within):
            out["interval_cycles"] = float(within.mean())
    return out


def check_jobs(jobs, images=None):
    """The simulators to run side by side for ``jobs``: an integer from 1 to
    :data:`~nmflow.limits.SIM_JOBS`, or ``"auto"`` (the usable cores); else one line. With
    ``images``, no more than there are vectors (a chunk holds at least one)."""
    if jobs == "auto":
        jobs = min(limits.usable_cores(), limits.SIM_JOBS)
    jobs = check_int("jobs", jobs, 1, limits.SIM_JOBS,
                     rule=f"auto or an integer from 1 to {limits.SIM_JOBS}")
    return jobs if images is None else max(1, min(jobs, images))


def check_testbench(testbench):
    """``testbench`` if it is one of :data:`TESTBENCHES`, else one line."""
    if testbench not in TESTBENCHES:
        raise NmflowError(f"testbench must be one of {', '.join(TESTBENCHES)}, not "
                          f"{testbench!r}")
    return testbench


def chunk_starts(images, jobs):
    """The first vector of each of ``jobs`` contiguous chunks of ``images`` vectors, and
    ``images`` after the last: chunk ``k`` is ``starts[k]`` to ``starts[k + 1] - 1``. Their
    sizes differ by one at most."""
    return [k * images // jobs for k in range(jobs)] + [images]


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




class _Chunk:
    """One simulator's share of a run: vectors ``first`` to ``first + images - 1``, simulated
    in ``folder`` (``work`` itself when one simulator runs them all, else
    ``work/chunk<number>``). ``result`` is what its job returned (:func:`_simulate_chunk`),
    ``error`` the one line of a job that raised."""

    def __init__(self, number, first, images, folder, named):
        self.number, self.first, self.images, self.folder = number, first, images, folder
        self.name = f"chunk {number} (images {first} to {first + images - 1})" if named else None
        self.progress = folder / "progress.txt"
        self.result = self.error = None

    def prefixed(self, message):
        return f"{self.name}: {message}" if self.name else message

    @property
    def finished(self):
        """Whether its testbench wrote its outputs (every inference came out)."""
        return self.result is not None and self.result["outputs"] is not None

    @property
    def failed(self):
        """Whether it did not finish, or finished with a failed test."""
        return not (self.finished and self.result["passed"])

    @property
    def seconds(self):
        return None if self.result is None else self.result["seconds"]

    @property
    def log(self):
        return self.result["log"] if self.result is not None else str(self.folder / "sim.log")


def _encode_npz(path):
    """The arrays of the ``.npz`` file at ``path``, compressed, as base64 text (a job's result
    is JSON)."""
    with np.load(path, allow_pickle=False) as f:
        arrays = {name: f[name] for name in f.files}
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _decode_npz(text):
    """The arrays of a ``.npz`` given as base64 text, by name."""
    with np.load(io.BytesIO(base64.b64decode(text)), allow_pickle=False) as f:
        return {name: f[name] for name in f.files}


def _chunk_design(shared, work):
    """The compiled simulation and the files a chunk's testbench reads: those of ``shared``
    where the job runs beside the run's folder, else (on a cluster's worker) written from the
    texts ``shared`` carries to ``work`` and compiled there (or taken from that machine's
    cache). Returns ``(sources, toplevel, module, build folder, environment)``."""
    if "build_dir" in shared:
        return (shared["sources"], shared["toplevel"], shared["module"], shared["build_dir"],
                shared["env"])
    from ..golden import hwmodel

    files = {}
    for name, data in shared["files"].items():
        files[name] = work / name
        write_bytes(files[name], data)
    hwmodel.save(shared["model"], work / "hwmodel")
    sources = [files[name] if name in files else Path(name) for name in shared["sources"]]
    build_dir, _, killed = cached_build(sources, shared["toplevel"], work / "build.log",
                                        waves=shared["waves"], wall_seconds=shared["limit"],
                                        ports_only=True, subject=files["engine.v"])
    if killed is not None:
        raise NmflowError(f"engine.v did not compile within {killed:g} s on this worker")
    env = dict(shared["env"], NMFLOW_TB_MODEL=work / "hwmodel", NMFLOW_TB_CONFIG=files[
        "engine.json"], NMFLOW_TB_INPUTS=files["vectors.npz"])
    return sources, shared["toplevel"], shared["module"], build_dir, env


def _simulate_chunk(shared, first, images, folder, wall_seconds):
    """A job of :func:`~nmflow.jobs.run_jobs`: simulate vectors ``first`` to ``first +
    images - 1`` in ``folder`` (``None`` on a cluster's worker: a temporary folder there) and
    return what came of it, as JSON: ``passed``, ``tests``, ``failed``, ``failures``,
    ``killed_after``, ``seconds``, ``log`` (its path) and ``log_text`` (its last 64 kB, for a run that
    took the result from a worker elsewhere or from an earlier run), ``progress`` (the testbench's last progress line) and ``outputs`` (the
    testbench's ``.npz`` as base64, ``None`` if it did not write it)."""
    start = time.monotonic()
    here = folder is not None
    work = Path(folder) if here else Path(tempfile.mkdtemp(prefix="nmflow-sim-"))
    try:
        make_folder(work)
        sources, toplevel, module, build_dir, env = _chunk_design(shared, work)
        outputs, progress = work / "outputs.npz", work / "progress.txt"
        outputs.unlink(missing_ok=True)
        progress.unlink(missing_ok=True)
        env = dict(env, NMFLOW_TB_FIRST=first, NMFLOW_TB_COUNT=images, NMFLOW_TB_OUT=outputs,
                   NMFLOW_TB_PROGRESS=progress)
        result = run_cocotb(sources, toplevel, module, build_dir, waves=shared["waves"],
                            env=env, wall_seconds=wall_seconds, test_dir=work, build=False)
        state = read_progress(progress)
        done = {"passed": result.passed, "tests": result.tests, "failed": result.failed,
                "failures": list(result.failures), "killed_after": result.killed_after,
                "seconds": round(time.monotonic() - start, 2), "log": str(result.log),
                "progress": None if state is None else list(state),
                "outputs": _encode_npz(outputs) if outputs.is_file() else None}
        outputs.unlink(missing_ok=True)         # they travel in the result
        with contextlib.suppress(OSError):
            done["log_text"] = Path(result.log).read_bytes()[-65536:].decode(errors="replace")
        return done
    finally:
        if not here:
            shutil.rmtree(work, ignore_errors=True)


def _watch_progress(chunks, progress, images, stop, poll=0.25):
    """Until ``stop`` is set, call ``progress(done, images, cycles_per_second)`` whenever the
    testbenches' progress files (or the chunks' results) say something new: the images done and
    the speeds summed over the chunks still running."""
    last, stopped = None, False
    while not stopped:
        stopped = stop.wait(poll)               # once more after the last result
        states = []
        for chunk in chunks:
            if chunk.result is not None and chunk.result["progress"] is not None:
                states.append((tuple(chunk.result["progress"]), chunk.images))
            else:
                state = read_progress(chunk.progress)
                if state is not None:
                    states.append((state, chunk.images))
        if states and states != last:
            done = sum(s[0] for s, _ in states)
            running = [s for s, n in states if s[0] < n] or [s for s, _ in states]
            rate = sum(s[1] / s[2] for s in running if s[2] > 0)
            progress(done, images, round(rate, 1))
            last = states


def _merge_outputs(chunks, out_path):
    """Write the chunks' outputs, in their order, to ``out_path`` (atomically): classes,
    scores, ``acts{n}``, cycles and finish of every vector; ``sim_cycles`` summed;
    ``chunks`` (each chunk's first vector) and ``chunk_sim_cycles``. Every chunk must hold
    exactly its images (so every vector is there once). Returns ``chunk_sim_cycles``."""
    parts = [_decode_npz(chunk.result["outputs"]) for chunk in chunks]
    for chunk, part in zip(chunks, parts):
        rows = {len(value) for name, value in part.items() if name != "sim_cycles"}
        if rows != {chunk.images}:
            raise NmflowError(chunk.prefixed(f"the outputs must hold {chunk.images} images, "
                                             f"not {sorted(rows)}"))
    names = [name for name in parts[0] if name != "sim_cycles"]
    merged = {name: np.concatenate([part[name] for part in parts]) for name in names}
    sim_cycles = np.array([int(part["sim_cycles"]) for part in parts], dtype=np.int64)
    merged.update(sim_cycles=np.int64(sim_cycles.sum()), chunk_sim_cycles=sim_cycles,
                  chunks=np.array([chunk.first for chunk in chunks], dtype=np.int64))
    with atomic_path(out_path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **merged)
    return sim_cycles


def simulate_engine(model_path, inputs, sim_dir, *, verilog_dir, model=None, lanes=None, pe=None,
                    waves=False, ready=1.0, valid=1.0, seed=0, progress=None, wall_seconds=None,
                    jobs=1, testbench="bulk", cluster=None, resume=False, jobs_folder=None):
    """Run the engine testbench on ``inputs``; return a summary.

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
        Record waves (FST with Icarus) in ``sim_dir/work`` (one file per chunk, in its folder).
    ready, valid : float
        Probabilities that the result stream is ready in a cycle (random backpressure) and that
        the driver offers its next input beat in a cycle (random gaps).
    seed : int
        Seed of both patterns; a chunk's come from ``seed`` and its first vector (from ``seed``
        alone for the chunk that starts at vector 0, as for a run in one simulator).
    progress : callable, optional
        ``progress(images_done, images, sim_cycles_per_second)``, called from this thread while
        the simulation runs (in other threads) whenever a testbench reports progress: the
        images done and the speeds summed over the chunks.
    wall_seconds : float, optional
        Kill a simulator after this long: the last resort behind the testbench's cycle
        watchdog (a simulator stuck in a zero-delay loop never reaches it). It holds for each
        chunk's simulator (and, with several chunks, for the compilation before them). By
        default 60 s for start-up and compilation plus one second per 1,000 cycles the chunk's
        inputs should take (the simulation runs at 6,000-14,000 cycles per second), times the
        chunks that share a core.
    jobs : int or "auto"
        Simulators to run side by side, 1 to :data:`~nmflow.limits.SIM_JOBS` (``"auto"``: one
        per usable core), each on a contiguous chunk of the vectors (their sizes differ by one
        at most) in ``sim_dir/work/chunk<k>``, all running the Verilog compiled once in
        ``sim_dir/work``; never more than there are vectors. With 1, the one simulator
        runs in ``sim_dir/work``. Each chunk is a job of :func:`~nmflow.jobs.run_jobs`, seeded
        from its first vector, so where and in what order the chunks run changes nothing.
    cluster : str, optional
        A Dask scheduler (default ``$NMFLOW_CLUSTER``, else this machine): its workers get
        the texts to simulate (:func:`_shared_for_workers`), compile in a temporary folder and
        send back each chunk's outputs and log (written to the chunk's folder here).
    resume : bool
        Keep the chunks already simulated in ``jobs_folder`` (same simulator, Verilog, model,
        vectors, patterns and chunking) and run only the others.
    jobs_folder : path, optional
        Where each chunk's result is written as it arrives (``sim_dir/work/.jobs`` if not
        given, and removed when every chunk has finished). A chunk that did not finish leaves
        no result, so ``resume`` runs it again; one that finished with mismatches keeps its.
    testbench : ``"bulk"`` or ``"beat"``
        :mod:`nmflow.sim.tb_engine_bulk` (the default: the engine's Verilog inside
        :class:`~nmflow.sim.bulk.BulkBench`, ``sim_dir/work/bulk.v``, built for the largest
        chunk rounded up to a power of two) or :mod:`nmflow.sim.tb_engine`. Either way the
        compiled simulation is taken from the cache when its sources, toplevel and options are
        unchanged (:func:`~nmflow.sim.runner.cached_build`; ``compile_cached``), its
        compiler's output in ``sim_dir/work/build.log``.

    Returns
    -------
    dict
        ``images``, ``passed``, ``tests``, ``failed``, ``failures`` (messages, those of
        ``failed_chunk`` first; with several chunks, each starts with the chunk's name,
        ``chunk 1 (images 180 to 359): ...``),
        ``log`` (that of the first chunk that failed, else of the first chunk), ``seconds``
        (wall clock, compilation included), ``outputs`` (``rtl_outputs.npz`` with classes,
        scores, ``acts{n}``, cycles, finish, sim_cycles, chunks and chunk_sim_cycles, or
        ``None`` unless every chunk finished), ``lanes``, ``verilog`` and ``verilog_sha256``
        (the file simulated and the checksum of what was compiled), ``ready``, ``valid``,
        ``seed``, ``killed_after`` and ``failed_chunk`` (the chunk that failed the run, by name
        when there are several: the first that did not finish, else the first that failed),
        ``jobs`` (the simulators run), ``testbench``, ``compile_seconds`` and
        ``compile_cached`` (the compilation, or taking it from the cache),
        ``cluster`` (the Dask scheduler the chunks ran on, ``None`` on this machine),
        ``chunks_reused`` (those a resumed run took from ``jobs_folder``),
        ``chunks`` (each one's ``first`` vector, ``images``, ``seconds``, ``passed``,
        ``sim_cycles`` and ``log``), and when the outputs exist the :func:`cycle_figures`,
        ``sim_cycles`` (summed over the chunks) and ``sim_cycles_per_second`` (that sum over
        the wall clock).
    """
    from ..golden import hwmodel

    testbench = check_testbench(testbench)
    model = hwmodel.load(model_path) if model is None else model
    verilog = read_engine_verilog(verilog_dir, model=model, lanes=lanes, pe=pe)
    inputs = np.asarray(inputs, dtype=np.int64)
    jobs = check_jobs(jobs, len(inputs))
    sim_dir = Path(sim_dir).resolve()
    work, inputs_path, out_path = sim_dir / "work", sim_dir / "vectors.npz", \
        sim_dir / "rtl_outputs.npz"
    chunks = _prepare_run(sim_dir, inputs, verilog, jobs)
    config = work / "engine.json"

    share = math.ceil(jobs / limits.usable_cores())     # chunks per core

    def limit(images):
        if wall_seconds is not None:
            return wall_seconds
        expected = images * verilog.config["cycles_per_inference"] / (ready * valid)
        return (60 + expected / 1000) * share

    start = time.monotonic()
    design = _compile(testbench, verilog, model, work, max(chunk.images for chunk in chunks),
                      waves, limit(len(inputs)))
    toplevel, module, sources, capacity, build_dir, cached = design
    compile_seconds = round(time.monotonic() - start, 2)

    address = cluster_address(cluster)
    env = {"NMFLOW_TB_MODEL": Path(model_path).resolve(), "NMFLOW_TB_CONFIG": config,
           "NMFLOW_TB_INPUTS": inputs_path, "NMFLOW_TB_READY": ready, "NMFLOW_TB_VALID": valid,
           "NMFLOW_TB_SEED": seed, "NMFLOW_TB_CAPACITY": capacity}
    if address is None:
        shared = {"sources": sources, "toplevel": toplevel, "module": module,
                  "build_dir": build_dir, "env": env, "waves": waves}
    else:
        shared = _shared_for_workers(work, sources, toplevel, module, env, model, waves,
                                     limit(len(inputs)))
    # A chunk's key names everything its result depends on, so a resumed run takes only
    # results of this very simulation.
    what = [simulator(), verilog.sha256, hwmodel.model_checksum(model),
            hashlib.sha256(inputs.tobytes() + str(inputs.shape).encode()).hexdigest(),
            ready, valid, seed, testbench, bool(waves)]
    jobs_list = [Job(tuple(what + [chunk.first, chunk.images]), _simulate_chunk,
                     (chunk.first, chunk.images,
                      None if address is not None else str(chunk.folder),
                      limit(chunk.images)))
                 for chunk in chunks]
    folder = Path(jobs_folder) if jobs_folder is not None else work / ".jobs"
    reused = _run_chunk_jobs(chunks, jobs_list, shared, folder, address, resume, progress,
                             len(inputs), keep_note=jobs_folder is not None)
    finished = all(chunk.finished for chunk in chunks)
    sim_cycles = _merge_outputs(chunks, out_path) if finished else None
    if finished and jobs_folder is None:
        shutil.rmtree(folder, ignore_errors=True)
    seconds = time.monotonic() - start
    return _summary(chunks, verilog, out_path, sim_cycles, seconds,
                    {"images": int(len(inputs)), "ready": ready, "valid": valid, "seed": seed,
                     "jobs": jobs, "compile_seconds": compile_seconds,
                     "compile_cached": cached, "testbench": testbench,
                     "cluster": address, "chunks_reused": reused})


def _prepare_run(sim_dir, inputs, verilog, jobs):
    """Write what a run reads into ``sim_dir``: the vectors (``vectors.npz``), the very Verilog
    bytes whose checksum was checked and is recorded, and its configuration
    (``work/engine.v``, ``work/engine.json``); clear the outputs of an earlier run; return the
    ``jobs`` chunks, each with its folder made and cleared."""
    work = sim_dir / "work"
    make_folder(sim_dir)
    with atomic_path(sim_dir / "vectors.npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, x=inputs)
    write_bytes(work / "engine.v", verilog.text)
    write_json(work / "engine.json", verilog.config)
    (sim_dir / "rtl_outputs.npz").unlink(missing_ok=True)
    starts = chunk_starts(len(inputs), jobs)
    chunks = [_Chunk(k, starts[k], starts[k + 1] - starts[k],
                     work if jobs == 1 else work / f"chunk{k}", named=jobs > 1)
              for k in range(jobs)]
    for chunk in chunks:
        make_folder(chunk.folder)
        (chunk.folder / "outputs.npz").unlink(missing_ok=True)
        chunk.progress.unlink(missing_ok=True)
    return chunks


def _shared_for_workers(work, sources, toplevel, module, env, model, waves, limit):
    """What every chunk's job on a cluster's worker gets: the texts of the Verilog, its
    configuration and the vectors (the worker has none of this machine's paths), the model,
    the sources by name (those of ``work``) or by path (the package's own), and the
    testbench's settings without its paths."""
    files = {"engine.v": (work / "engine.v").read_bytes(),
             "engine.json": (work / "engine.json").read_bytes(),
             "vectors.npz": Path(env["NMFLOW_TB_INPUTS"]).read_bytes()}
    if (work / "bulk.v").is_file():
        files["bulk.v"] = (work / "bulk.v").read_bytes()
    return {"files": files, "model": model, "toplevel": toplevel, "module": module,
            "waves": waves, "limit": limit,
            "sources": [path.name if Path(path).parent == work else str(path)
                        for path in sources],
            "env": {name: value for name, value in env.items()
                    if name not in ("NMFLOW_TB_MODEL", "NMFLOW_TB_CONFIG", "NMFLOW_TB_INPUTS")}}


def _run_chunk_jobs(chunks, jobs_list, shared, folder, address, resume, progress, images,
                    keep_note):
    """Run the chunks' jobs (:func:`~nmflow.jobs.run_jobs`, results in ``folder``), each
    chunk's result or error set as it arrives, the testbenches' progress reported meanwhile;
    then every chunk's log written into its folder (from its result when it ran elsewhere or
    earlier), and the result of every chunk that did not finish forgotten, so that a resumed
    run simulates it again. A job that raised: one line naming its chunk (``keep_note``: with
    where the others' results are kept). Returns the chunks a resumed run took from
    ``folder``."""
    stop = threading.Event()
    watcher = None
    if progress is not None:
        watcher = threading.Thread(target=_watch_progress, args=(chunks, progress, images,
                                                                  stop), daemon=True)
    by_first = {chunk.first: chunk for chunk in chunks}

    def arrived(job_key, result, error):
        chunk = by_first[job_key[-2]]
        chunk.result, chunk.error = result, error

    error, counts = None, {"reused": 0}
    try:
        if watcher is not None:
            watcher.start()
        run_jobs(jobs_list, folder=folder, shared=shared, workers=len(chunks), cluster=address,
                 resume=resume, what="simulation chunks", on_result=arrived, counts=counts)
    except NmflowError as failed:               # a job that raised: named with its chunk
        error = failed
    finally:
        stop.set()
        if watcher is not None:
            watcher.join()
    for chunk in chunks:                        # a job that never said (interrupted)
        if chunk.result is None and chunk.error is None:
            chunk.error = str(error) if error is not None else "no result"
    for chunk in chunks:                        # every chunk's log in its folder
        if chunk.result is not None:
            log = chunk.folder / "sim.log"
            if not log.is_file():               # run elsewhere, or by an earlier run
                write_bytes(log, chunk.result.get("log_text", "").encode())
            chunk.result["log"] = str(log)
    raised = next((chunk for chunk in chunks if chunk.error is not None), None)
    if raised is not None:                      # a job that raised: the first one's line, named
        raise NmflowError(raised.prefixed(raised.error) + (
            f" (the other chunks' results are kept in {str(folder)!r}: --resume runs only "
            f"what is missing)" if keep_note and len(chunks) > 1 else ""))
    for job in jobs_list:                       # not finished: run again by --resume
        if not by_first[job.key[-2]].finished:
            forget_result(folder, job.key)
    return counts["reused"]


def _compile(testbench, verilog, model, work, images, waves, wall_seconds):
    """Compile the simulation of ``testbench`` on ``work/engine.v`` (or take it from the cache);
    for the bulk testbench, first write ``work/bulk.v`` for ``images`` rounded up to a power of
    two. Returns ``(toplevel, test module, sources, capacity, build folder, cached)``; a
    compiler killed after ``wall_seconds`` is one line."""
    source = work / "engine.v"
    toplevel, module, sources = verilog.config["toplevel"], "nmflow.sim.tb_engine", [source]
    capacity = images
    if testbench == "bulk":
        from .bulk import MEMORY_VERILOG, TOPLEVEL, bulk_verilog, capacity_for
        capacity = capacity_for(images)
        bulk_verilog(verilog.config, model, capacity, work / "bulk.v")
        toplevel, module = TOPLEVEL, "nmflow.sim.tb_engine_bulk"
        # the engine last: the compiler's first error is then in it if it is cut short
        sources = [MEMORY_VERILOG, work / "bulk.v", source]
    build_dir, cached, killed = cached_build(sources, toplevel, work / "build.log", waves=waves,
                                             wall_seconds=wall_seconds, ports_only=True,
                                             subject=source)
    if killed is not None:
        raise NmflowError(f"{source} did not compile within {killed:g} s (wall-clock "
                          f"limit) (see {work / 'build.log'})")
    return toplevel, module, sources, capacity, build_dir, cached


def _summary(chunks, verilog, out_path, sim_cycles, seconds, settings):
    """The summary of :func:`simulate_engine` from its finished (or failed) chunks: pass or
    fail, the failing chunk named, the Verilog simulated, the merged cycle figures and the
    simulators' speeds; ``settings`` (images, ready, valid, seed, jobs, compile_seconds,
    cluster, chunks_reused) as given, with testbench and compile_cached."""
    finished = all(chunk.finished for chunk in chunks)
    # The chunk that failed the run: the first that did not finish, else the first that failed.
    failed = next((chunk for chunk in chunks if not chunk.finished),
                  next((chunk for chunk in chunks if chunk.failed), None))
    ordered = ([failed] if failed else []) + [chunk for chunk in chunks if chunk is not failed]
    results = [chunk.result for chunk in chunks]
    summary = {"images": settings["images"],
               "passed": finished and all(result["passed"] for result in results),
               "tests": sum(result["tests"] for result in results),
               "failed": sum(result["failed"] for result in results),
               "failures": [chunk.prefixed(message) for chunk in ordered
                            for message in chunk.result["failures"]],
               "log": (failed or chunks[0]).log,
               "seconds": round(seconds, 2),
               "outputs": str(out_path) if finished else None,
               "lanes": verilog.config["lanes"], "pe": verilog.config["pe"],
               "verilog": str(verilog.path.resolve()),
               "verilog_sha256": verilog.sha256, "ready": settings["ready"],
               "valid": settings["valid"], "seed": settings["seed"],
               "killed_after": None if failed is None else failed.result["killed_after"],
               "failed_chunk": None if failed is None else failed.name,
               "jobs": settings["jobs"], "testbench": settings["testbench"],
               "cluster": settings["cluster"], "chunks_reused": settings["chunks_reused"],
               "compile_seconds": settings["compile_seconds"],
               "compile_cached": settings["compile_cached"],
               "chunks": [{"first": chunk.first, "images": chunk.images,
                           "seconds": chunk.seconds,
                           "passed": chunk.finished and chunk.result["passed"],
                           "sim_cycles": None if sim_cycles is None else int(sim_cycles[k]),
                           "log": chunk.log} for k, chunk in enumerate(chunks)]}
    if finished:
        with np.load(out_path) as f:
            summary.update(cycle_figures(f["cycles"], f["finish"], f["chunks"]))
        summary["sim_cycles"] = int(sim_cycles.sum())
        summary["sim_cycles_per_second"] = round(int(sim_cycles.sum()) / seconds, 1)
        # The testbenches' own clocks (from reset to the last result): the simulators' speed
        # without their compilation, all cycles over the longest chunk's seconds.
        states = [None if chunk.result["progress"] is None else tuple(chunk.result["progress"])
                  for chunk in chunks]
        if all(state is not None for state in states) and max(s[2] for s in states) > 0:
            longest = max(state[2] for state in states)
            summary["simulator"] = os.environ.get("SIM", "icarus")
            summary["testbench_seconds"] = round(longest, 2)
            summary["testbench_cycles_per_second"] = round(
                sum(state[1] for state in states) / longest, 1)
    return summary
