"""``nmflow eqprop``: Equilibrium Propagation (thesis chapter 3) on fully connected convergent
networks. ``nmflow eqprop train --out DIR`` trains the same network with BPTT and the three EP
estimates (one-sided, random sign, symmetric), for the squared-error output and the softmax
read-out with cross-entropy, trains the fixed-point twin (symmetric estimate, integer only), runs
the gradient check against BPTT, and writes ``DIR/eqprop.json``, ``DIR/eqprop.csv`` (accuracy per
epoch) and ``DIR/eqprop.png``.
"""

import csv
import io
import json
import math
import time
from pathlib import Path

from ..errors import NmflowError
from ..fileio import make_folder, write_bytes, write_json, write_text

__all__ = ["add_parser", "cmd_train", "run_train", "DEFAULT_OUT"]

DEFAULT_OUT = "build/eqprop"
LOSS_NAMES = ("squared", "cross_entropy")


# -- checks (every one a one-line NmflowError) ------------------------------------------------------

def _int(option, text, minimum, default):
    if text is None:
        return default
    try:
        value = int(text)
    except (TypeError, ValueError):
        raise NmflowError(f"{option} must be an integer >= {minimum}, not {text!r}") from None
    if value < minimum:
        raise NmflowError(f"{option} must be an integer >= {minimum}, not {text!r}")
    return value


def _float(option, text, default, above=0.0):
    if text is None:
        return default
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise NmflowError(f"{option} must be a number above {above:g}, not {text!r}") from None
    if not math.isfinite(value) or value <= above:
        raise NmflowError(f"{option} must be a finite number above {above:g}, not {text!r}")
    return value


def _list(option, text, default, parse, rule):
    if text is None:
        return default
    parts = [part.strip() for part in str(text).split(",")]
    try:
        values = [parse(part) for part in parts]
    except (TypeError, ValueError):
        raise NmflowError(f"{option} must be {rule}, not {text!r}") from None
    if not values:
        raise NmflowError(f"{option} must be {rule}, not {text!r}")
    return values


def _choices(option, text, default, allowed):
    if text is None:
        return list(default)
    values = [part.strip() for part in str(text).split(",")]
    bad = [v for v in values if v not in allowed]
    if bad or not values:
        raise NmflowError(f"{option} must be comma-separated names from {', '.join(allowed)}, "
                          f"not {text!r}")
    return list(dict.fromkeys(values))


def _power_of_two_beta(option, text, default, max_shift):
    if text is None:
        return default
    value = _float(option, text, None)
    shift = -math.log2(value)
    if not (shift == int(shift) and 0 <= shift <= max_shift):
        raise NmflowError(f"{option} must be a power of two 2**-n with 0 <= n <= {max_shift} "
                          f"(the nudge is a shift), not {text!r}")
    return int(shift)


def _dataset_spec(args):
    from ..flow import DatasetSpec
    if args.dataset not in ("digits", "idx"):
        raise NmflowError(f"--dataset must be digits or idx, not {args.dataset!r}")
    if args.dataset == "idx" and not (args.images and args.labels):
        raise NmflowError("--dataset idx needs --images and --labels (MNIST-format IDX files)")
    if args.dataset == "digits" and (args.images or args.labels):
        raise NmflowError("--images and --labels go with --dataset idx, not digits")
    split_seed = _int("--split-seed", args.split_seed, 0, 0)
    images = str(Path(args.images).resolve()) if args.images else None
    labels = str(Path(args.labels).resolve()) if args.labels else None
    return DatasetSpec(args.dataset, images, labels, seed=split_seed)


