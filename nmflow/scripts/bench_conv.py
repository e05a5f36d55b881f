"""``nmflow bench --conv``: convolutional networks on the engine, measured.

One entry per network in the section ``conv`` of ``bench.json``:

* ``digits_tnn`` and ``digits_bnn``: :data:`CONV_ARCHS` ``["digits"]`` trained on the bundled
  8 x 8 digits, ternary and binary; every test image simulated;
* ``cifar_shaped``: a CNV-like network (FINN's CNV at half its channels) with random weights on
  random 32 x 32 x 3 inputs (no CIFAR-10 data here: ``accuracy`` stays null; ``nmflow train
  --dataset cifar10 --folder DIR --arch ...`` trains it on a user's copy), built for the ULX3S;
* ``mnist_tnn`` (with ``mnist``, a folder of MNIST IDX files): :data:`CONV_ARCHS` ``["mnist"]``
  trained on 80 % of the files (stratified), tested on the rest.

Each network is simulated under Verilator (cocotb, the bulk testbench) at each board's folding
and compared output by output (every pooled activation map, score and class) with the golden
model: ``images``, ``mismatches``, ``accuracy``. Per board: the plan's cycles back to back
(``cycles_per_inference``, the interval between inferences), ``ideal_cycles`` (the folding's row
reads) and the board build with its host link: ``fits`` (a build refused by the fit check is
recorded with the reason, not an error), ``logic_cells``, ``block_rams``, ``sprams``,
``fmax_mhz``, ``run_clock_mhz``, ``images_per_second_at_run_clock``.
"""

import time
from pathlib import Path

import numpy as np

from .. import limits
from ..errors import NmflowError, check_int

__all__ = ["run_conv", "CONV_ARCHS", "CONV_FOLDINGS", "CONV_REFERENCES"]

#: The networks' layer strings.
CONV_ARCHS = {
    "digits": "c16k3p1-p2-c32k3p1-p2-f64-f10",
    "mnist": "c16k3p1-p2-c32k3p1-p2-f128-f10",
    # FINN's CNV (c64k3-c64k3-p2-c128k3-c128k3-p2-c256k3-c256k3-f512-f512-f10) at half its
    # channels and neurons, for the ECP5-85F's block RAM
    "cifar_shaped": "c32k3-c32k3-p2-c64k3-c64k3-p2-c128k3-c128k3-f256-f256-f10",
}

#: The folding (lanes, pe, first_layer_bits) each board runs the conv networks at.
CONV_FOLDINGS = {"icebreaker": (16, 2, None), "ulx3s": (64, 4, None)}

#: Published figures to put beside ours (not measured here).
CONV_REFERENCES = {
    "finn_cnv_zynq": {"what": "FINN CNV (1-bit weights and activations), Zynq Z7045",
                      "images_per_second": 21906, "accuracy": 0.801, "dataset": "CIFAR-10"},
    "pocket_bnn_ulx3s": {"what": "pocket-bnn on the ULX3S (ECP5-85F)", "accuracy": 0.75,
                         "dataset": "MNIST", "slice_fraction": 0.41},
}


def _prepare_trained(folder, arch, kind, spec, epochs):
    from ..flow import export_step, train_step
    from ..golden.train import TrainConfig
    make = TrainConfig.tnn if kind == "ternary" else TrainConfig.bnn
    train_step(folder, make(arch=arch, epochs=epochs), spec)
    return export_step(folder), None


def _prepare_random(folder, arch, shape, count):
    """A random model of ``arch`` on ``shape`` images and ``count`` random inputs
    (``inputs.npz``), saved in ``folder``."""
    from ..fileio import atomic_path
    from ..golden import hwmodel
    from ..golden.synthetic import random_conv_model, random_inputs
    folder.mkdir(parents=True, exist_ok=True)
    model = random_conv_model(arch, shape, input_bits=8, weight_kind="binary", seed=0)
    hwmodel.save(model, folder / "hwmodel")
    inputs = folder / "inputs.npz"
    with atomic_path(inputs) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, x=random_inputs(model, count, seed=1))
    return None, inputs


def _simulate(folder, board, plan, memory, inputs, images, jobs):
    """Verilog at the board's folding, simulated under Verilator and compared."""
    from ..flow import compare_step, sim_step, verilog_step
    from .bench import _simulator
    rtl, sim = folder / f"rtl_{board}", folder / f"sim_{board}"
    verilog_step(folder, lanes=plan.lanes, pe=plan.pe, first_layer_bits=plan.first_layer_bits,
                 memory=memory, out=rtl)
    with _simulator("verilator"):
        run = sim_step(folder, inputs=inputs, limit=images, rtl=rtl, out=sim, jobs=jobs)
    compared = compare_step(folder, sim=sim, rtl=rtl, out=folder / f"compare_{board}.json")
    return run, compared


def _board_entry(folder, info, plan, resume):
    """The plan's figures and the board build of one network on one board."""
    from ..boards.build import DoesNotFit
    from ..flow import build_step
    entry = {"lanes": plan.lanes, "pe": plan.pe, "first_layer_bits": plan.first_layer_bits,
             "cycles_per_inference": plan.interval_cycles, "ideal_cycles": plan.ideal_cycles,
             "ratio_to_ideal": round(plan.interval_cycles / plan.ideal_cycles, 4),
             "latency_cycles": plan.cycles_per_inference}
    try:
        build = build_step(folder, board=info.name, lanes=plan.lanes, pe=plan.pe,
                           first_layer_bits=plan.first_layer_bits,
                           out=folder / info.name, reuse=resume)
    except DoesNotFit as error:
        entry.update({"fits": False, "refused": str(error), "memory": None})
        return entry
    entry.update({"fits": True, "memory": build["memory"]})
    entry.update({key: build[key] for key in ("logic_cells", "logic_cells_total", "block_rams",
                                              "block_rams_total", "dsps", "fmax_mhz",
                                              "run_clock_mhz", "seconds")})
    entry["sprams"] = build["utilisation"].get("ICESTORM_SPRAM", {}).get("used", 0)
    entry["images_per_second_at_run_clock"] = round(
        build["run_clock_mhz"] * 1e6 / plan.interval_cycles, 1)
    return entry


