"""The bulk engine testbench (``nmflow sim --testbench bulk``): stimulus, gaps, backpressure and
captures in gateware, every beat checked against the golden model at the end; the compiled
simulation cache."""

import json
import random
import re
from pathlib import Path

import numpy as np
import pytest
from amaranth.hdl import Module
from amaranth.lib.memory import Memory
from amaranth.sim import Simulator

from nmflow.errors import NmflowError
from nmflow.golden import hwmodel
from nmflow.golden.reference import reference
from nmflow.golden.synthetic import random_inputs, random_model
from nmflow.rtl.verilog import write_engine_verilog
from nmflow.sim.bulk import BulkStimulus, StreamCapture, capacity_for, probability_threshold
from nmflow.sim.bulkcheck import decode_fields, read_words
from nmflow.sim.engine_sim import simulate_engine

ARRAYS = ("classes", "scores", "acts0", "acts1")


def small_engine(tmp_path, *, lanes=8, errors=None):
    """A ternary 24-20-12-6 model saved as ``hw`` and its Verilog in ``rtl``."""
    model = random_model([24, 20, 12, 6], input_bits=4, weight_kind="ternary", seed=4)
    hwmodel.save(model, tmp_path / "hw")
    write_engine_verilog(model, tmp_path / "rtl", lanes=lanes, errors=errors)
    return model


def outputs(path):
    with np.load(path) as f:
        return {name: f[name] for name in f.files}


def assert_golden(out, golden):
    assert out["classes"].tolist() == golden.classes.tolist()
    assert out["scores"].tolist() == golden.scores.tolist()
    for layer, acts in enumerate(golden.acts):
        assert out[f"acts{layer}"].tolist() == acts.tolist()


# -- gateware in Amaranth's simulator ----------------------------------------------------------

def stimulus_run(words, n_inputs, images, *, valid, ready, cycles, quiet=0, seed=7):
    """Run a :class:`BulkStimulus` over a memory holding ``words``, taking its beats with
    ``ready`` probability (none in the first ``quiet`` cycles after ``go``); return, per cycle,
    ``(valid, ready, payload, first)``."""
    m = Module()
    m.submodules.stimulus = stimulus = BulkStimulus(8, n_inputs, 6)
    m.submodules.memory = memory = Memory(shape=8, depth=64, init=words)
    port = memory.read_port()
    m.d.comb += [port.addr.eq(stimulus.addr), stimulus.data.eq(port.data)]
    seen = []

    async def bench(ctx):
        ctx.set(stimulus.images, images)
        ctx.set(stimulus.valid_threshold, probability_threshold(valid))
        ctx.set(stimulus.seed, seed)
        await ctx.tick().repeat(3)
        ctx.set(stimulus.go, 1)
        rng = random.Random(seed)
        for n in range(cycles):
            take = n >= quiet and rng.random() < ready
            ctx.set(stimulus.o.ready, take)
            seen.append((ctx.get(stimulus.o.valid), take, ctx.get(stimulus.o.payload),
                         ctx.get(stimulus.first)))
            await ctx.tick()
        seen.append(ctx.get(stimulus.sent))

    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return seen[:-1], seen[-1]


def test_stimulus_follows_the_stream_rules_with_gaps_and_backpressure():
    words = [(17 * k + 5) % 256 for k in range(40)]
    seen, sent = stimulus_run(words, 5, 6, valid=0.5, ready=0.5, cycles=400)
    taken, firsts, held, gaps = [], [], None, 0
    for valid, ready, payload, first in seen:
        if held is not None:        # a beat offered and not taken is still offered, unchanged
            assert valid and (payload, first) == held
        held = (payload, first) if valid and not ready else None
        if valid and ready:
            taken.append(payload)
            firsts.append(first)
        gaps += not valid and len(taken) < 30
    assert taken == words[:30]                  # 6 images of 5 words, in memory order, once
    assert firsts == [k % 5 == 0 for k in range(30)]
    assert sent == 6
    assert gaps > 20                            # random gaps: valid low while words remained
    assert not any(valid for valid, *_ in seen[-50:])     # nothing after the last image


