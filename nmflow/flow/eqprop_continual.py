"""``nmflow eqprop continual``: permuted-digits tasks learned in sequence by binarized EqProp with
and without metaplastic consolidation, in float and in the fixed-point twin, beside
backpropagation with metaplasticity and EWC (:func:`run_eqprop_continual`); writes
``eqprop_continual.json``, ``.csv`` and ``.png``.
"""

import csv
import io
import math
import time

from ..fileio import make_folder
from ..jobs import Job, run_jobs
from .outputs import write_outputs

__all__ = ["run_eqprop_continual", "DEFAULT_OUT", "BP_METHODS"]

DEFAULT_OUT = "build/eqprop_continual"
#: The backpropagation baselines (``nmflow continual``'s methods) run beside EP.
BP_METHODS = ("plain", "meta", "ewc")


def _ep_run(shared, where, m):
    """One EP run (a job): float or the fixed-point twin at metaplasticity ``m``."""
    from ..golden import eqprop_continual as ec
    config, dataset = shared["config"], shared["dataset"]
    if where == "float":
        return ec.run_float(config, dataset, m)
    return ec.run_fixed(config, dataset, m)[0]


def _board_run(shared, m):
    """One EP run through a board (a job): the twin at batch 1 with the first samples of every
    task trained on the board (``port``; ``"sim"`` or ``"pysim"``: a simulated board started
    here, see :data:`~nmflow.flow.eqprop.SIMULATED_PORTS`)."""
    import contextlib

    from ..boards.eqprop_host import EqPropLink
    from ..golden import eqprop_continual as ec
    from .eqprop import board_url, check_board
    config, dataset, board = shared["board_config"], shared["dataset"], shared["board"]
    fconfig = ec.fixed_config(config, *ec.features_and_classes(dataset), m)
    with contextlib.ExitStack() as stack:
        url = board_url(stack, board["port"], fconfig, board["lanes"],
                        storage=board.get("storage"))
        link = stack.enter_context(EqPropLink(url, baudrate=board["baudrate"],
                                              timeout=board["timeout"]))
        check_board(link.info(), fconfig, board["lanes"])

        def train_on_board(params, lfsr_state, xs, ys):
            link.seed(int(lfsr_state))
            link.load(params)
            for x, y in zip(xs, ys):
                link.train(x, int(y))
            return dict(link.read(), codes=link.read_codes())

        record, _ = ec.run_fixed(config, dataset, m, board=train_on_board,
                                 board_samples=board["samples"])
    record.update(port=board["port"], lanes=board["lanes"],
                  storage=board.get("storage", "memory"))
    return record


def _bp_run(shared, method, m):
    """One backpropagation run (a job) of ``nmflow continual``'s protocol, same tasks and
    hidden sizes, as a record of this experiment."""
    from ..golden.continual import continual_run
    record = continual_run(shared["bp_config"], shared["dataset"], method, m, False)
    final = [float(a) for a in record["final"]]
    return {"method": f"bp_{method}" if method != "meta" else "bp_meta", "m": float(m),
            "weights": "binary", "where": "float", "final": final,
            "mean_final": float(sum(final) / len(final)),
            "learned": [float(a) for a in record["learned"]],
            "after": [[float(a) for a in row] for row in record["matrix"]],
            "seconds": round(float(record["seconds"]), 2)}


def bp_config(config, n_train, m):
    """``nmflow continual``'s settings for the baselines: the same tasks, seed and hidden sizes,
    Adam steps covering the same epochs at its batch of 100 (at least its 600 steps' worth is
    not asked: the baselines see the same images as EP)."""
    from ..golden.continual import ContinualConfig
    batch = 100
    return ContinualConfig(tasks=config.tasks, steps=max(1, math.ceil(config.epochs * n_train
                                                                      / batch)),
                           batch=batch, hidden=config.hidden, ms=(m,), methods=BP_METHODS,
                           seed=config.seed)


