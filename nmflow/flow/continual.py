"""The continual-learning step: permuted tasks with metaplastic binarized networks against m = 0,
EWC, learning-rate decay and random consolidation (:func:`run_continual_step`), with its table,
CSV and figures; ``nmflow continual`` parses its options, calls it and prints the matrices.
"""

import csv
import io
import math
import time

from ..fileio import make_folder
from ..jobs import Job, run_jobs
from .outputs import write_outputs

__all__ = ["run_continual_step", "matrix_text", "DEFAULT_OUT"]


DEFAULT_OUT = "build/continual"

#: Printed and plotted names of the methods that have no m.
_NAMES = {"plain": "plain", "ewc": "ewc", "random": "random consolidation",
          "lr_decay": "lr_decay", "complex": "complex"}


def _run(shared, method, m, fixed):
    """One run (a job): method ``method`` at metaplasticity ``m``, fixed point or not."""
    from ..golden.continual import continual_run
    config, dataset = shared
    return continual_run(config, dataset, method, m, fixed)


def run_continual_step(out, config, dataset, *, stream=None, progress=None, files=None,
                       workers=None, cluster=None, resume=False):
    """Run the continual-learning experiments of ``config`` (a
    :class:`~nmflow.golden.continual.ContinualConfig`) on ``dataset`` (a loaded data set), and
    with ``stream`` (a number of subsets) stream learning as well; write ``out/continual.json``,
    ``continual.csv``, ``continual.png`` (and ``stream.png``) together; return the result.
    Each run (method x m) is a job of :func:`nmflow.jobs.run_jobs` (``workers`` local
    processes, or the Dask cluster ``cluster``), written to ``out/.jobs`` as it finishes;
    ``resume`` runs only the missing. ``progress`` (:mod:`nmflow.flow.progress`) hears of every
    run finished; ``files`` (the IDX paths) are recorded in the JSON's dataset."""
    from ..golden.continual import continual_plan, continual_result, run_stream

    start = time.perf_counter()
    plan = continual_plan(config, dataset)
    jobs = [Job((method, m, fixed), _run, (method, m, fixed)) for method, m, fixed in plan]
    done = run_jobs(jobs, folder=make_folder(out) / ".jobs", shared=(config, dataset),
                    workers=workers, cluster=cluster, resume=resume, progress=progress,
                    what="continual runs")
    result = continual_result(config, dataset, [done[job.key] for job in jobs])
    if stream is not None:
        metaplastic_m = max(config.ms) if config.ms else 0.0
        result["stream"] = run_stream(dataset, subsets=stream, steps=config.steps,
                                      ms=(0.0, metaplastic_m) if metaplastic_m else (0.0,),
                                      hidden=config.hidden, batch=config.batch, lr=config.lr,
                                      seed=config.seed)
    result["seconds"] = time.perf_counter() - start
    result["torch_threads"] = 1
    if files:
        result["dataset"].update(files)
    outputs = {"continual.json": result, "continual.csv": _csv(result),
               "continual.png": _plot(result)}
    if "stream" in result:
        outputs["stream.png"] = _plot_stream(result["stream"])
    write_outputs(out, outputs)
    return result


def _label(run):
    name = _NAMES.get(run["method"])
    return name if name is not None else f"{run['method']} m={run['m']:g}"


def matrix_text(run):
    """The task-accuracy matrix of one run, as text."""
    tasks = len(run["final"])
    lines = [f"{_label(run)}  ({run['seconds']:.1f} s, mean final "
             f"{100 * run['mean_final']:.1f}%)",
             "  after  " + "".join(f"  task{j + 1:<3d}" for j in range(tasks))]
    for i, row in enumerate(run["matrix"]):
        lines.append(f"  task{i + 1:<3d}" + "".join(f"  {100 * a:6.1f}%" for a in row))
    return "\n".join(lines)


def _csv(result):
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["method", "m", "task", "final_accuracy", "learned_accuracy"])
    for run in result["runs"]:
        for task, (final, learned) in enumerate(zip(run["final"], run["learned"]), start=1):
            writer.writerow([run["method"], f"{run['m']:g}", task, f"{final:.6f}",
                             f"{learned:.6f}"])
    return out.getvalue()


def _png(figure):
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    return buffer.getvalue()


def _plot(result):
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    runs = result["runs"]
    tasks = result["settings"]["tasks"]
    steps = result["settings"]["steps"]
    cols = min(3, len(runs))
    rows = math.ceil(len(runs) / cols)
    figure, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False,
                                sharey=True)
    for ax, run in zip(axes.flat, runs):
        x = run["curve"]["steps"]
        for task in range(tasks):
            y = [100 * row[task] for row in run["curve"]["accuracy"]]
            ax.plot(x, y, label=f"task {task + 1}")
        for boundary in range(1, tasks):
            ax.axvline(boundary * steps, color="0.85", linewidth=0.8)
        ax.axhline(100 * result["chance"], color="0.6", linestyle=":", linewidth=0.8)
        ax.set_title(f"{_label(run)}: mean {100 * run['mean_final']:.1f}%", fontsize=9)
        ax.set_xlabel("training step")
        ax.set_ylim(0, 100)
    for ax in axes[:, 0]:
        ax.set_ylabel("test accuracy (%)")
    for ax in list(axes.flat)[len(runs):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7, loc="lower left")
    figure.tight_layout()
    data = _png(figure)
    plt.close(figure)
    return data


def _plot_stream(stream):
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, ax = plt.subplots(figsize=(5, 3.4))
    x = list(range(1, stream["subsets"] + 1))
    for run in stream["runs"]:
        ax.plot(x, [100 * a for a in run["accuracy"]], marker="o", label=f"stream m={run['m']:g}")
    ax.plot(x, [100 * a for a in stream["baseline"]["accuracy"]], linestyle="--", color="k",
            label="whole dataset, m=0")
    ax.set_xlabel("subsets learned")
    ax.set_ylabel("test accuracy (%)")
    ax.legend(fontsize=8)
    figure.tight_layout()
    data = _png(figure)
    plt.close(figure)
    return data
