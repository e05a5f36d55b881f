"""The ``nmflow`` command line: one subcommand per step of the flow, plus ``demo`` and ``bench``.

Every subcommand reads and writes the artifacts of a run folder (``--run``, ``build/run`` by
default) and takes explicit paths to start from files a user brings. Bad input ends with one line,
``nmflow: error: ...``, and exit status 2.
"""

import argparse
import json
import re
import sys
import warnings
from pathlib import Path

from ..errors import NmflowError
from .. import limits
from ..protocol.framing import BAUD
from .options import (BATCH, CLOCK, CLOCK_HELP, FIRST_BITS, HIDDEN, LANES, PE, SEED, SIM_JOBS,
                      VECTORS, integer, many_jobs, number, ranged)
from .progress import bars

DEFAULT_RUN = "build/run"


class _Parser(argparse.ArgumentParser):
    """argparse, with its refusals in nmflow's one line (``nmflow: error: ...``, exit status 2)
    and in the wording of :mod:`nmflow.errors` (``--epochs must be ..., not '0'``): the usage
    stays available through ``--help``. Every sub-command's parser is one too."""

    def error(self, message):
        where = self.prog.removeprefix("nmflow").strip()
        sys.stderr.write(f"nmflow: error: {where + ': ' if where else ''}{_reworded(message)} "
                         f"(see {self.prog} --help)\n")
        sys.exit(2)


def _reworded(message):
    """argparse's refusal in nmflow's wording: the option first, then the rule and the value."""
    found = re.fullmatch(r"the following arguments are required: (.+)", message)
    if found:
        names = [name if name.startswith("-") else
                 f"{'an' if name[0] in 'AEIOU' else 'a'} {name.lower()}"
                 for name in found[1].split(", ")]
        return f"{' and '.join(names)} {'is' if len(names) == 1 else 'are'} required"
    found = re.fullmatch(r"argument ([^:]+): (.*)", message, re.DOTALL)
    if not found:
        return message
    option, rest = found[1].split("/")[-1], found[2]
    option = option if option.startswith("-") else option.lower()
    choice = re.fullmatch(r"invalid choice: (.*) \(choose from (.*)\)", rest, re.DOTALL)
    if choice:
        choices = ", ".join(part.strip().strip("'") for part in choice[2].split(","))
        return f"{option} must be one of {choices}, not {choice[1]}"
    if rest == "expected one argument":
        return f"{option} needs a value"
    return f"{option} {rest}"


def _hidden(text):
    return HIDDEN(text)


def _boards(text):
    from ..boards.catalog import BOARDS
    names = [part.strip() for part in str(text).split(",")]
    if not all(name in BOARDS for name in names):
        raise argparse.ArgumentTypeError(f"must be comma-separated boards from "
                                         f"{', '.join(BOARDS)}, not {text!r}")
    return ",".join(dict.fromkeys(names))


def _console():
    from rich.console import Console
    return Console(highlight=False)


def _print_json(data):
    print(json.dumps(data, indent=2))


# -- steps -----------------------------------------------------------------------------------------

def add_dataset_options(p, used_for="training"):
    """Add --dataset, --images, --labels, --folder and --split-seed (read back by
    :func:`dataset_spec`)."""
    p.add_argument("--dataset", choices=("digits", "idx", "cifar10"), default="digits",
                   help=f"{used_for} data: scikit-learn's bundled digits, MNIST-format IDX "
                   "files, or CIFAR-10's binary batches (default: digits)")
    p.add_argument("--images", help="IDX images file (gz or raw), with --dataset idx")
    p.add_argument("--labels", help="IDX labels file (gz or raw), with --dataset idx")
    p.add_argument("--folder", help="with --dataset cifar10: the folder holding data_batch_1.bin "
                   "... data_batch_5.bin (at least one) and, for the test images, test_batch.bin "
                   "(else an 80/20 split of the training batches)")
    ranged(p, "--split-seed", SEED, default=0,
           help="seed of the stratified 80/20 split (default: 0)")