def _settings(args):
    """Every option checked and converted, before any work starts."""
    from ..fixedpoint import FixedFormat
    from ..golden.eqprop import ACTIVATIONS, METHODS, ORDERS
    from ..golden.eqprop_fixed import UPDATE_ROUNDINGS, FixedEqPropConfig

    hidden = _list("--hidden", args.hidden, [128], int,
                   "comma-separated positive integers such as 128 or 128,128")
    if any(n < 1 for n in hidden):
        raise NmflowError(f"--hidden must be comma-separated positive integers, not "
                          f"{args.hidden!r}")
    out = {
        "hidden": hidden,
        "epochs": _int("--epochs", args.epochs, 1, 30),
        "batch": _int("--batch", args.batch, 1, 32),
        "T": _int("--T", args.T, 1, 40),
        "K": _int("--K", args.K, 1, 15),
        "beta": _float("--beta", args.beta, 0.2),
        "seeds": _int("--seeds", args.seeds, 1, 1),
        "seed": _int("--seed", args.seed, 0, 0),
        "activation": _choices("--activation", args.activation, ["hard"], ACTIVATIONS),
        "order": _choices("--order", args.order, ["alternate"], ORDERS),
        "losses": _choices("--losses", args.losses, LOSS_NAMES, LOSS_NAMES),
        "methods": _choices("--methods", args.methods, METHODS, METHODS),
        "check_T": _int("--check-steps", args.check_steps, 1, 200),
    }
    for name in ("activation", "order"):
        if len(out[name]) != 1:
            raise NmflowError(f"--{name} must name one choice, not {getattr(args, name)!r}")
        out[name] = out[name][0]
    n_layers = len(hidden) + 1
    lrs = _list("--lrs", args.lrs, None, float, "comma-separated learning rates above 0")
    if lrs is None:
        lrs = [0.2] + [0.1] * (n_layers - 1)
    if len(lrs) != n_layers or not all(math.isfinite(v) and v > 0 for v in lrs):
        raise NmflowError(f"--lrs must give {n_layers} learning rates above 0 (one per weight "
                          f"layer), not {args.lrs!r}")
    out["lrs"] = lrs

    state_bits = _int("--state-bits", args.state_bits, 2, 8)
    weight_bits = _int("--weight-bits", args.weight_bits, 2, 16)
    weight_frac = _int("--weight-frac", args.weight_frac, 0, 13)
    if weight_frac > weight_bits - 1 or weight_bits > 40 or state_bits > 16:
        raise NmflowError(f"--weight-frac must be below --weight-bits ({weight_bits}) and the "
                          f"widths at most 40 (weights) and 16 (states), not {weight_frac}, "
                          f"{weight_bits}, {state_bits}")
    fixed_lr = _list("--fixed-lr-shifts", args.fixed_lr_shifts, None, int,
                     "comma-separated shifts (learning rate 2**-n)")
    if fixed_lr is None:
        fixed_lr = [2] + [3] * (n_layers - 1)
    rounding = _choices("--fixed-rounding", args.fixed_rounding, ["stochastic"],
                        UPDATE_ROUNDINGS)
    if len(rounding) != 1:
        raise NmflowError(f"--fixed-rounding must name one choice, not {args.fixed_rounding!r}")
    out["fixed"] = None
    if not args.no_fixed:
        state = FixedFormat(False, 0, state_bits, rounding="nearest_up", overflow="saturate")
        weight = FixedFormat(True, weight_bits - 1 - weight_frac, weight_frac,
                             rounding="nearest_even", overflow="saturate")
        out["fixed"] = FixedEqPropConfig(
            sizes=(1, *hidden, 1), state=state, weight=weight, T=out["T"], K=out["K"],
            beta_shift=_power_of_two_beta("--fixed-beta", args.fixed_beta, 2, weight_frac),
            lr_shifts=tuple(fixed_lr), half=out["activation"] == "hard_half",
            update_rounding=rounding[0],
            batch=_int("--fixed-batch", args.fixed_batch, 1, 32),
            epochs=_int("--fixed-epochs", args.fixed_epochs, 1, out["epochs"]),
            seed=out["seed"], lfsr_seed=_int("--lfsr-seed", args.lfsr_seed, 1, 1))
        if out["activation"] == "logistic":
            raise NmflowError("--activation logistic has no fixed-point twin (the twin is the "
                              "hard sigmoid); add --no-fixed")
    return out


# -- the run ----------------------------------------------------------------------------------------

