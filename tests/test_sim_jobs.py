"""``nmflow sim --jobs``: the vectors split over several simulators, their outputs merged, exact
against one simulator and the golden model; bad values and a failing chunk in one line."""

import json
import re
import time
from pathlib import Path

import numpy as np
import pytest

from nmflow.errors import NmflowError
from nmflow.flow import compare_step, sim_step
from nmflow.golden import hwmodel
from nmflow.golden.reference import reference
from nmflow.golden.synthetic import random_inputs, random_model
from nmflow.rtl.verilog import sha256_bytes, write_engine_verilog
from nmflow.sim import engine_sim
from nmflow.sim.engine_sim import chunk_starts, cycle_figures, simulate_engine

from nmflow.scripts import cli

from helpers import cluster, error_line, running_with  # noqa: F401 (cluster: a fixture)

ARRAYS = ("classes", "scores", "acts0", "acts1")


def small_run(tmp_path, vectors=5):
    """A run folder with a small ternary model, its Verilog (8 lanes) and ``vectors`` inputs in
    ``x.npz``; returns the model and the inputs."""
    model = random_model([24, 20, 12, 6], input_bits=4, weight_kind="ternary", seed=4)
    hwmodel.save(model, tmp_path / "hwmodel")
    write_engine_verilog(model, tmp_path / "rtl", lanes=8)
    inputs = random_inputs(model, vectors, seed=5)
    np.savez(tmp_path / "x.npz", x=inputs)
    return model, inputs


def outputs(path):
    with np.load(path) as f:
        return {name: f[name] for name in f.files}


# -- no simulator --------------------------------------------------------------------------------

def test_chunks_are_contiguous_and_even():
    assert chunk_starts(5, 1) == [0, 5]
    assert chunk_starts(5, 2) == [0, 2, 5]
    assert chunk_starts(360, 2) == [0, 180, 360]
    assert chunk_starts(7, 7) == list(range(8))
    for images in range(1, 40):
        for jobs in range(1, images + 1):
            sizes = np.diff(chunk_starts(images, jobs))
            assert sizes.sum() == images and sizes.min() >= 1 and sizes.max() - sizes.min() <= 1


def test_cycle_figures_of_chunks():
    # Two chunks: images 0-2 and 3-4, each from its own reset (finish counts from it).
    cycles, finish = [10, 20, 20, 12, 21], [10, 30, 50, 12, 33]
    figures = cycle_figures(cycles, finish, chunks=[0, 3])
    assert figures == {"cycles_per_inference": 11.0, "cycles_back_to_back": 61 / 3,
                       "interval_cycles": 61 / 3}
    # One simulator, as before: the first inference, the later ones, every interval.
    assert cycle_figures(cycles[:3], finish[:3]) == cycle_figures(cycles[:3], finish[:3], [0]) == {
        "cycles_per_inference": 10.0, "cycles_back_to_back": 20.0, "interval_cycles": 20.0}
    # Chunks of one image each: every inference from idle, no interval measured.
    assert cycle_figures([10, 11], [10, 11], [0, 1]) == {
        "cycles_per_inference": 10.5, "cycles_back_to_back": None, "interval_cycles": None}


@pytest.mark.parametrize("jobs", [0, 65, -1, 2.0, True, "4", None])
def test_bad_jobs_refused_before_any_work(tmp_path, jobs):
    with pytest.raises(NmflowError, match=rf"^jobs must be auto or an integer from 1 to 64, "
                                          rf"not {re.escape(repr(jobs))}$"):
        sim_step(tmp_path, jobs=jobs)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("value", ["0", "65", "two", "1.5", ""])
def test_bad_jobs_option_is_one_line(capsys, tmp_path, value):
    line = error_line(capsys, ["sim", "--run", str(tmp_path), "--jobs", value])
    assert line == (f"nmflow: error: sim: --jobs must be auto or an integer from 1 to 64, not "
                    f"{value!r} (see nmflow sim --help)")


def test_a_bad_cluster_is_one_line_before_any_work(capsys, tmp_path):
    line = error_line(capsys, ["sim", "--run", str(tmp_path), "--cluster", "nowhere"])
    assert line == ("nmflow: error: cluster must be a Dask scheduler address such as "
                    "tcp://127.0.0.1:8786, not 'nowhere'")
    assert list(tmp_path.iterdir()) == []


def test_jobs_auto_is_the_usable_cores(monkeypatch):
    from nmflow import limits
    from nmflow.scripts.options import SIM_JOBS
    monkeypatch.setattr(limits, "usable_cores", lambda: 3)
    assert SIM_JOBS("auto") == engine_sim.check_jobs("auto") == 3
    monkeypatch.setattr(limits, "usable_cores", lambda: 256)
    assert SIM_JOBS("auto") == engine_sim.check_jobs("auto") == 64
    assert engine_sim.check_jobs(8, images=5) == 5         # never more chunks than vectors