def dataset_spec(args, *, resolve=False):
    """The dataset the --dataset, --images, --labels and --split-seed options name; with
    ``resolve``, IDX paths made absolute (for a report read from elsewhere)."""
    from ..flow import DatasetSpec
    if args.dataset == "idx" and not (args.images and args.labels):
        raise NmflowError("--dataset idx needs --images and --labels (MNIST-format IDX files)")
    if args.dataset != "idx" and (args.images or args.labels):
        raise NmflowError(f"--images and --labels go with --dataset idx, not {args.dataset}")
    if args.dataset == "cifar10" and not args.folder:
        raise NmflowError("--dataset cifar10 needs --folder (the folder of CIFAR-10's binary "
                          "batches, data_batch_1.bin ...)")
    if args.dataset != "cifar10" and args.folder:
        raise NmflowError(f"--folder goes with --dataset cifar10, not {args.dataset}")
    images, labels, folder = args.images, args.labels, args.folder
    if resolve and args.dataset == "idx":
        images, labels = str(Path(images).resolve()), str(Path(labels).resolve())
    if resolve and folder:
        folder = str(Path(folder).resolve())
    return DatasetSpec(args.dataset, images, labels, seed=args.split_seed, folder=folder)


def _train_config(args):
    from ..golden.train import TrainConfig
    make = TrainConfig.bnn if args.kind == "bnn" else TrainConfig.tnn
    changes = {name: getattr(args, name) for name in ("hidden", "epochs", "lr", "batch", "seed")
               if getattr(args, name) is not None}
    if getattr(args, "arch", None) is not None:
        if args.hidden is not None:
            raise NmflowError("--hidden and --arch name the layers twice: give one of them")
        changes["arch"] = args.arch
    return make(**changes)


def _train(args, console, quiet=False):
    from ..flow import train_step
    with bars(console, quiet=quiet) as progress:
        return train_step(args.run, _train_config(args), dataset_spec(args), progress=progress)


def cmd_train(args):
    summary = _train(args, _console())
    _print_json({key: summary[key] for key in ("checkpoint", "float_accuracy", "train_accuracy",
                                               "seconds")})


def cmd_export(args):
    from ..flow import export_step
    _print_json(export_step(args.run, args.checkpoint, args.out, format=args.format))


def cmd_import(args):
    from ..flow import import_step
    _print_json(import_step(args.run, args.onnx, dataset_spec(args), out=args.out))


def _injection(args):
    """The read-error injection the options ask for, or ``None``."""
    if args.errors is None:
        for option, value in (("--error-seed", args.error_seed), ("--error-mode", args.error_mode),
                              ("--rate-bits", args.rate_bits)):
            if value is not None:
                raise NmflowError(f"{option} goes with --errors (the injector's rates)")
        return None
    from ..golden.injector import ErrorInjection
    from ..golden.readerrors import ErrorRates
    return ErrorInjection(ErrorRates(*args.errors),
                          seed=1 if args.error_seed is None else args.error_seed,
                          mode=args.error_mode or "per_read",
                          rate_bits=16 if args.rate_bits is None else args.rate_bits)


def _rates(text):
    try:
        rates = tuple(float(part) for part in text.split(","))
    except ValueError:
        rates = ()
    if len(rates) != 3:
        raise argparse.ArgumentTypeError(f"must be three comma-separated rates (type 1, 2, 3) "
                                         f"such as 0,0.01,0.065, not {text!r}")
    return rates


PE_HELP = ("neurons computed side by side, each over lanes / pe lanes: a power of two with "
           "pe * pe <= lanes (default: 1)")


FIRST_LAYER_HELP = ("input bits the first layer takes per cycle, 1 to the model's input bits: "
                    "the lanes are one bit wider (1: 2-bit lanes, a popcount tree, a fraction of "
                    "the logic, the first layer bit-serial; default: all the bits)")


def cmd_verilog(args):
    from ..flow import verilog_step
    _print_json(verilog_step(args.run, args.model, lanes=args.lanes, pe=args.pe,
                             first_layer_bits=args.first_layer_bits, memory=args.memory,
                             out=args.out, errors=_injection(args)))


def _sim(args, console, quiet=False):
    from ..flow import sim_step
    with bars(console, quiet=quiet) as progress:
        return sim_step(args.run, args.model, inputs=args.inputs, limit=args.limit,
                        lanes=args.lanes, pe=args.pe, waves=args.waves, out=args.out,
                        rtl=args.rtl, jobs=args.jobs, testbench=args.testbench,
                        cluster=args.cluster, resume=args.resume, progress=progress)


def cmd_sim(args):
    summary = _sim(args, _console())
    _print_json(summary)
    if not summary["passed"]:
        reason = next((message for message in summary["failures"] if message), None)
        raise NmflowError(f"RTL and golden model disagree{': ' + reason if reason else ''} (see "
                          f"{summary['log']})")


