"""The EqProp steps: train the float and fixed-point networks (:func:`run_train`), check the
unit bit for bit under cocotb (:func:`run_unit_sim`), build its board (:func:`build_unit`) and
train on the board against the twin (:func:`run_host`), as functions of (settings, artifacts)
-> artifacts; ``nmflow eqprop ...`` parses its options and calls them.
"""

import csv
import io
import time

from .. import limits
from ..errors import NmflowError
from ..fileio import make_folder
from ..protocol.framing import BAUD
from ..jobs import Job, run_jobs
from .outputs import write_outputs

__all__ = ["run_train", "run_unit_sim", "build_unit", "run_host", "DEFAULT_OUT", "LOSS_NAMES"]


DEFAULT_OUT = "build/eqprop"


LOSS_NAMES = ("squared", "cross_entropy")


#: Neurons and batch of the gradient check's network (:func:`nmflow.golden.eqprop.gradient_check`).
CHECK_NEURONS, CHECK_BATCH = 16 + 20 + 12 + 5, 32


def planned_bytes(sizes, settings, images):
    """The memory :func:`run_train` plans for, in bytes (float64): back-propagation through
    time keeps about 12 values per neuron, batch row and step of the T + K steps (and of the
    gradient check's 2 x --check-steps), the weights about 10 copies (gradients, the methods'
    estimates, the fixed-point twin), and the inputs."""
    per_step = 12 * 8
    weights = sum(a * b for a, b in zip(sizes, sizes[1:]))
    batch = max(settings["batch"], 1)
    return (per_step * (settings["T"] + settings["K"]) * batch * sum(sizes)
            + per_step * 2 * settings["check_T"] * CHECK_BATCH * CHECK_NEURONS
            + 10 * 8 * weights + 8 * images * sizes[0])


def _train_float(shared, loss, method, seed, weights="real"):
    """One float training (a job): its history, epoch by epoch."""
    import torch

    from ..golden import eqprop as ep
    torch.set_num_threads(1)
    settings = shared["settings"]
    config = ep.EqPropConfig(
        sizes=shared["sizes"], loss=loss, activation=settings["activation"],
        order=settings["order"], T=settings["T"], K=settings["K"], beta=settings["beta"],
        lrs=tuple(settings["lrs"]), batch=settings["batch"], epochs=settings["epochs"],
        seed=seed, weights=weights,
        alpha_scale=settings.get("alpha_scale", 1.0) if weights == "binary" else 1.0)
    _, history = ep.train(config, method, shared["x_train"], shared["y_train"], shared["x_test"],
                          shared["y_test"])
    return history


def _train_fixed(shared, weights="real"):
    """The fixed-point twin's training (a job): its configuration, history and accuracy;
    ``weights="binary"`` trains the twin of the binarized network (at ``alpha_scale``)."""
    import dataclasses

    from ..golden import eqprop_fixed as fx
    fconfig = dataclasses.replace(shared["settings"]["fixed"], sizes=shared["sizes"],
                                  weights=weights, alpha_scale=shared["settings"].get(
                                      "alpha_scale", 1.0) if weights == "binary" else 1.0)
    fx_train = fx.inputs_to_raw(shared["raw_train"], shared["scale"], fconfig.state)
    fx_test = fx.inputs_to_raw(shared["raw_test"], shared["scale"], fconfig.state)
    _, history = fx.train(fconfig, fx_train, shared["y_train"], fx_test, shared["y_test"])
    return {"config": fconfig.to_dict(), "history": history,
            "test_accuracy": history[-1]["test_accuracy"]}


