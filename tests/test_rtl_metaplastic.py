"""The metaplastic update unit (nmflow/rtl/metaplastic.py) against its fixed-point twin
(nmflow/golden/metafixed.py): bit-exact runs in Amaranth's simulator on small configurations
(both storages: block RAM and banked SPRAM), m = 0, the throughput of the SPRAM banking, the unit
on a real InferenceEngine's write port (an inference after the updates equals the golden
reference of the model with the new binary weights), the refusals, and two cocotb runs: over
100,000 updates with every corner, and one real training step on digits."""

import dataclasses

import numpy as np
import pytest

from nmflow.errors import NmflowError
from nmflow.fixedpoint import FixedFormat
from nmflow.golden.hwmodel import HardwareModel
from nmflow.golden.metafixed import MetaFixedRule
from nmflow.golden.pairs import MINUS, PLUS, MemoryMap
from nmflow.golden.plan import EnginePlan
from nmflow.golden.reference import reference
from nmflow.rtl.metaplastic import (OP_UPDATE, MetaplasticUnit, check_signs, hidden_groups,
                                    load_beats, update_beats)
from nmflow.sim.metaplastic_sim import (binary_model, expected_results, run_pysim,
                                        run_with_engine, simulate_metaplastic, stress_beats,
                                        training_step_updates)

from helpers import refuses


def _final_codes_agree(unit, writes, final):
    k = unit.engine_lanes // unit.lanes
    assert writes, "the unit wrote no pair code"
    for (row, q), code in writes.items():
        g, p = row * k + q // unit.lanes, q % unit.lanes
        assert code == (PLUS if final[g, p] >= 0 else MINUS), (row, q, code, final[g, p])


@pytest.mark.parametrize("storage, m, lanes", [("memory", 10.0, 2), ("spram", 10.0, 2),
                                               ("spram", 1.35, 1), ("memory", 5.0, 4)])
def test_unit_matches_twin(storage, m, lanes):
    mmap = MemoryMap(4, (8, 6, 3))
    unit = MetaplasticUnit(mmap, m, lanes=lanes, storage=storage, table_size=64,
                           spram_depth=64)
    beats = stress_beats(unit.rule, unit.groups, lanes, 700, seed=lanes)
    want, final = expected_results(unit.rule, np.zeros((unit.groups, lanes), int), beats)
    got, writes, _ = run_pysim(unit, beats, seed=7, idle=0.9)
    assert got == want
    _final_codes_agree(unit, writes, final)


def test_m_zero_is_the_plain_rule():
    mmap = MemoryMap(2, (4, 4))
    unit = MetaplasticUnit(mmap, 0.0, lanes=2, table_size=16)
    assert (unit.rule.table == 1 << unit.rule.f_bits).all()
    beats = stress_beats(unit.rule, unit.groups, 2, 400, seed=3)
    want, _ = expected_results(unit.rule, np.zeros((unit.groups, 2), int), beats)
    got, _, _ = run_pysim(unit, beats, seed=1)
    assert got == want


def test_memory_init_and_readback():
    model, hidden = binary_model((8, 4, 3), seed=2)
    plan = EnginePlan(model, 4)
    words, en = hidden_groups(hidden, plan.mmap, 2)
    unit = MetaplasticUnit(plan, 3.0, lanes=2, table_size=32, init=words)
    zero = update_beats(np.zeros_like(words), np.ones_like(en))   # d = 0 reads back
    got, _, _ = run_pysim(unit, zero)
    assert got == words.tolist()


def test_spram_banking_keeps_full_throughput():
    mmap = MemoryMap(4, (16, 16, 4))
    unit = MetaplasticUnit(mmap, 10.0, lanes=2, storage="spram", table_size=64,
                           spram_depth=128)
    rng = np.random.default_rng(0)
    d = rng.integers(-2000, 2000, (unit.groups, 2))
    beats = update_beats(d, np.ones_like(d, dtype=bool)) * 3
    got, _, cycles = run_pysim(unit, beats, valid=1.0, ready=1.0)
    want, _ = expected_results(unit.rule, np.zeros((unit.groups, 2), int), beats)
    assert got == want
    # one beat per cycle, plus the latency to the first result and a few cycles of start-up
    assert cycles <= len(beats) + unit.latency + 4, cycles


