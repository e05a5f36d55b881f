"""``nmflow eqprop``: Equilibrium Propagation (thesis chapter 3) on fully connected convergent
networks. ``nmflow eqprop train --out DIR`` trains the same network with BPTT and the three EP
estimates (one-sided, random sign, symmetric), for the squared-error output and the softmax
read-out with cross-entropy, trains the fixed-point twin (symmetric estimate, integer only), runs
the gradient check against BPTT, and writes ``DIR/eqprop.json``, ``DIR/eqprop.csv`` (accuracy per
epoch) and ``DIR/eqprop.png``.

The hardware unit: ``nmflow eqprop sim`` checks :class:`~nmflow.rtl.eqprop.EqPropUnit` bit for
bit against the twin under cocotb (``DIR/eqprop_sim.json``); ``nmflow eqprop build`` builds
:class:`~nmflow.rtl.eqprop_link.EqPropHostTop` for a board (``DIR/build.json``); ``nmflow eqprop
host`` trains on the board over its UART and compares the weights read back with the twin's
(``DIR/board.json``; ``--port sim`` runs a simulated board instead: the link core compiled by
Verilator, or with ``--port pysim`` the whole top with its UART in Amaranth's simulator, slow).
"""

import argparse
import json
import math
from pathlib import Path

from .. import limits
from ..errors import NmflowError, int_rule, number_rule
from ..protocol.framing import BAUD
from .options import CLOCK, CLOCK_HELP, many_jobs
from .progress import bars
from ..flow.eqprop import (DEFAULT_OUT, LOSS_NAMES, SIMULATED_PORTS, build_unit, run_host,
                           run_train, run_unit_sim)

__all__ = ["add_parser", "cmd_train", "run_train", "DEFAULT_OUT", "cmd_sim", "cmd_build",
           "cmd_host", "run_unit_sim", "run_host"]


ALPHA_SCALE_HELP = ("scale of the binary weights, alpha_k = S / (2 sqrt(n_k)), binary only "
                    "[above 0] (default: 1)")


# -- checks (every one a one-line NmflowError) ------------------------------------------------------

def _int(option, text, minimum, default, maximum=None):
    if text is None:
        return default
    rule = int_rule(minimum, maximum)
    try:
        value = int(text)
    except (TypeError, ValueError):
        raise NmflowError(f"{option} must be {rule}, not {text!r}") from None
    if value < minimum or (maximum is not None and value > maximum):
        raise NmflowError(f"{option} must be {rule}, not {text!r}")
    return value


def _float(option, text, default, above=0.0, maximum=None):
    if text is None:
        return default
    rule = number_rule(None, maximum, above, None)
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise NmflowError(f"{option} must be {rule}, not {text!r}") from None
    if not math.isfinite(value) or (above is not None and value <= above) \
            or (maximum is not None and value > maximum):
        raise NmflowError(f"{option} must be {rule}, not {text!r}")
    return value


def _widths(text, default, example):
    if text is None:
        return default
    try:
        return list(limits.check_widths("--hidden", [int(part) for part in str(text).split(",")],
                                        example))
    except (ValueError, NmflowError):
        try:
            limits.check_widths("--hidden", str(text), example)
        except NmflowError as error:
            raise NmflowError(str(error)) from None


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


def _shifts(option, text, first, rest, layers):
    """Learning-rate shifts (``2**-n``), one per weight layer, each from 0 to 40; default
    ``first`` for the first layer and ``rest`` for the others."""
    values = _list(option, text, [first] + [rest] * (layers - 1), int,
                   "comma-separated shifts (learning rate 2**-n), one per weight layer")
    if len(values) != layers or any(not 0 <= e <= 40 for e in values):
        raise NmflowError(f"{option} must give {layers} shifts from 0 to 40 (one per weight "
                          f"layer), not {text!r}")
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


def _alpha_scale(text, binary):
    """``--alpha-scale``: the binary weights' scale, above 0; 1 unless the weights are binary."""
    value = _float("--alpha-scale", text, 1.0)
    if value != 1.0 and not binary:
        raise NmflowError(f"--alpha-scale must be 1 unless --weights binary (it scales the "
                          f"binary weights), not {text!r}")
    return value