def test_stimulus_offers_without_waiting_for_ready_and_streams_back_to_back():
    words = list(range(100, 124))
    seen, sent = stimulus_run(words, 4, 6, valid=1.0, ready=1.0, cycles=40, quiet=10)
    # ready stays low for 10 cycles: valid rises anyway, on the cycle after go, and holds
    assert [valid for valid, *_ in seen[:10]] == [0] + [1] * 9
    assert {payload for _, _, payload, _ in seen[1:10]} == {100}
    # then one word per cycle, no gap, every word once
    moved = [payload for valid, ready, payload, _ in seen if valid and ready]
    assert moved == words
    start = next(n for n, (valid, ready, *_) in enumerate(seen) if valid and ready)
    assert all(valid and ready for valid, ready, *_ in seen[start:start + 24])
    assert sent == 6


def test_capture_takes_beats_only_after_go_with_random_backpressure():
    capture = StreamCapture(8, 4, ready=True)
    readies = []

    async def bench(ctx):
        ctx.set(capture.ready_threshold, probability_threshold(0.3))
        ctx.set(capture.seed, 99)
        ctx.set(capture.i.valid, 1)
        for n in range(300):
            if n == 20:
                ctx.set(capture.go, 1)
            readies.append(ctx.get(capture.i.ready))
            await ctx.tick()
        assert ctx.get(capture.count) == sum(readies)

    sim = Simulator(capture)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert not any(readies[:20])
    assert 0.2 < sum(readies[20:]) / 280 < 0.4


def test_probabilities_become_thresholds_and_capacities_powers_of_two():
    assert probability_threshold(1.0) == 65536 and probability_threshold(0.5) == 32768
    assert probability_threshold(1e-9) == 1
    with pytest.raises(NmflowError, match=r"^ready must be a probability above 0 and at most 1, "
                                          r"not 0$"):
        probability_threshold(0, "ready")
    assert [capacity_for(n) for n in (1, 16, 17, 360, 1000)] == [16, 16, 32, 512, 1024]


def test_capture_files_decode_in_the_ports_layouts(tmp_path):
    from nmflow.rtl.engine import result_layout
    layout = result_layout(6, 10)           # index 3 bits, score signed 10, cls 3, last 1
    path = tmp_path / "words.hex"
    # index 2, score -3, cls 5, last 1 packed by hand in field order, and a comment line
    word = 2 | ((-3) & 0x3FF) << 3 | 5 << 13 | 1 << 16
    path.write_text(f"// 0x00000000\n{word:x}\n0\n")
    fields = decode_fields(read_words(path), layout)
    assert fields["index"].tolist() == [2, 0] and fields["score"].tolist() == [-3, 0]
    assert fields["cls"].tolist() == [5, 0] and fields["last"].tolist() == [1, 0]
    path.write_text("1f\nxx\n")
    with pytest.raises(ValueError, match=r"line 2: 'xx' is not a defined hexadecimal word"):
        read_words(path)


# -- cocotb under the default simulator --------------------------------------------------------

@pytest.mark.slow
def test_bulk_testbench_equals_golden_with_gaps_and_backpressure(tmp_path):
    model = small_engine(tmp_path)
    inputs = random_inputs(model, 12, seed=5)
    progress = []
    summary = simulate_engine(tmp_path / "hw", inputs, tmp_path / "sim",
                              verilog_dir=tmp_path / "rtl", ready=0.3, valid=0.6, seed=1,
                              progress=lambda *state: progress.append(state))
    assert summary["passed"], Path(summary["log"]).read_text()[-3000:]
    assert summary["testbench"] == "bulk"
    assert "12 inferences, " in Path(summary["log"]).read_text()
    out = outputs(summary["outputs"])
    assert_golden(out, reference(model, inputs, lanes=8))
    config = (tmp_path / "rtl" / "engine.json").read_text()
    cpi = int(re.search(r'"cycles_per_inference": (\d+)', config).group(1))
    # the gaps and the backpressure stall the engine: inferences take longer than without
    assert (out["cycles"] >= cpi).all() and (out["cycles"] > cpi).any()
    assert (np.diff(out["finish"]) > 0).all()
    assert progress and progress[-1][:2] == (12, 12)