@pytest.mark.parametrize("engine_lanes, pe", [(4, 1), (8, 2)])
def test_loads_make_signs_agree_with_the_model_and_engine_sees_updates(engine_lanes, pe):
    # With pe = 2 a row holds two neurons' chunks side by side: the unit's groups follow the
    # engine's memory map, so the engine reads the signs the unit consolidated.
    model, hidden = binary_model((16, 12, 5), seed=1)
    check_signs(hidden, model)
    plan = EnginePlan(model, engine_lanes, pe=pe)
    words, en = hidden_groups(hidden, plan.mmap, 2)
    kw = dict(m=2.0, lanes=2, table_size=64, storage="spram", spram_depth=64 * pe)
    rng = np.random.default_rng(0)
    d = rng.integers(-3000, 3000, words.shape)
    x = rng.integers(0, 32, (3, 16))
    loads, ups = load_beats(words, en), update_beats(d, en)
    rule = MetaFixedRule(2.0, table_size=64)
    after_load, _ = expected_results(rule, np.zeros_like(words), loads)
    after_up, final = expected_results(rule, words, ups)
    (lo, cls0, sc0), (uo, cls1, sc1) = run_with_engine(model, kw, [(loads, x), (ups, x)],
                                                       engine_lanes=engine_lanes, engine_pe=pe)
    assert lo == after_load and uo == after_up
    before = reference(model, x, lanes=engine_lanes, pe=pe)
    assert (sc0 == before.scores).all() and (cls0 == before.classes).all()
    flat = final.reshape(plan.mmap.rows, engine_lanes)
    layers = []
    for k, layer in enumerate(model.layers):
        w = plan.mmap.gather(k, flat[plan.mmap.layer_rows(k)])
        layers.append(dataclasses.replace(layer, weights=np.where(w >= 0, 1, -1).astype(np.int8)))
    assert sum(int((a.weights != b.weights).sum()) for a, b in zip(model.layers, layers)) > 10
    after = reference(HardwareModel(model.input_bits, "binary", layers), x, lanes=engine_lanes,
                      pe=pe)
    assert (sc1 == after.scores).all() and (cls1 == after.classes).all()
    assert not (sc1 == before.scores).all()


def test_refusals():
    mmap = MemoryMap(4, (8, 6, 3))
    refuses(lambda: MetaplasticUnit(mmap, -1.0), NmflowError,
            "m must be a non-negative finite number, not -1.0")
    with pytest.raises(NmflowError, match="table_size"):
        MetaplasticUnit(mmap, 1.0, table_size=0)
    refuses(lambda: MetaplasticUnit(mmap, 1.0, lanes=3), NmflowError,
            "lanes must be a power of two, not 3")
    refuses(lambda: MetaplasticUnit(mmap, 1.0, lanes=8), NmflowError,
            "lanes must be at most the engine's lanes (4), not 8")
    refuses(lambda: MetaplasticUnit(mmap, 1.0, lanes=4, storage="spram"), NmflowError,
            "lanes must be at most 2 with storage 'spram' (two banks per lane, 4 SPRAMs), not 4")
    narrow = FixedFormat(True, 1, 14, rounding="nearest_up")
    coarse = FixedFormat(True, 2, 13, rounding="nearest_up")
    refuses(lambda: MetaplasticUnit(mmap, 1.0, w_format=narrow, u_format=coarse), NmflowError,
            "w_format is too narrow for the update: s1.14 spans [-2, 2), an update of s2.13 "
            "up to 4")
    wide = FixedFormat(True, 5, 12, rounding="nearest_up")
    refuses(lambda: MetaplasticUnit(mmap, 1.0, w_format=wide, storage="spram"), NmflowError,
            "w_format must be at most 16 bits wide with storage 'spram', not s5.12 (18 bits)")
    big = MemoryMap(16, (784, 512, 512, 10))
    refuses(lambda: MetaplasticUnit(big, 1.0, lanes=2, storage="spram"), NmflowError,
            "network does not fit the SPRAMs: 668672 synapses need 167168 words per bank with "
            "2 lanes, an SPRAM holds 16384")
    refuses(lambda: MetaplasticUnit(mmap, 1.0, init=np.zeros((3, 2))), NmflowError,
            "init must have shape [36, 2], not [3, 2]")


# -- cocotb ---------------------------------------------------------------------------------------

@pytest.mark.slow
def test_cocotb_100k_updates_spram(tmp_path, monkeypatch):
    # Under Verilator (about 35 s here against about 95 s under Icarus; the other two cocotb
    # runs below are on Icarus)
    monkeypatch.setenv("SIM", "verilator")
    mmap = MemoryMap(16, (64, 32, 10))
    unit = MetaplasticUnit(mmap, 10.0, lanes=2, storage="spram", spram_depth=1024)
    beats = stress_beats(unit.rule, unit.groups, 2, 60_000, seed=11)
    result, report = simulate_metaplastic(tmp_path, unit, beats, seed=4, ready=0.85, valid=0.9,
                                          wall_seconds=300)
    assert result.passed, (result.failures, report and report["mismatches"][:3])
    c = report["corners"]
    assert report["beats"] == len(beats) and c["updates"] >= 100_000
    for corner in ("sat_max", "sat_min", "sign_change", "w_zero", "w_min", "w_max", "shrink",
                   "d_zero"):
        assert c[corner] > 0, corner
    assert report["codes_checked"] == mmap.rows * 16 and report["code_errors"] == 0


@pytest.mark.slow
def test_cocotb_m_zero_on_block_memory(tmp_path):
    # m = 0: the table is all ones and the unit is the plain rule; block RAM storage, 4 lanes.
    mmap = MemoryMap(16, (64, 32, 10))
    unit = MetaplasticUnit(mmap, 0.0, lanes=4, storage="memory")
    beats = stress_beats(unit.rule, unit.groups, 4, 4_000, seed=5)
    result, report = simulate_metaplastic(tmp_path, unit, beats, seed=2, wall_seconds=200)
    assert result.passed, (result.failures, report and report["mismatches"][:3])
    c = report["corners"]
    assert c["updates"] >= 10_000
    for corner in ("sat_max", "sat_min", "sign_change", "w_zero", "shrink"):
        assert c[corner] > 0, corner