# -- under the simulator -------------------------------------------------------------------------

@pytest.mark.slow
def test_chunks_merge_to_one_run(tmp_path):
    # 1, 2 and 9 simulators (clamped to the 5 vectors) under random backpressure and gaps: the
    # merged classes, scores and activations are those of one simulator and the golden model.
    model, inputs = small_run(tmp_path)
    golden = reference(model, inputs)
    runs, progress = {}, {}
    for jobs in (1, 2, 9):
        progress[jobs] = []
        runs[jobs] = simulate_engine(tmp_path / "hwmodel", inputs, tmp_path / f"sim{jobs}",
                                     verilog_dir=tmp_path / "rtl", ready=0.5, valid=0.7, seed=3,
                                     jobs=jobs, waves=jobs == 2,
                                     progress=lambda *state, jobs=jobs: progress[jobs].append(
                                         state))
    for jobs, summary in runs.items():
        assert summary["passed"], Path(summary["log"]).read_text()[-3000:]
        out = outputs(summary["outputs"])
        assert (out["classes"] == golden.classes).all() and (out["scores"] == golden.scores).all()
        for layer, acts in enumerate(golden.acts):
            assert (out[f"acts{layer}"] == acts).all()
        for name in ARRAYS:
            assert out[name].dtype == outputs(runs[1]["outputs"])[name].dtype
            assert (out[name] == outputs(runs[1]["outputs"])[name]).all()
        assert progress[jobs][-1][:2] == (5, 5)          # summed over the chunks
        assert summary["sim_cycles"] == int(out["sim_cycles"]) == int(out["chunk_sim_cycles"].sum())
    assert [runs[jobs]["jobs"] for jobs in runs] == [1, 2, 5]
    assert [[c["first"] for c in runs[jobs]["chunks"]] for jobs in runs] == [[0], [0, 2],
                                                                            [0, 1, 2, 3, 4]]
    assert outputs(runs[2]["outputs"])["chunks"].tolist() == [0, 2]
    # One simulator works in sim/work as before; several compile once (the compiler's log in
    # sim/work) and each runs in sim/work/chunk<k>, with its log and its waves.
    assert runs[1]["log"] == str(tmp_path / "sim1" / "work" / "sim.log")
    assert runs[1]["compile_seconds"] > 0 and runs[2]["compile_seconds"] > 0
    work = tmp_path / "sim2" / "work"
    assert (work / "build.log").is_file() and not (work / "sim.log").exists()
    assert [chunk["log"] for chunk in runs[2]["chunks"]] == [
        str(work / f"chunk{k}" / "sim.log") for k in range(2)]
    assert sorted(str(p.relative_to(work)) for p in work.rglob("*.fst")) == [
        "chunk0/nmflow_bulk.fst", "chunk1/nmflow_bulk.fst"]
    # A chunk's backpressure and gaps come from the seed and its first vector: the chunk at 0
    # as one simulator's run, the chunk at 2 the same whether it is the second of two or the
    # third of five.
    cycles = {jobs: outputs(runs[jobs]["outputs"])["cycles"] for jobs in runs}
    assert cycles[2][:2].tolist() == cycles[1][:2].tolist()
    assert cycles[2][2] == cycles[9][2]
    assert len(set(cycles[9].tolist())) > 1              # the patterns differ from chunk to chunk


@pytest.mark.slow
def test_sim_step_with_jobs_records_them_and_compares(tmp_path):
    model, inputs = small_run(tmp_path, vectors=4)
    summary = sim_step(tmp_path, inputs=tmp_path / "x.npz", jobs=2)
    assert summary["passed"] and summary["jobs"] == 2
    recorded = json.loads((tmp_path / "sim" / "summary.json").read_text())
    assert recorded["jobs"] == 2 and len(recorded["chunks"]) == 2
    assert all(chunk["seconds"] > 0 and chunk["images"] == 2 for chunk in recorded["chunks"])
    assert recorded["seconds"] >= max(chunk["seconds"] for chunk in recorded["chunks"])
    assert recorded["sim_cycles_per_second"] == pytest.approx(
        recorded["sim_cycles"] / recorded["seconds"], rel=0.01)      # seconds rounded to 10 ms
    assert recorded["chunks"][1]["log"] == str(tmp_path / "sim" / "work" / "chunk1" / "sim.log")
    assert Path(recorded["chunks"][1]["log"]).is_file()
    # compare reads the merged outputs: every output equal; the cycle figures per chunk (no
    # stalls: each chunk's first inference takes cycles_per_inference, its second
    # cycles_back_to_back)
    config = json.loads((tmp_path / "rtl" / "engine.json").read_text())
    result = compare_step(tmp_path)
    assert result["mismatches"] == 0 and result["images"] == 4
    assert result["cycles_per_inference"] == config["cycles_per_inference"]
    assert result["cycles_back_to_back"] == config["cycles_back_to_back"]
    assert result["interval_cycles"] == summary["interval_cycles"]