def _settings(args):
    """Every option checked and converted, before any work starts."""
    from ..fixedpoint import FixedFormat
    from ..golden.eqprop import ACTIVATIONS, METHODS, ORDERS
    from ..golden.eqprop_fixed import UPDATE_ROUNDINGS, FixedEqPropConfig

    hidden = _widths(args.hidden, [128], "128,128")
    out = {
        "hidden": hidden,
        "epochs": _int("--epochs", args.epochs, 1, 30, limits.EPOCHS),
        "batch": _int("--batch", args.batch, 1, 32, limits.BATCH),
        "T": _int("--T", args.T, 1, 40, limits.SETTLING_STEPS),
        "K": _int("--K", args.K, 1, 15, limits.SETTLING_STEPS),
        "beta": _float("--beta", args.beta, 0.2),
        "seeds": _int("--seeds", args.seeds, 1, 1, limits.SEEDS),
        "seed": _int("--seed", args.seed, 0, 0, limits.SEED),
        "activation": _choices("--activation", args.activation, ["hard"], ACTIVATIONS),
        "order": _choices("--order", args.order, ["alternate"], ORDERS),
        "losses": _choices("--losses", args.losses, LOSS_NAMES, LOSS_NAMES),
        "methods": _choices("--methods", args.methods, METHODS, METHODS),
        "weights": ("real", "binary") if "binary" in _choices(
            "--weights", args.weights, ["real"], ("real", "binary")) else ("real",),
        "check_T": _int("--check-steps", args.check_steps, 1, 200, limits.SETTLING_STEPS),
    }
    out["alpha_scale"] = _alpha_scale(args.alpha_scale, "binary" in out["weights"])
    for name in ("activation", "order"):
        if len(out[name]) != 1:
            raise NmflowError(f"--{name} must name one choice, not {getattr(args, name)!r}")
        out[name] = out[name][0]
    n_layers = len(hidden) + 1
    lrs = _list("--lrs", args.lrs, None, float, "comma-separated learning rates above 0")
    if lrs is None:
        lrs = [0.2] + [0.1] * (n_layers - 1)
    if len(lrs) != n_layers or not all(math.isfinite(v) and 0 < v <= limits.LEARNING_RATE
                                       for v in lrs):
        raise NmflowError(f"--lrs must give {n_layers} learning rates above 0 and at most "
                          f"{limits.LEARNING_RATE:g} (one per weight layer), not {args.lrs!r}")
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
            batch=_int("--fixed-batch", args.fixed_batch, 1, 32, limits.BATCH),
            epochs=_int("--fixed-epochs", args.fixed_epochs, 1, out["epochs"], limits.EPOCHS),
            seed=out["seed"], lfsr_seed=_int("--lfsr-seed", args.lfsr_seed, 1, 1, 2**32 - 1))
        if out["activation"] == "logistic":
            raise NmflowError("--activation logistic has no fixed-point twin (the twin is the "
                              "hard sigmoid); add --no-fixed")
    return out


# -- command line -----------------------------------------------------------------------------------

def cmd_train(args):
    from .cli import dataset_spec
    spec = dataset_spec(args, resolve=True)
    settings = _settings(args)
    workers = _int("--jobs", args.jobs, 1, None, 4 * limits.usable_cores())
    with bars() as progress:
        result = run_train(args.out, spec, settings, progress=progress, workers=workers,
                           cluster=args.cluster, resume=args.resume)
    summary = {"out": str(Path(args.out) / "eqprop.json"),
               "test_accuracy": result["test_accuracy"],
               "test_accuracy_by_loss": {loss: {m: v["mean"] for m, v in methods.items()}
                                         for loss, methods in
                                         result["test_accuracy_by_loss"].items()},
               "gradient_check": {k: result["gradient_check"][k]
                                  for k in ("one_sided_slope", "symmetric_slope")},
               "seconds": result["timings"]["total_seconds"]}
    print(json.dumps(summary, indent=2))


