"""``nmflow bench --table``: the README's benchmark tables rendered from bench.json and
sweep.json files this test writes."""

import json

from nmflow.scripts.cli import main

from helpers import error_line

BENCH = {
    "network": {"sizes": [64, 128, 128, 10], "weight_kind": "ternary", "int_accuracy": 0.975},
    "cycles": {"icebreaker": {"measured_interval_cycles": 417, "measured_latency_cycles": 506}},
    "boards": {"icebreaker": {
        "device": "iCE40UP5K", "lanes": 64, "pe": 4, "simd": 16, "first_layer_bits": 5,
        "cycles_per_inference": 417, "ideal_cycles": 408, "ratio_to_ideal": 1.0221,
        "logic_cells": 3955, "logic_cells_total": 5280, "block_rams": 29, "block_rams_total": 30,
        "sprams": 3, "dsps": 4, "fmax_mhz": 40.17, "run_clock_mhz": 36.75, "clock_margin": 1.093,
        "images_per_second_at_run_clock": 88129.5, "images_per_second_at_fmax": 96330.9,
        "images_per_second_at_oscillator": 28776.98, "synapse_ops_per_cell_cycle": 0.0154,
        "memory_bound": {"pair_codes_per_cycle": 240}, "batch": 256, "batch_memory": "spram",
        "seconds": 93.3}},
    "simulation": {
        "testbench_images": 360, "cycles_per_second": {"icarus": 22800.0, "verilator": 499000.0},
        "testbench_seconds": {"icarus": 25.9, "verilator": 1.2},
        "wall_seconds": {"icarus": 27.8, "verilator": 3.0},
        "compile_seconds": {"icarus": 1.9, "verilator": 0.4},
        "compile_cached": {"icarus": False, "verilator": True},
        "beat": {"cycles_per_second": {"verilator": 114600.0},
                 "testbench_seconds": {"verilator": 5.2}, "wall_seconds": {"verilator": 14.7},
                 "compile_seconds": {"verilator": 8.1}, "compile_cached": {"verilator": False}},
        "amaranth_cycles_per_second": 2100.0, "amaranth_seconds": 4.0, "images": 20},
}


def test_tables_carry_the_benchmarks_figures(tmp_path, capsys):
    (tmp_path / "bench.json").write_text(json.dumps(BENCH))
    assert main(["bench", "--table", "--run", str(tmp_path)]) in (None, 0)
    text = capsys.readouterr().out
    lines = text.splitlines()
    assert lines[0] == "Network: TNN 64-128-128-10 on digits, test accuracy 97.50 %."
    assert "| figure | iCEBreaker (iCE40UP5K) |" in lines
    assert "| back to back: cycles per inference (ideal `sum ceil(in/SIMD) * ceil(out/PE)`) " \
           "| 417 (408): 1.022 x |" in lines
    assert "| logic cells (LUT4 + FF on iCE40, LUT4 on ECP5) | 3,955 / 5,280 (75 %) |" in lines
    assert "| run clock (PLL; margin Fmax / clock) | 36.75 MHz (1.09) |" in lines
    assert "| images per second at the run clock | 88,130 |" in lines
    assert "| measured in cocotb: interval / latency of one inference (cycles) | 417 / 506 |" \
        in lines
    assert "| bulk | Verilator | 499,000 | 1.2 s | 3.0 s | 0.4 s (cached) |" in lines
    assert "| beat | Verilator | 114,600 | 5.2 s | 14.7 s | 8.1 s |" in lines
    assert not any("MNIST" in line or "limit" in line for line in lines)   # neither ran


def test_mnist_section_and_sweep_when_they_ran(tmp_path, capsys):
    bench = dict(BENCH, mnist_spram={
        "sizes": [784, 256, 256, 10], "lanes": 32, "pe": 1, "memory": "spram", "fits": True,
        "logic_cells": 3659, "logic_cells_total": 5280, "block_rams": 27, "sprams": 4, "dsps": 2,
        "fmax_mhz": 46.67, "run_clock_mhz": 38.25, "clock_margin": 1.22,
        "cycles_per_inference": 8567, "ideal_cycles": 8528,
        "images_per_second_at_run_clock": 4464.8, "int_accuracy": 0.9685,
        "float_accuracy": 0.9685, "test_images": 2000, "mismatches": 0,
        "outputs_checked": 1046000, "simulated_images": 2000, "simulation_seconds": 29.2,
        "simulation_jobs": 2, "simulation_cycles_per_second": 857000})
    sweep = {"boards": {"icebreaker": [
        {"lanes": 128, "pe": 4, "first_layer_bits": 5, "cycles_per_inference": 223,
         "ideal_cycles": 204, "refused": "logic", "limit": "logic"}]}}
    ulx3s = {"boards": {"ulx3s": [
        {"lanes": 512, "pe": 8, "first_layer_bits": 5, "cycles_per_inference": 80,
         "ideal_cycles": 52, "logic_cells": 17371, "logic_cells_total": 83640, "block_rams": 55,
         "dsps": 8, "fmax_mhz": 102.7, "run_clock_mhz": 87.5,
         "images_per_second_at_run_clock": 1093750.0, "synapse_ops_per_cell_cycle": 0.0178,
         "limit": "none"}]}}
    (tmp_path / "bench.json").write_text(json.dumps(bench))
    (tmp_path / "sweep.json").write_text(json.dumps(sweep))
    (tmp_path / "sweep_ulx3s.json").write_text(json.dumps(ulx3s))   # another board's, --out
    main(["bench", "--table", "--run", str(tmp_path)])
    lines = capsys.readouterr().out.splitlines()
    assert "| RTL against the golden model | 0 mismatches in 1,046,000 outputs (2,000 images) |" \
        in lines
    assert "| test accuracy: integer model = RTL (float) | 96.85 % (96.85 %) on 2,000 test " \
           "images |" in lines
    assert "| iCEBreaker | 128 x 4 (5) | 223 (204) | refused: logic | - | - | - | - | - | - " \
           "| logic |" in lines
    assert "| ULX3S | 512 x 8 (5) | 80 (52) | 17,371 / 83,640 (21 %) | 55 | 8 | 102.70 MHz " \
           "| 87.50 MHz | 1,093,750 | 0.0178 | none |" in lines


