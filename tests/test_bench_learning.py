"""``nmflow bench --learning`` (nmflow/scripts/bench_learning.py): the cycles it measures in
simulation against the units' schedules and their twins, the link's bound from the frame format,
the CPU twins' rates, the section it writes from its builds, and its refusals. The builds
themselves (place and route of the EqProp unit and of the engine with the metaplastic unit) are
tested by the build tests; here they are stood in for, so that the section's arithmetic is
checked in seconds."""

import json

import numpy as np
import pytest

from nmflow.errors import NmflowError
from nmflow.golden.plan import EnginePlan
from nmflow.protocol.framing import BAUD
from nmflow.rtl.metaplastic import MetaplasticUnit
from nmflow.scripts import bench_learning as bl
from nmflow.sim.metaplastic_sim import binary_model

from helpers import error_line


def test_the_unit_takes_its_schedule_and_predicts_as_its_twin():
    config = bl.learning_config((8,), T=4, K=2)
    cycles = bl.unit_cycles(config, 8)
    assert cycles["predictions_equal_twin"] is True
    # multiply-accumulates of a step over 8 lanes: 8 hidden neurons of 64 + 10 inputs, 10
    # outputs of 8
    assert cycles["ideal_cycles_per_step"] == (8 * (64 + 10) + 10 * 8) / 8
    assert cycles["cycles_per_step"] == cycles["planned_cycles_per_step"]
    assert cycles["cycles_per_step"] < cycles["cycles_per_nudged_step"]    # the nudge's reads
    assert cycles["ratio_to_ideal"] == round(cycles["cycles_per_step"] / 84, 4)
    settle = config.T * cycles["cycles_per_step"] + 2 * config.K * cycles["cycles_per_nudged_step"]
    # a sample: its 8 input beats, the three phases, the update, a few cycles between them
    assert settle + cycles["update_cycles"] <= cycles["cycles_per_sample"] <= (
        settle + cycles["update_cycles"] + 64 // 8 + 24)


def test_the_metaplastic_unit_updates_a_group_a_cycle():
    model, _ = binary_model((64, 32, 10), seed=1)
    plan = EnginePlan(model, 16)
    for storage in ("spram", "memory"):
        meta = bl.meta_cycles(plan, 10.0, storage)
        groups = (32 * 64 + 10 * 32) // 2           # every synapse (no padding at 16 lanes), 2 a beat
        assert (meta["lanes"], meta["synapses"], meta["ideal_cycles_per_step"]) == (
            2, 2 * groups, groups)
        # one beat a cycle, plus the input register, the pipeline's latency and the FIFO
        assert groups < meta["cycles_per_step"] <= groups + MetaplasticUnit.latency + 2
        assert meta["ratio_to_ideal"] == round(meta["cycles_per_step"] / groups, 4)


def test_the_link_bound_is_the_uart_carrying_a_train_frame_and_its_reply():
    config = bl.learning_config((8,))
    # A5 CMD LEN LEN | 64 inputs + label | CRC, and the reply A5 CMD LEN LEN | label | CRC
    assert bl.link_bound(config, 115_200) == round(115_200 / (10 * (5 + 65 + 5 + 1)), 1)


def test_the_twins_rates_are_measured():
    rates = bl.twin_rates(bl.learning_config((8,), T=3, K=1), samples=5, repeats=1)
    assert rates["cpu_samples"] == 5
    assert rates["fixed_twin_cpu"] > 0 and rates["float_twin_cpu"] > 0


def test_the_section_from_the_builds(tmp_path, monkeypatch):
    # The builds stood in for by their summaries; what the section computes from them is
    # checked: samples per second at the run clock, the ratios to the CPU twins, the SPRAMs.
    import nmflow.flow as flow
    import nmflow.flow.eqprop as flow_eqprop
    from nmflow.golden import hwmodel
    model, _ = binary_model((64, 16, 10), seed=3)
    built = []

    def summary(board, mhz, cells):
        return {"logic_cells": cells, "logic_cells_total": 5280, "block_rams": 20,
                "block_rams_total": 30, "dsps": 3, "fmax_mhz": mhz * 1.1, "run_clock_mhz": mhz,
                "clock_margin": 1.1, "oscillator_mhz": 12.0,
                "utilisation": {"ICESTORM_SPRAM": {"used": 4}}}

    def fake_unit(out, config, lanes, info, **kwargs):
        built.append(("eqprop", info.name, lanes, kwargs["clock"]))
        return summary(info.name, 20.0, 4000)

    def fake_step(run_dir, **kwargs):
        built.append(("metaplastic", kwargs["board"], kwargs["lanes"], kwargs["clock"]))
        return summary(kwargs["board"], 30.0, 5000)

    monkeypatch.setattr(flow_eqprop, "build_unit", fake_unit)
    monkeypatch.setattr(flow, "build_step", fake_step)
    monkeypatch.setattr(flow, "train_step", lambda *a, **k: None)
    monkeypatch.setattr(flow, "export_step", lambda *a, **k: None)
    monkeypatch.setattr(hwmodel, "load", lambda path: model)
    monkeypatch.setattr(bl, "twin_rates", lambda config, samples: {
        "fixed_twin_cpu": 400.0, "float_twin_cpu": 200.0, "cpu_samples": samples})
    out = tmp_path / "bench.json"
    out.write_text(json.dumps({"boards": {"kept": 1}}))
    section = bl.run_learning(tmp_path / "run", boards="icebreaker", hidden=(8,), T=4, K=2,
                              cpu_samples=7, out=out, clock="board", progress=lambda text: None)
    assert built == [("eqprop", "icebreaker", 4, "board"),
                     ("metaplastic", "icebreaker", 16, "board")]
    saved = json.loads(out.read_text())
    assert saved["boards"] == {"kept": 1} and saved["learning"] == section
    eq, meta = section["icebreaker"]["eqprop"], section["icebreaker"]["metaplastic"]
    assert (eq["lanes"], eq["logic_cells"], eq["sprams"], eq["run_clock_mhz"]) == (4, 4000, 4,
                                                                                  20.0)
    assert eq["samples_per_second_at_run_clock"] == round(20e6 / eq["cycles_per_sample"], 1)
    assert meta["fits"] and meta["storage"] == "spram" and meta["logic_cells"] == 5000
    assert meta["synapse_updates_per_second_at_run_clock"] == round(
        30e6 * meta["synapses"] / meta["cycles_per_step"], 1)
    rates = section["samples_per_second"]
    assert rates["board"] == eq["samples_per_second_at_run_clock"]
    assert rates["board_over_fixed_twin"] == round(rates["board"] / 400.0, 2)
    assert rates["board_over_float_twin"] == round(rates["board"] / 200.0, 2)
    assert rates["cpu_samples"] == 7 and rates["link_baud"] == BAUD
    assert rates["link_bound"] == round(BAUD / (10 * (5 + 65 + 5 + 1)), 1)
    assert section["network"]["sizes"] == [64, 8, 10]


@pytest.mark.parametrize("argv, words", [
    (["--learning-lanes", "3"], "lanes must be a power of two from 1 to 64, not 3"),
    (["--learning-lanes", "16", "--boards", "icebreaker"],
     # 16 code banks, 16 hidden-weight banks (16 single-port RAMs would be too many), 16 state
     # banks and the biases, one block RAM each
     "network 64-32-10 with 16 lanes needs 49 block RAMs"),
])
def test_bench_learning_refuses_in_one_line(capsys, tmp_path, argv, words):
    line = error_line(capsys, ["bench", "--learning", "--run", str(tmp_path / "run"), *argv])
    assert line.startswith("nmflow: error: ") and words in line, line
    assert not (tmp_path / "run" / "bench.json").exists()


def test_learning_config_is_the_digits_network_with_binary_metaplastic_weights():
    config = bl.learning_config((32,))
    assert config.sizes == (64, 32, 10) and config.weights == "binary"
    assert (config.m, config.decay_shift, config.batch) == (10.0, 10, 1)
    with pytest.raises(NmflowError):
        bl.learning_config((32,), m=-1)
    assert np.isclose(bl._float_config(config).decay, 2.0 ** -10)


def test_a_unit_that_does_not_fit_is_recorded_not_fatal(tmp_path, monkeypatch):
    # The EqProp build refused by place and route: the section says so, the board's rate is
    # null, the metaplastic build still runs.
    import nmflow.flow as flow
    import nmflow.flow.eqprop as flow_eqprop
    from nmflow.boards.build import DoesNotFit
    from nmflow.golden import hwmodel
    model, _ = binary_model((64, 16, 10), seed=3)

    def refuse(out, config, lanes, info, **kwargs):
        raise DoesNotFit("design does not fit icebreaker (iCE40UP5K): needs 6669 logic cells",
                         board=info, needs={"ICESTORM_LC": (6669, 5280)})

    monkeypatch.setattr(flow_eqprop, "build_unit", refuse)
    monkeypatch.setattr(flow, "build_step", lambda run_dir, **kwargs: {
        "logic_cells": 4600, "run_clock_mhz": 30.0, "fmax_mhz": 33.0})
    monkeypatch.setattr(flow, "train_step", lambda *a, **k: None)
    monkeypatch.setattr(flow, "export_step", lambda *a, **k: None)
    monkeypatch.setattr(hwmodel, "load", lambda path: model)
    monkeypatch.setattr(bl, "twin_rates", lambda config, samples: {
        "fixed_twin_cpu": 400.0, "float_twin_cpu": 200.0, "cpu_samples": samples})
    section = bl.run_learning(tmp_path / "run", boards="icebreaker", hidden=(8,), T=3, K=2,
                              cpu_samples=3, out=tmp_path / "bench.json", clock="board",
                              progress=lambda text: None)
    eq = section["icebreaker"]["eqprop"]
    assert eq["fits"] is False and "6669 logic cells" in eq["refused"]
    assert "samples_per_second_at_run_clock" not in eq and eq["cycles_per_sample"] > 0
    assert section["icebreaker"]["metaplastic"]["logic_cells"] == 4600
    rates = section["samples_per_second"]
    assert rates["board"] is None and "board_over_fixed_twin" not in rates
