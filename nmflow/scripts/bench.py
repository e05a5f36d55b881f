"""``nmflow bench``: the engine's figures as JSON.

Cycles per inference (measured in RTL simulation) against the ideal ``sum ceil(in/P) * out``; the
memory bound of each board (bits per cycle its block RAMs deliver); Fmax and logic cells from
nextpnr on iCE40UP5K and ECP5-85F; simulation speed (cocotb on Icarus and on Verilator over the
whole digits test set, and Amaranth's simulator);
images per second = Fmax (or the PLL run clock the build chose) / cycles per inference; the
logic cells and Fmax the read-error
injector costs (``injector``, a second build with ``--errors``, on the boards ``--injector-boards``
names, all by default; ``--no-injector`` skips it).
"""

import contextlib
import re
import os
import time
from pathlib import Path

from .. import limits
from ..errors import NmflowError, check_int
from ..fileio import write_json


def memory_bound(info, plan):
    bits_per_cycle = info.block_ram_bits_per_cycle
    return {
        "block_rams": info.block_rams, "block_ram_bits": info.block_ram_bits,
        "bits_per_cycle": bits_per_cycle, "pair_codes_per_cycle": bits_per_cycle // 2,
        "engine_pair_codes_per_cycle": plan.lanes,
        "engine_fraction_of_bound": round(plan.lanes / (bits_per_cycle // 2), 4),
        "weight_bits": plan.weight_bits,
        "weight_block_rams": info.block_rams_needed(plan.weight_rows, 2 * plan.lanes),
        "device_block_ram_bits": info.block_rams * info.block_ram_bits,
    }


@contextlib.contextmanager
def _simulator(name):
    """``SIM=name`` for the simulations run inside."""
    before = os.environ.get("SIM")
    os.environ["SIM"] = name
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("SIM", None)
        else:
            os.environ["SIM"] = before


def _figures(plan):
    """The cycle figures of a folding, from its plan."""
    return {
        "simd": plan.simd, "pe": plan.pe, "lanes": plan.lanes,
        "first_layer_bits": plan.first_layer_bits, "passes": plan.passes[0],
        "issue_cycles": plan.issue_cycles,
        "ideal_cycles": plan.ideal_cycles,
        "cycles_per_inference": plan.interval_cycles,
        "ratio_to_ideal": round(plan.interval_cycles / plan.ideal_cycles, 4),
        "latency_cycles": plan.cycles_per_inference,
        "breakdown": {"input_load": plan.n_inputs, "row_issue": plan.issue_cycles,
                      "layer_gaps": sum(plan.layer_gaps),
                      "last_drain": plan.drain_cycles[-1],
                      "result_beats": plan.n_classes},
    }


def synapse_ops(model):
    """Multiply-accumulates of one inference: ``sum(in * out)`` over the layers."""
    return sum(layer.n_in * layer.n_out for layer in model.layers)


def _simulation_speed(run_dir, rtl, sim_images):
    """Simulation speed: cocotb on Icarus and on Verilator, the whole digits test set each
    (``sim_images`` of it), with the bulk testbench (the testbench's own seconds and cycles per
    second, the wall time with compilation and that compilation, cached or not), and the beat
    testbench on Verilator beside it (``beat``)."""
    from ..flow import sim_step
    speed = {"testbench": "bulk", "cycles_per_second": {}, "testbench_seconds": {},
             "wall_seconds": {}, "compile_seconds": {}, "compile_cached": {}}
    for simulator, testbench in (("icarus", "bulk"), ("verilator", "bulk"),
                                 ("verilator", "beat")):
        with _simulator(simulator):
            run_sim = sim_step(run_dir, rtl=rtl,
                               out=run_dir / f"sim_{simulator}_{testbench}", limit=sim_images,
                               testbench=testbench)
        if not run_sim["passed"]:
            raise NmflowError(f"benchmark simulation ({simulator}, {testbench} testbench) "
                              f"disagrees with the golden model: {run_sim['log']}")
        figures = speed if testbench == "bulk" else speed.setdefault("beat", {
            "cycles_per_second": {}, "testbench_seconds": {}, "wall_seconds": {},
            "compile_seconds": {}, "compile_cached": {}})
        figures["cycles_per_second"][simulator] = run_sim.get("testbench_cycles_per_second")
        figures["testbench_seconds"][simulator] = run_sim.get("testbench_seconds")
        figures["wall_seconds"][simulator] = run_sim["seconds"]
        figures["compile_seconds"][simulator] = run_sim.get("compile_seconds")
        figures["compile_cached"][simulator] = run_sim.get("compile_cached")
        speed["testbench_images"] = run_sim["images"]
    return speed


def _merge_write(out, result, keep=("mnist_spram", "conv")):
    """Write ``result`` to ``out`` atomically, keeping the sections ``keep`` of the file there
    (``nmflow bench --mnist`` adds its section to the main benchmark's file)."""
    import json
    try:
        before = json.loads(out.read_text())
    except (OSError, ValueError):
        before = {}
    if isinstance(before, dict):
        result = dict(result, **{key: before[key] for key in keep
                                 if key in before and key not in result})
    write_json(out, result)
    return result


def run_bench(run_dir, *, lanes=None, pe=None, first_layer_bits=None, images=20,
              boards="icebreaker,ulx3s", out=None, injector=True, sim_images=None, resume=False,
              clock="auto"):
    """The benchmark (see the module): ``bench.json`` is written after each section (cycles,
    simulation speed, each board), so an interrupted run leaves what it measured; with
    ``resume``, a board build already in its folder from the same inputs is taken as it is.
    ``injector`` is True (the injector's second build on every board), False (none) or the
    boards to build it on. ``clock`` is the builds' run clock (``nmflow build --clock``: the
    automatic clock by default, ``"board"`` for the board's oscillator, one place and route)."""
    from ..boards.build import DoesNotFit, get_board
    from ..flow import (DatasetSpec, build_step, export_step, load_dataset, sim_step, train_step,
                        verilog_step)
    from ..golden import hwmodel
    from ..golden.train import TrainConfig
    from ..golden.plan import EnginePlan
    from ..rtl.engine import InferenceEngine
    from ..sim.pysim import run_engine

    run_dir = Path(run_dir)
    board_names = [name.strip() for name in str(boards).split(",") if name.strip()]
    if not board_names:
        from ..boards.catalog import BOARDS
        raise NmflowError(f"boards must name one or more boards from {', '.join(BOARDS)}, "
                          f"not {boards!r}")
    infos = [get_board(name) for name in board_names]
    check_int("images", images, 1, limits.BENCH_IMAGES)
    if sim_images is not None:
        check_int("sim_images", sim_images, 1, limits.BENCH_IMAGES)
    if lanes is None and pe is not None:
        lanes = max(16, pe * pe)
    given = lanes is not None or first_layer_bits is not None
    folding = {info.name: (lanes if lanes is not None else info.engine_folding[0],
                           pe if pe is not None else (1 if given else info.engine_folding[1]),
                           first_layer_bits if given else info.engine_folding[2])
               for info in infos}
    result = {"network": None, "folding": {
        name: {"lanes": f[0], "pe": f[1], "first_layer_bits": f[2]}
        for name, f in folding.items()}}

    train_step(run_dir, TrainConfig.tnn(), DatasetSpec("digits"))
    golden = export_step(run_dir)
    model = hwmodel.load(run_dir / "hwmodel")
    result["network"] = {"sizes": model.sizes, "weight_kind": model.weight_kind,
                         "int_accuracy": golden["int_accuracy"]}
    plans = {}
    for name, (board_lanes, board_pe, bits) in folding.items():
        try:                                # the figures, without building the engine
            plans[name] = EnginePlan(model, board_lanes, pe=board_pe, first_layer_bits=bits)
        except ValueError as error:
            raise NmflowError(str(error)) from None

    # Cycles: cocotb + Icarus on real test images, at each board's folding: the measured
    # latency of the first inference and the interval between back-to-back starts.
    result["cycles"] = {}
    def tag(plan):
        return f"{plan.lanes}x{plan.pe}d{plan.first_layer_bits}"
    for name, plan in plans.items():
        rtl = run_dir / f"rtl_{tag(plan)}"
        verilog_step(run_dir, lanes=plan.lanes, pe=plan.pe,
                     first_layer_bits=plan.first_layer_bits, out=rtl)
        sim = sim_step(run_dir, limit=images, rtl=rtl, out=run_dir / f"sim_{tag(plan)}")
        if not sim["passed"]:
            raise NmflowError(f"benchmark simulation disagrees with the golden model: "
                              f"{sim['log']}")
        result["cycles"][name] = dict(_figures(plan), **{
            "measured_latency_cycles": sim["cycles_per_inference"],
            "measured_interval_cycles": sim["interval_cycles"],
        })
    out = Path(out or run_dir / "bench.json")
    _merge_write(out, result)
    first = plans[infos[0].name]

    # Simulation speed under cocotb, and Amaranth's simulator on the benchmark images.
    speed = _simulation_speed(run_dir, run_dir / f"rtl_{tag(first)}", sim_images)
    test_set = len(load_dataset(DatasetSpec("digits")).x_test)
    if speed["testbench_images"] == test_set:
        speed["test_set_seconds"] = dict(speed["testbench_seconds"])
    x = load_dataset(DatasetSpec("digits")).x_test[:images]
    start = time.monotonic()
    run = run_engine(InferenceEngine(model, lanes=first.lanes, pe=first.pe,
                                     first_layer_bits=first.first_layer_bits), x)
    pysim_seconds = time.monotonic() - start
    result["simulation"] = dict(speed, **{
        "images": images, "lanes": first.lanes, "pe": first.pe,
        "first_layer_bits": first.first_layer_bits,
        "amaranth_cycles_per_second": round(int(run.cycles.sum()) / pysim_seconds, 1),
        "amaranth_seconds": round(pysim_seconds, 2),
    })
    _merge_write(out, result)

    errors = None
    if injector:
        from ..golden.device import printed_rates
        from ..golden.injector import ErrorInjection
        from ..golden.readerrors import ErrorRates
        rates = printed_rates("1us")                    # Table 4.2, 1 us pulses, without type 1
        errors = ErrorInjection(ErrorRates(0.0, rates["type2"], rates["type3"]))
    result["boards"] = {}
    for info in infos:
        plan = plans[info.name]
        entry = {"device": info.device, "memory_bound": memory_bound(info, plan)}
        entry.update(_figures(plan))
        build = build_step(run_dir, board=info.name, lanes=plan.lanes, pe=plan.pe,
                           first_layer_bits=plan.first_layer_bits, reuse=resume, clock=clock)
        entry.update({key: build[key] for key in ("logic_cells", "logic_cells_total",
                                                  "block_rams", "block_rams_total", "dsps",
                                                  "fmax_mhz", "run_clock_mhz", "clock_margin",
                                                  "oscillator_mhz", "seconds", "batch",
                                                  "batch_memory")})
        entry["sprams"] = build["utilisation"].get("ICESTORM_SPRAM", {}).get("used", 0)
        entry["logic_cell_fraction"] = round(build["logic_cells"] / build["logic_cells_total"], 4)
        # Back to back, one inference starts every ``interval_cycles`` (the next one's inputs
        # load while the current one computes).
        interval = plan.interval_cycles
        if build["fmax_mhz"]:
            entry["images_per_second_at_fmax"] = round(build["fmax_mhz"] * 1e6 / interval, 1)
        entry["images_per_second_at_run_clock"] = round(build["run_clock_mhz"] * 1e6 / interval,
                                                        1)
        entry["images_per_second_at_oscillator"] = round(build["oscillator_mhz"] * 1e6
                                                         / interval, 1)
        entry["synapse_ops_per_cell_cycle"] = round(
            synapse_ops(model) / interval / build["logic_cells"], 4)
        if errors is not None and (injector is True or info.name in injector):
            # The cost of the read-error injector (rates settable through the host link).
            try:
                with_errors = build_step(run_dir, board=info.name, lanes=plan.lanes, pe=plan.pe,
                                         first_layer_bits=plan.first_layer_bits, errors=errors,
                                         out=run_dir / f"{info.name}_errors", reuse=resume,
                                         clock=clock)
            except DoesNotFit as error:     # at this folding the injector's lanes do not fit
                entry["injector"] = {"fits": False, "refused": str(error),
                                     "logic_cells_needed": (error.needs.get(
                                         info.logic_cell_type, (None, None))[0])}
                result["boards"][info.name] = entry
                result = _merge_write(out, result)
                continue
            entry["injector"] = {"fits": True,
                "logic_cells": with_errors["logic_cells"], "fmax_mhz": with_errors["fmax_mhz"],
                "run_clock_mhz": with_errors["run_clock_mhz"],
                "block_rams": with_errors["block_rams"],
                "logic_cells_added": with_errors["logic_cells"] - build["logic_cells"],
                "logic_cell_ratio": round(with_errors["logic_cells"] / build["logic_cells"], 4),
            }
            if build["fmax_mhz"] and with_errors["fmax_mhz"]:
                entry["injector"]["fmax_ratio"] = round(with_errors["fmax_mhz"]
                                                        / build["fmax_mhz"], 4)
        result["boards"][info.name] = entry
        result = _merge_write(out, result)
    return result


# -- the SIMD x PE sweep ------------------------------------------------------------------------------

#: The foldings ``nmflow bench --sweep`` builds by default on each board: ``(lanes, pe,
#: first_layer_bits)``, from one neuron of 16 parallel lanes up past what the part holds.
SWEEP_POINTS = {
    "icebreaker": ((16, 1, None), (32, 2, None), (64, 4, None), (64, 4, 1), (128, 4, 1),
                   (128, 4, 2), (128, 8, 1), (256, 8, 1)),
    "ulx3s": ((16, 1, None), (64, 4, None), (256, 8, None), (512, 8, None), (1024, 16, None),
              (1024, 16, 1)),
}


def parse_points(text):
    """Foldings from ``LANESxPE[dBITS],...`` (``128x4d1``: 128 lanes, 4 neurons, a bit-serial
    first layer); one NmflowError line for a malformed one."""
    from ..golden.plan import check_lanes, check_pe
    points = []
    for part in str(text).split(","):
        match = re.fullmatch(r"\s*(\d+)x(\d+)(?:d(\d+))?\s*", part)
        if not match:
            raise NmflowError(f"sweep points must be LANESxPE or LANESxPEdBITS, comma-separated "
                              f"(such as 64x4,128x4d1), not {part.strip()!r}")
        lanes, pe, bits = (None if v is None else int(v) for v in match.groups())
        check_lanes(lanes)
        check_pe(pe, lanes)
        points.append((lanes, pe, bits))
    return tuple(points)


def _limit(info, plan, entry, first_mhz):
    """The resource that stops a folding going further: ``logic`` (over 85 % of the logic
    cells, or not placed), ``memory`` (block RAMs or their ports), ``timing`` (Fmax under the
    board's first engine clock) or ``none``."""
    if entry.get("refused") == "logic" or entry.get("logic_cell_fraction", 0) > 0.85:
        return "logic"
    if entry.get("refused") == "memory" or plan.lanes * 2 > info.block_ram_bits_per_cycle:
        return "memory"
    if entry.get("fmax_mhz") is not None and entry["fmax_mhz"] < first_mhz:
        return "timing"
    return "none"


def _sweep_point(shared, board, lanes, pe, bits):
    """One point of the sweep (a job of :func:`nmflow.jobs.run_jobs`): the build of the
    folding ``(lanes, pe, bits)`` on ``board`` and its figures."""
    from ..boards.build import DoesNotFit, get_board
    from ..flow import build_step
    from ..golden import hwmodel
    from ..golden.plan import EnginePlan

    run_dir = Path(shared["run_dir"])
    info = get_board(board)
    model = hwmodel.load(run_dir / "hwmodel")
    plan = EnginePlan(model, lanes, pe=pe, first_layer_bits=bits)
    entry = _figures(plan)
    del entry["breakdown"]
    tag = f"{lanes}x{pe}d{plan.first_layer_bits}"
    try:
        build = build_step(run_dir, board=board, lanes=lanes, pe=pe, first_layer_bits=bits,
                           out=run_dir / f"sweep_{board}_{tag}", reuse=shared["resume"])
    except DoesNotFit as error:
        entry["refused"] = "memory" if error.block_rams is not None else "logic"
        entry["error"] = str(error)
    except NmflowError as error:
        entry["refused"] = "memory" if "block RAM" in str(error) else "other"
        entry["error"] = str(error)
    else:
        entry.update({key: build[key] for key in (
            "logic_cells", "logic_cells_total", "block_rams", "block_rams_total", "dsps",
            "fmax_mhz", "run_clock_mhz")})
        entry["logic_cell_fraction"] = round(build["logic_cells"] / build["logic_cells_total"], 4)
        entry["images_per_second_at_run_clock"] = round(
            build["run_clock_mhz"] * 1e6 / plan.interval_cycles, 1)
        entry["synapse_ops_per_cell_cycle"] = round(
            synapse_ops(model) / plan.interval_cycles / build["logic_cells"], 4)
    entry["limit"] = _limit(info, plan, entry, info.first_clock_mhz("engine"))
    return entry


def run_sweep(run_dir, *, boards="icebreaker,ulx3s", points=None, out=None, plot=None,
              progress=None, resume=False, workers=1, cluster=None):
    """Build the default digits TNN at each folding on each board: cycles (the plan's, which
    the tests hold the RTL to), logic, block RAMs, DSPs, Fmax, run clock, images per second and
    the limit each point hits; write ``sweep.json`` and a plot. A point that does not fit is
    recorded with what overflowed, not an error. The points are jobs of
    :func:`nmflow.jobs.run_jobs` (``workers`` local builds at a time, or the Dask cluster
    ``cluster``, whose workers must share ``run_dir``'s file system), each written to
    ``RUN/.sweep_jobs`` as it finishes; with ``resume``, the points done are kept and a point
    whose build is already in its folder, made from the same inputs, is taken as it is."""
    from ..boards.build import get_board
    from ..flow import DatasetSpec, export_step, train_step
    from ..jobs import Job, run_jobs
    from ..golden import hwmodel
    from ..golden.train import TrainConfig

    run_dir = Path(run_dir)
    infos = [get_board(name.strip()) for name in str(boards).split(",") if name.strip()]
    if not (run_dir / "hwmodel.json").is_file():
        train_step(run_dir, TrainConfig.tnn(), DatasetSpec("digits"))
        export_step(run_dir)
    model = hwmodel.load(run_dir / "hwmodel")
    result = {"network": {"sizes": model.sizes, "weight_kind": model.weight_kind,
                          "synapse_ops": synapse_ops(model)}, "boards": {}}
    out = Path(out or run_dir / "sweep.json")
    jobs = [Job((info.name, lanes, pe, bits), _sweep_point, (info.name, lanes, pe, bits))
            for info in infos
            for lanes, pe, bits in (points or SWEEP_POINTS.get(info.name, SWEEP_POINTS["ulx3s"]))]
    entries = run_jobs(jobs, folder=run_dir / ".sweep_jobs",
                       shared={"run_dir": str(run_dir.resolve()), "resume": resume},
                       workers=workers, cluster=cluster, resume=resume, progress=progress,
                       what="sweep points")
    for job in jobs:
        result["boards"].setdefault(job.key[0], []).append(entries[job.key])
    write_json(out, result)
    _plot_sweep(result, Path(plot) if plot else out.with_suffix(".png"))
    return result


def _plot_sweep(result, path):
    """Images per second against logic cells, one point per folding, labelled."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from ..fileio import staged_outputs

    boards = result["boards"]
    fig, axes = plt.subplots(1, len(boards), figsize=(6 * len(boards), 4.5), squeeze=False)
    for ax, (name, rows) in zip(axes[0], boards.items()):
        for row in rows:
            label = f"{row['simd']}x{row['pe']}" + (
                f" d{row['first_layer_bits']}" if row["passes"] > 1 else "")
            if "logic_cells" in row:
                ax.scatter(row["logic_cells"], row["images_per_second_at_run_clock"],
                           color="C0" if row["limit"] == "none" else "C3")
                ax.annotate(label, (row["logic_cells"], row["images_per_second_at_run_clock"]),
                            fontsize=8, xytext=(3, 3), textcoords="offset points")
        built = [row for row in rows if "logic_cells" in row]
        if built:
            ax.axvline(built[0]["logic_cells_total"] * 0.85, color="grey", linestyle=":",
                       label="85 % of the logic cells")
        ax.set_xlabel("logic cells (LUTs)")
        ax.set_ylabel("images per second at the run clock")
        ax.set_title(f"{name}: SIMD x PE (red: a limit reached)")
        ax.legend(loc="lower right", fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    with staged_outputs() as outputs:
        fig.savefig(outputs.file(path), dpi=120)
    plt.close(fig)


# -- the MNIST-size network on the iCEBreaker, from SPRAM -------------------------------------------

#: IDX file names ``nmflow bench --mnist DIR`` looks for, gzipped or raw (the test set first).
MNIST_FILES = (("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
               ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"))


def _mnist_files(folder):
    """``(images, labels)`` of the first MNIST pair found in ``folder``; one line if none is."""
    folder = Path(folder)
    for images, labels in MNIST_FILES:
        for suffix in (".gz", ""):
            pair = folder / (images + suffix), folder / (labels + suffix)
            if pair[0].is_file() and pair[1].is_file():
                return tuple(str(p) for p in pair)
    names = ", ".join(f"{i}[.gz] and {lb}[.gz]" for i, lb in MNIST_FILES)
    raise NmflowError(f"mnist folder {str(folder)!r} must hold {names}")


def run_mnist(run_dir, mnist_dir, *, board="icebreaker", lanes=32, hidden=(256, 256),
              epochs=30, images=2000, jobs="auto", out=None, resume=False):
    """The ``mnist_spram`` section of ``bench.json``: a TNN ``784-hidden-10`` trained on 80 % of
    the MNIST IDX files in ``mnist_dir`` (stratified split) and tested on the rest, built for
    ``board`` with its weights where they fit (``--memory auto``: the iCE40UP5K's SPRAMs for the
    MNIST-size network), its RTL (weights in SPRAM, loaded by the testbench) simulated under
    Verilator on ``images`` test images over ``jobs`` processes and compared with the golden
    model. A network that does not fit is recorded (``fits`` false, the reason), not an error.
    The section is merged into ``out`` (``RUN/bench.json``), keeping its other sections. With
    ``resume``, the build already in its folder from the same inputs is taken as it is."""

    from ..boards.build import DoesNotFit
    from ..flow import (DatasetSpec, build_step, compare_step, export_step, sim_step, train_step,
                        verilog_step)
    from ..golden import hwmodel
    from ..golden.plan import EnginePlan
    from ..golden.train import TrainConfig

    check_int("images", images, 1, limits.BENCH_IMAGES)
    image_file, label_file = _mnist_files(mnist_dir)
    run_dir = Path(run_dir)
    spec = DatasetSpec("idx", images=image_file, labels=label_file)
    start = time.monotonic()
    train_step(run_dir, TrainConfig.tnn(hidden=tuple(hidden), epochs=epochs), spec)
    golden = export_step(run_dir)
    model = hwmodel.load(run_dir / "hwmodel")
    plan = EnginePlan(model, lanes)
    section = {"board": board, "sizes": model.sizes, "lanes": lanes, "pe": 1,
               "test_images": golden["test_images"], "float_accuracy": golden["float_accuracy"],
               "int_accuracy": golden["int_accuracy"], "ideal_cycles": plan.ideal_cycles,
               "cycles_per_inference": plan.interval_cycles,
               "train_seconds": round(time.monotonic() - start, 1)}
    try:
        build = build_step(run_dir, board=board, lanes=lanes, reuse=resume)
    except (DoesNotFit, NmflowError) as error:
        section.update({"fits": False, "refused": str(error), "fmax_mhz": None,
                        "run_clock_mhz": None, "images_per_second_at_run_clock": None})
        memory = "spram"
    else:
        memory = build["memory"]
        section.update({
            "fits": True, "memory": memory, "sprams": build.get("weight_sprams", 0),
            "logic_cells": build["logic_cells"], "logic_cells_total": build["logic_cells_total"],
            "block_rams": build["block_rams"], "dsps": build["dsps"],
            "fmax_mhz": build["fmax_mhz"], "run_clock_mhz": build["run_clock_mhz"],
            "clock_margin": build["clock_margin"], "build_seconds": build["seconds"],
            "images_per_second_at_run_clock": round(
                build["run_clock_mhz"] * 1e6 / plan.interval_cycles, 1)})
    verilog_step(run_dir, lanes=lanes, memory=memory, out=run_dir / "rtl")
    with _simulator("verilator"):
        sim = sim_step(run_dir, limit=images, jobs=jobs)
    compared = compare_step(run_dir)
    section.update({
        "simulated_images": compared["images"], "outputs_checked": compared["outputs_checked"],
        "mismatches": compared["mismatches"], "accuracy": compared.get("accuracy"),
        "simulation_seconds": sim["seconds"], "simulation_jobs": sim.get("jobs", 1),
        "simulation_cycles_per_second": sim.get("sim_cycles_per_second"),
        "measured_interval_cycles": compared.get("interval_cycles")})
    return write_section(Path(out or run_dir / "bench.json"), "mnist_spram", section)


def write_section(out, name, section):
    """Put ``section`` under ``name`` into the JSON file ``out`` (atomically), keeping the
    file's other sections; return the whole file's dict."""
    import json
    try:
        result = json.loads(out.read_text())
    except (OSError, ValueError):
        result = {}
    if not isinstance(result, dict):
        result = {}
    result[name] = section
    write_json(out, result)
    return result