def run_train(out, spec, settings, progress=None, *, workers=None, cluster=None, resume=False):
    """Train everything the settings ask for; write ``out/eqprop.{json,csv,png}``; return the
    result dictionary. Each training (loss x method x seed, and the fixed-point twin) is a job
    of :func:`nmflow.jobs.run_jobs` (``workers`` local processes, or the Dask cluster
    ``cluster``), written to ``out/.jobs`` as it finishes; ``resume`` runs only the missing."""
    import dataclasses

    import numpy as np

    from .engine import load_dataset
    from ..golden import eqprop as ep

    start = time.monotonic()
    data = load_dataset(spec)
    classes = data.n_classes
    sizes = (data.n_features, *settings["hidden"], classes)
    limits.check_memory(f"EqProp training of {'-'.join(map(str, sizes))} with --T "
                        f"{settings['T']}, --K {settings['K']} and --check-steps "
                        f"{settings['check_T']}", planned_bytes(sizes, settings, len(data.y_train)
                                                               + len(data.y_test)))
    if "binary" in settings.get("weights", ("real",)) and settings["fixed"] is not None:
        # the binarized twin's alphas must fit its weight format: refused before any training
        dataclasses.replace(settings["fixed"], sizes=sizes, weights="binary",
                            alpha_scale=settings.get("alpha_scale", 1.0))
    out = make_folder(out)
    scale = max(int(data.x_train.max(initial=0)), 1)
    x_train, x_test = ep.prepare_inputs(data.x_train, scale), ep.prepare_inputs(data.x_test, scale)
    shared = {"settings": settings, "sizes": sizes, "scale": scale, "x_train": x_train,
              "x_test": x_test, "y_train": data.y_train, "y_test": data.y_test,
              "raw_train": data.x_train, "raw_test": data.x_test}
    seeds = range(settings["seed"], settings["seed"] + settings["seeds"])
    jobs = [Job(("float", loss, method, seed), _train_float, (loss, method, seed))
            for loss in settings["losses"] for method in settings["methods"] for seed in seeds]
    # the binarized network, beside the real-valued one: methods named binary_<method>
    binary = "binary" in settings.get("weights", ("real",))
    variants = [(method, method, ()) for method in settings["methods"]]
    if binary:
        jobs += [Job(("float", loss, method, seed, "binary"), _train_float,
                     (loss, method, seed, "binary"))
                 for loss in settings["losses"] for method in settings["methods"]
                 for seed in seeds]
        variants += [(f"binary_{method}", method, ("binary",)) for method in settings["methods"]]
    if settings["fixed"] is not None:
        jobs.append(Job(("fixed_point", "symmetric"), _train_fixed, ()))
        if binary:
            jobs.append(Job(("fixed_point", "symmetric", "binary"), _train_fixed, ("binary",)))
    counts = {}
    done = run_jobs(jobs, folder=out / ".jobs", shared=shared, workers=workers, cluster=cluster,
                    resume=resume, progress=progress, what="trainings", counts=counts)
    by_loss, histories, timings = {}, {}, {}
    for loss in settings["losses"]:
        by_loss[loss], histories[loss] = {}, {}
        for name, method, tail in variants:
            hist = [done[("float", loss, method, seed, *tail)] for seed in seeds]
            runs = [history[-1]["test_accuracy"] for history in hist]
            seconds = [float(np.mean([r["seconds"] for r in history])) for history in hist]
            by_loss[loss][name] = {"mean": float(np.mean(runs)),
                                     "std": float(np.std(runs, ddof=1)) if len(runs) > 1 else 0.0,
                                     "runs": runs,
                                     "final_test_loss": float(np.mean([h[-1]["test_loss"]
                                                                       for h in hist]))}
            histories[loss][name] = hist
            timings[f"{loss}/{name}"] = round(float(np.mean(seconds)), 4)

    fixed = binary_fixed = None
    if settings["fixed"] is not None:
        fixed = done[("fixed_point", "symmetric")]
        timings["fixed_point/symmetric"] = round(float(np.mean([r["seconds"]
                                                               for r in fixed["history"]])), 4)
        if binary:
            binary_fixed = done[("fixed_point", "symmetric", "binary")]
            timings["fixed_point/binary_symmetric"] = round(float(np.mean(
                [r["seconds"] for r in binary_fixed["history"]])), 4)

    check_start = time.monotonic()
    check = ep.gradient_check(activation="logistic", T=settings["check_T"],
                              K=settings["check_T"])
    hard = ep.gradient_check(activation="hard", T=settings["check_T"], K=settings["check_T"])
    timings["gradient_check"] = round(time.monotonic() - check_start, 3)

    primary = "squared" if "squared" in by_loss else settings["losses"][0]
    accuracy = {name: by_loss[primary][name]["mean"] for name, _, _ in variants}
    accuracy["symmetric_fixed_point"] = fixed["test_accuracy"] if fixed else None
    if binary:
        accuracy["binary_symmetric_fixed_point"] = \
            binary_fixed["test_accuracy"] if binary_fixed else None
    result = {
        "dataset": {**spec.to_dict(), **data.info(), "input_scale": scale},
        "test_accuracy": accuracy,
        "test_accuracy_loss": primary,
        "test_accuracy_by_loss": by_loss,
        "gradient_check": {
            "one_sided_slope": check["one_sided_slope"],
            "symmetric_slope": check["symmetric_slope"],
            "betas": check["betas"], "one_sided_error": check["one_sided"],
            "symmetric_error": check["symmetric"], "settings": check["settings"],
            "hard_sigmoid": {"one_sided_slope": hard["one_sided_slope"],
                             "symmetric_slope": hard["symmetric_slope"],
                             "one_sided_error": hard["one_sided"],
                             "symmetric_error": hard["symmetric"]},
            "error": "|EP estimate + BPTT gradient| / |BPTT gradient| over all parameters",
        },
        "settings": {**{k: v for k, v in settings.items() if k != "fixed"}, "sizes": list(sizes),
                     "accuracy": "fraction of the test images classified right, after the "
                                 "last epoch, mean over seeds"},
        "fixed_point": fixed,
        **({"binary_fixed_point": binary_fixed} if binary else {}),
        "history": histories,
        "timings": {"seconds_per_epoch": timings,
                    "total_seconds": round(time.monotonic() - start, 2),
                    "trainings_run": counts["ran"], "trainings_resumed": counts["reused"]},
    }
    write_outputs(out, {"eqprop.json": result, "eqprop.csv": _csv(result),
                        "eqprop.png": _png(result)})
    return result