def run_train(out, spec, settings, progress=None):
    """Train everything the settings ask for; write ``out/eqprop.{json,csv,png}``; return the
    result dictionary."""
    import dataclasses

    import numpy as np
    import torch

    from ..flow import load_dataset
    from ..golden import eqprop as ep
    from ..golden import eqprop_fixed as fx

    start = time.monotonic()
    out = make_folder(out)
    torch.set_num_threads(1)
    data = load_dataset(spec)
    scale = max(int(data.x_train.max(initial=0)), 1)
    x_train, x_test = ep.prepare_inputs(data.x_train, scale), ep.prepare_inputs(data.x_test, scale)
    classes = data.n_classes
    sizes = (data.n_features, *settings["hidden"], classes)
    by_loss, histories, timings = {}, {}, {}
    for loss in settings["losses"]:
        by_loss[loss], histories[loss] = {}, {}
        for method in settings["methods"]:
            runs, hist, seconds = [], [], []
            for seed in range(settings["seed"], settings["seed"] + settings["seeds"]):
                config = ep.EqPropConfig(
                    sizes=sizes, loss=loss, activation=settings["activation"],
                    order=settings["order"], T=settings["T"], K=settings["K"],
                    beta=settings["beta"], lrs=tuple(settings["lrs"]), batch=settings["batch"],
                    epochs=settings["epochs"], seed=seed)
                _, history = ep.train(config, method, x_train, data.y_train, x_test,
                                      data.y_test, progress=progress)
                runs.append(history[-1]["test_accuracy"])
                hist.append(history)
                seconds.append(float(np.mean([r["seconds"] for r in history])))
            by_loss[loss][method] = {"mean": float(np.mean(runs)),
                                     "std": float(np.std(runs, ddof=1)) if len(runs) > 1 else 0.0,
                                     "runs": runs,
                                     "final_test_loss": float(np.mean([h[-1]["test_loss"]
                                                                       for h in hist]))}
            histories[loss][method] = hist
            timings[f"{loss}/{method}"] = round(float(np.mean(seconds)), 4)

    fixed = None
    if settings["fixed"] is not None:
        fconfig = dataclasses.replace(settings["fixed"], sizes=sizes)
        fx_train = fx.inputs_to_raw(data.x_train, scale, fconfig.state)
        fx_test = fx.inputs_to_raw(data.x_test, scale, fconfig.state)
        _, fhistory = fx.train(fconfig, fx_train, data.y_train, fx_test, data.y_test,
                               progress=progress)
        fixed = {"config": fconfig.to_dict(), "history": fhistory,
                 "test_accuracy": fhistory[-1]["test_accuracy"]}
        timings["fixed_point/symmetric"] = round(float(np.mean([r["seconds"]
                                                               for r in fhistory])), 4)

    check_start = time.monotonic()
    check = ep.gradient_check(activation="logistic", T=settings["check_T"],
                              K=settings["check_T"])
    hard = ep.gradient_check(activation="hard", T=settings["check_T"], K=settings["check_T"])
    timings["gradient_check"] = round(time.monotonic() - check_start, 3)

    primary = "squared" if "squared" in by_loss else settings["losses"][0]
    accuracy = {method: by_loss[primary][method]["mean"] for method in settings["methods"]}
    accuracy["symmetric_fixed_point"] = fixed["test_accuracy"] if fixed else None
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
        "history": histories,
        "timings": {"seconds_per_epoch": timings,
                    "total_seconds": round(time.monotonic() - start, 2)},
    }
    write_json(out / "eqprop.json", result)
    write_text(out / "eqprop.csv", _csv(result))
    write_bytes(out / "eqprop.png", _png(result))
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
    if result["fixed_point"]:
        for r in result["fixed_point"]["history"]:
            writer.writerow(["squared", "symmetric_fixed_point", 0, r["epoch"],
                             r["test_accuracy"], "", "", r["seconds"]])
    return buffer.getvalue()


def _png(result):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    losses = list(result["history"])
    figure = Figure(figsize=(5 * max(len(losses), 1), 4), dpi=110)
    FigureCanvasAgg(figure)
    colors = {"bptt": "black", "one_sided": "tab:purple", "random_sign": "tab:orange",
              "symmetric": "tab:green"}
    for i, loss in enumerate(losses):
        axes = figure.add_subplot(1, len(losses), i + 1)
        for method, runs in result["history"][loss].items():
            for j, history in enumerate(runs):
                axes.plot([r["epoch"] for r in history],
                          [100 * r["test_accuracy"] for r in history],
                          color=colors.get(method, "gray"), linewidth=1,
                          label=method if j == 0 else None)
        if loss == "squared" and result["fixed_point"]:
            h = result["fixed_point"]["history"]
            axes.plot([r["epoch"] for r in h], [100 * r["test_accuracy"] for r in h],
                      color="tab:green", linestyle="--", linewidth=1,
                      label="symmetric, fixed point")
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


# -- command line -----------------------------------------------------------------------------------