# -- tasks in sequence: binarized EP with metaplastic consolidation ----------------------------------

def _continual_config(args):
    """The options of ``eqprop continual`` as an EqPropContinualConfig (every one checked)."""
    from ..golden.eqprop_continual import EqPropContinualConfig
    hidden = _widths(args.hidden, [128], "128")
    layers = len(hidden) + 1
    ms = _list("--ms", args.ms, [10.0, 15.0], float, "comma-separated values of m, each >= 0")
    if not ms or any(not math.isfinite(m) or m < 0 for m in ms):
        raise NmflowError(f"--ms must give values of m, each a finite number >= 0, not "
                          f"{args.ms!r}")
    lrs = _list("--lrs", args.lrs, [0.2] + [0.1] * (layers - 1), float,
                "comma-separated learning rates above 0")
    if len(lrs) != layers or not all(math.isfinite(v) and 0 < v <= limits.LEARNING_RATE
                                     for v in lrs):
        raise NmflowError(f"--lrs must give {layers} learning rates above 0 and at most "
                          f"{limits.LEARNING_RATE:g} (one per weight layer), not {args.lrs!r}")
    shifts = _shifts("--lr-shifts", args.lr_shifts, 2, 3, layers)
    decay_shift = _int("--decay-shift", args.decay_shift, 0, 10, 62)
    return EqPropContinualConfig(
        tasks=_int("--tasks", args.tasks, 1, 5, 64),
        epochs=_int("--epochs", args.epochs, 1, 10, limits.EPOCHS), hidden=tuple(hidden),
        lrs=tuple(lrs), lr_shifts=tuple(shifts), ms=tuple(ms),
        decay=2.0 ** -decay_shift if decay_shift else 0.0, decay_shift=decay_shift,
        task_biases=not args.shared_biases, seed=_int("--seed", args.seed, 0, 0, limits.SEED))


def _board_settings(args, config):
    """The board run of ``eqprop continual`` (``--board-samples``), or None: the sequence at
    batch 1 with the board's learning rates and decay, the port, lanes and samples per task."""
    import dataclasses
    if args.board_samples is None:
        for option in ("port", "board_lanes", "board_lr_shifts", "board_decay_shift",
                       "board_storage"):
            if getattr(args, option) is not None:
                raise NmflowError(f"--{option.replace('_', '-')} needs --board-samples, not "
                                  f"alone")
        return None
    layers = len(config.hidden) + 1
    shifts = _shifts("--board-lr-shifts", args.board_lr_shifts, 7, 8, layers)
    lanes = _int("--board-lanes", args.board_lanes, 1, 16, 64)
    sizes = (64, *config.hidden)
    if lanes & (lanes - 1) or any(n % lanes for n in sizes):
        raise NmflowError(f"--board-lanes must be a power of two dividing the input count and "
                          f"every hidden size {list(sizes)}, not {args.board_lanes!r}")
    decay = _int("--board-decay-shift", args.board_decay_shift, 0, 15, 62)
    port = str(args.port or "sim")
    storage = args.board_storage or "memory"
    if storage not in ("memory", "spram"):
        raise NmflowError(f"--board-storage must be memory or spram, not {args.board_storage!r}")
    if args.board_storage is not None and port not in SIMULATED_PORTS:
        raise NmflowError(f"--board-storage is for a simulated board (--port sim or pysim; a "
                          f"real board has what it was built with), not --port {port!r}")
    if storage == "spram" and lanes > 4:
        raise NmflowError(f"--board-storage spram keeps a bank in each of the iCE40UP5K's 4 "
                          f"SPRAMs: --board-lanes must be at most 4, not {lanes}")
    board_config = dataclasses.replace(config, fixed_batch=1, lr_shifts=tuple(shifts),
                                       decay_shift=decay)
    return {"config": board_config, "port": port, "lanes": lanes, "storage": storage,
            "samples": _int("--board-samples", args.board_samples, 1, 50, limits.VECTORS),
            "baudrate": BAUD, "timeout": 600.0}