def cmd_compare(args):
    from ..flow import compare_step
    result = compare_step(args.run, args.model, sim=args.sim, out=args.out, rtl=args.rtl)
    shown = {key: value for key, value in result.items() if key != "mismatch_list"}
    shown["first_mismatches"] = result["mismatch_list"][:10]
    _print_json(shown)
    if result["mismatches"]:
        raise NmflowError(f"{result['mismatches']} RTL outputs differ from the golden model")


def _metaplastic_m(text):
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is None or not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0 (the metaplasticity m), "
                                         f"not {text!r}")
    return value


def cmd_build(args):
    from ..boards.build import pll_for
    from ..flow import build_step
    if args.clock not in ("auto", "board"):
        pll_for(args.board, args.clock, "--clock")
    options = dict(board=args.board, lanes=args.lanes, pe=args.pe,
                   first_layer_bits=args.first_layer_bits, out=args.out,
                   errors=_injection(args), metaplastic=args.metaplastic, clock=args.clock,
                   baud=args.baud, memory=args.memory, batch=args.batch)
    if args.seeds is not None:
        from ..flow.seeds import build_seeds_step
        if args.seed is not None:
            raise NmflowError("build: --seed and --seeds exclude each other (--seeds N builds "
                              "with seeds 1 to N)")
        with bars() as progress:
            summary = build_seeds_step(args.run, args.model, seeds=range(1, args.seeds + 1),
                                       workers=args.jobs, cluster=args.cluster,
                                       resume=args.resume, progress=progress, **options)
    else:
        if args.jobs is not None or args.cluster is not None or args.resume:
            raise NmflowError("build: --jobs, --cluster and --resume go with --seeds")
        summary = build_step(args.run, args.model, seed=args.seed, **options)
    shown = {key: summary[key] for key in ("board", "device", "bitstream", "lanes", "pe",
                                           "first_layer_bits", "memory", "batch",
                                           "batch_memory",
                                           "logic_cells",
                                           "logic_cells_total", "block_rams", "dsps",
                                           "fmax_mhz", "run_clock_mhz", "clock_margin",
                                           "baud", "seconds")}
    if "seed_sweep" in summary:
        shown["seed"] = summary["seed_sweep"]["chosen"]
        shown["seeds"] = {row["seed"]: row.get("fmax_mhz", row.get("error"))
                          for row in summary["seed_sweep"]["seeds"]}
    if args.metaplastic is not None or "spram" in (summary["memory"], summary["batch_memory"]):
        shown["sprams"] = summary["utilisation"].get("ICESTORM_SPRAM", {}).get("used", 0)
    if args.metaplastic is not None:
        shown["metaplastic"] = summary["metaplastic"]
    _print_json(shown)


def cmd_host(args):
    from ..flow import host_step
    with bars(quiet=args.check) as progress:
        result = host_step(args.run, args.port, args.model, inputs=args.inputs,
                           limit=args.limit, baudrate=args.baud, timeout=args.timeout,
                           out=args.out, errors=_injection(args), lanes=args.lanes, pe=args.pe,
                           progress=progress, check=args.check, board=args.board,
                           batch=not args.no_batch)
    if args.check:
        _print_json({key: result[key] for key in ("check", "port", "info", "images",
                                                  "seconds")})
        return
    shown = dict(result)
    shown["class_mismatches"] = shown["class_mismatches"][:10]
    shown["score_mismatches"] = shown["score_mismatches"][:10]
    _print_json(shown)
    if result["weight_mismatches"]:
        raise NmflowError(f"{result['weight_mismatches']} weights read back from the board "
                          f"differ from the model's, and {result['mismatches']} outputs: the "
                          f"board was trained on chip or holds another model's bitstream")
    if result["mismatches"]:
        raise NmflowError(f"{result['mismatches']} board outputs differ from the golden model")


def cmd_program(args):
    from ..flow import program_step
    _print_json(program_step(args.run, args.board, build=args.build, model=args.model,
                             flash=args.flash))


def cmd_demo(args):
    from ..scripts.demo import run_demo
    run_demo(Path(args.run), lanes=args.lanes, limit=args.limit, board=args.board,
             arch=args.arch)


