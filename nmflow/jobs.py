"""One way to run many independent jobs: on this machine's cores by default, on a Dask cluster
when one is named.

A step that fans out (the read-error sweep, ...) describes each piece of work as a :class:`Job`
(a key, a module-level function, its arguments) and hands them to :func:`run_jobs`, with the data
every job shares. Each job's result is written, atomically, to a file named after its key as soon
as it arrives, so that

* ``resume=True`` runs only the jobs whose result is missing (after a crash, a Ctrl-C or a lost
  machine);
* a job that fails is named (its key and its error, one line) after the others have finished and
  been written, and a resumed run retries only it;
* results never depend on which worker ran a job or in what order: a job takes its randomness
  from its key, never from a shared generator, and every result passes through its JSON file's
  form, so a run on a cluster writes what a run on one core writes, byte for byte.

Where the jobs run
    Locally, a process pool over ``workers`` processes (all usable cores by default); a worker
    process that dies takes its job with it, and the pool is started again for the jobs left
    (:data:`RESTARTS` times). With ``cluster="tcp://host:8786"`` (or the ``NMFLOW_CLUSTER``
    environment variable), the jobs go to that Dask scheduler's workers, which must run the same
    nmflow (``dask scheduler`` on one machine, ``dask worker tcp://host:8786`` on each, in
    nmflow's environment); the shared data is sent to each worker once; a worker that dies has
    its jobs run again elsewhere by the scheduler.
"""

import contextlib
import hashlib
import json
import os
import signal
import time
from concurrent.futures import ProcessPoolExecutor, as_completed, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

from . import limits
from .errors import NmflowError
from .fileio import make_folder, write_json

__all__ = ["Job", "run_jobs", "forget_result", "cluster_address", "CLUSTER_ENV", "RESTARTS"]

#: The environment variable naming a Dask scheduler when ``--cluster`` is not given.
CLUSTER_ENV = "NMFLOW_CLUSTER"
#: Times a local pool is started again after a worker process died.
RESTARTS = 3
#: Seconds an interrupted local run waits for its workers to end their jobs.
INTERRUPT_SECONDS = 10
#: Seconds to reach a named cluster's scheduler.
CONNECT_SECONDS = 20

_SHARED = {}


@dataclass(frozen=True)
class Job:
    """One independent piece of work: ``fn(shared, *args)``.

    ``key`` is a tuple of JSON values (strings, numbers) that names the job: its result file, its
    line when it fails, and the seed it derives its randomness from. ``fn`` is a module-level
    function (workers import it by name)."""
    key: tuple
    fn: object
    args: tuple = ()


def cluster_address(cluster=None):
    """The Dask scheduler to use: ``cluster``, else ``$NMFLOW_CLUSTER``, else None (local)."""
    address = cluster if cluster is not None else os.environ.get(CLUSTER_ENV) or None
    if address is not None and (not isinstance(address, str) or "://" not in address
                                and ":" not in address):
        raise NmflowError(f"cluster must be a Dask scheduler address such as "
                          f"tcp://127.0.0.1:8786, not {address!r}")
    return address


def report(progress, task, done, total=None, note=""):
    """Call ``progress(task, done, total, note)`` if there is one (the flow's progress
    mechanism, :mod:`nmflow.flow.progress`, which this base module cannot import)."""
    if progress is not None:
        progress(task, done, total, note)


def _key_text(key):
    return json.dumps(list(key), separators=(",", ":"))


def _result_file(folder, key):
    digest = hashlib.sha256(_key_text(key).encode()).hexdigest()[:24]
    return folder / f"{digest}.json"


def forget_result(folder, key):
    """Remove the result of the job ``key`` from ``folder``, so that a resumed run runs it
    again (a result that says its work did not get done)."""
    _result_file(Path(folder), key).unlink(missing_ok=True)