def wrong_model(model, *, threshold=0, score=False):
    """``model`` with the first hidden layer's first threshold moved by ``threshold``, or the
    last layer's second offset changed: the golden side of a mutated engine."""
    layers = list(model.layers)
    if threshold:
        first = layers[0]
        t_hi = first.t_hi.copy()
        t_hi[0] += threshold
        layers[0] = hwmodel.Layer(first.weights, first.activation, t_hi=t_hi, t_lo=first.t_lo)
    if score:
        last = layers[-1]
        offset = np.array(last.offset).copy()
        offset[1] += 5
        layers[-1] = hwmodel.Layer(last.weights, last.activation, scale=last.scale,
                                   offset=offset)
    return hwmodel.HardwareModel(model.input_bits, model.weight_kind, layers,
                                 model.score_frac_bits)


@pytest.mark.slow
@pytest.mark.parametrize("mutation", ["threshold", "score"])
def test_bulk_testbench_catches_a_mutated_engine(tmp_path, mutation):
    # The golden side gets a model whose threshold (or score offset) differs from the one the
    # Verilog was made from: the test fails, naming the first wrong image, beat and field.
    model = small_engine(tmp_path)
    inputs = random_inputs(model, 10, seed=7)
    good = reference(model, inputs, lanes=8)
    if mutation == "threshold":     # the smallest move that changes an activation here
        bad = next(bad for delta in range(1, 200) for bad in (
            wrong_model(model, threshold=-delta), wrong_model(model, threshold=delta))
            if (reference(bad, inputs, lanes=8).acts[0] != good.acts[0]).any())
    else:
        bad = wrong_model(model, score=True)
    hwmodel.save(bad, tmp_path / "bad")
    config = tmp_path / "rtl" / "engine.json"       # as if the Verilog were made from it
    config.write_text(json.dumps(dict(json.loads(config.read_text()),
                                      model_sha256=hwmodel.model_checksum(bad))))
    wrong = reference(bad, inputs, lanes=8)
    summary = simulate_engine(tmp_path / "bad", inputs, tmp_path / "sim",
                              verilog_dir=tmp_path / "rtl", ready=0.5, valid=0.8, seed=3)
    assert summary["tests"] == 1 and summary["failed"] == 1
    message = summary["failures"][0]
    if mutation == "threshold":
        differ = np.flatnonzero(good.acts[0][:, 0] != wrong.acts[0][:, 0])
        assert len(differ), "the mutation must change an activation"
        image = differ[0]
        assert re.fullmatch(rf"\d+ mismatches against the golden model, the first: image "
                            rf"{image}: layer 0 activations 0 to 0: acts is "
                            rf"\[{good.acts[0][image, 0]}\], golden model "
                            rf"\[{wrong.acts[0][image, 0]}\]", message), message
    else:
        assert (good.scores[:, 1] != wrong.scores[:, 1]).all()
        # the first wrong beat: image 0, result beat 1 (beat 0 has the right score, and its
        # class only if the argmax did not move)
        first = 0 if good.classes[0] != wrong.classes[0] else 1
        assert re.fullmatch(rf"\d+ mismatches against the golden model, the first: image 0: "
                            rf"result beat {first}: .*", message), message
        if first == 1:
            assert f"score is {good.scores[0, 1]}, golden model {wrong.scores[0, 1]}" in message


@pytest.mark.slow
def test_chunked_bulk_runs_merge_to_one_run(tmp_path):
    model = small_engine(tmp_path)
    inputs = random_inputs(model, 7, seed=9)
    runs = {}
    for jobs in (1, 3):
        summary = simulate_engine(tmp_path / "hw", inputs, tmp_path / f"sim{jobs}",
                                  verilog_dir=tmp_path / "rtl", ready=0.6, valid=0.7, seed=4,
                                  jobs=jobs)
        assert summary["passed"], summary["failures"]
        runs[jobs] = outputs(summary["outputs"])
    for name in ARRAYS:
        assert runs[3][name].tolist() == runs[1][name].tolist()
    assert runs[3]["chunks"].tolist() == [0, 2, 4]
    assert_golden(runs[3], reference(model, inputs, lanes=8))
    # the chunk at vector 0 keeps one simulator's patterns: its cycles are the same
    assert runs[3]["cycles"][:2].tolist() == runs[1]["cycles"][:2].tolist()