def cmd_continual(args):
    from ..flow.eqprop_continual import label, run_eqprop_continual
    from ..golden.datasets import load_digits
    config = _continual_config(args)
    bp_m = _float("--bp-m", args.bp_m, 40.0)
    board = _board_settings(args, config)
    workers = _int("--jobs", args.jobs, 1, None, 4 * limits.usable_cores())
    with bars() as progress:
        result = run_eqprop_continual(args.out, config, load_digits(), bp_m=bp_m,
                                      baselines=not args.no_baselines, board=board,
                                      progress=progress, workers=workers, cluster=args.cluster,
                                      resume=args.resume)
    print(json.dumps({"out": str(Path(args.out) / "eqprop_continual.json"),
                      "final": {label(run): [round(100 * a, 1) for a in run["final"]]
                                for run in result["runs"]},
                      "seconds": result["seconds"]}, indent=2))


# -- the hardware unit: sim, build, host ----------------------------------------------------------

def _unit_settings(args, default_samples):
    """The network, unit and sample options of sim/build/host, every one checked before work:
    the network is the digits data set's (its features in, its classes out) and its memories
    must fit the block RAM of ``--board`` (binary hidden weights: or its single-port RAMs)."""
    from ..boards.catalog import get_board
    from ..golden.datasets import load_digits
    from ..golden.eqprop_fixed import FixedEqPropConfig
    from ..rtl.eqprop import choose_plan

    hidden = _widths(args.hidden, [32], "32,16")
    lanes = _int("--lanes", args.lanes, 1, 4)
    if lanes & (lanes - 1) or lanes > 64:
        raise NmflowError(f"--lanes must be a power of two from 1 to 64, not {args.lanes!r}")
    layers = len(hidden) + 1
    lr = _shifts("--lr-shifts", args.lr_shifts, 5, 6, layers)
    samples = _int("--samples", getattr(args, "samples", None), 1, default_samples,
                   limits.VECTORS)
    T = _int("--T", args.T, 1, 40, limits.SETTLING_STEPS)
    K = _int("--K", args.K, 1, 15, limits.SETTLING_STEPS)
    board = get_board(args.board)
    weights = _choices("--weights", args.weights, ["real"], ("real", "binary"))
    if len(weights) != 1:
        raise NmflowError(f"--weights must name one choice, not {args.weights!r}")
    m = _float("--m", args.m, 0.0, above=None)
    if m < 0 or (m > 0 and weights[0] != "binary"):
        raise NmflowError(f"--m must be a number >= 0, and 0 unless --weights binary, not "
                          f"{args.m!r}")
    decay_shift = _int("--decay-shift", args.decay_shift, 0, 0, 62)
    alpha_scale = _alpha_scale(args.alpha_scale, weights[0] == "binary")
    data = load_digits()
    try:
        config = FixedEqPropConfig(sizes=(data.n_features, *hidden, data.n_classes), T=T, K=K,
                                   lr_shifts=tuple(lr), batch=1, weights=weights[0], m=m,
                                   decay_shift=decay_shift, alpha_scale=alpha_scale)
        choose_plan(config, lanes, board=board).check_fit(board)
    except NmflowError as error:
        raise NmflowError(f"--hidden {','.join(map(str, hidden))} with --lanes {lanes}: "
                          f"{error}") from None
    return config, lanes, samples, board


def cmd_sim(args):
    config, lanes, samples, _ = _unit_settings(args, 50)
    seed = _int("--seed", args.seed, 0, 0, limits.SEED)
    summary = run_unit_sim(args.out, config, lanes, samples, seed=seed)
    print(json.dumps({k: summary[k] for k in ("passed", "samples", "final_param_mismatches",
                                              "seconds")}, indent=2))
    if not summary["passed"]:
        raise NmflowError(f"the unit differs from the twin: {summary['failures'][:1] or ''} "
                          f"(see {Path(args.out) / 'eqprop_sim.json'})")