def _sweep_points(text):
    from ..scripts.bench import parse_points
    if text == "default":
        return None
    try:
        return parse_points(text)
    except NmflowError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def cmd_bench(args):
    from ..scripts.bench import run_bench, run_sweep
    if args.table:
        from ..scripts.bench_table import read_bench, read_sweeps, render
        print(render(read_bench(Path(args.out or Path(args.run) / "bench.json")),
                     read_sweeps(Path(args.run))), end="")
        return
    if args.sweep is not False:
        console = _console()
        with bars(console) as progress:
            result = run_sweep(Path(args.run), boards=args.boards, points=args.sweep,
                               out=args.out, resume=args.resume, progress=progress,
                               workers=args.jobs, cluster=args.cluster)
        for board, rows in result["boards"].items():
            for row in rows:
                console.print(f"{board} {row['lanes']}x{row['pe']}d{row['first_layer_bits']}: "
                              f"{row.get('images_per_second_at_run_clock', '-')} images/s, "
                              f"{row.get('logic_cells', '-')} cells, limit {row['limit']}")
        _print_json(result)
        return
    if args.conv:
        from ..scripts.bench_conv import run_conv
        result = run_conv(Path(args.run), boards=args.boards, mnist=args.mnist,
                          mnist_images=1000 if args.mnist_images is None else args.mnist_images,
                          networks=args.networks.split(",") if args.networks else None,
                          out=args.out or Path(args.run) / "bench.json", resume=args.resume)
        _print_json(result["conv"])
        return
    if args.learning:
        from ..scripts.bench_learning import run_learning
        console = _console()
        result = run_learning(Path(args.run), boards=args.boards, lanes=args.learning_lanes,
                              cpu_samples=args.cpu_samples,
                              out=args.out or Path(args.run) / "bench.json",
                              resume=args.resume, clock=args.clock,
                              progress=lambda text: console.print(text))
        _print_json(result)
        return
    if args.mnist is not None:
        from ..scripts.bench import run_mnist
        result = run_mnist(Path(args.run) / "mnist", args.mnist,
                           lanes=32 if args.lanes is None else args.lanes,
                           images=2000 if args.mnist_images is None else args.mnist_images,
                           out=args.out or Path(args.run) / "bench.json",
                           resume=args.resume)
        _print_json(result["mnist_spram"])
        return
    result = run_bench(Path(args.run), lanes=args.lanes, pe=args.pe,
                       first_layer_bits=args.first_layer_bits, images=args.images,
                       boards=args.boards, out=args.out,
                       injector=False if args.no_injector else (
                           args.injector_boards.split(",") if args.injector_boards else True),
                       sim_images=args.sim_images, resume=args.resume, clock=args.clock)
    _print_json(result)


# -- parser ----------------------------------------------------------------------------------------

def _step_parser(sub, name, func, help, description, run=DEFAULT_RUN):
    """A step's sub-command, run by ``func``, with its ``--run`` folder."""
    p = sub.add_parser(name, help=help, description=description)
    _add_run(p, run)
    p.set_defaults(func=func)
    return p


def _add_run(p, default=DEFAULT_RUN):
    p.add_argument("--run", default=default,
                   help=f"run folder holding the artifacts (default: {default})")


def _add_vectors(p, verb):
    p.add_argument("--model", help="hardware model (default: RUN/hwmodel.json)")
    p.add_argument("--inputs", help=".npz with x [N, inputs] (and optional y); default: the "
                   "model's test split")
    ranged(p, "--limit", VECTORS, help=f"{verb} only the first N vectors")


def _add_errors(p, then):
    p.add_argument("--errors", type=_rates, metavar="T1,T2,T3",
                   help="add the PCSA read-error injector with these type 1 (sign flip), type 2 "
                   f"(+-1 read as 0) and type 3 (0 read as +-1) rates, as fractions; {then}")
    ranged(p, "--error-seed", SEED, help="seed of the injector's LFSRs (default: 1)")
    p.add_argument("--error-mode", choices=("per_read", "static"),
                   help="errors drawn anew on every read, or a static map per seed (default: "
                   "per_read)")
    ranged(p, "--rate-bits", integer(1, limits.RATE_BITS),
           help="fraction bits of the rates in hardware (default: 16)")


