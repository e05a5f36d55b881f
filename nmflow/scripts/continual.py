"""``nmflow continual``: continual learning of permuted tasks with metaplastic binarized networks
(Laborieux et al. 2021, thesis chapter 2), against m = 0, EWC on binary weights and learning-rate
decay between tasks; ``--methods random`` adds the thesis' random-consolidation control (EWC with
each layer's importances shuffled across its synapses), labelled "random consolidation".

Prints the task-accuracy matrix of every run (row i: accuracy on each task after learning task i)
and writes, atomically:

``DIR/continual.json``  settings, dataset, seeds, timings and per run: ``method``, ``m``, ``final``
                        (accuracy of task 1..N after the last task, fractions), ``matrix``,
                        ``learned``, ``curve`` (every task's accuracy over training);
``DIR/continual.csv``   one row per run and task: final accuracy and accuracy right after
                        learning it;
``DIR/continual.png``   one panel per run: each task's test accuracy over the training steps.

``--stream K`` also runs stream learning (one dataset as K class-balanced subsets, thesis
Fig. 2.5; m = 0 and the largest --m, --steps per subset) and adds ``stream`` to the JSON and
``DIR/stream.png``. ``--fixed-point`` adds a
``meta_fixed`` run per m: the same training with hidden weights stored in fixed point and updated
by the integer twin of the rule (nmflow.golden.metafixed).
"""

import argparse
import math
from pathlib import Path

from .. import limits
from ..errors import NmflowError, check_int
from .options import HIDDEN, SEED, integer, many_jobs, ranged
from .progress import bars
from ..flow.continual import DEFAULT_OUT, matrix_text, run_continual_step

__all__ = ["add_parser", "cmd_continual", "DEFAULT_OUT"]