def run_eqprop_continual(out, config, dataset, *, bp_m=40.0, baselines=True, board=None,
                         progress=None, workers=None, cluster=None, resume=False):
    """Every run of ``config`` (an :class:`~nmflow.golden.eqprop_continual.EqPropContinualConfig`)
    on ``dataset``: EP float and fixed point at m = 0 and each m, and (``baselines``)
    backpropagation plain, metaplastic (``bp_m``) and EWC. With ``board`` (a dict: ``config``,
    the sequence at batch 1; ``port``, ``"sim"``, ``"pysim"`` or a serial port; ``lanes``; ``samples`` per
    task; ``baudrate``; ``timeout``; ``ms``, default m = 0 and every m) also those m through the
    board (``where="board"``). Each
    run is a job of :func:`nmflow.jobs.run_jobs`; ``resume`` runs only the missing. Writes and
    returns ``out/eqprop_continual.json``."""
    from ..golden import eqprop_continual as ec

    start = time.perf_counter()
    jobs = [Job(("ep", where, m), _ep_run, (where, m))
            for where in ec.WHERE for m in config.all_ms]
    shared = {"config": config, "dataset": dataset}
    if board is not None:
        shared["board_config"], shared["board"] = board["config"], board
        jobs += [Job(("board", m), _board_run, (m,))
                 for m in board.get("ms", board["config"].all_ms)]
    if baselines:
        shared["bp_config"] = bp_config(config, len(dataset.y_train), bp_m)
        jobs += [Job(("bp", method, bp_m if method == "meta" else 0.0), _bp_run,
                     (method, bp_m if method == "meta" else 0.0)) for method in BP_METHODS]
    done = run_jobs(jobs, folder=make_folder(out) / ".jobs", shared=shared, workers=workers,
                    cluster=cluster, resume=resume, progress=progress,
                    what="continual-learning runs")
    runs = [done[job.key] for job in jobs]
    info = dataset.info() if hasattr(dataset, "info") else {}
    result = {
        "dataset": info, "settings": config.to_dict(),
        "baselines": shared["bp_config"].to_dict() if baselines else None,
        "runs": runs, "summary": ec.summary(runs),
        "board_equals_twin": None if board is None else all(
            r["board_equals_twin"] for r in runs if r["where"] == "board"),
        "board": "not run (--board-samples)" if board is None else {
            "port": board["port"], "lanes": board["lanes"],
            "storage": board.get("storage", "memory"), "samples_per_task": board["samples"],
            "settings": board["config"].to_dict(),
            "how": "the twin at batch 1; the first samples of every task's first epoch trained "
                   "on the board from the twin's parameters and LFSR state, read back, compared "
                   "with the twin's and continued from"},
        "seconds": round(time.perf_counter() - start, 2),
    }
    write_outputs(out, {"eqprop_continual.json": result,
                        "eqprop_continual.csv": _csv(result),
                        "eqprop_continual.png": _plot(result)})
    return result


def label(run):
    """A run's name in tables and plots."""
    m = f", m = {run['m']:g}" if run["m"] else ""
    return f"{run['method']} ({run['where']}{m})"


def _csv(result):
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["method", "m", "where", "after_task", "task", "accuracy"])
    for run in result["runs"]:
        for t, row in enumerate(run["after"]):
            for j, accuracy in enumerate(row):
                writer.writerow([run["method"], run["m"], run["where"], t + 1, j + 1, accuracy])
    return buffer.getvalue()


def _plot(result):
    """One panel per run: every task's accuracy after each task."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    runs = result["runs"]
    columns = min(len(runs), 4)
    rows = math.ceil(len(runs) / columns)
    figure = Figure(figsize=(3.2 * columns, 2.6 * rows), dpi=100)
    FigureCanvasAgg(figure)
    tasks = len(runs[0]["after"])
    for i, run in enumerate(runs):
        axes = figure.add_subplot(rows, columns, i + 1)
        for j in range(tasks):
            axes.plot(range(1, tasks + 1), [100 * row[j] for row in run["after"]],
                      marker="o", markersize=3, linewidth=1, label=f"task {j + 1}")
        axes.set_title(label(run), fontsize=8)
        axes.set_ylim(0, 100)
        axes.set_xticks(range(1, tasks + 1))
        axes.set_xlabel("after task", fontsize=7)
        axes.set_ylabel("accuracy (%)", fontsize=7)
        axes.tick_params(labelsize=7)
        axes.grid(True, alpha=0.3)
        if i == 0:
            axes.legend(fontsize=6, loc="lower left")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