def cmd_build(args):
    config, lanes, _, board = _unit_settings(args, 1)
    seed = _int("--seed", args.seed, 0, None, limits.SEED)
    baud = _int("--baud", args.baud, 1, BAUD, limits.BAUD)
    try:
        clock = CLOCK(args.clock)
    except argparse.ArgumentTypeError as error:
        raise NmflowError(f"--clock {error}") from None
    if clock not in ("auto", "board"):
        from ..boards.build import pll_for
        pll_for(board, clock, "--clock")
    summary = build_unit(args.out, config, lanes, board, baud=baud, seed=seed, clock=clock)
    print(json.dumps({k: summary.get(k) for k in ("board", "device", "bitstream", "logic_cells",
                                                  "logic_cells_total", "block_rams", "dsps",
                                                  "fmax_mhz", "run_clock_mhz", "clock_margin",
                                                  "wall_seconds")}, indent=2))


def cmd_host(args):
    from ..boards.ports import resolve_port
    config, lanes, samples, _ = _unit_settings(args, 20)
    baud = _int("--baud", args.baud, 1, BAUD, limits.BAUD)
    timeout = _float("--timeout", args.timeout, 60.0, maximum=limits.TIMEOUT)
    port = resolve_port(str(args.port), args.board)
    if not port.strip():
        raise NmflowError(f"--port must name a serial port, a pyserial URL or sim, not {port!r}")
    result = run_host(args.out, port, config, lanes, samples, baudrate=baud, timeout=timeout)
    print(json.dumps({k: result[k] for k in ("samples", "equal", "param_mismatches",
                                             "prediction_mismatches", "seconds")}, indent=2))
    if not result["equal"]:
        raise NmflowError(f"the board differs from the twin: {result['param_mismatches']} "
                          f"parameters, {result['prediction_mismatches']} predictions (see "
                          f"{Path(args.out) / 'board.json'})")


def _unit_options(p, samples, board_help):
    from ..boards.catalog import BOARDS
    p.add_argument("--board", choices=tuple(BOARDS), default="icebreaker",
                   help=f"{board_help} (default: icebreaker)")
    p.add_argument("--hidden", help="hidden layer sizes of the digits network, comma-separated, "
                   "within the board's block RAM (default: 32)")
    p.add_argument("--lanes", help="multiply-accumulate lanes, a power of two (default: 4)")
    p.add_argument("--T", help="free-phase steps [1 to 10_000] (default: 40)")
    p.add_argument("--K", help="steps of each nudged phase [1 to 10_000] (default: 15)")
    p.add_argument("--lr-shifts", help="learning rates 2**-n, one n per weight layer "
                   "(default: 5,6)")
    p.add_argument("--weights", help="real, or binary (alpha sign(W_h) in the dynamics, the "
                   "hidden W_h learning) (default: real)")
    p.add_argument("--m", help="metaplasticity of the hidden weights, binary only [>= 0] "
                   "(default: 0)")
    p.add_argument("--decay-shift", help="hidden-weight decay 2**-n per update, 0 for none "
                   "[0 to 62] (default: 0)")
    p.add_argument("--alpha-scale", help=ALPHA_SCALE_HELP)
    if samples:
        p.add_argument("--samples", help=f"digits training samples [1 to 10_000_000] (default: "
                       f"{samples})")