def _as_json(value):
    """``value`` as its JSON file gives it back (tuples become lists, floats stay exact)."""
    return json.loads(json.dumps(value))


def _read_done(folder, jobs):
    done = {}
    for job in jobs:
        path = _result_file(folder, job.key)
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(record, dict) and record.get("key") == _as_json(list(job.key)) \
                and "result" in record:
            done[job.key] = record["result"]
    return done


def _init_local(shared):
    _SHARED["value"] = shared


def _call_local(fn, args):
    return fn(_SHARED.get("value"), *args)


#: glibc's ``mallopt`` parameters and what a cluster's worker sets them to: keep freed memory up
#: to 256 MiB (``M_TRIM_THRESHOLD``) and serve blocks under 32 MiB from the heap
#: (``M_MMAP_THRESHOLD``, its largest value).
_MALLOC = {-1: 256 << 20, -3: 32 << 20}


def _keep_freed_memory():
    """Undo, once per worker process, the allocator setting a Dask nanny gives its workers
    (``MALLOC_TRIM_THRESHOLD_=65536``, so that memory goes back to the system at once): with it
    every numpy or torch temporary over 128 kB is a fresh mapping, and the jobs measured here
    (a read-error sweep) spent 42 % of their time in the kernel with 60 million page faults,
    twice as slow as on this machine's own processes. A no-op where glibc is not the C
    library."""
    if _SHARED.get("malloc") is not None:
        return
    _SHARED["malloc"] = False
    try:
        import ctypes
        libc = ctypes.CDLL(None)
        _SHARED["malloc"] = all(libc.mallopt(option, value) == 1
                                for option, value in _MALLOC.items())
    except (OSError, AttributeError):
        pass


def _call_shared(fn, shared, args):
    _keep_freed_memory()
    return fn(shared, *args)


def _error_line(error):
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


def run_jobs(jobs, *, folder, shared=None, workers=None, cluster=None, resume=False,
             progress=None, what="jobs", counts=None, on_result=None):
    """Run ``jobs`` and return ``{key: result}`` (each result in its JSON form).

    ``folder`` holds one result file per finished job (cleared first unless ``resume``).
    ``shared`` is passed to every job as its first argument (sent once per worker). ``workers``
    local processes (default: the usable cores), or the Dask cluster ``cluster`` (see
    :func:`cluster_address`). ``progress`` gets ``(what, done, total, note)`` with the failures
    and the time left; ``counts``, a dict, gets ``ran``, ``reused`` (results a resumed run
    found) and ``failed``. ``on_result(key, result, error)`` hears of each job as it ends (and
    of each result a resumed run found): its result, or ``None`` and its error's line. Raises :class:`NmflowError` naming how many jobs failed and the first
    one's key and error, after every other job has finished and been written.
    """
    jobs = list(jobs)
    keys = [job.key for job in jobs]
    if len(set(keys)) != len(keys):
        raise NmflowError(f"{what} must have different keys; "
                          f"{next(k for k in keys if keys.count(k) > 1)!r} is repeated")
    folder = make_folder(Path(folder))
    if not resume:
        for stale in folder.glob("*.json"):
            stale.unlink()
    done = _read_done(folder, jobs) if resume else {}
    todo = [job for job in jobs if job.key not in done]
    state = {"done": len(done), "total": len(jobs), "failed": {}, "ran": 0,
             "start": time.monotonic(), "first": len(done)}

    def finished(job, result=None, error=None):
        if error is not None:
            state["failed"][job.key] = error
            if on_result is not None:
                on_result(job.key, None, error)
        else:
            result = _as_json(result)
            write_json(_result_file(folder, job.key), {"key": list(job.key), "result": result})
            done[job.key] = result
            state["ran"] += 1
            if on_result is not None:
                on_result(job.key, result, None)
        state["done"] += 1
        elapsed = time.monotonic() - state["start"]
        ran = state["done"] - state["first"]
        left = elapsed / ran * (state["total"] - state["done"]) if ran else 0
        note = (f"{len(state['failed'])} failed, " if state["failed"] else "") + \
            f"about {left:.0f} s left"
        report(progress, what, state["done"], state["total"], note)

    if on_result is not None:
        for key, result in done.items():
            on_result(key, result, None)
    report(progress, what, state["done"], state["total"], "")
    address = cluster_address(cluster)
    if todo:
        if address is None:
            _run_local(todo, shared, workers, finished)
        else:
            _run_cluster(todo, shared, address, finished)
    if counts is not None:
        counts.update(ran=state["ran"], reused=state["first"], failed=len(state["failed"]))
    if state["failed"]:
        key, error = next(iter(state["failed"].items()))
        raise NmflowError(f"{len(state['failed'])} of {len(jobs)} {what} failed (the others' "
                          f"results are in {str(folder)!r}; --resume runs only these); first: "
                          f"{_key_text(key)}: {error}")
    return {key: done[key] for key in keys}