def test_a_missing_or_malformed_bench_file_is_one_line(tmp_path, capsys):
    line = error_line(capsys, ["bench", "--table", "--run", str(tmp_path)])
    assert line == (f"nmflow: error: bench.json not found at {str(tmp_path / 'bench.json')!r}: "
                    "run nmflow bench first")
    (tmp_path / "bench.json").write_text("{not json")
    line = error_line(capsys, ["bench", "--table", "--run", str(tmp_path)])
    assert line == (f"nmflow: error: bench.json must be a JSON file written by nmflow bench, not "
                    f"{str(tmp_path / 'bench.json')!r} (JSONDecodeError)")
    (tmp_path / "bench.json").write_text("[1, 2]")
    line = error_line(capsys, ["bench", "--table", "--run", str(tmp_path)])
    assert line.startswith("nmflow: error: bench.json must hold a JSON object, not a list")
    (tmp_path / "bench.json").write_text("{}")
    line = error_line(capsys, ["bench", "--table", "--run", str(tmp_path)])
    assert line == ("nmflow: error: bench.json must hold at least one of network, boards, "
                    "simulation, mnist_spram or conv, not none of them")
    (tmp_path / "bench.json").write_text(json.dumps(BENCH))
    (tmp_path / "sweep_x.json").write_text('{"points": []}')
    line = error_line(capsys, ["bench", "--table", "--run", str(tmp_path)])
    assert line == "nmflow: error: sweep_x.json must hold the boards of an nmflow bench --sweep, " \
                   "not ['points']"


def test_the_injector_row_says_when_it_does_not_fit(tmp_path, capsys):
    board = dict(BENCH["boards"]["icebreaker"], injector={
        "fits": False, "refused": "design does not fit", "logic_cells_needed": 11253})
    fitting = dict(BENCH["boards"]["icebreaker"], device="LFE5U-85F", injector={
        "fits": True, "logic_cells": 5000, "logic_cell_ratio": 1.264, "fmax_mhz": 38.5,
        "run_clock_mhz": 36.0})
    bench = dict(BENCH, boards={"icebreaker": board, "ulx3s": fitting})
    (tmp_path / "bench.json").write_text(json.dumps(bench))
    assert main(["bench", "--table", "--run", str(tmp_path)]) in (None, 0)
    row = next(line for line in capsys.readouterr().out.splitlines()
               if line.startswith("| with the read-error injector"))
    assert row == ("| with the read-error injector: logic cells, Fmax, run clock | does not fit: "
                   "needs 11,253 logic cells | 5,000 (x1.26), 38.50 MHz, 36.00 MHz |")


def test_the_conv_section_is_a_row_per_network_and_board(tmp_path, capsys):
    board = {"lanes": 16, "pe": 2, "simulated_images": 360, "mismatches": 0,
             "cycles_per_inference": 9792, "ideal_cycles": 9768, "fits": True,
             "logic_cells": 3014, "logic_cells_total": 5280, "block_rams": 15, "sprams": 3,
             "fmax_mhz": 39.0, "run_clock_mhz": 36.75, "images_per_second_at_run_clock": 3753.1}
    refused = {"lanes": 64, "pe": 4, "simulated_images": 100, "mismatches": 0,
               "cycles_per_inference": 5, "ideal_cycles": 4, "fits": False,
               "refused": "design does not fit"}
    conv = {"digits_tnn": {"arch": "c16k3p1-p2-f10", "accuracy": 0.9639,
                           "boards": {"icebreaker": board}},
            "cifar_shaped": {"arch": "c32k3-f10", "accuracy": None,
                             "boards": {"ulx3s": refused}}}
    (tmp_path / "bench.json").write_text(json.dumps({"conv": conv}))
    assert main(["bench", "--table", "--run", str(tmp_path)]) in (None, 0)
    rows = [line for line in capsys.readouterr().out.splitlines()
            if line.startswith("| digits") or line.startswith("| CIFAR")]
    assert rows == [
        "| digits TNN `c16k3p1-p2-f10` | iCEBreaker, 16 x 2 | 96.39 % | 360 (0) | 9,792 (9,768) "
        "| 3,014 / 5,280 (57 %) | 15 | 3 | 39.00 MHz | 36.75 MHz | 3,753 |",
        "| CIFAR-shaped BNN (random) `c32k3-f10` | ULX3S, 64 x 4 | - | 100 (0) | 5 (4) "
        "| does not fit: design does not fit | - | - | - | - | - |"]