def _unit_parser(inner, name, help, description, out, samples, board_help):
    """A sub-command of the unit (sim, build, host) with ``--out`` and the network options."""
    p = inner.add_parser(name, help=help, description=description)
    p.add_argument("--out", default=out, metavar="DIR", help=f"output folder (default: {out})")
    _unit_options(p, samples, board_help)
    return p


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
    from .cli import add_dataset_options
    add_dataset_options(t)
    # every option a string, checked by _settings (one-line errors)
    for option, text in (
            ("--hidden", "hidden layer sizes, comma-separated [1 to 16 layers of 1 to 65_536 neurons] "
             "(default: 128)"),
            ("--epochs", "epochs [1 to 10_000] (default: 30)"),
            ("--batch", "batch size of the float runs [1 to 65_536] (default: 32)"),
            ("--T", "free-phase steps [1 to 10_000] (default: 40)"),
            ("--K", "steps of each nudged phase [1 to 10_000] (default: 15)"),
            ("--beta", "nudging strength of the float runs (default: 0.2)"),
            ("--lrs", "learning rates, one per weight layer [above 0, at most 10] (default: 0.2,0.1)"),
            ("--activation", "hard (clip(x,0,1)), hard_half (clip(x/2,0,1)) or logistic (default: "
             "hard)"),
            ("--order", "layer update order: alternate or sync (default: alternate)"),
            ("--losses", "squared and/or cross_entropy (default: both)"),
            ("--methods", "bptt, one_sided, random_sign, symmetric (default: all)"),
            ("--weights", "real, or binary: each method also trains the binarized network "
             "(weights alpha sign(W_h) in the dynamics, the hidden W_h learning), reported as "
             "binary_<method> (default: real)"),
            ("--alpha-scale", ALPHA_SCALE_HELP),
            ("--seeds", "seeds per method, from --seed [1 to 100] (default: 1)"),
            ("--seed", "first seed (initialisation, batch order) [0 to 2_147_483_647] (default: 0)"),
            ("--check-steps", "T = K of the gradient check [1 to 10_000] (default: 200)"),
            ("--fixed-epochs", "epochs of the fixed-point twin [1 to 10_000] (default: --epochs)"),
            ("--fixed-batch", "batch of the fixed-point twin, a power of two; the hardware learns "
             "with 1 (default: 32)"),
            ("--fixed-beta", "beta of the twin, a power of two (default: 0.25)"),
            ("--fixed-lr-shifts", "learning rates 2**-n of the twin, one n per layer (default: "
             "2,3)"),
            ("--fixed-rounding", "update rounding: stochastic, nearest_up or floor (default: "
             "stochastic)"),
            ("--state-bits", "bits of a neuron state, u0.N (default: 8)"),
            ("--weight-bits", "bits of a weight, signed (default: 16)"),
            ("--weight-frac", "fraction bits of a weight (default: 13)"),
            ("--lfsr-seed", "nonzero seed of the 32-bit LFSR [1 to 4_294_967_295] (default: 1)"),
    ):
        t.add_argument(option, help=text)
    t.add_argument("--no-fixed", action="store_true", help="skip the fixed-point twin")
    t.add_argument("--jobs", help="trainings run at a time on this machine [1 to four per "
                   "usable core] (default: the usable cores)")
    many_jobs(t, "the trainings", "keep the trainings already finished in DIR and run only "
              "the missing")
    t.set_defaults(func=cmd_train)

    c = inner.add_parser(
        "continual", help="permuted digits tasks in sequence: binarized EP with metaplastic "
        "consolidation, float and fixed point, beside backpropagation",
        description="Learn permuted digits tasks one after the other with binarized EqProp "
        "(alpha sign(W_h)), m = 0 and each --ms (f_meta(m, W_h) scales the steps that move a "
        "hidden weight toward 0), in float and in the fixed-point twin, beside "
        "backpropagation (plain, metaplastic, EWC). Writes DIR/eqprop_continual.json, .csv "
        "and .png.")
    c.add_argument("--out", default="build/eqprop_continual", metavar="DIR",
                   help="output folder (default: build/eqprop_continual)")
    for option, text in (
            ("--tasks", "tasks (task 1 unpermuted) [1 to 64] (default: 5)"),
            ("--epochs", "epochs per task [1 to 10_000] (default: 10)"),
            ("--hidden", "hidden layer sizes, comma-separated (default: 128)"),
            ("--ms", "values of m, one metaplastic run each besides m = 0 (default: 10,15)"),
            ("--lrs", "float learning rates, one per weight layer (default: 0.2,0.1)"),
            ("--lr-shifts", "the twin's learning rates 2**-n, one n per layer (default: 2,3)"),
            ("--decay-shift", "hidden-weight decay 2**-n per update, 0 for none [0 to 62] "
             "(default: 10)"),
            ("--bp-m", "m of the metaplastic backpropagation baseline (default: 40)"),
            ("--board-samples", "also run the sequence through a board at batch 1: the first N "
             "samples of every task on the board, compared with the twin [1 to 10_000_000] "
             "(default: no board run)"),
            ("--port", "the board's serial port, or sim (a simulated board compiled by "
                       "Verilator), or pysim (the top with its UART in Amaranth's simulator, "
                       "slow) (default: sim)"),
            ("--board-lanes", "lanes of the board's unit, a power of two (default: 16)"),
            ("--board-storage", "where the simulated board keeps its hidden weights: memory "
             "(block RAM) or spram (as the iCEBreaker's 64-128-10 build: at most 4 lanes, "
             "loaded over the link) (default: memory)"),
            ("--board-lr-shifts", "learning rates 2**-n of the batch-1 run (default: 7,8)"),
            ("--board-decay-shift", "decay 2**-n per update of the batch-1 run (default: 15)"),
            ("--seed", "seed of the weights, batch order and permutations (default: 0)"),
    ):
        c.add_argument(option, help=text)
    c.add_argument("--shared-biases", action="store_true",
                   help="one set of biases for every task (default: each task its own)")
    c.add_argument("--no-baselines", action="store_true",
                   help="skip the backpropagation runs")
    c.add_argument("--jobs", help="runs at a time on this machine [1 to four per usable core] "
                   "(default: the usable cores)")
    many_jobs(c, "the runs", "keep the runs already finished in DIR and run only the missing")
    c.set_defaults(func=cmd_continual)

    u = _unit_parser(
        inner, "sim", "check the EP unit bit for bit against the twin under cocotb",
        "Simulate EqPropUnit (Verilog, Icarus, cocotb) training on digits and compare every "
        "state, prediction and weight with the fixed-point twin. Writes DIR/eqprop_sim.json.",
        "build/eqprop_sim", 50, "the board whose block RAM the network must fit")
    u.add_argument("--seed", help="seed of the testbench's random gaps and backpressure "
                   "[0 to 2_147_483_647] (default: 0)")
    u.set_defaults(func=cmd_sim)

    b = _unit_parser(
        inner, "build", "build the EP unit with its UART host link for a board",
        "Synthesize EqPropHostTop (UART, link, EqPropUnit with the twin's initial weights) with "
        "Yosys and nextpnr. Writes the bitstream and DIR/build.json.",
        "build/eqprop_board", 0, "target board")
    b.add_argument("--baud", help=f"UART baud rate [1 to 12_000_000] (default: {BAUD})")
    b.add_argument("--seed", help="nextpnr placement seed [0 to 2_147_483_647]")
    b.add_argument("--clock", default="auto", help=CLOCK_HELP.replace(
        " (default:", f" [{CLOCK.bound()}] (default:"))
    b.set_defaults(func=cmd_build)

    h = _unit_parser(
        inner, "host", "train on the board over its UART and compare the weights with the twin",
        "Load the twin's initial weights onto a board built by 'nmflow eqprop build' (same "
        "network options), reseed its LFSR, train N digits samples, read the weights back and "
        "compare them with the twin's (==). Writes DIR/board.json.",
        "build/eqprop_host", 20, "the board on the port (its block RAM the network must fit)")
    h.add_argument("--port", required=True,
                   help="serial port (/dev/ttyUSB1), pyserial URL, sim (a simulated board: the "
                   "link core compiled by Verilator), pysim (the top with its UART in Amaranth's "
                   "simulator, slow), or auto (the --board's UART among the serial ports, by its "
                   "USB ids)")
    h.add_argument("--baud", help=f"baud rate: the build's [1 to 12_000_000] (default: {BAUD})")
    h.add_argument("--timeout", help="seconds to wait for each reply [above 0, at most 3600] "
                   "(default: 60)")
    h.set_defaults(func=cmd_host)
    return p