@pytest.mark.slow
def test_bulk_testbench_reads_through_the_injectors_twin(tmp_path):
    # An engine with the read-error injector (per read, non-zero rates): the golden model reads
    # through its twin, so the outputs differ from the ideal read's and still match.
    from nmflow.golden.injector import ErrorInjection, InjectedRead
    from nmflow.golden.readerrors import ErrorRates
    injection = ErrorInjection(ErrorRates(0.02, 0.05, 0.2), seed=11, mode="per_read")
    model = small_engine(tmp_path, errors=injection)
    inputs = random_inputs(model, 6, seed=2)
    summary = simulate_engine(tmp_path / "hw", inputs, tmp_path / "sim",
                              verilog_dir=tmp_path / "rtl", ready=0.7, seed=5)
    assert summary["passed"], summary["failures"]
    twin = reference(model, inputs, lanes=8, read=InjectedRead(injection, 8))
    assert_golden(outputs(summary["outputs"]), twin)
    assert (twin.scores != reference(model, inputs, lanes=8).scores).any()


@pytest.mark.slow
def test_an_unchanged_design_is_compiled_once(tmp_path, monkeypatch):
    monkeypatch.setenv("NMFLOW_SIM_CACHE", str(tmp_path / "cache"))
    model = small_engine(tmp_path)
    inputs = random_inputs(model, 3, seed=1)
    first = simulate_engine(tmp_path / "hw", inputs, tmp_path / "a", verilog_dir=tmp_path / "rtl")
    again = simulate_engine(tmp_path / "hw", inputs[::-1], tmp_path / "b",
                            verilog_dir=tmp_path / "rtl", seed=2)
    assert first["passed"] and again["passed"]
    assert (first["compile_cached"], again["compile_cached"]) == (False, True)
    assert (tmp_path / "b" / "work" / "build.log").read_text() == (
        tmp_path / "a" / "work" / "build.log").read_text()
    builds = [p for p in (tmp_path / "cache").iterdir() if p.is_dir()]
    assert len(builds) == 1
    # the beat testbench is another design; other lanes are another engine
    beat = simulate_engine(tmp_path / "hw", inputs, tmp_path / "c", verilog_dir=tmp_path / "rtl",
                           testbench="beat")
    assert beat["passed"] and not beat["compile_cached"]
    write_engine_verilog(model, tmp_path / "rtl4", lanes=4)
    other = simulate_engine(tmp_path / "hw", inputs, tmp_path / "d", verilog_dir=tmp_path / "rtl4")
    assert other["passed"] and not other["compile_cached"]
    assert len([p for p in (tmp_path / "cache").iterdir() if p.is_dir()]) == 3


@pytest.mark.parametrize("sim", ["icarus", "verilator"])
def test_a_compiled_simulation_is_not_shared_by_another_environment(tmp_path, monkeypatch, sim):
    """A Verilator binary finds cocotb's libraries by the absolute path it was linked with: a
    clone with its own .venv (same versions) must not take it from the cache."""
    import cocotb
    from nmflow.sim.runner import build_key
    source = tmp_path / "a.v"
    source.write_text("module a; endmodule\n")
    here = build_key(sim, source, "a", False)
    assert build_key(sim, source, "a", False) == here
    monkeypatch.setattr(cocotb, "__file__", str(tmp_path / "other" / "cocotb" / "__init__.py"))
    assert build_key(sim, source, "a", False) != here


def test_unknown_testbench_refused(tmp_path):
    with pytest.raises(NmflowError, match=r"^testbench must be one of bulk, beat, not 'fast'$"):
        simulate_engine(tmp_path / "hw", np.zeros((1, 4)), tmp_path / "sim",
                        verilog_dir=tmp_path / "rtl", testbench="fast")
