"""A nextpnr seed sweep: the same design placed and routed with several seeds, the best kept.

nextpnr's placement is a search from a random start: the same netlist reaches Fmax figures far
apart from one seed to the next (the ULX3S's 512 x 8 engine: 83.7 and 102.7 MHz). Closing timing
the way FPGA engineers do, :func:`build_seeds_step` builds the design once per seed, as jobs of
:func:`nmflow.jobs.run_jobs` (this machine's cores or a Dask cluster whose workers share the
run folder), each in ``OUT/seeds/seed<k>``, and keeps the build with the highest run clock, then
the highest Fmax, then the lowest seed: its products are copied into ``OUT``, whose
``build.json`` lists every seed's figures under ``seed_sweep``.
"""

import json
from pathlib import Path

from ..errors import NmflowError
from ..fileio import write_bytes, write_json

__all__ = ["build_seeds_step", "best_seed", "MAX_SEEDS"]

#: Most seeds one sweep builds.
MAX_SEEDS = 64

_FIGURES = ("fmax_mhz", "run_clock_mhz", "clock_margin", "logic_cells", "block_rams", "seconds")


def _seed_build(shared, seed):
    """One seed's build (a job): its figures, or the one line that refused it."""
    from .engine import build_step
    out = Path(shared["out"]) / "seeds" / f"seed{seed}"
    try:
        summary = build_step(shared["run_dir"], shared["model"], out=out, seed=seed,
                             reuse=shared["resume"], **shared["options"])
    except NmflowError as error:
        return {"seed": seed, "error": str(error)}
    return {"seed": seed, "out": str(out), **{key: summary[key] for key in _FIGURES}}


def best_seed(rows):
    """The row of the build kept: the highest run clock, then the highest Fmax, then the lowest
    seed; None if no seed built."""
    built = [row for row in rows if "error" not in row]
    if not built:
        return None
    return min(built, key=lambda row: (-row["run_clock_mhz"], -row["fmax_mhz"], row["seed"]))


def build_seeds_step(run_dir, model=None, *, seeds, out=None, board="icebreaker", workers=None,
                     cluster=None, resume=False, progress=None, counts=None, **options):
    """Build with each nextpnr seed of ``seeds`` (at least 2, all different) and keep the best
    (:func:`best_seed`) in ``out`` (default ``RUN/<board>``); return its build summary with
    ``seed_sweep``: ``{"seeds": [each seed's figures, or its error], "chosen": seed}``.

    ``options`` are :func:`~nmflow.flow.engine.build_step`'s (lanes, pe, clock, ...). The
    builds are jobs (``workers`` at a time here, or on ``cluster``), each in
    ``out/seeds/seed<k>``; with ``resume`` the seeds already built (same inputs) are kept.
    A seed whose build is refused (timing not met even at the lowest clock, ...) is listed
    with its line; if every seed is refused, the first one's line is the error."""
    from ..boards.build import get_board
    from ..jobs import Job, run_jobs

    seeds = list(seeds)
    if not 2 <= len(seeds) <= MAX_SEEDS or len(set(seeds)) != len(seeds):
        raise NmflowError(f"seeds must be 2 to {MAX_SEEDS} different nextpnr seeds, not "
                          f"{seeds[:8]!r}")
    info = get_board(board)
    run_dir = Path(run_dir)
    out = Path(out or run_dir / info.name).resolve()
    shared = {"run_dir": str(run_dir.resolve()), "model": model, "out": str(out),
              "resume": resume, "options": dict(options, board=board)}
    jobs = [Job(("seed", seed), _seed_build, (seed,)) for seed in seeds]
    results = run_jobs(jobs, folder=out / "seeds" / ".jobs", shared=shared, workers=workers,
                       cluster=cluster, resume=resume, progress=progress, what="seeds",
                       counts=counts)
    rows = [results[job.key] for job in jobs]
    best = best_seed(rows)
    if best is None:
        raise NmflowError(f"no seed of {seeds[:8]!r} built: seed {rows[0]['seed']}: "
                          f"{rows[0]['error']}")
    chosen = Path(best["out"])
    (out / "build.json").unlink(missing_ok=True)    # a reader never pairs it with new products
    for path in sorted(chosen.iterdir()):
        if path.is_file() and path.name != "build.json":
            write_bytes(out / path.name, path.read_bytes())
    summary = json.loads((chosen / "build.json").read_text())
    for key, value in list(summary.items()):
        if isinstance(value, str) and value.startswith(str(chosen)):
            summary[key] = str(out) + value[len(str(chosen)):]
    summary["seed_sweep"] = {"seeds": rows, "chosen": best["seed"]}
    write_json(out / "build.json", summary)         # last: the folder is whole once it is there
    return summary