def _network(folder, name, arch, boards, prepare, images, jobs, resume):
    """One network's entry: prepared, planned, simulated and built on each of ``boards``."""
    from ..boards.build import get_board
    from ..golden import hwmodel
    from ..golden.plan import EnginePlan
    start = time.monotonic()
    golden, inputs = prepare()
    model = hwmodel.load(folder / "hwmodel")
    channels, height, width = model.layers[0].conv["in_shape"]
    entry = {"arch": arch, "in_shape": [channels, height, width],
             "weight_kind": model.weight_kind, "sizes": model.sizes,
             "float_accuracy": golden["float_accuracy"] if golden else None,
             "int_accuracy": golden["int_accuracy"] if golden else None,
             "images": 0, "mismatches": 0, "accuracy": None, "boards": {}}
    for board in boards:
        info = get_board(board)
        lanes, pe, bits = CONV_FOLDINGS[board]
        plan = EnginePlan(model, lanes, pe=pe, first_layer_bits=bits)
        result = _board_entry(folder, info, plan, resume)
        memory = result["memory"] or "block"
        run, compared = _simulate(folder, board, plan, memory, inputs, images, jobs)
        result.update({"simulated_images": compared["images"],
                       "mismatches": compared["mismatches"],
                       "measured_interval_cycles": compared.get("interval_cycles"),
                       "simulation_seconds": run["seconds"],
                       "simulation_cycles_per_second": run.get("sim_cycles_per_second")})
        entry["images"] = max(entry["images"], compared["images"])
        entry["mismatches"] += compared["mismatches"]
        entry["accuracy"] = compared.get("accuracy", entry["accuracy"])
        entry["boards"][board] = result
    first = entry["boards"][boards[0]]
    entry.update({key: first[key] for key in ("cycles_per_inference", "ideal_cycles",
                                              "ratio_to_ideal")})
    entry["seconds"] = round(time.monotonic() - start, 1)
    return entry


def run_conv(run_dir, *, boards="icebreaker,ulx3s", mnist=None, epochs=30, mnist_images=1000,
             cifar_images=100, jobs="auto", out=None, resume=False, networks=None):
    """The section ``conv`` of ``bench.json`` (see the module); written after each network.
    ``networks`` restricts it to some of ``digits_tnn, digits_bnn, cifar_shaped, mnist_tnn``."""
    from ..flow import DatasetSpec
    from .bench import _mnist_files, write_section
    run_dir = Path(run_dir)
    board_names = [b.strip() for b in str(boards).split(",") if b.strip()]
    for board in board_names:
        if board not in CONV_FOLDINGS:
            raise NmflowError(f"boards must be from {', '.join(CONV_FOLDINGS)}, not {board!r}")
    check_int("mnist_images", mnist_images, 1, limits.BENCH_IMAGES)
    check_int("cifar_images", cifar_images, 1, limits.BENCH_IMAGES)
    check_int("epochs", epochs, 1, limits.EPOCHS)
    digits = DatasetSpec("digits")
    plan = {
        "digits_tnn": (CONV_ARCHS["digits"], board_names, lambda f: _prepare_trained(
            f, CONV_ARCHS["digits"], "ternary", digits, epochs), None),
        "digits_bnn": (CONV_ARCHS["digits"], board_names, lambda f: _prepare_trained(
            f, CONV_ARCHS["digits"], "binary", digits, epochs), None),
        "cifar_shaped": (CONV_ARCHS["cifar_shaped"], [b for b in board_names if b == "ulx3s"],
                         lambda f: _prepare_random(f, CONV_ARCHS["cifar_shaped"], (3, 32, 32),
                                                   cifar_images), cifar_images),
    }
    if mnist is not None:
        images, labels = _mnist_files(mnist)
        spec = DatasetSpec("idx", images=images, labels=labels)
        plan["mnist_tnn"] = (CONV_ARCHS["mnist"], board_names, lambda f: _prepare_trained(
            f, CONV_ARCHS["mnist"], "ternary", spec, epochs), mnist_images)
    if networks is not None:
        unknown = sorted(set(networks) - set(plan))
        if unknown:
            raise NmflowError(f"networks must be from {', '.join(plan)}, not {unknown[0]!r}")
        plan = {name: value for name, value in plan.items() if name in networks}
    out = Path(out or run_dir / "bench.json")
    section = {"references": CONV_REFERENCES, "foldings": {
        board: dict(zip(("lanes", "pe", "first_layer_bits"), CONV_FOLDINGS[board]))
        for board in board_names}}
    for name, (arch, boards_of, prepare, images) in plan.items():
        if not boards_of:
            continue
        folder = run_dir / "conv" / name
        section[name] = _network(folder, name, arch, boards_of, lambda: prepare(folder),
                                 images, jobs, resume)
        write_section(out, "conv", section)
    return write_section(out, "conv", section)