def _run_local(todo, shared, workers, finished):
    workers = limits.usable_cores() if workers is None else workers
    left = list(todo)
    for attempt in range(RESTARTS + 1):
        lost = []
        with ProcessPoolExecutor(max_workers=max(1, min(workers, len(left))),
                                 initializer=_init_local, initargs=(shared,)) as pool:
            futures = {pool.submit(_call_local, job.fn, job.args): job for job in left}
            try:
                for future in as_completed(futures):
                    job = futures[future]
                    try:
                        result = future.result()
                    except BrokenProcessPool:
                        lost.append(job)
                        continue
                    except Exception as error:          # the job's own failure: named
                        finished(job, error=_error_line(error))
                        continue
                    finished(job, result)
            except BaseException:
                for future in futures:
                    future.cancel()
                _interrupt(pool, futures)
                raise
        if not lost:
            return
        left = lost
    for job in left:
        finished(job, error=f"its worker process died {RESTARTS + 1} times")


def _interrupt(pool, futures, seconds=INTERRUPT_SECONDS):
    """Interrupt the jobs ``pool``'s processes are running (as Ctrl-C would), so that leaving
    the pool does not wait for them to finish: a job ends what it started (a simulator, a
    build) on its way out. A worker between two jobs may take the next one after the signal,
    so it is sent again until every future is done; after ``seconds``, the workers still there
    are terminated."""
    processes = list((getattr(pool, "_processes", None) or {}).values())
    deadline = time.monotonic() + seconds
    while (running := [future for future in futures if not future.done()]) and \
            time.monotonic() < deadline:
        for process in processes:
            with contextlib.suppress(OSError):
                os.kill(process.pid, signal.SIGINT)
        wait(running, timeout=0.2)
    if any(not future.done() for future in futures):
        for process in processes:
            with contextlib.suppress(OSError):
                process.terminate()


def _run_cluster(todo, shared, address, finished):
    try:
        from distributed import Client, as_completed as dask_completed
    except ImportError:
        raise NmflowError("running on a cluster needs Dask's distributed package: run 'make "
                          "setup' (pip install -r requirements.txt)") from None
    try:
        client = Client(address, timeout=CONNECT_SECONDS)
    except (OSError, TimeoutError) as error:
        raise NmflowError(f"cannot reach the Dask scheduler at {address}: "
                          f"{_error_line(error)}") from None
    try:
        shared_future = client.scatter(shared, broadcast=True, hash=False)
        futures = {client.submit(_call_shared, job.fn, shared_future, job.args,
                                 key=f"nmflow-{_key_text(job.key)}-{time.monotonic_ns()}",
                                 pure=False): job for job in todo}
        for future in dask_completed(list(futures)):
            job = futures[future]
            try:
                result = future.result()
            except Exception as error:
                finished(job, error=_error_line(error))
                continue
            finished(job, result)
    finally:
        client.close()