def _csv(result):
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["loss", "method", "seed_index", "epoch", "test_accuracy", "test_loss",
                     "train_loss", "seconds"])
    for loss, methods in result["history"].items():
        for method, runs in methods.items():
            for i, history in enumerate(runs):
                for r in history:
                    writer.writerow([loss, method, i, r["epoch"], r["test_accuracy"],
                                     r["test_loss"], r["train_loss"], r["seconds"]])
    for key, method in (("fixed_point", "symmetric_fixed_point"),
                        ("binary_fixed_point", "binary_symmetric_fixed_point")):
        for r in (result.get(key) or {}).get("history", []):
            writer.writerow(["squared", method, 0, r["epoch"], r["test_accuracy"], "", "",
                             r["seconds"]])
    return buffer.getvalue()


def _png(result):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    losses = list(result["history"])
    figure = Figure(figsize=(5 * max(len(losses), 1), 4), dpi=110)
    FigureCanvasAgg(figure)
    colors = {"bptt": "black", "one_sided": "tab:purple", "random_sign": "tab:orange",
              "symmetric": "tab:green", "binary_bptt": "dimgray", "binary_one_sided": "plum",
              "binary_random_sign": "navajowhite", "binary_symmetric": "yellowgreen"}
    for i, loss in enumerate(losses):
        axes = figure.add_subplot(1, len(losses), i + 1)
        for method, runs in result["history"][loss].items():
            for j, history in enumerate(runs):
                axes.plot([r["epoch"] for r in history],
                          [100 * r["test_accuracy"] for r in history],
                          color=colors.get(method, "gray"), linewidth=1,
                          label=method if j == 0 else None)
        for key, color, label in (("fixed_point", "tab:green", "symmetric, fixed point"),
                                  ("binary_fixed_point", "yellowgreen",
                                   "binary symmetric, fixed point")):
            if loss == "squared" and result.get(key):
                h = result[key]["history"]
                axes.plot([r["epoch"] for r in h], [100 * r["test_accuracy"] for r in h],
                          color=color, linestyle="--", linewidth=1, label=label)
        axes.set_title(f"{loss.replace('_', '-')} loss", fontsize=9)
        axes.set_xlabel("epoch")
        axes.set_ylabel("test accuracy (%)")
        axes.set_ylim(50, 100)
        axes.grid(True, alpha=0.3)
        axes.legend(fontsize=7, loc="lower right")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def _digits(samples):
    """The first ``samples`` digits training images as raw states (scaled by the largest pixel,
    as ``train`` does) and their labels."""
    from ..golden import eqprop_fixed as ef
    from ..golden.datasets import load_digits
    data = load_digits()
    n = min(samples, len(data.y_train))
    scale = max(int(data.x_train.max(initial=0)), 1)
    return ef.inputs_to_raw(data.x_train[:n], scale), [int(v) for v in data.y_train[:n]]