def _number_list(text):
    try:
        return [float(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be comma-separated numbers such as 0,5,20, not {text!r}") from None


def _word_list(text):
    return [part.strip() for part in text.split(",") if part.strip()]


#: Bounds of the options of their own (the shared ones are in :mod:`nmflow.limits`).
MAX_TASKS = 100
MAX_STEPS = 10_000_000
MAX_FISHER = 1_000_000
MAX_STREAM = 10_000
BATCH_RULE = f"an integer from 2 to {limits.BATCH} (BatchNorm needs two images)"


def _config(args):
    from ..golden.continual import METHODS, ContinualConfig
    check_int("--tasks", args.tasks, 1, MAX_TASKS)
    check_int("--steps", args.steps, 1, MAX_STEPS)
    check_int("--batch", args.batch, 2, limits.BATCH, rule=BATCH_RULE)
    limits.check_widths("--hidden", args.hidden, "256,256")
    check_int("--seed", args.seed, 0, limits.SEED)
    for m in args.m:
        if not (math.isfinite(m) and m >= 0):
            raise NmflowError(f"--m must be finite numbers >= 0, not {m!r}")
    if not args.methods:
        raise NmflowError(f"--methods must name at least one of {', '.join(METHODS)}, not none")
    for method in args.methods:
        if method not in METHODS:
            raise NmflowError(f"--methods must be among {', '.join(METHODS)}, not {method!r}")
    if "meta" in args.methods and not [m for m in args.m if m > 0]:
        raise NmflowError("--m must hold at least one m > 0 for the meta method, not "
                          f"{','.join(f'{m:g}' for m in args.m)}")
    for name, value, low in (("--lr", args.lr, 0.0), ("--ewc-lambda", args.ewc_lambda, 0.0),
                             ("--lr-decay", args.lr_decay, 1.0)):
        if not (math.isfinite(value) and (value > low if name == "--lr" else value >= low)):
            rule = f"> {low:g}" if name == "--lr" else f">= {low:g}"
            raise NmflowError(f"{name} must be a finite number {rule}, not {value!r}")
    if args.fixed_point and "meta" not in args.methods:
        raise NmflowError("--fixed-point goes with the meta method (add meta to --methods)")
    check_int("--fisher-samples", args.fisher_samples, 1, MAX_FISHER)
    ms = tuple(m for m in args.m if m > 0)
    return ContinualConfig(tasks=args.tasks, steps=args.steps, batch=args.batch,
                           hidden=tuple(args.hidden), lr=args.lr, ms=ms,
                           methods=tuple(dict.fromkeys(args.methods)), seed=args.seed,
                           ewc_lambda=args.ewc_lambda, lr_decay=args.lr_decay,
                           fisher_samples=args.fisher_samples, bn_stats=args.bn_stats,
                           fmeta=args.fmeta, fixed_point=args.fixed_point)


def _dataset(args):
    from ..flow import load_dataset
    from .cli import dataset_spec
    return load_dataset(dataset_spec(args))


def _dataset_files(args):
    """The IDX files or CIFAR-10 folder of the data set as absolute paths (recorded in the
    JSON), or None."""
    if args.dataset == "cifar10":
        return {"folder": str(Path(args.folder).resolve())}
    if args.dataset != "idx":
        return None
    return {"images": str(Path(args.images).resolve()),
            "labels": str(Path(args.labels).resolve())}


def cmd_continual(args):
    config = _config(args)
    if args.stream is not None:
        check_int("--stream", args.stream, 1, MAX_STREAM)
    dataset = _dataset(args)
    sizes = (dataset.n_features, *config.hidden, dataset.n_classes)
    weights = sum(a * b for a, b in zip(sizes, sizes[1:]))
    images = len(dataset.y_train) + len(dataset.y_test)
    # float32: each weight with its gradient, Adam's moments, the importances and anchors of
    # EWC and the metaplastic copy (12 values); a batch's activations; the permuted tasks.
    limits.check_memory(
        f"continual learning of {'-'.join(map(str, sizes))} over {config.tasks} tasks",
        4 * (12 * weights + 8 * config.batch * sum(sizes) + config.tasks * images
             * dataset.n_features))
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise NmflowError(f"--out must be a folder, not the file {str(out)!r}")
    with bars(quiet=args.quiet) as progress:
        result = run_continual_step(out, config, dataset, stream=args.stream,
                                    progress=progress, files=_dataset_files(args),
                                    workers=args.jobs, cluster=args.cluster, resume=args.resume)
    for run in result["runs"]:
        print(matrix_text(run))
    for row in result.get("fixed_vs_float", []):
        print(f"fixed point m={row['m']:g} ({row['rule']['w_format']} weights, "
              f"{row['rule']['table_size']}-entry table, max error {row['table_error']:.4f}): "
              f"mean {100 * row['mean_fixed']:.1f}% vs float {100 * row['mean_float']:.1f}% "
              f"({100 * row['mean_difference']:+.1f} points), task 1 "
              f"{100 * row['task1_fixed']:.1f}% vs {100 * row['task1_float']:.1f}%")
    if "stream" in result:
        stream = result["stream"]
        parts = ", ".join(f"m={run['m']:g} {100 * run['final']:.1f}%" for run in stream["runs"])
        print(f"stream ({stream['subsets']} subsets): {parts}; whole dataset "
              f"{100 * stream['baseline']['final']:.1f}%")
    print(f"wrote {out / 'continual.json'}, continual.csv, continual.png "
          f"({result['seconds']:.1f} s)")


def add_parser(sub):
    p = sub.add_parser("continual", help="continual learning with metaplastic BNNs (json, csv, "
                       "png)", description="Learn permuted versions of a dataset one after the "
                       "other with a binarized network and metaplastic Adam (several m), "
                       "against m = 0, EWC on binary weights, random consolidation and "
                       "learning-rate decay; print and save the task-accuracy matrix and each "
                       "task's accuracy over training.")
    p.add_argument("--out", default=DEFAULT_OUT, help=f"output folder (default: {DEFAULT_OUT})")
    ranged(p, "--tasks", integer(1, MAX_TASKS), default=5, help="permuted tasks (default: 5)")
    ranged(p, "--steps", integer(1, MAX_STEPS), default=600,
           help="Adam steps per task (default: 600)")
    ranged(p, "--batch", integer(2, limits.BATCH, rule=BATCH_RULE), default=100,
           help="images per step (default: 100)")
    ranged(p, "--hidden", HIDDEN, default=(256, 256), help="hidden layer sizes (default: 256,256)")
    p.add_argument("--m", type=_number_list, default=[5.0, 20.0, 40.0],
                   help="metaplasticity values, one meta run each; with --fmeta hard, the "
                   "thresholds on |W_h| such as 0.2,0.4 (default: 5,20,40)")
    p.add_argument("--methods", type=_word_list,
                   default=["plain", "meta", "ewc", "random", "lr_decay"],
                   help="comma-separated among plain, meta, ewc, random (random "
                   "consolidation: EWC with shuffled importances, the thesis' control), "
                   "lr_decay, complex (the four-variable synapse of thesis section 2.6) "
                   "(default: plain,meta,ewc,random,lr_decay)")
    p.add_argument("--lr", type=float, default=0.005, help="Adam learning rate (default: 0.005)")
    p.add_argument("--fmeta", choices=("tanh", "hard"), default="tanh",
                   help="f_meta: 1 - tanh^2(m W_h), or the hard threshold |W_h| < m "
                   "(default: tanh)")
    p.add_argument("--ewc-lambda", type=float, default=5e3,
                   help="EWC strength (default: 5000, as in the thesis)")
    ranged(p, "--fisher-samples", integer(1, MAX_FISHER), default=300,
                   help="training images per Fisher estimate (default: 300)")
    p.add_argument("--lr-decay", type=float, default=10.0,
                   help="learning-rate divisor per new task for lr_decay (default: 10)")
    p.add_argument("--bn-stats", choices=("running", "batch"), default="running",
                   help="BatchNorm statistics when testing: running (foldable into hardware "
                   "thresholds) or the test batch's (default: running)")
    ranged(p, "--seed", SEED, default=0,
           help="seed of weights, batches and permutations (default: 0)")
    from .cli import add_dataset_options
    add_dataset_options(p)
    ranged(p, "--stream", integer(1, MAX_STREAM), metavar="K",
                   help="also run stream learning with K class-balanced subsets")
    p.add_argument("--fixed-point", action="store_true",
                   help="also run each meta m with the fixed-point twin of the rule in the loop")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    ranged(p, "--jobs", integer(1, 4 * limits.usable_cores()),
           help="runs at a time on this machine (default: the usable cores)")
    many_jobs(p, "the trainings", "keep the runs already finished in --out and run only the "
              "missing")
    p.set_defaults(func=cmd_continual)