@pytest.mark.slow
def test_cocotb_training_step_on_digits(tmp_path):
    rule = MetaFixedRule(5.0)
    hidden, d, new = training_step_updates(rule, sizes=(64, 16, 10))
    mmap = MemoryMap(16, (64, 16, 10))
    unit = MetaplasticUnit(mmap, 5.0, lanes=2, storage="spram", spram_depth=512)
    words, en = hidden_groups(hidden, mmap, 2)
    dwords, _ = hidden_groups(d, mmap, 2)
    beats = load_beats(words, en) + update_beats(dwords, en)
    assert sum(b["op"] == OP_UPDATE for b in beats) * 2 >= 1000
    result, report = simulate_metaplastic(tmp_path, unit, beats, seed=1, wall_seconds=120)
    assert result.passed, (result.failures, report and report["mismatches"][:3])
    want, _ = hidden_groups(new, mmap, 2)        # the twin inside the training loop
    assert (np.array(report["final"]) == want).all()
    assert sum(int((a != b).sum()) for a, b in zip(hidden, new)) > 500


def test_a_conv_engine_reads_the_signs_the_unit_consolidates():
    """The unit's groups follow the engine's memory map, a convolution's too (each kernel
    position's channels padded to whole chunks): after updates the engine computes the network
    of the consolidated signs, every pooled map laid out as the reference reads it."""
    from nmflow.golden.synthetic import random_conv_model
    base = random_conv_model("c3k3p1-p2-c2k2-f4", (2, 4, 4), input_bits=4,
                             weight_kind="binary", seed=5)
    rng = np.random.default_rng(6)
    hidden = []
    for layer in base.layers:
        h = rng.integers(1, 600, size=layer.weights.shape) * layer.weights.astype(np.int64)
        hidden.append(h)
    check_signs(hidden, base)
    plan = EnginePlan(base, 8, pe=2)
    words, en = hidden_groups(hidden, plan.mmap, 2)
    kw = dict(m=2.0, lanes=2, table_size=64, storage="memory")
    d = rng.integers(-3000, 3000, words.shape)
    x = rng.integers(0, 16, (3, 32))
    loads, ups = load_beats(words, en), update_beats(d, en)
    rule = MetaFixedRule(2.0, table_size=64)
    _, final = expected_results(rule, words, ups)
    (_, cls0, sc0), (_, cls1, sc1) = run_with_engine(base, kw, [(loads, x), (ups, x)],
                                                     engine_lanes=8, engine_pe=2)
    before = reference(base, x, lanes=8, pe=2)
    assert (sc0 == before.scores).all() and (cls0 == before.classes).all()
    flat = final.reshape(plan.mmap.rows, 8)
    layers = [dataclasses.replace(layer, weights=np.where(
        plan.mmap.gather(k, flat[plan.mmap.layer_rows(k)]) >= 0, 1, -1).astype(np.int8))
        for k, layer in enumerate(base.layers)]
    assert sum(int((a.weights != b.weights).sum()) for a, b in zip(base.layers, layers)) > 5
    after = reference(HardwareModel(base.input_bits, "binary", layers), x, lanes=8, pe=2)
    assert (sc1 == after.scores).all() and (cls1 == after.classes).all()


def test_spram_model_reads_a_cycle_late_and_is_undefined_after_a_write():
    # the single-port RAM's model, as the silicon behaves: a read's word on DATAOUT from the next
    # cycle, held while nothing happens; after a write the word is not to be used (the model
    # shows the held word inverted until the next read), nibble masks honoured
    from amaranth.sim import Simulator
    from nmflow.rtl.spram import SPRAMModel
    ram = SPRAMModel(depth=64)
    seen = []

    async def bench(ctx):
        ctx.set(ram.CHIPSELECT, 1)

        async def cycle(addr, write=None, mask=0b1111):
            ctx.set(ram.ADDRESS, addr)
            ctx.set(ram.WREN, write is not None)
            ctx.set(ram.DATAIN, write or 0)
            ctx.set(ram.MASKWREN, mask)
            await ctx.tick()
            seen.append(ctx.get(ram.DATAOUT))

        await cycle(5, 0x1234)
        await cycle(5)                          # read
        ctx.set(ram.CHIPSELECT, 0)
        await cycle(5)                          # idle: held
        ctx.set(ram.CHIPSELECT, 1)
        await cycle(5, 0xABCD, mask=0b0011)     # low byte only: 0x12CD; DATAOUT undefined
        await cycle(5)
        await cycle(6, 0x0F0F)
        await cycle(6)

    sim = Simulator(ram)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert seen[1:3] == [0x1234, 0x1234]
    assert seen[3] == 0x1234 ^ 0xFFFF and seen[4] == 0x12CD
    assert seen[5] == 0x12CD ^ 0xFFFF and seen[6] == 0x0F0F