def cmd_train(args):
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    spec = _dataset_spec(args)
    settings = _settings(args)
    with Progress(TextColumn("eqprop {task.description}"), BarColumn(),
                  TextColumn("{task.fields[status]}"), TimeElapsedColumn(),
                  console=Console(highlight=False, stderr=True), transient=True) as progress:
        task = progress.add_task("train", total=None, status="")

        def show(method, epoch, epochs, record):
            progress.update(task, description=method, completed=epoch, total=epochs,
                            status=f"epoch {epoch}/{epochs}: "
                                   f"{100 * record['test_accuracy']:.1f}%")

        result = run_train(args.out, spec, settings, progress=show)
    summary = {"out": str(Path(args.out) / "eqprop.json"),
               "test_accuracy": result["test_accuracy"],
               "test_accuracy_by_loss": {loss: {m: v["mean"] for m, v in methods.items()}
                                         for loss, methods in
                                         result["test_accuracy_by_loss"].items()},
               "gradient_check": {k: result["gradient_check"][k]
                                  for k in ("one_sided_slope", "symmetric_slope")},
               "seconds": result["timings"]["total_seconds"]}
    print(json.dumps(summary, indent=2))


def add_parser(sub):
    """Register ``eqprop`` (with its ``train`` subcommand) on the argparse subparsers ``sub``."""
    p = sub.add_parser("eqprop", help="Equilibrium Propagation: float, BPTT and fixed point",
                       description="Equilibrium Propagation (thesis chapter 3) on fully "
                       "connected convergent networks.")
    inner = p.add_subparsers(dest="eqprop_command", required=True, metavar="ACTION")
    t = inner.add_parser(
        "train", help="train with BPTT and the three EP estimates, plus the fixed-point twin",
        description="Train the same network with BPTT and EP (one-sided, random-sign, symmetric "
        "estimates), for the squared-error output and the softmax read-out; train the "
        "fixed-point twin (symmetric); check EP against BPTT. Writes DIR/eqprop.json, "
        "eqprop.csv and eqprop.png.")
    t.add_argument("--out", default=DEFAULT_OUT, metavar="DIR",
                   help=f"output folder (default: {DEFAULT_OUT})")
    t.add_argument("--dataset", default="digits", help="digits or idx (default: digits)")
    t.add_argument("--images", help="IDX images file (gz or raw), with --dataset idx")
    t.add_argument("--labels", help="IDX labels file (gz or raw), with --dataset idx")
    t.add_argument("--split-seed", help="seed of the stratified 80/20 split (default: 0)")
    t.add_argument("--hidden", help="hidden layer sizes, comma-separated (default: 128)")
    t.add_argument("--epochs", help="epochs (default: 30)")
    t.add_argument("--batch", help="batch size of the float runs (default: 32)")
    t.add_argument("--T", help="free-phase steps (default: 40)")
    t.add_argument("--K", help="steps of each nudged phase (default: 15)")
    t.add_argument("--beta", help="nudging strength of the float runs (default: 0.2)")
    t.add_argument("--lrs", help="learning rates, one per weight layer (default: 0.2,0.1)")
    t.add_argument("--activation", help="hard (clip(x,0,1)), hard_half (clip(x/2,0,1)) or "
                   "logistic (default: hard)")
    t.add_argument("--order", help="layer update order: alternate or sync (default: alternate)")
    t.add_argument("--losses", help="squared and/or cross_entropy (default: both)")
    t.add_argument("--methods", help="bptt, one_sided, random_sign, symmetric (default: all)")
    t.add_argument("--seeds", help="seeds per method, from --seed (default: 1)")
    t.add_argument("--seed", help="first seed (initialisation, batch order; default: 0)")
    t.add_argument("--check-steps", help="T = K of the gradient check (default: 200)")
    t.add_argument("--no-fixed", action="store_true", help="skip the fixed-point twin")
    t.add_argument("--fixed-epochs", help="epochs of the fixed-point twin (default: --epochs)")
    t.add_argument("--fixed-batch", help="batch of the fixed-point twin, a power of two; the "
                   "hardware learns with 1 (default: 32)")
    t.add_argument("--fixed-beta", help="beta of the twin, a power of two (default: 0.25)")
    t.add_argument("--fixed-lr-shifts", help="learning rates 2**-n of the twin, one n per "
                   "layer (default: 2,3)")
    t.add_argument("--fixed-rounding", help="update rounding: stochastic, nearest_up or floor "
                   "(default: stochastic)")
    t.add_argument("--state-bits", help="bits of a neuron state, u0.N (default: 8)")
    t.add_argument("--weight-bits", help="bits of a weight, signed (default: 16)")
    t.add_argument("--weight-frac", help="fraction bits of a weight (default: 13)")
    t.add_argument("--lfsr-seed", help="nonzero seed of the 32-bit LFSR (default: 1)")
    t.set_defaults(func=cmd_train)
    return p