def parser():
    top = _Parser(
        prog="nmflow", description="Binarized and ternary networks from PyTorch to verified, "
        "synthesized near-memory engines on open FPGA boards.")
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = _step_parser(sub, "train", cmd_train, "train a float BNN/TNN (writes model.pt)",
                     "Train a binary (BNN) or ternary (TNN) network with hidden "
                     "weights, BatchNorm and the straight-through estimator.")
    p.add_argument("--kind", choices=("tnn", "bnn"), default="tnn",
                   help="ternary weights+activations or binary weights+sign (default: tnn)")
    add_dataset_options(p)
    ranged(p, "--hidden", HIDDEN, help="hidden layer sizes (default: 128,128)")
    p.add_argument("--arch", help="the layers as a string instead of --hidden: c<channels>k<kernel>"
                   "[p<padding>] a convolution, p<size> a max pooling, f<units> a fully "
                   "connected layer, the last one of one neuron per class (for example "
                   "c16k3-p2-c32k3-f64-f10; see the README)")
    ranged(p, "--epochs", integer(1, limits.EPOCHS), help="epochs (default: 50)")
    ranged(p, "--lr", number(high=limits.LEARNING_RATE, above=0),
           help="Adam learning rate (default: 0.005)")
    ranged(p, "--batch", integer(1, limits.BATCH), help="batch size (default: 100)")
    ranged(p, "--seed", SEED, help="training seed (default: 0)")

    p = _step_parser(sub, "export", cmd_export, "fold BatchNorm into the integer hardware model",
                     "Export a checkpoint to hwmodel.{npz,json} and check the "
                     "integer model against the float model on the test split.")
    p.add_argument("--checkpoint", help="checkpoint to export (default: RUN/model.pt)")
    p.add_argument("--out", help="hardware model stem (default: RUN/hwmodel)")
    p.add_argument("--format", choices=("hwmodel", "qonnx"), default="hwmodel",
                   help="hwmodel: the hardware model only; qonnx: also STEM.onnx, the model as a "
                   "QONNX graph for qonnx and FINN, checked against qonnx's execution on the "
                   "test split (default: hwmodel)")

    p = _step_parser(sub, "import", cmd_import, "import a QONNX network (Brevitas, FINN)",
                     "Read a binary or ternary QONNX graph (Brevitas's export_qonnx, FINN's "
                     "files) into RUN/hwmodel.{npz,json} and check it against the graph "
                     "executed by qonnx on the dataset's test split: every class and output "
                     "equal, or nothing is written.")
    p.add_argument("onnx", metavar="FILE.onnx", help="the QONNX graph")
    add_dataset_options(p, "test")
    p.add_argument("--out", help="hardware model stem (default: RUN/hwmodel)")

    p = _step_parser(sub, "verilog", cmd_verilog, "generate the engine's Verilog with Amaranth",
                     "Elaborate the inference engine for a hardware model and "
                     "write RUN/rtl/engine.v with the configuration beside it.")
    p.add_argument("--model", help="hardware model (default: RUN/hwmodel.json)")
    ranged(p, "--lanes", LANES, default=16, help="GXNOR lanes, a power of two (default: 16)")
    ranged(p, "--pe", PE, default=1, help=PE_HELP)
    ranged(p, "--first-layer-bits", FIRST_BITS, help=FIRST_LAYER_HELP)
    p.add_argument("--memory", choices=("block", "logic", "spram"), default="block",
                   help="weight memory kind (default: block; spram: the iCE40UP5K's SPRAMs, "
                        "loaded at run time: the testbench writes every row first)")
    p.add_argument("--out", help="output folder (default: RUN/rtl)")
    _add_errors(p, "'nmflow sim' then checks against the golden model with the same errors")

    p = _step_parser(sub, "sim", cmd_sim,
                     "simulate the engine under cocotb against the golden model",
                     "Run the cocotb engine testbench (Icarus by default; SIM "
                     "selects another) on every test vector; fails on any mismatch. Simulates "
                     "RUN/rtl/engine.v as 'nmflow verilog' wrote it (run first if RUN/rtl holds "
                     "neither engine.v nor engine.json); refuses Verilog whose engine.json is "
                     "missing or records another file.")
    _add_vectors(p, "simulate")
    p.add_argument("--rtl", help="folder with engine.v and engine.json (default: RUN/rtl; "
                   "generated first with 'nmflow verilog' if both are missing)")
    ranged(p, "--lanes", LANES, help="lanes of the Verilog generated when RUN/rtl is empty; "
           "otherwise they must be those of engine.json (default: 16)")
    ranged(p, "--pe", PE, help="neurons per cycle of the Verilog generated when RUN/rtl is "
           "empty; otherwise that of engine.json (default: 1)")
    p.add_argument("--waves", action="store_true", help="record waves (FST/VCD) in RUN/sim/work")
    ranged(p, "--jobs", SIM_JOBS, default=1,
           help="simulators run side by side, each on a contiguous chunk of the vectors (in "
           "RUN/sim/work/chunk<k>; the Verilog compiled once), their outputs merged in order; "
           "auto: one per usable core; at most one per vector (default: 1)")
    many_jobs(p, "the chunks", "keep the chunks a stopped or failed run of the same "
              "simulation finished (in RUN/.sim_jobs) and simulate only the others")
    p.add_argument("--testbench", choices=("bulk", "beat"), default="bulk",
                   help="bulk: stimulus, backpressure and captures in gateware around the "
                   "engine, checked in bulk at the end (the simulator sets the pace); beat: "
                   "Python drivers and monitors woken per beat (default: bulk)")
    p.add_argument("--out", help="simulation folder (default: RUN/sim)")

    p = _step_parser(sub, "compare", cmd_compare, "compare RTL outputs with the golden model (==)",
                     "Compare every class, score and hidden activation the RTL "
                     "produced with the integer reference; writes RUN/compare.json.")
    p.add_argument("--model", help="hardware model (default: RUN/hwmodel.json)")
    p.add_argument("--sim", help="simulation folder (default: RUN/sim)")
    p.add_argument("--rtl", help="folder with the engine.v the simulation must have run "
                   "(default: RUN/rtl)")
    p.add_argument("--out", help="output file (default: RUN/compare.json)")

    _add_board_parsers(sub)

    from . import bersweep, continual, eqprop, pcsa
    pcsa.add_parser(sub)
    bersweep.add_parser(sub)
    continual.add_parser(sub)
    eqprop.add_parser(sub)
    return top


