"""cocotb testbenches under Icarus (or SIM): unit blocks and the engine, exact against the models."""

from pathlib import Path

import numpy as np
import pytest

from nmflow.errors import NmflowError
from nmflow.golden import hwmodel
from nmflow.golden.reference import reference
from nmflow.golden.synthetic import random_inputs, random_model
from nmflow.sim import runner
from nmflow.sim.engine_sim import simulate_engine
from nmflow.sim.units import simulate_popcount, simulate_threshold


def test_popcount_lanes_hidden_layers(tmp_path):
    # 10,000 random rows of 32 GXNOR lanes plus the directed all -1/+1/0 and mixed rows.
    result = simulate_popcount(tmp_path, lanes=32, x_bits=2, rows=10000, seed=1)
    assert result.tests == 1 and result.failed == 0, result.log.read_text()[-3000:]


def test_popcount_lanes_first_layer_pixels(tmp_path):
    # The first layer multiplies unsigned 5-bit pixels by {-1, 0, +1}.
    result = simulate_popcount(tmp_path, lanes=16, x_bits=6, rows=3000, seed=2)
    assert result.passed, result.log.read_text()[-3000:]


def test_threshold_unit_at_and_around_thresholds(tmp_path):
    result = simulate_threshold(tmp_path, acc_bits=10, seed=3)
    assert result.passed, result.log.read_text()[-3000:]


def test_engine_with_backpressure(tmp_path):
    model = random_model([24, 20, 12, 6], input_bits=4, weight_kind="ternary", seed=4)
    hwmodel.save(model, tmp_path / "hw")
    inputs = random_inputs(model, 12, seed=5)
    summary = simulate_engine(tmp_path / "hw", inputs, tmp_path / "sim", lanes=8, ready=0.5,
                              waves=True)
    assert summary["passed"], Path(summary["log"]).read_text()[-3000:]
    waves = list((tmp_path / "sim").rglob("*.fst"))
    assert len(waves) == 1 and waves[0].stat().st_size > 1000
    with np.load(summary["outputs"]) as out:
        golden = reference(model, inputs)
        assert out["classes"].tolist() == golden.classes.tolist()
        assert out["scores"].tolist() == golden.scores.tolist()
        assert out["acts1"].tolist() == golden.acts[1].tolist()


def test_engine_testbench_catches_a_wrong_model(tmp_path):
    # The checker must fail when the design and the golden model disagree: simulate Verilog made
    # from one model while the testbench checks against another (one weight flipped).
    model = random_model([16, 8, 4], input_bits=4, weight_kind="ternary", seed=6)
    hwmodel.save(model, tmp_path / "good")
    from nmflow.sim.engine_sim import write_engine_verilog
    write_engine_verilog(model, tmp_path / "rtl", lanes=4)
    layers = list(model.layers)
    w = layers[0].weights.copy()
    w[0, :] = -w[0, :]
    layers[0] = hwmodel.Layer(w, layers[0].activation, t_hi=layers[0].t_hi, t_lo=layers[0].t_lo)
    bad = hwmodel.HardwareModel(model.input_bits, model.weight_kind, layers, model.score_frac_bits)
    hwmodel.save(bad, tmp_path / "bad")
    config = tmp_path / "rtl" / "engine.json"
    import json
    data = json.loads(config.read_text())
    data["model_sha256"] = hwmodel.checksum(bad.arrays())
    config.write_text(json.dumps(data))
    inputs = random_inputs(model, 8, seed=7)
    assert (reference(model, inputs).acts[0] != reference(bad, inputs).acts[0]).any()
    summary = simulate_engine(tmp_path / "bad", inputs, tmp_path / "sim",
                              verilog_dir=tmp_path / "rtl")
    assert summary["tests"] == 1 and summary["failed"] == 1


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
