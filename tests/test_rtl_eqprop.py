"""The EP settling and learning unit (nmflow/rtl/eqprop.py) against the fixed-point twin: the
memory layout, the refusals, bit-exact runs in Amaranth's simulator on small networks (every
state after every step, every weight after every update, predictions), the cycles per settling
step, and a cocotb run of on-chip training of a 64-32-10 network on 50 digits."""

import dataclasses
import numpy as np
import pytest

from nmflow.boards.catalog import BOARDS
from nmflow.errors import NmflowError
from nmflow.fixedpoint import FixedFormat
from nmflow.golden import eqprop_fixed as ef
from nmflow.rtl.eqprop import EqPropLayout, EqPropUnit, lfsr_jump_columns
from nmflow.sim.eqprop_sim import compare, expected_trace, run_pysim

from helpers import refuses


# -- layout and LFSR ------------------------------------------------------------------------------

@pytest.mark.parametrize("sizes, lanes", [((8, 8, 3), 4), ((16, 8, 8, 5), 8), ((4, 6), 2)])
def test_row_and_column_chunks_hit_every_bank_once(sizes, lanes):
    lay = EqPropLayout(sizes, lanes)
    seen = set()
    for k in range(len(sizes) - 1):
        rows, cols = sizes[k + 1], sizes[k]
        for r in range(rows):
            for c in range(cols // lanes):
                banks = {lay.bank(k, r, c * lanes + t) for t in range(lanes)}
                addrs = {lay.address(k, r, c * lanes + t) for t in range(lanes)}
                assert len(banks) == lanes and len(addrs) == 1
        for i in range(cols):
            for c in range(lay.chunks[k + 1]):
                rs = [r for r in range(c * lanes, c * lanes + lanes) if r < rows]
                assert len({lay.bank(k, r, i) for r in rs}) == len(rs)
        for r in range(rows):
            for i in range(cols):
                key = (lay.bank(k, r, i), lay.address(k, r, i))
                assert key not in seen
                seen.add(key)


def test_weight_image_decodes_back():
    cfg = ef.FixedEqPropConfig(sizes=(8, 4, 8, 3), batch=1, lr_shifts=(1, 1, 1))
    params = ef.init_params(cfg)
    lay = EqPropLayout(cfg.sizes, 4)
    banks = lay.weight_image(params)
    beats = []
    for k in range(3):
        for r in range(cfg.sizes[k + 1]):
            for c in range(cfg.sizes[k] // 4):
                beats.append([banks[b][lay.wbase[k] + r * cfg.sizes[k] // 4 + c]
                              for b in range(4)])
    W, b = lay.decode_weights(beats, lay.bias_image(params))
    for k in range(3):
        assert (W[k] == params["W"][k]).all() and (b[k] == params["b"][k]).all()


@pytest.mark.parametrize("sizes, lanes, ice40, ecp5", [
    ((64, 32, 10), 4, 17, 9), ((64, 32, 10), 2, 13, 7), ((64, 32, 10), 8, 25, 17),
    ((64, 64, 10), 4, 25, 13), ((64, 64, 10), 2, 23, 9), ((64, 128, 10), 4, 45, 17)])
def test_plan_block_rams_on_the_boards(sizes, lanes, ice40, ecp5):
    from nmflow.golden.eqprop_plan import EqPropPlan
    plan = EqPropPlan(ef.FixedEqPropConfig(sizes=sizes, batch=1, lr_shifts=(5, 6)), lanes)
    assert len(plan.memories) == 2 * lanes + 1
    assert plan.block_rams(BOARDS["icebreaker"]) == ice40
    assert plan.block_rams(BOARDS["ulx3s"]) == ecp5
    if ice40 <= 30:
        assert plan.check_fit(BOARDS["icebreaker"]) == ice40


def test_binary_64_128_10_fits_the_icebreaker_with_spram_hidden_weights():
    # 4 code banks of 2,432 x 2 bits (2 iCE40 block RAMs each in 2048 x 2), 4 state banks of
    # 16 + 3 x 35 = 121 x 8 (1 each), biases 138 x 16 (1): 13 block RAMs; the hidden weights
    # in block RAM would add 4 banks of 2,432 x 16 (10 each in 256 x 16): 53 of 30
    from nmflow.golden.eqprop_plan import EqPropPlan
    from nmflow.rtl.eqprop import choose_plan
    cfg = ef.FixedEqPropConfig(sizes=(64, 128, 10), batch=1, lr_shifts=(5, 6), weights="binary",
                               m=10.0, decay_shift=10)
    ice40, ecp5 = BOARDS["icebreaker"], BOARDS["ulx3s"]
    assert EqPropPlan(cfg, 4).block_rams(ice40) == 53
    plan = choose_plan(cfg, 4, board=ice40)
    assert (plan.storage, plan.sprams, plan.check_fit(ice40)) == ("spram", 4, 13)
    # on the ECP5 (no SPRAM) the hidden banks stay block RAM: 4 x 1 + 4 x 1 + 1 + 4 x 3
    plan = choose_plan(cfg, 4, board=ecp5)
    assert (plan.storage, plan.sprams, plan.check_fit(ecp5)) == ("memory", 0, 21)
    # the push's feedback memory, beside them: 64-128-10 at 16 lanes pushes, 8 rows of 16 sums
    pushed = EqPropPlan(cfg, 16)
    assert pushed.push and pushed.feedback_memory == (8, 16 * pushed.feedback_format.width)
    assert EqPropPlan(cfg, 4).feedback_memory is None


@pytest.mark.parametrize("sizes, lanes, push, drains, free, nudged", [
    # 64-32-10 on 4 lanes: the output layer reads the hidden layer's last row only at its 8th
    # command, late enough for no drain between the groups
    ((64, 32, 10), 4, False, (0, 8), 32 * 19 + 10 * 8 + 8 + 2, 32 * 19 + 10 * 9 + 8 + 2),
    # 8-8-3 on 4 lanes: the output layer reads the hidden layer's last row at its 2nd command
    ((8, 8, 3), 4, False, (6, 8), 8 * 3 + 3 * 2 + 6 + 8 + 2, 8 * 3 + 3 * 3 + 6 + 8 + 2),
    ((8, 4, 8, 3), 2, False, (0, 4, 8), None, None),
    # with the push: 3 outputs x 2 chunks, then 8 neurons x 2 rows, then 3 x 2. Feedback row 0
    # is written by push command 2 and read by the hidden layer's first command, 4 later
    # (FEEDBACK_TO_READ 5: one drain cycle); the outputs as without the push
    ((8, 8, 3), 4, True, (1, 6, 8), 6 + 8 * 2 + 3 * 2 + 1 + 6 + 8 + 2,
     6 + 8 * 2 + 3 * 3 + 1 + 6 + 8 + 2),
    # N = 3 odd: layers 1 and 3 (4 x (4 + 4), 3 x 4), the push (3 x 4 chunks), layer 2
    # (8 x 2). The push's output 2 reads s_3's row 1, written by layer 3's last command,
    # at its 3rd command: 8 - 3 = 5 cycles of drain; layer 2 reads feedback row 0 ten cycles
    # after its write
    ((8, 4, 8, 3), 2, True, (0, 5, 0, 8), 32 + 12 + 12 + 16 + 5 + 8 + 2,
     32 + 15 + 12 + 16 + 5 + 8 + 2),
    # 64-32-10 on 4 lanes with the push: 10 x 8 push commands for 32 x 3 column chunks
    ((64, 32, 10), 4, True, (0, 0, 8), 80 + 32 * 16 + 10 * 8 + 8 + 2,
     80 + 32 * 16 + 10 * 9 + 8 + 2),
    # 32 lanes: one chunk; feedback row 0 written by the last push command, read at once (4
    # cycles of drain); the outputs read the hidden layer's only row at once (7)
    ((64, 32, 10), 32, True, (4, 7, 8), 10 + 32 * 2 + 10 + 4 + 7 + 8 + 2,
     10 + 32 * 2 + 20 + 4 + 7 + 8 + 2)])
def test_plan_drains_only_what_the_next_group_reads(sizes, lanes, push, drains, free, nudged):
    from nmflow.golden.eqprop_plan import (FEEDBACK_TO_READ, PIPELINE_DEPTH, WRITE_TO_READ,
                                           EqPropPlan)
    plan = EqPropPlan(ef.FixedEqPropConfig(sizes=sizes, batch=1,
                                           lr_shifts=(1,) * (len(sizes) - 1)), lanes, push)
    assert (PIPELINE_DEPTH, WRITE_TO_READ, FEEDBACK_TO_READ) == (8, 8, 5)
    assert plan.push == push
    assert plan.drain_cycles == drains
    if free is not None:
        assert (plan.issue_cycles_per_step(), plan.issue_cycles_per_step(nudged=True)) \
            == (free, nudged)


@pytest.mark.parametrize("sizes, lanes, push, free", [
    # without the push: 128 x (16 + 3) + 10 x 32 and 128 x (8 + 2) + 10 x 16 commands, under
    # 1.05 x the ideal at 4 lanes (2688), over it at 8 (1344)
    ((64, 128, 10), 4, False, 128 * 19 + 10 * 32 + 8 + 2),
    ((64, 32, 10), 4, False, 32 * 19 + 10 * 16 + 8 + 2 - 80),
    # with it: every command a multiply-accumulate of L lanes (the ideal), the drains (the
    # outputs' first neuron reads the hidden layer's last row at its command C - 1: 8 - C
    # cycles for C < 8 rows) and 2
    ((64, 128, 10), 8, True, 1344 + 8 + 2),
    ((64, 128, 10), 16, True, 672 + 8 + 2),
    ((64, 128, 10), 32, True, 336 + 4 + 8 + 2),
    ((64, 32, 10), 8, True, 336 + 4 + 8 + 2),
    ((64, 32, 10), 16, True, 168 + 6 + 8 + 2),
    # 64-32-10 on 32 lanes: the push's only feedback row read at once, too (4 more)
    ((64, 32, 10), 32, True, 84 + 4 + 7 + 8 + 2),
    # 16-8-5 on 8 lanes: the push (47) would not shorten the step (46)
    ((16, 8, 5), 8, False, 8 * 3 + 5 + 7 + 8 + 2)])
def test_plan_pushes_where_it_pays(sizes, lanes, push, free):
    from nmflow.golden.eqprop_plan import EqPropPlan
    cfg = ef.FixedEqPropConfig(sizes=sizes, batch=1, lr_shifts=(1, 1), weights="binary", m=10.0,
                               decay_shift=10)
    plan = EqPropPlan(cfg, lanes)
    assert plan.push == push and plan.issue_cycles_per_step() == free
    if sizes == (64, 128, 10):
        assert plan.issue_cycles_per_step() <= 1.05 * plan.ideal_cycles_per_step()


@pytest.mark.parametrize("extra, stages", [
    ({}, 4), ({"decay_shift": 4}, 5), ({"weights": "binary", "m": 10.0}, 6),
    ({"weights": "binary", "m": 10.0, "decay_shift": 10}, 7),
    # the write's register in front of the SPRAMs
    ({"weights": "binary", "m": 10.0, "decay_shift": 10, "storage": "spram"}, 8)])
def test_plan_update_stages(extra, stages):
    from nmflow.golden.eqprop_plan import EqPropPlan
    extra = dict(extra)
    storage = extra.pop("storage", "memory")
    plan = EqPropPlan(ef.FixedEqPropConfig(sizes=(8, 8, 3), batch=1, **extra), 4, storage=storage)
    assert len(plan.update_stages) == stages and plan.update_latency == stages - 1


def test_lfsr_jump_is_sixteen_steps_of_the_twin():
    cols = lfsr_jump_columns(16)
    lfsr = ef.Lfsr32(0x1234567)
    state = lfsr.state
    for draw in lfsr.draws(50):
        nxt = 0
        for bit in range(32):
            if state >> bit & 1:
                nxt ^= cols[bit]
        assert nxt & 0xFFFF == draw
        state = nxt


# -- refusals ---------------------------------------------------------------------------------------

def config(**kwargs):
    fields = dict(sizes=(8, 8, 3), T=3, K=2, batch=1, lr_shifts=(2, 3))
    fields.update(kwargs)
    return ef.FixedEqPropConfig(**fields)


@pytest.mark.parametrize("make, error, message", [
    (lambda: EqPropUnit(config(), lanes=3), NmflowError,
     "lanes must be a power of two from 1 to 64, not 3"),
    (lambda: EqPropUnit(config(sizes=(10, 8, 3)), lanes=4), NmflowError,
     "sizes[0] must be a multiple of lanes (4) for every layer but the last, not 10"),
    (lambda: EqPropUnit(config(sizes=(64, 128, 10)), lanes=4, board=BOARDS["icebreaker"]),
     NmflowError,
     "network 64-128-10 with 4 lanes needs 45 block RAMs of 4 kbit, the iCEBreaker has 30"),
    (lambda: EqPropUnit(config(sizes=(64, 2048, 10)), lanes=64, board=BOARDS["ulx3s"]),
     NmflowError,
     "network 64-2048-10 with 64 lanes needs 323 block RAMs of 18 kbit, the ULX3S-85F has 208"),
    (lambda: EqPropUnit(config(batch=2), lanes=4), NmflowError,
     "batch must be 1 (the unit learns sample by sample), not 2"),
    (lambda: EqPropUnit(config(estimate="one_sided"), lanes=4), NmflowError,
     "estimate must be symmetric, not 'one_sided'"),
    (lambda: EqPropUnit(config(update_rounding="floor"), lanes=4), NmflowError,
     "update_rounding must be stochastic, not 'floor'"),
    (lambda: EqPropUnit(config(T=0)), NmflowError, "T must be a positive integer, not 0"),
    (lambda: EqPropUnit(config(beta_shift=14)), NmflowError,
     "beta_shift must be an integer from 0 to 13, not 14"),
    (lambda: EqPropUnit(config(state=FixedFormat(False, 0, 1, overflow="saturate"))),
     NmflowError, "state format must have at least 2 bits, not 1"),
    (lambda: EqPropUnit(object()), NmflowError, "config must be a FixedEqPropConfig, not object"),
    (lambda: EqPropUnit(config(sizes=(4, 3), lr_shifts=(2,)), lanes=1, push=True), NmflowError,
     "push needs a hidden layer below the output layer, not sizes 4-3"),
    (lambda: EqPropUnit(config(), push="yes"), NmflowError,
     "push must be True, False or None (the plan decides), not 'yes'"),
    (lambda: EqPropUnit(config(weights="binary"), storage="flash"), NmflowError,
     "storage must be one of memory, spram, not 'flash'"),
    (lambda: EqPropUnit(config(), storage="spram"), NmflowError,
     "storage 'spram' holds hidden weights: weights must be 'binary', not 'real'"),
    (lambda: EqPropUnit(config(sizes=(64, 1024, 10), weights="binary"), storage="spram"),
     NmflowError, "storage 'spram' holds a weight bank in one 16384-word RAM: network "
     "64-1024-10 at 4 lanes needs 19456 words a bank"),
    (lambda: EqPropUnit(config(sizes=(64, 128, 10), weights="binary"), storage="spram",
                        board=BOARDS["ulx3s"]), NmflowError,
     "network 64-128-10 with 4 lanes keeps its hidden weights in 4 single-port RAMs (storage "
     "'spram'), the ULX3S-85F has 0"),
])
def test_impossible_settings_are_refused(make, error, message):
    refuses(make, error, message)


# -- bit-exact runs in Amaranth's simulator -----------------------------------------------------------

def scaled_params(cfg, scale):
    p = ef.init_params(cfg)
    w = cfg.weight
    return {"W": [np.clip(v * scale, w.min_raw, w.max_raw) for v in p["W"]],
            "b": [np.clip(v * scale, w.min_raw, w.max_raw) for v in p["b"]]}


def run_and_compare(cfg, lanes, params, samples, seed=0, push=None, storage=None):
    """Run the unit on ``samples`` from ``params`` and compare it with the twin at every step;
    with single-port hidden banks the hidden weights go in through the host port (the unit's
    own initial parameters, from ``init_params``, differ from ``params``)."""
    spram = storage == "spram"
    unit = EqPropUnit(cfg, lanes=lanes, params=None if spram else params, observe=True,
                      push=push, storage=storage, host_port=spram)
    observed, _ = run_pysim(unit, samples, seed=seed, valid=0.7, ready=0.6,
                            load=params if spram else None)
    assert len(observed) == len(samples)
    lfsr = ef.Lfsr32(cfg.lfsr_seed)
    traces = []
    for (x, y, train), seen in zip(samples, observed):
        trace, params = expected_trace(cfg, params, x, y, train, lfsr)
        assert compare(unit.layout, cfg, trace, seen) == []
        traces.append(trace)
    return traces, params


CASES = {
    # sizes, lanes, half, beta_shift, lr_shifts, weight scale
    "one hidden, 4 lanes, left-shifted bias update": ((8, 8, 3), 4, False, 2, (0, 3), 1),
    "two hidden, 2 lanes": ((8, 4, 8, 3), 2, False, 1, (1, 1, 2), 2),
    "8 lanes, clip(x/2)": ((16, 8, 5), 8, True, 0, (3, 4), 2),
    "no hidden layer, 1 lane": ((4, 3), 1, False, 3, (2,), 4),
}


@pytest.mark.parametrize("name", list(CASES))
def test_unit_matches_the_twin_step_by_step(name):
    sizes, lanes, half, beta_shift, lr, scale = CASES[name]
    cfg = ef.FixedEqPropConfig(sizes=sizes, T=4, K=3, lr_shifts=lr, batch=1, half=half,
                               beta_shift=beta_shift, seed=5, lfsr_seed=0xACE1)
    rng = np.random.default_rng(len(name))
    samples = [(rng.integers(0, 256, sizes[0]), int(rng.integers(0, sizes[-1])), train)
               for train in (1, 1, 0, 1, 1)]
    params = scaled_params(cfg, scale)
    traces, final = run_and_compare(cfg, lanes, params, samples, seed=len(name))
    # the run was not vacuous: parameters moved, states took values inside (0, max)
    moved = sum(int((a != b).sum()) for a, b in zip(params["W"] + params["b"],
                                                     final["W"] + final["b"]))
    assert moved > 0
    inside = [v for t in traces for step in t.states for layer in step for v in layer
              if 0 < v < cfg.state.max_raw]
    assert len(inside) > 10


def test_ties_and_saturation_on_the_output():
    # weights x16: outputs saturate at 255 together, the prediction takes the lowest index;
    # large learning rates push weights to the ends of the s2.13 range (saturating update)
    cfg = ef.FixedEqPropConfig(sizes=(8, 8, 3), T=3, K=2, lr_shifts=(0, 0), batch=1,
                               beta_shift=0, seed=0, lfsr_seed=7)
    rng = np.random.default_rng(3)
    samples = [(rng.integers(100, 256, 8), int(rng.integers(0, 3)), 1) for _ in range(4)]
    params = scaled_params(cfg, 16)
    traces, final = run_and_compare(cfg, 4, params, samples, seed=9)
    outputs = [t.states[cfg.T - 1][-1] for t in traces]
    assert any((o == o.max()).sum() > 1 for o in outputs)        # a tie was resolved
    w = cfg.weight
    assert any(((v == w.max_raw) | (v == w.min_raw)).any() for v in final["W"] + final["b"])


def test_cycles_per_step_of_the_default_configuration():
    cfg = ef.FixedEqPropConfig(sizes=(64, 32, 10), T=3, K=2, batch=1)
    unit = EqPropUnit(cfg, lanes=4)
    x = np.random.default_rng(0).integers(0, 256, 64)
    _, pulses = run_pysim(unit, [(x, 3, 1)], valid=1.0, ready=1.0)
    steps = np.diff(pulses)
    free, nudged = steps[:cfg.T - 1], steps[cfg.T:cfg.T + cfg.K - 1]
    assert set(free.tolist()) == {unit.issue_cycles_per_step()}
    assert set(nudged.tolist()) == {unit.issue_cycles_per_step(nudged=True)}
    ideal = unit.ideal_cycles_per_step()
    assert ideal == (32 * (64 + 10) + 10 * 32) / 4
    assert unit.issue_cycles_per_step() / ideal <= 1.1
    assert unit.issue_cycles_per_step(nudged=True) / ideal <= 1.1


@pytest.mark.parametrize("sizes, lanes, push", [
    # by hand in test_plan_pushes_where_it_pays
    ((64, 32, 10), 16, True), ((64, 32, 10), 32, True), ((64, 32, 10), 8, True)])
def test_cycles_per_step_with_the_push(sizes, lanes, push):
    cfg = ef.FixedEqPropConfig(sizes=sizes, T=3, K=2, batch=1, weights="binary", m=10.0,
                               decay_shift=10, lr_shifts=(1, 1))
    unit = EqPropUnit(cfg, lanes=lanes)
    assert unit.plan.push == push
    x = np.random.default_rng(0).integers(0, 256, 64)
    _, pulses = run_pysim(unit, [(x, 3, 1)], valid=1.0, ready=1.0)
    steps = np.diff(pulses)
    free, nudged = steps[:cfg.T - 1], steps[cfg.T:cfg.T + cfg.K - 1]
    expected = {16: (184, 194), 32: (105, 115), 8: (350, 360)}[lanes]
    assert (set(free.tolist()), set(nudged.tolist())) == ({expected[0]}, {expected[1]})
    assert (unit.issue_cycles_per_step(), unit.issue_cycles_per_step(nudged=True)) == expected


SPRAM = {"weights": "binary", "m": 5.0, "decay_shift": 3, "storage": "spram"}


@pytest.mark.parametrize("sizes, lanes, extra", [
    ((8, 8, 3), 4, {}), ((8, 4, 8, 3), 2, {}), ((4, 3), 1, {}),
    ((8, 8, 3), 4, {"weights": "binary", "m": 5.0}), ((4, 3), 1, {"decay_shift": 4}),
    # single-port hidden banks: the chunk reads that wait for the writes
    ((8, 8, 3), 4, SPRAM), ((8, 4, 8, 3), 2, SPRAM), ((4, 3), 1, SPRAM),
    ((16, 8, 5), 8, SPRAM)])
def test_update_cycles_of_the_plan(sizes, lanes, extra):
    from amaranth.sim import Simulator
    extra = dict(extra)
    storage = extra.pop("storage", None)
    cfg = ef.FixedEqPropConfig(sizes=sizes, T=2, K=1, batch=1,
                               lr_shifts=(1,) * (len(sizes) - 1), **extra)
    unit = EqPropUnit(cfg, lanes=lanes, storage=storage)
    pulses, done = [], []

    async def bench(ctx):
        ctx.set(unit.i.valid, 1)
        ctx.set(unit.i.payload.train, 1)
        for _ in range(sizes[0] // lanes):
            await ctx.tick().until(unit.i.ready)
        ctx.set(unit.i.valid, 0)
        cycle = 0
        while not ctx.get(unit.o.valid):
            if ctx.get(unit.step):
                pulses.append(cycle)
            await ctx.tick()
            cycle += 1
        done.append(cycle)

    sim = Simulator(unit)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert len(pulses) == cfg.T + 2 * cfg.K
    assert done[0] - pulses[-1] == unit.plan.update_cycles


# -- cocotb: on-chip training over 50 digits ----------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("simulator, n_train, binary", [("verilator", 50, False),
                                                         ("icarus", 6, False),
                                                         ("icarus", 6, True)])
def test_unit_under_cocotb_trains_like_the_twin(simulator, n_train, binary, tmp_path,
                                                monkeypatch):
    # Verilator takes the long run (50 samples: 42 s; Icarus took 215 s), Icarus short ones;
    # binary: the binarized network with metaplastic consolidation and decay
    from nmflow.golden.datasets import load_digits
    from nmflow.sim.eqprop_sim import simulate_eqprop
    monkeypatch.setenv("SIM", simulator)
    extra = dict(weights="binary", m=10.0, decay_shift=4) if binary else {}
    cfg = ef.FixedEqPropConfig(sizes=(64, 32, 10), T=16, K=6, lr_shifts=(5, 6) if not binary
                               else (1, 2), batch=1, **extra)
    data = load_digits()
    n = n_train + 2
    x = ef.inputs_to_raw(data.x_train[:n], 16)
    y = data.y_train[:n]
    # the training samples, with two inferences in between
    between = (n_train // 5, n_train // 2 + 4)
    samples = [(x[i], int(y[i]), 0 if i in between else 1) for i in range(n)]
    result, report = simulate_eqprop(tmp_path, cfg, samples, lanes=4, seed=4, wall_seconds=600)
    assert result.passed, (result.failures, result.log.read_text()[-2000:])
    assert report["samples"] == n and report["training_samples"] == n_train
    assert report["steps"] == n_train * (16 + 12) + 2 * 16
    # binary: every update's pair codes compared too (64 x 32 + 32 x 10 a dump)
    assert report["pair_codes"] == (n_train * (64 * 32 + 32 * 10) if binary else 0)
    # the weights after the last on-chip update equal the twin's own training run
    params, lfsr = ef.init_params(cfg), ef.Lfsr32(cfg.lfsr_seed)
    for xi, yi, train in samples:
        if train:
            params, _ = ef.train_step(cfg, params, xi.reshape(1, -1), [yi], lfsr)
    assert params["W"][0].tolist() != ef.init_params(cfg)["W"][0].tolist()
    for k in range(2):
        assert report["rtl_final_params"]["W"][k] == params["W"][k].tolist()
        assert report["rtl_final_params"]["b"][k] == params["b"][k].tolist()


def test_rescale_ties_round_up():
    # weights that are multiples of 2**12 make half of the pre-activations land exactly halfway
    # between two states (acc = 2**12 mod 2**13): the rounding's tie rule decides them
    cfg = ef.FixedEqPropConfig(sizes=(8, 8, 3), T=3, K=2, lr_shifts=(4, 4), batch=1, seed=2)
    rng = np.random.default_rng(11)
    params = {"W": [4096 * rng.integers(-2, 3, (8, 8)), 4096 * rng.integers(-2, 3, (3, 8))],
              "b": [8192 * rng.integers(-1, 2, 8), 8192 * rng.integers(-1, 2, 3)]}
    samples = [(rng.integers(0, 40, 8), int(rng.integers(0, 3)), train)
               for train in (0, 0, 0, 1)]
    lfsr, ties = ef.Lfsr32(cfg.lfsr_seed), 0
    for x, y, train in samples[:3]:
        s = ef.free_phase(cfg, params, x.reshape(1, -1))
        acc = x @ params["W"][0].T + (params["b"][0] << 8) + s[1][0] @ params["W"][1]
        ties += int((acc % 8192 == 4096).sum())
    assert ties > 5
    run_and_compare(cfg, 4, params, samples, seed=2)


# -- binary weights, decay and metaplastic consolidation (issue 20) ----------------------------------

BINARY_CASES = {
    # sizes, lanes, lr_shifts, weight scale, m, decay_shift
    "binary, 4 lanes": ((8, 8, 3), 4, (0, 2), 1, 0.0, 0),
    "binary, decay, two hidden, 2 lanes": ((8, 4, 8, 3), 2, (0, 0, 0), 1, 0.0, 3),
    "metaplastic m = 3, 8 lanes": ((16, 8, 5), 8, (0, 1), 1, 3.0, 0),
    "metaplastic m = 20 with decay, 1 lane": ((4, 3), 1, (0,), 1, 20.0, 2),
    # the decay's shift above the step's (r_W 5 and 6): the numerator's D is shifted up
    "metaplastic m = 5, decay 2^-12, 4 lanes": ((8, 8, 3), 4, (1, 2), 1, 5.0, 12),
    # single-port hidden banks (the iCE40's SPRAM), loaded through the host port
    "spram, metaplastic m = 5, decay, 4 lanes": ((8, 8, 3), 4, (1, 2), 1, 5.0, 3, "spram"),
    "spram, two hidden, 2 lanes": ((8, 4, 8, 3), 2, (0, 0, 0), 1, 0.0, 3, "spram"),
    "spram, metaplastic m = 20, 1 lane": ((4, 3), 1, (0,), 1, 20.0, 2, "spram"),
}


@pytest.mark.parametrize("name", list(BINARY_CASES))
def test_binary_unit_matches_the_twin_step_by_step(name):
    sizes, lanes, lr, scale, m, decay, *storage = BINARY_CASES[name]
    cfg = ef.FixedEqPropConfig(sizes=sizes, T=4, K=3, lr_shifts=lr, batch=1, beta_shift=0,
                               seed=5, lfsr_seed=0xACE1, weights="binary", m=m,
                               decay_shift=decay)
    rng = np.random.default_rng(len(name))
    samples = [(rng.integers(0, 256, sizes[0]), int(rng.integers(0, sizes[-1])), train)
               for train in (1, 1, 0, 1, 1, 1)]
    params = scaled_params(cfg, scale)
    params["W"][0][0, :] = 0                     # W_h = 0 is a binary +1: neuron 0 sees +a_0
    traces, final = run_and_compare(cfg, lanes, params, samples, seed=len(name),
                                    storage=storage[0] if storage else None)
    # not vacuous: hidden weights moved, states inside (0, max); without m some binary weights
    # flipped sign, with m the consolidation changed the outcome (against the twin at m = 0)
    moved = sum(int((a != b).sum()) for a, b in zip(params["W"], final["W"]))
    assert moved > 0
    if m == 0:
        assert sum(int(((a >= 0) != (b >= 0)).sum()) for a, b in zip(params["W"], final["W"]))
    else:
        plain_cfg = dataclasses.replace(cfg, m=0.0)
        plain, lfsr = params, ef.Lfsr32(cfg.lfsr_seed)
        for x, y, train in samples:
            plain = expected_trace(plain_cfg, plain, x, y, train, lfsr)[1]
        assert any((a != b).any() for a, b in zip(plain["W"], final["W"]))
    inside = [v for t in traces for step in t.states for layer in step for v in layer
              if 0 < v < cfg.state.max_raw]
    assert len(inside) > 10


def test_binary_unit_with_a_scaled_alpha_matches_the_twin():
    # alpha_scale 1.25: the unit's per-layer constants a_k come from the twin's binary_alphas
    # (8 inputs: 1.25 / (2 sqrt(8)) = 0.2210 -> 1810 raw, 8 hidden the same)
    cfg = ef.FixedEqPropConfig(sizes=(8, 8, 3), T=4, K=3, lr_shifts=(1, 2), batch=1,
                               beta_shift=0, seed=5, lfsr_seed=0xACE1, weights="binary", m=5.0,
                               decay_shift=3, alpha_scale=1.25)
    assert cfg.binary_alphas == (1810, 1810)
    rng = np.random.default_rng(12)
    samples = [(rng.integers(0, 256, 8), int(rng.integers(0, 3)), train)
               for train in (1, 1, 0, 1)]
    params = scaled_params(cfg, 1)
    traces, final = run_and_compare(cfg, 4, params, samples, seed=3)
    assert any((a != b).any() for a, b in zip(params["W"], final["W"]))


# -- the output layer's push (8, 16, 32 lanes) --------------------------------------------------------

PUSH_CASES = {
    # sizes, lanes, weights, m, decay_shift, push; N = 2 pushes at a step's start, N = 3 after
    # the first group
    "8 lanes, one hidden, real": ((16, 16, 5), 8, "real", 0.0, 0, True),
    "8 lanes, two hidden, binary, m = 3, decay": ((16, 8, 8, 3), 8, "binary", 3.0, 3, True),
    "16 lanes, one hidden, binary, m = 5, decay": ((32, 32, 10), 16, "binary", 5.0, 4, True),
    "16 lanes, two hidden, real": ((32, 16, 16, 5), 16, "real", 0.0, 0, True),
    # one feedback row, read at once: the push's drain
    "32 lanes, one hidden, real": ((32, 32, 3), 32, "real", 0.0, 0, True),
    "32 lanes, one hidden, binary, m = 20, decay": ((64, 32, 3), 32, "binary", 20.0, 2, True),
    "32 lanes, two hidden, binary": ((32, 32, 32, 3), 32, "binary", 0.0, 0, True),
    # the same network without it: the padded column chunks
    "8 lanes, two hidden, binary, no push": ((16, 8, 8, 3), 8, "binary", 3.0, 3, False),
}


@pytest.mark.parametrize("name", list(PUSH_CASES))
def test_unit_with_the_push_matches_the_twin_step_by_step(name):
    sizes, lanes, weights, m, decay, push = PUSH_CASES[name]
    cfg = ef.FixedEqPropConfig(sizes=sizes, T=3, K=2, lr_shifts=(1,) * (len(sizes) - 1),
                               batch=1, beta_shift=0 if weights == "binary" else 1, seed=5,
                               lfsr_seed=0xACE1, weights=weights, m=m, decay_shift=decay)
    rng = np.random.default_rng(len(name))
    samples = [(rng.integers(0, 256, sizes[0]), int(rng.integers(0, sizes[-1])), train)
               for train in (1, 0, 1)]
    params = scaled_params(cfg, 1 if weights == "binary" else 2)
    traces, final = run_and_compare(cfg, lanes, params, samples, seed=len(name), push=push)
    moved = sum(int((a != b).sum()) for a, b in zip(params["W"], final["W"]))
    assert moved > 0
    inside = [v for t in traces for step in t.states for layer in step[-2:] for v in layer
              if 0 < v < cfg.state.max_raw]
    assert len(inside) > 10