def _add_board_parsers(sub):
    """The steps on a board and the benchmarks: build, program, host, demo, bench."""
    from ..boards.catalog import BOARDS
    p = _step_parser(sub, "build", cmd_build, "synthesize a bitstream with Yosys and nextpnr",
                     "Build the engine with its UART host link for a board.")
    p.add_argument("--model", help="hardware model (default: RUN/hwmodel.json)")
    p.add_argument("--board", choices=tuple(BOARDS), default="icebreaker",
                   help="target board (default: icebreaker)")
    ranged(p, "--lanes", LANES, default=16, help="GXNOR lanes (default: 16)")
    ranged(p, "--pe", PE, default=1, help=PE_HELP)
    ranged(p, "--first-layer-bits", FIRST_BITS, help=FIRST_LAYER_HELP)
    ranged(p, "--seed", SEED, help="nextpnr placement seed")
    from ..flow.seeds import MAX_SEEDS
    ranged(p, "--seeds", integer(2, MAX_SEEDS), help="a seed sweep: build with nextpnr seeds 1 to N "
           "(each in OUT/seeds/seed<k>) and keep the highest run clock, then Fmax; build.json "
           "lists every seed under seed_sweep")
    ranged(p, "--jobs", integer(1, limits.SIM_JOBS),
           help="with --seeds: builds run at a time on this machine (default: every core)")
    many_jobs(p, "the builds", "keep the seeds already built from the same inputs",
              only_with="--seeds", shared_files=True)
    ranged(p, "--clock", CLOCK, default="auto", help=CLOCK_HELP)
    ranged(p, "--baud", integer(1, limits.BAUD), default=BAUD,
           help=f"the UART's baud rate (default: {BAUD}; 'nmflow host' must use the same)")
    p.add_argument("--memory", choices=("auto", "block", "spram"), default="auto",
                   help="the weight memory: block RAM, or the iCE40UP5K's SPRAMs, which 'nmflow "
                        "host' loads over the link before the first inference (default: auto, "
                        "block RAM when the weights fit there)")
    ranged(p, "--batch", BATCH, default="auto",
           help="the board's batch memory, in vectors: 'nmflow host' sends that many at a time, "
                "the board runs them back to back and times them (0: none; default: auto, the "
                "largest of 256, 128, ... 8 that fits the free SPRAMs, or the block RAMs without "
                "moving the engine's buffers)")
    p.add_argument("--out", help="output folder (default: RUN/<board>)")
    _add_errors(p, "the rates hold from reset")
    p.add_argument("--metaplastic", type=_metaplastic_m, metavar="M",
                   help="add the metaplastic update unit with metaplasticity M (hidden weights "
                   "in SPRAM on the iCEBreaker, block RAM on the ULX3S; the host streams "
                   "updates with UPDATE and LOAD requests and reads the weights back with READ)")

    p = _step_parser(sub, "program", cmd_program, "load a built bitstream onto a board (USB)",
                     "Load the bitstream 'nmflow build' wrote for a board into its FPGA with "
                     "openFPGALoader: into SRAM (the ULX3S), or into flash (--flash; the "
                     "iCEBreaker always boots from its flash). Refuses a bitstream built for "
                     "another board or model, or changed since its build.")
    p.add_argument("--board", choices=tuple(BOARDS), default="icebreaker",
                   help="the board on USB (default: icebreaker)")
    p.add_argument("--build", help="build folder with build.json and the bitstream (default: "
                   "RUN/<board>; an EqProp build: its --out)")
    p.add_argument("--model", help="hardware model the bitstream must hold (default: "
                   "RUN/hwmodel.json, if there is one)")
    p.add_argument("--flash", action="store_true",
                   help="write the flash, so that the board keeps the bitstream when powered off")

    p = _step_parser(sub, "host", cmd_host,
                     "run test vectors on a board over its UART, compare (==)",
                     "Send each test vector to a board running the nmflow "
                     "bitstream (INFER frames over its UART) and compare the class and every "
                     "score with the golden model; writes RUN/board.json.")
    p.add_argument("--port", required=True,
                   help="serial port (/dev/ttyUSB1), pyserial URL (socket://127.0.0.1:PORT), or "
                   "auto: the one board UART among the serial ports (by its USB ids)")
    p.add_argument("--board", choices=tuple(BOARDS),
                   help="with --port auto, look for this board's UART only (default: any)")
    p.add_argument("--check", action="store_true",
                   help="only INFO and the first vector, compared with the golden model: the "
                   "quick check that the board runs this model's bitstream (writes nothing)")
    _add_vectors(p, "send")
    ranged(p, "--baud", integer(1, limits.BAUD), default=BAUD,
           help=f"baud rate: the board's build's (default: {BAUD})")
    ranged(p, "--timeout", number(high=limits.TIMEOUT, above=0), default=2.0,
           help="seconds to wait for each reply (default: 2)")
    p.add_argument("--out", help="output file (default: RUN/board.json)")
    p.add_argument("--no-batch", action="store_true",
                   help="on a board with a batch memory, send one INFER per vector all the same "
                        "(default: BATCH requests, timed on the board)")
    ranged(p, "--lanes", LANES, default=16, help="GXNOR lanes the board was built with, for "
           "the golden model of its read errors (default: 16)")
    ranged(p, "--pe", PE, default=1, help="neurons per cycle the board was built with, for "
           "the golden model of its read errors (default: 1)")
    _add_errors(p, "set on the board's injector at run time (a board built with --errors) and "
                "compared with the golden model run with the same seed and rates")

    p = _step_parser(sub, "demo", cmd_demo, "the whole flow on digits, with a summary table",
                     "Train a TNN on digits, export it, generate the engine, "
                     "simulate it on every test image, compare, build an iCEBreaker bitstream "
                     "and write RUN/report.json.", run="build/demo")
    ranged(p, "--lanes", LANES, default=16, help="GXNOR lanes (default: 16)")
    ranged(p, "--limit", VECTORS, help="simulate only the first N test images")
    p.add_argument("--board", choices=tuple(BOARDS), default="icebreaker")
    p.add_argument("--arch", help="the networks' layers as a layer string instead of "
                   "64-128-128-10, convolutions allowed (for example c16k3p1-p2-c32k3p1-p2-f64-f10)")

    _add_bench_parser(sub)


