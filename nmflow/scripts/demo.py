"""``nmflow demo``: the whole flow on digits, ending in ``report.json`` and a summary table."""

import os
import sys
import time
from pathlib import Path

from ..errors import NmflowError
from ..fileio import write_json


def run_demo(run_dir, *, lanes=16, limit=None, board="icebreaker", arch=None):
    """The whole flow on digits: a TNN (and a BNN beside it) of 64-128-128-10, or of the layer
    string ``arch`` (convolutions allowed: :mod:`nmflow.golden.arch`), trained, exported,
    generated, simulated on the test images, compared and built for ``board``."""
    from rich.console import Console
    from rich.table import Table

    from ..flow import (DatasetSpec, build_step, compare_step, export_step, sim_step, train_step,
                        verilog_step)
    from ..golden.train import TrainConfig

    # Wide enough for the table when the output is a file or a CI log (no terminal width).
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 120)
    run_dir = Path(run_dir)
    started = time.monotonic()
    spec = DatasetSpec("digits")
    steps = {}

    def step(name, function, *args, **kwargs):
        t = time.monotonic()
        with console.status(f"[bold]{name}[/]"):
            result = function(*args, **kwargs)
        steps[name] = round(time.monotonic() - t, 1)
        console.print(f"[green]done[/] {name} ({steps[name]} s)")
        return result

    what = arch or "64-128-128-10"
    tnn = step(f"train TNN {what} on digits", train_step, run_dir, TrainConfig.tnn(arch=arch),
               spec)
    golden = step("export TNN to the integer hardware model", export_step, run_dir)
    bnn_dir = run_dir / "bnn"
    step(f"train BNN {what} on digits", train_step, bnn_dir, TrainConfig.bnn(arch=arch), spec)
    golden_bnn = step("export BNN to the integer hardware model", export_step, bnn_dir)
    rtl = step(f"generate the engine with Amaranth ({lanes} lanes)", verilog_step, run_dir,
               lanes=lanes)
    sim = step(f"simulate under cocotb/Icarus ({limit or golden['test_images']} test images)",
               sim_step, run_dir, limit=limit, lanes=lanes)
    compare = step("compare RTL with the golden model", compare_step, run_dir)
    build = step(f"build the {board} bitstream with Yosys and nextpnr", build_step, run_dir,
                 board=board, lanes=lanes)

    report = {
        "golden": {
            "dataset": golden["dataset"], "sizes": golden["sizes"], "arch": arch,
            "weight_kind": golden["weight_kind"],
            "float_accuracy": golden["float_accuracy"], "int_accuracy": golden["int_accuracy"],
            "agreement": golden["agreement"], "train_seconds": tnn["seconds"],
            "bnn": {key: golden_bnn[key] for key in ("float_accuracy", "int_accuracy",
                                                       "agreement")},
        },
        "rtl": {
            "images": compare["images"], "mismatches": compare["mismatches"],
            "outputs_checked": compare["outputs_checked"], "accuracy": compare.get("accuracy"),
            "cycles_per_inference": compare.get("cycles_per_inference"),
            "interval_cycles": compare.get("interval_cycles"),
            "ideal_cycles_per_inference": rtl["ideal_cycles_per_inference"],
            "lanes": rtl["lanes"], "weight_bits": rtl["weight_bits"],
            "simulator": os.environ.get("SIM", "icarus"), "sim_cycles_per_second": sim.get("sim_cycles_per_second"),
            "verilog": rtl["verilog"],
        },
        "build": {key: build[key] for key in ("board", "device", "bitstream", "logic_cells",
                                              "logic_cells_total", "block_rams",
                                              "block_rams_total", "dsps", "fmax_mhz",
                                              "run_clock_mhz", "clock_margin",
                                              "oscillator_mhz")},
        "steps_seconds": steps,
        "seconds": round(time.monotonic() - started, 1),
    }
    write_json(run_dir / "report.json", report)

    table = Table(title=f"nmflow demo: TNN {what} on digits, end to end")
    table.add_column("stage")
    table.add_column("figure")
    table.add_column("value", justify="right")
    g, r, b = report["golden"], report["rtl"], report["build"]
    table.add_row("golden", "TNN float / integer accuracy",
                  f"{g['float_accuracy']:.2%} / {g['int_accuracy']:.2%}")
    table.add_row("", "integer vs float agreement", f"{g['agreement']:.2%}")
    table.add_row("", "BNN float / integer accuracy",
                  f"{g['bnn']['float_accuracy']:.2%} / {g['bnn']['int_accuracy']:.2%}")
    table.add_row("rtl", "test images simulated", str(r["images"]))
    table.add_row("", "outputs compared (class, scores, activations)", str(r["outputs_checked"]))
    table.add_row("", "mismatches", str(r["mismatches"]))
    table.add_row("", "RTL accuracy", f"{r['accuracy']:.2%}" if r["accuracy"] is not None else "-")
    table.add_row("", "cycles per inference (ideal)",
                  f"{r['cycles_per_inference']:.0f} ({r['ideal_cycles_per_inference']})")
    if r["interval_cycles"] is not None:
        table.add_row("", "back to back: one inference every",
                      f"{r['interval_cycles']:.0f} cycles")
    table.add_row("build", f"{b['board']} ({b['device']}) logic cells",
                  f"{b['logic_cells']} / {b['logic_cells_total']}")
    table.add_row("", "block RAMs / DSPs", f"{b['block_rams']} / {b['dsps']}")
    table.add_row("", "Fmax (nextpnr)", f"{b['fmax_mhz']:.1f} MHz" if b["fmax_mhz"] else "-")
    table.add_row("", f"run clock (PLL from {b['oscillator_mhz']:g} MHz)"
                  if b["run_clock_mhz"] != b["oscillator_mhz"] else "run clock (oscillator)",
                  f"{b['run_clock_mhz']:g} MHz")
    if r["interval_cycles"]:
        table.add_row("", "images per second at the run clock",
                      f"{b['run_clock_mhz'] * 1e6 / r['interval_cycles']:,.0f}")
    table.add_row("", "bitstream", str(b["bitstream"]))
    console.print(table)
    console.print(f"report: {run_dir / 'report.json'} ({report['seconds']} s)")
    if r["mismatches"]:
        raise NmflowError(f"{r['mismatches']} RTL outputs differ from the golden model: see "
                          f"{run_dir / 'compare.json'}")
    return report