def wrong_model_run(tmp_path):
    """A run folder whose Verilog comes from one model and whose hardware model (what the
    testbench checks against) has one neuron's weights negated, with four vectors: two on which
    the models agree, then two on which they do not."""
    model = random_model([16, 8, 4], input_bits=4, weight_kind="ternary", seed=6)
    write_engine_verilog(model, tmp_path / "rtl", lanes=4)
    layers = list(model.layers)
    w = layers[0].weights.copy()
    w[0, :] = -w[0, :]
    layers[0] = hwmodel.Layer(w, layers[0].activation, t_hi=layers[0].t_hi, t_lo=layers[0].t_lo)
    bad = hwmodel.HardwareModel(model.input_bits, model.weight_kind, layers, model.score_frac_bits)
    hwmodel.save(bad, tmp_path / "hwmodel")
    config = tmp_path / "rtl" / "engine.json"
    config.write_text(json.dumps(dict(json.loads(config.read_text()),
                                      model_sha256=hwmodel.model_checksum(bad))))
    candidates = random_inputs(model, 200, seed=7)
    differ = (reference(model, candidates).acts[0] != reference(bad, candidates).acts[0]).any(1)
    assert differ.sum() >= 2 and (~differ).sum() >= 2
    np.savez(tmp_path / "x.npz",
             x=np.concatenate([candidates[~differ][:2], candidates[differ][:2]]))


@pytest.mark.slow
def test_a_chunk_that_disagrees_fails_the_step_naming_it(tmp_path, capsys):
    wrong_model_run(tmp_path)
    line = error_line(capsys, ["sim", "--run", str(tmp_path), "--inputs", str(tmp_path / "x.npz"),
                               "--jobs", "2"])
    log = re.escape(str(tmp_path / "sim" / "work" / "chunk1" / "sim.log"))
    assert re.fullmatch(rf"nmflow: error: RTL and golden model disagree: chunk 1 \(images 2 to "
                        rf"3\): \d+ mismatches against the golden model, the first: image 2: "
                        rf".* \(see {log}\)", line), line
    summary = json.loads((tmp_path / "sim" / "summary.json").read_text())
    assert [chunk["passed"] for chunk in summary["chunks"]] == [True, False]
    assert summary["failed_chunk"] == "chunk 1 (images 2 to 3)"
    assert summary["failures"] and all(message.startswith("chunk 1 (images 2 to 3): ")
                                       for message in summary["failures"])
    # every image came out, so the outputs are there for compare to list the mismatches
    assert compare_step(tmp_path)["mismatches"] > 0



