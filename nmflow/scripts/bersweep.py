"""``nmflow ber-sweep``: test accuracy of the integer hardware model against the PCSA read-error
rate, one curve per error type, for a TNN and a BNN (thesis, Fig. 4.9).

Every point is :func:`nmflow.golden.bersweep.accuracy_with_errors`: errors drawn afresh for every
test image, averaged over ``--passes`` passes with the standard deviation. The BNN has type 1
errors only (its weights are +-1). The ``chip`` entry is the TNN under the error rates of the
device model (:func:`nmflow.golden.device.chip_rates`) for the two programming conditions of the
thesis (100 us and 1 us pulses); ``table42`` is the TNN under Table 4.2's rates as printed.

Writes ``DIR/ber.json``, ``DIR/ber.csv`` and ``DIR/ber.png`` atomically; without ``--tnn`` /
``--bnn`` it first trains the networks into ``DIR/tnn`` and ``DIR/bnn`` (``model.pt``,
``hwmodel.{npz,json}``, ``golden.json``). Points run on a process pool over the machine's cores.
"""

import argparse
import json
from pathlib import Path

from .. import limits
from ..errors import NmflowError, check_int
from .options import HIDDEN, integer, many_jobs, ranged
from .progress import bars
from ..flow.sweep import (CONDITIONS, CURVES, DEFAULT_HIDDEN, DEFAULT_OUT, TABLE_42, check_rates,
                          jobs_rule, max_jobs, run_sweep)

__all__ = ["add_parser", "cmd_ber_sweep", "run_sweep", "TABLE_42", "DEFAULT_OUT"]


# -- workers (module level: the process pool imports them) ------------------------------------------


# -- checks ------------------------------------------------------------------------------------------

def add_dataset_options(p, used_for):
    from .cli import add_dataset_options as add
    add(p, used_for)


def _rate(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number in [0, 1], not {text!r}") from None
    return value


def _rate_list(text):
    try:
        return [float(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be comma-separated error rates such as 1e-3,1e-2,0.1, not {text!r}") from None


def _grid(args):
    from ..golden.bersweep import rate_grid
    if args.rates is not None:
        return check_rates("--rates", args.rates)
    check_rates("--min-rate", [args.min_rate])
    check_rates("--max-rate", [args.max_rate])
    if args.min_rate <= 0:
        raise NmflowError(f"--min-rate must be above 0 on a log grid, not {args.min_rate!r}")
    if args.min_rate >= args.max_rate:
        raise NmflowError(f"--min-rate must be below --max-rate, not {args.min_rate!r} >= "
                          f"{args.max_rate!r}")
    check_int("--per-decade", args.per_decade, 1, limits.PER_DECADE)
    return rate_grid(args.min_rate, args.max_rate, args.per_decade)


# -- the sweep ---------------------------------------------------------------------------------------


# -- command line ------------------------------------------------------------------------------------

def cmd_ber_sweep(args):
    for option in ("tnn", "bnn"):
        path = getattr(args, option)
        if path is not None and not Path(path).with_suffix(".json").is_file():
            raise NmflowError(f"--{option} must name an existing hardware model file, not "
                              f"{path!r} (no such file)")
    if args.arch is not None and args.hidden != DEFAULT_HIDDEN:
        raise NmflowError("--hidden and --arch name the layers twice: give one of them")
    rates = _grid(args)
    from .cli import dataset_spec
    spec = dataset_spec(args, resolve=True)        # recorded in ber.json: absolute paths
    with bars() as progress:
        result = run_sweep(args.out, tnn=args.tnn, bnn=args.bnn, spec=spec, rates=rates,
                           passes=args.passes, seed=args.seed, epochs=args.epochs,
                           hidden=args.hidden, limit=args.limit, jobs=args.jobs,
                           chip_samples=args.chip_samples, progress=progress,
                           cluster=args.cluster, resume=args.resume, arch=args.arch)

    def at(curve, rate):
        return min(curve, key=lambda point: abs(point[0] - rate))[1]

    summary = {"out": str(Path(args.out) / "ber.json"), "seconds": result["run"]["seconds"],
               "points_run": result["run"]["points_run"],
               "clean": result["clean"], "chip": result["chip"],
               "table42": {c: result["table42"][c]["mean"] for c in CONDITIONS},
               "at_1e-2": {f"{kind} {t}": at(result[kind][t], 1e-2)
                           for kind, types in CURVES.items() for t in types},
               "at_1e-1": {f"{kind} {t}": at(result[kind][t], 1e-1)
                           for kind, types in CURVES.items() for t in types}}
    print(json.dumps(summary, indent=2))


def add_parser(sub):
    """Register ``ber-sweep`` on the argparse subparsers ``sub``; return its parser."""
    p = sub.add_parser("ber-sweep", help="accuracy vs PCSA read-error rate per error type "
                       "(thesis Fig. 4.9)",
                       description="Test accuracy of the integer hardware model against the "
                       "read-error rate, one curve per error type, for a TNN (types 1, 2, 3) and "
                       "a BNN (type 1), errors drawn afresh for every image, averaged over "
                       "passes; plus the TNN under the device model's chip rates. Writes "
                       "DIR/ber.json, ber.csv and ber.png.")
    p.add_argument("--out", default=DEFAULT_OUT, metavar="DIR",
                   help=f"output folder (default: {DEFAULT_OUT})")
    p.add_argument("--tnn", metavar="MODEL", help="ternary hardware model (hwmodel.json) to "
                   "sweep (default: train one on the dataset into DIR/tnn)")
    p.add_argument("--bnn", metavar="MODEL", help="binary hardware model to sweep (default: "
                   "train one into DIR/bnn)")
    ranged(p, "--passes", integer(1, limits.PASSES), default=5,
           help="passes over the test images per point, each with fresh errors (default: 5)")
    ranged(p, "--seed", integer(0, limits.SEED), default=0,
           help="seed of the error draws (default: 0)")
    p.add_argument("--rates", type=_rate_list,
                   help="comma-separated error rates in [0, 1] (default: a log grid)")
    p.add_argument("--min-rate", type=_rate, default=1e-4,
                   help="lowest rate of the log grid (default: 1e-4)")
    p.add_argument("--max-rate", type=_rate, default=0.5,
                   help="highest rate of the log grid (default: 0.5)")
    ranged(p, "--per-decade", integer(1, limits.PER_DECADE), default=3,
           help="points per decade of the log grid (default: 3)")
    add_dataset_options(p, "evaluation (and training)")
    ranged(p, "--limit", integer(1, limits.VECTORS),
           help="evaluate only the first N test images")
    ranged(p, "--epochs", integer(1, limits.EPOCHS), default=50,
           help="training epochs when a network is trained here (default: 50)")
    ranged(p, "--hidden", HIDDEN, default=DEFAULT_HIDDEN,
           help="hidden layer sizes of the networks trained here (default: "
           f"{','.join(map(str, DEFAULT_HIDDEN))})")
    p.add_argument("--arch", help="the networks trained here as a layer string instead of "
                   "--hidden, convolutions allowed (for example c16k3p1-p2-c32k3p1-p2-f128-f10)")
    ranged(p, "--jobs", integer(1, max_jobs(), rule=jobs_rule()),
           help="worker processes (default: the usable cores)")
    ranged(p, "--chip-samples", integer(*limits.PCSA_SAMPLES), default=200_000,
           help="device pairs the device model samples for the chip rates (default: 200000)")
    many_jobs(p, "the points", "keep the networks and the points already in DIR (after a "
              "crash, a Ctrl-C or a lost worker) and run only what is missing")
    p.set_defaults(func=cmd_ber_sweep)
    return p

