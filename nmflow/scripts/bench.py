"""``nmflow bench``: the engine's figures as JSON.

Cycles per inference (measured in RTL simulation) against the ideal ``sum ceil(in/P) * out``; the
memory bound of each board (bits per cycle its block RAMs deliver); Fmax and logic cells from
nextpnr on iCE40UP5K and ECP5-85F; simulation speed (cocotb on Icarus and on Verilator over the
whole digits test set, and Amaranth's simulator);
images per second = Fmax (or the PLL run clock the build chose) / cycles per inference; the
logic cells and Fmax the read-error
injector costs (``injector``, a second build with ``--errors``; ``--no-injector`` skips it).
"""

import contextlib
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
                      "pipeline_drain": sum(plan.drain_cycles),
                      "result_beats": plan.n_classes},
    }


def synapse_ops(model):
    """Multiply-accumulates of one inference: ``sum(in * out)`` over the layers."""
    return sum(layer.n_in * layer.n_out for layer in model.layers)


def run_bench(run_dir, *, lanes=None, pe=None, first_layer_bits=None, images=20,
              boards="icebreaker,ulx3s", out=None, injector=True, sim_images=None):
    from ..boards.build import get_board
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
    first = plans[infos[0].name]

    # Simulation speed: cocotb on Icarus and on Verilator, the whole digits test set each (the
    # testbench's own seconds and cycles per second, and the wall time with compilation), and
    # Amaranth's simulator on the benchmark images.
    speed = {"cycles_per_second": {}, "testbench_seconds": {}, "wall_seconds": {}}
    for simulator in ("icarus", "verilator"):
        with _simulator(simulator):
            run_sim = sim_step(run_dir, rtl=run_dir / f"rtl_{tag(first)}",
                               out=run_dir / f"sim_{simulator}", limit=sim_images)
        if not run_sim["passed"]:
            raise NmflowError(f"benchmark simulation ({simulator}) disagrees with the golden "
                              f"model: {run_sim['log']}")
        speed["cycles_per_second"][simulator] = run_sim.get("testbench_cycles_per_second")
        speed["testbench_seconds"][simulator] = run_sim.get("testbench_seconds")
        speed["wall_seconds"][simulator] = run_sim["seconds"]
        speed["testbench_images"] = run_sim["images"]
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
                           first_layer_bits=plan.first_layer_bits)
        entry.update({key: build[key] for key in ("logic_cells", "logic_cells_total",
                                                  "block_rams", "block_rams_total", "dsps",
                                                  "fmax_mhz", "run_clock_mhz", "clock_margin",
                                                  "oscillator_mhz", "seconds")})
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
        if errors is not None:
            # The cost of the read-error injector (rates settable through the host link).
            with_errors = build_step(run_dir, board=info.name, lanes=plan.lanes, pe=plan.pe,
                                     first_layer_bits=plan.first_layer_bits, errors=errors,
                                     out=run_dir / f"{info.name}_errors")
            entry["injector"] = {
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

    write_json(Path(out or run_dir / "bench.json"), result)
    return result