def _twin_after(config, x, y):
    """The twin's parameters and free-phase predictions after training on ``x``, ``y`` in order
    from ``init_params`` with a fresh LFSR (what the unit does from reset)."""
    from ..golden import eqprop_fixed as ef
    params, lfsr, predictions = ef.init_params(config), ef.Lfsr32(config.lfsr_seed), []
    for xi, yi in zip(x, y):
        params, s_star = ef.train_step(config, params, xi.reshape(1, -1), [yi], lfsr)
        predictions.append(int(s_star[-1][0].argmax()))
    return params, predictions


def _param_mismatches(config, got, want):
    bad = 0
    for k in range(len(config.sizes) - 1):
        bad += int((got["W"][k] != want["W"][k]).sum()) + int((got["b"][k] != want["b"][k]).sum())
    return bad


def run_unit_sim(out, config, lanes, samples, *, seed=0):
    """cocotb bit-exact run of the unit on ``samples`` digits (all training); writes and returns
    ``out/eqprop_sim.json``."""
    import numpy as np
    from ..sim.eqprop_sim import simulate_eqprop

    out = make_folder(out)
    start = time.monotonic()
    x, y = _digits(samples)
    result, report = simulate_eqprop(out / "work", config, [(x[i], y[i], 1) for i in range(len(y))],
                                     lanes=lanes, seed=seed)
    twin, _ = _twin_after(config, x, y)
    final = None
    if report and report.get("rtl_final_params"):
        rtl = {key: [np.array(v, dtype=np.int64) for v in report["rtl_final_params"][key]]
               for key in ("W", "b")}
        final = _param_mismatches(config, rtl, twin)
    summary = {"passed": bool(result.passed and final == 0), "cocotb_passed": result.passed,
               "failures": result.failures[:10], "final_param_mismatches": final,
               "samples": len(y), "lanes": lanes, "config": config.to_dict(),
               "report": {k: v for k, v in (report or {}).items() if k != "rtl_final_params"},
               "log": str(result.log), "seconds": round(time.monotonic() - start, 1)}
    write_outputs(out, {"eqprop_sim.json": summary})
    return summary


def build_unit(out, config, lanes, board, *, baud=BAUD, seed=None, clock="auto", reuse=False):
    """Build :class:`~nmflow.rtl.eqprop_link.EqPropHostTop` (UART, link, the unit with the twin's
    initial weights) for ``board`` (a :class:`~nmflow.boards.board.Board`, whose block RAM the
    unit's memories must fit) at the run clock ``clock`` (see
    :func:`~nmflow.flow.engine.build_step`); write ``out/build.json`` and return the summary.
    ``reuse``: a build already in ``out`` made from the same inputs is taken as it is."""
    from ..boards.build import build
    from ..rtl.eqprop_link import EqPropHostTop
    from ..rtl.top import uart_divisor
    from .engine import clock_options

    try:
        clocking, first_hz = clock_options(clock, board, "eqprop", baud=baud)
        uart_divisor(first_hz, baud)
    except ValueError as error:
        raise NmflowError(f"--baud: {error}") from None
    out = make_folder(out)

    def top(clk_freq):
        return EqPropHostTop(config, lanes=lanes, clk_freq=clk_freq, baud=baud, board=board)

    start = time.monotonic()
    summary = build(top, board, out, name="nmflow_eqprop", seed=seed, reuse=reuse,
                    **clocking).to_dict()
    summary.update({"wall_seconds": round(time.monotonic() - start, 1), "lanes": lanes,
                    "baud": baud, "config": config.to_dict()})
    write_outputs(out, {"build.json": summary})
    return summary