def _add_bench_parser(sub):
    """``nmflow bench`` and its variants (sweep, MNIST, conv, learning, table)."""
    from ..boards.catalog import BOARDS
    p = _step_parser(sub, "bench", cmd_bench,
                     "benchmarks as JSON (cycles, memory bound, Fmax, speed)",
                     "Measure cycles per inference against the ideal, the memory "
                     "bound, Fmax and logic cells per board, simulation speed, images/s.",
                     run="build/bench")
    ranged(p, "--lanes", LANES, help="GXNOR lanes (default: each board's fastest folding that "
           "fits)")
    ranged(p, "--pe", PE, help="neurons per cycle (default: each board's fastest folding)")
    ranged(p, "--first-layer-bits", FIRST_BITS, help="input bits the first layer takes per "
           "cycle (default: each board's fastest folding)")
    ranged(p, "--images", integer(1, limits.BENCH_IMAGES), default=20,
           help="test images simulated under cocotb for the cycle figures (default: 20)")
    ranged(p, "--sim-images", integer(1, limits.BENCH_IMAGES),
           help="test images each simulator (Icarus, Verilator) runs for the speed figures "
           "(default: the whole digits test set)")
    p.add_argument("--boards", type=_boards, default=",".join(BOARDS),
                   help=f"comma-separated boards to build (default: {','.join(BOARDS)})")
    p.add_argument("--injector-boards", type=_boards, metavar="BOARDS",
                   help="build the read-error injector's second build on these boards only "
                   "(default: every board benchmarked; at 512 lanes the ECP5's injector alone "
                   "takes about 61,000 LUTs)")
    p.add_argument("--no-injector", action="store_true",
                   help="skip the second build per board that measures the read-error "
                   "injector's cost")
    p.add_argument("--sweep", nargs="?", const="default", default=False, type=_sweep_points,
                   metavar="POINTS", help="instead of the benchmark, build the foldings POINTS "
                   "(LANESxPE[dBITS],...; default: each board's sweep from 16 lanes to past what "
                   "it holds) and write their cycles, logic, block RAMs, Fmax, images/s and the "
                   "limit each hits to RUN/sweep.json and a plot beside it")
    p.add_argument("--mnist", metavar="DIR", help="instead of the benchmark, the MNIST-size "
                   "TNN 784-256-256-10 on the iCEBreaker (weights in SPRAM): trained on 80 %% "
                   "of the IDX files in DIR (t10k-images-idx3-ubyte[.gz], ...), tested on the "
                   "rest, built, simulated under Verilator and compared; the section "
                   "mnist_spram of RUN/bench.json")
    ranged(p, "--mnist-images", integer(1, limits.BENCH_IMAGES), default=None,
           help="test images the MNIST benchmark simulates (default: 2000; with --conv, 1000)")
    ranged(p, "--clock", CLOCK, default="auto", help="the builds' " + CLOCK_HELP)
    p.add_argument("--conv", action="store_true", help="instead of the benchmark, the "
                   "convolutional networks (digits TNN and BNN, a CNV-like network on random "
                   "32 x 32 x 3 inputs, and with --mnist DIR an MNIST conv TNN): trained, "
                   "simulated under Verilator against the golden model, built per board; the "
                   "section conv of RUN/bench.json")
    p.add_argument("--learning", action="store_true", help="instead of the benchmark, the "
                   "learning units: the EqProp unit (binarized, metaplastic) and the engine with "
                   "the metaplastic unit built per board, their cycles per step measured in "
                   "simulation, and training samples per second on the board against the "
                   "fixed-point and float twins on this CPU; the section learning of "
                   "RUN/bench.json")
    ranged(p, "--learning-lanes", integer(1, 64), default=None,
           help="with --learning: the EqProp unit's lanes, a power of two (default: 8 on the "
           "iCEBreaker, 16 on the ULX3S)")
    ranged(p, "--cpu-samples", integer(1, limits.VECTORS), default=200,
           help="with --learning: training samples the CPU twins are timed on (default: 200)")
    p.add_argument("--networks", metavar="NAMES", help="with --conv: only these networks "
                   "(comma-separated: digits_tnn, digits_bnn, cifar_shaped, mnist_tnn)")
    p.add_argument("--table", action="store_true", help="instead of the benchmark, print "
                   "RUN/bench.json (or --out), with the sweeps RUN/sweep*.json if there, as the "
                   "Markdown tables of the README's benchmark section")
    p.add_argument("--out", help="JSON output (default: RUN/bench.json, or RUN/sweep.json)")
    ranged(p, "--jobs", integer(1, limits.SIM_JOBS), default=1,
           help="with --sweep: builds run at a time on this machine (default: 1)")
    p.add_argument("--cluster", metavar="ADDRESS",
                   help="with --sweep: build the points on this Dask scheduler's workers "
                   "(tcp://HOST:PORT; they must share RUN's file system; default: "
                   "$NMFLOW_CLUSTER, else this machine's cores)")
    p.add_argument("--resume", action="store_true", help="take each board build already in its "
                   "folder under RUN, made from the same inputs (design, constraints, seed, "
                   "clock), instead of running Yosys and nextpnr again: an interrupted benchmark "
                   "or sweep goes on where it stopped")


def main(argv=None):
    if not sys.warnoptions:
        # The libraries' warnings (torch's, NumPy's) are noise to a user of the command line;
        # ``python -W`` or PYTHONWARNINGS still shows them.
        warnings.simplefilter("ignore")
    try:
        args = parser().parse_args(argv)
    except SystemExit as exit_:                 # --help (0), or a refusal in one line (2)
        return exit_.code
    from ..toolchain import tool_environment
    tool_environment()
    try:
        args.func(args)
    except NmflowError as error:
        print(f"nmflow: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("nmflow: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