@pytest.mark.slow
def test_a_chunk_that_does_not_finish_fails_the_step_and_writes_nothing(tmp_path, monkeypatch):
    # Chunk 1's simulator is killed by a short wall-clock limit: the step fails naming it once
    # the other chunk is done (its result kept for --resume), and only the work folder (the
    # logs) is left.
    small_run(tmp_path, vectors=4)
    real = engine_sim.run_cocotb

    def short_for_chunk1(*args, test_dir, wall_seconds, **kwargs):
        return real(*args, test_dir=test_dir, **kwargs,
                    wall_seconds=0.5 if Path(test_dir).name == "chunk1" else wall_seconds)
    monkeypatch.setattr(engine_sim, "run_cocotb", short_for_chunk1)
    start = time.monotonic()
    log = re.escape(str(tmp_path / "sim" / "work" / "chunk1" / "sim.log"))
    with pytest.raises(NmflowError, match=rf"^simulation did not finish: chunk 1 \(images 2 to "
                                          rf"3\): the simulator was killed after 0\.5 s "
                                          rf"\(wall-clock limit\) \(see {log}\)$"):
        sim_step(tmp_path, inputs=tmp_path / "x.npz", jobs=2)
    assert time.monotonic() - start < 30
    assert sorted(p.name for p in (tmp_path / "sim").iterdir()) == ["work"]
    assert not list((tmp_path / "sim").rglob("*.npz"))
    deadline = time.monotonic() + 10
    while (left := running_with(tmp_path)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert left == []


@pytest.mark.slow
def test_verilog_that_does_not_compile_with_jobs_is_one_line(tmp_path):
    # Compiled once, before the chunks: the compiler's line, its log kept, nothing else.
    model = random_model([8, 6, 3], input_bits=3, weight_kind="ternary", seed=10)
    hwmodel.save(model, tmp_path / "hwmodel")
    verilog = write_engine_verilog(model, tmp_path / "rtl", lanes=4)
    text = verilog.text[:len(verilog.text) // 2]
    (tmp_path / "rtl" / "engine.v").write_bytes(text)
    (tmp_path / "rtl" / "engine.json").write_text(json.dumps(
        dict(verilog.config, verilog_sha256=sha256_bytes(text))))
    np.savez(tmp_path / "x.npz", x=random_inputs(model, 3, seed=12))
    build_log = re.escape(str(tmp_path / "sim" / "work" / "build.log"))
    with pytest.raises(NmflowError, match=rf"^\S*engine\.v does not compile \(icarus\): "
                                          rf"\S*engine\.v:\d+: syntax error \(see {build_log}\)$"):
        sim_step(tmp_path, inputs=tmp_path / "x.npz", jobs=3)
    assert sorted(p.name for p in (tmp_path / "sim").iterdir()) == ["work"]
    assert not list((tmp_path / "sim" / "work").glob("chunk*/sim.log"))


# -- resumed, and on a cluster ---------------------------------------------------------------------

@pytest.mark.slow
def test_a_failed_run_resumes_with_only_the_chunks_it_did_not_finish(tmp_path, monkeypatch):
    # Three chunks; the last one's simulator is killed by a short wall-clock limit. The others'
    # results stay in RUN/.sim_jobs; --resume simulates only the last chunk, and the merged
    # outputs are those of one simulator and of the golden model.
    model, inputs = small_run(tmp_path, vectors=6)
    real = engine_sim.run_cocotb

    def short_for_chunk2(*args, test_dir, wall_seconds, **kwargs):
        return real(*args, test_dir=test_dir, **kwargs,
                    wall_seconds=0.5 if Path(test_dir).name == "chunk2" else wall_seconds)
    monkeypatch.setattr(engine_sim, "run_cocotb", short_for_chunk2)
    with pytest.raises(NmflowError, match=r"^simulation did not finish: chunk 2 \(images 4 to "
                                          r"5\): the simulator was killed after 0\.5 s"):
        sim_step(tmp_path, inputs=tmp_path / "x.npz", jobs=3)
    assert len(list((tmp_path / ".sim_jobs").glob("*.json"))) == 2
    monkeypatch.setattr(engine_sim, "run_cocotb", real)
    summary = sim_step(tmp_path, inputs=tmp_path / "x.npz", jobs=3, resume=True)
    assert summary["passed"] and summary["chunks_reused"] == 2
    assert not (tmp_path / ".sim_jobs").exists()            # every chunk came out
    assert all(Path(chunk["log"]).is_file() for chunk in summary["chunks"])
    resumed = outputs(tmp_path / "sim" / "rtl_outputs.npz")
    golden = reference(model, inputs)
    assert (resumed["classes"] == golden.classes).all()
    assert (resumed["scores"] == golden.scores).all()
    fresh = simulate_engine(tmp_path / "hwmodel", inputs, tmp_path / "fresh",
                            verilog_dir=tmp_path / "rtl", jobs=3)
    assert fresh["chunks_reused"] == 0
    fresh = outputs(fresh["outputs"])
    assert sorted(resumed) == sorted(fresh)
    for name in fresh:
        assert resumed[name].dtype == fresh[name].dtype and (resumed[name] == fresh[name]).all()
    assert compare_step(tmp_path)["mismatches"] == 0
    # a resumed run of another simulation (another seed: other patterns) takes nothing
    again = sim_step(tmp_path, inputs=tmp_path / "x.npz", jobs=3, resume=True, seed=1)
    assert again["passed"] and again["chunks_reused"] == 0


@pytest.mark.slow       # starts a Dask scheduler and two workers
def test_chunks_on_a_cluster_merge_to_the_local_run(cluster, tmp_path):
    # nmflow sim --cluster: the workers get the Verilog, the model and the vectors (not paths),
    # compile in their own folders and send back each chunk's outputs and log.
    address, _ = cluster
    model, inputs = small_run(tmp_path, vectors=5)
    local = simulate_engine(tmp_path / "hwmodel", inputs, tmp_path / "local",
                            verilog_dir=tmp_path / "rtl", jobs=1)
    assert cli.main(["sim", "--run", str(tmp_path), "--inputs", str(tmp_path / "x.npz"),
                     "--jobs", "2", "--cluster", address]) == 0
    summary = json.loads((tmp_path / "sim" / "summary.json").read_text())
    assert summary["passed"] and summary["cluster"] == address and summary["jobs"] == 2
    for chunk in summary["chunks"]:                 # each worker's log, written here
        assert "PASS" in Path(chunk["log"]).read_text()
    remote = outputs(tmp_path / "sim" / "rtl_outputs.npz")
    one = outputs(local["outputs"])
    for name in ARRAYS:
        assert remote[name].dtype == one[name].dtype and (remote[name] == one[name]).all()
    assert compare_step(tmp_path)["mismatches"] == 0