def check_board(info, config, lanes):
    """Refuse (one line) a board whose INFO differs from what ``config`` and ``lanes`` ask."""
    expected = (tuple(config.sizes), lanes, config.T, config.K, config.beta_shift,
                tuple(config.lr_shifts))
    got = (tuple(info.sizes), info.lanes, info.T, info.K, info.beta_shift,
           tuple(info.lr_shifts))
    if got != expected:
        raise NmflowError(f"the board runs sizes {list(info.sizes)}, lanes {info.lanes}, "
                          f"T {info.T}, K {info.K}, beta_shift {info.beta_shift}, lr shifts "
                          f"{list(info.lr_shifts)}; the options ask for {list(expected[0])}, "
                          f"{lanes}, {config.T}, {config.K}, {config.beta_shift}, "
                          f"{list(config.lr_shifts)}")


#: The ``port`` values that start a simulated board here instead of opening a serial port:
#: ``sim``, the link core compiled by Verilator (fast: a task sequence in minutes), and
#: ``pysim``, the whole board top with its UART in Amaranth's simulator (exact to the bit on the
#: wire, a few thousand cycles a second).
SIMULATED_PORTS = ("sim", "pysim")


def board_url(stack, port, config, lanes, params=None, storage=None):
    """The URL of the board at ``port`` for :class:`~nmflow.boards.eqprop_host.EqPropLink`: a
    serial port as it is, or a simulated board of ``config`` and ``lanes`` (weights ``params``
    after reset, binary hidden weights in ``storage``) started on ``stack`` (a
    :class:`contextlib.ExitStack`) for :data:`SIMULATED_PORTS`."""
    if port == "sim":
        from ..sim.verilated_board import eqprop_verilated_board
        return stack.enter_context(eqprop_verilated_board(config, lanes=lanes, params=params,
                                                          storage=storage))
    if port == "pysim":
        from ..sim.uart_bridge import eqprop_simulated_board
        return stack.enter_context(eqprop_simulated_board(config, lanes=lanes, params=params,
                                                          storage=storage))
    return port


def run_host(out, port, config, lanes, samples, *, baudrate=BAUD, timeout=60.0):
    """Load the twin's initial weights onto the board at ``port`` (one of
    :data:`SIMULATED_PORTS`: a simulated board started here with all-zero weights), reseed its LFSR, train ``samples`` digits, read the
    weights back and compare them with the twin's (==); write and return ``out/board.json``."""
    import contextlib

    from ..boards.eqprop_host import EqPropLink
    from ..golden import eqprop_fixed as ef

    out = make_folder(out)
    x, y = _digits(samples)
    twin, twin_pred = _twin_after(config, x, y)
    start = time.monotonic()
    with contextlib.ExitStack() as stack:
        init = ef.init_params(config)
        zero = {"W": [w * 0 for w in init["W"]], "b": [b * 0 for b in init["b"]]}
        url = board_url(stack, port, config, lanes, zero)
        link = stack.enter_context(EqPropLink(url, baudrate=baudrate, timeout=timeout))
        check_board(link.info(), config, lanes)
        link.seed(config.lfsr_seed)
        link.load(ef.init_params(config))
        loaded = _param_mismatches(config, link.read(), ef.init_params(config))
        predictions = [int(link.train(x[i], y[i])) for i in range(len(y))]
        board = link.read()
    mismatches = _param_mismatches(config, board, twin)
    result = {"port": port, "samples": len(y), "lanes": lanes, "config": config.to_dict(),
              "load_mismatches": loaded, "param_mismatches": mismatches,
              "prediction_mismatches": sum(a != b for a, b in zip(predictions, twin_pred)),
              "predictions": predictions, "equal": loaded == 0 and mismatches == 0
              and predictions == twin_pred,
              "train_accuracy": sum(p == t for p, t in zip(predictions, y)) / len(y),
              "seconds": round(time.monotonic() - start, 2)}
    write_outputs(out, {"board.json": result})
    return result
