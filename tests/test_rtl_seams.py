"""The engine's seams: an injectable read stage (checked against the golden reference with the same
read function), the weight memory's write port, the single-row argmax, the plan's latencies."""

import random

import numpy as np
import pytest
from amaranth.hdl import Fragment, Module, Signal
from amaranth.lib import wiring
from amaranth.sim import Simulator

from nmflow.golden.pairs import MINUS, PLUS, ZERO, MemoryMap, ReadFunction, memory_codes, pcsa_read
from nmflow.golden.plan import EnginePlan
from nmflow.golden.reference import reference
from nmflow.golden.synthetic import random_inputs, random_model
from nmflow.rtl.engine import InferenceEngine
from nmflow.rtl.lanes import GXNORPopcount
from nmflow.rtl.activations import ActivationStore
from nmflow.rtl.pcsa import PCSARead, ReadStageSignature
from nmflow.rtl.threshold import ThresholdUnit
from nmflow.rtl.weights import WeightMemory
from nmflow.sim.pysim import run_engine
from nmflow.sim.streams import stream_get, stream_put

from helpers import assert_back_to_back


class FlipOddRows(ReadFunction):
    """Golden twin of :class:`FlipOddRowsRead`: weights of odd rows read with their sign flipped,
    and (1, 1) pairs read as +1."""

    def __call__(self, codes, addr):
        w = np.where(codes == 0b11, 1, pcsa_read(codes)).astype(np.int8)
        return w * np.where(addr % 2 == 1, -1, 1)[:, None].astype(np.int8)


def flip_odd_rows(latency):
    """A stand-in read stage that maps some codes differently, with ``latency`` register stages."""

    class FlipOddRowsRead(wiring.Component):
        def __init__(self, *, lanes, addr_bits):
            super().__init__(ReadStageSignature(lanes, addr_bits))

        def elaborate(self, platform):
            m = Module()
            valid, row = self.i.valid, Signal.like(self.o.payload)
            odd = self.i.payload.addr[0]
            for code, weight in zip(self.i.payload.codes, row):
                both = code.bl & code.blb
                m.d.comb += [weight.nz.eq((code.bl ^ code.blb) | both),
                             weight.neg.eq(((code.blb & ~code.bl) ^ odd) & ~(both & ~odd))]
            for n in range(latency):
                next_valid, next_row = Signal(name=f"valid{n}"), Signal.like(row, name=f"row{n}")
                m.d.sync += [next_valid.eq(valid), next_row.eq(row)]
                valid, row = next_valid, next_row
            m.d.comb += [self.o.valid.eq(valid), self.o.payload.eq(row)]
            return m

    FlipOddRowsRead.latency = latency
    return FlipOddRowsRead


def check(engine, inputs, golden, **kwargs):
    run = run_engine(engine, inputs, **kwargs)
    assert run.classes.tolist() == golden.classes.tolist()
    assert run.scores.tolist() == golden.scores.tolist()
    for got, expected in zip(run.acts, golden.acts):
        assert got.tolist() == expected.tolist()
    return run


@pytest.mark.parametrize("latency", [0, 1, 3])
def test_stand_in_read_stage_matches_the_reference_with_its_twin(latency):
    model = random_model([12, 10, 6, 4], weight_kind="ternary", input_bits=3, seed=7)
    engine = InferenceEngine(model, lanes=4, read_stage=flip_odd_rows(latency))
    inputs = random_inputs(model, 5, seed=latency)
    golden = reference(model, inputs, lanes=4, read=FlipOddRows())
    # the stand-in really reads differently from the ideal read
    assert golden.scores.tolist() != reference(model, inputs, lanes=4).scores.tolist()
    run = check(engine, inputs, golden)
    assert_back_to_back(run.cycles, engine.plan)
    assert engine.cycles_per_inference == EnginePlan(model, 4).cycles_per_inference + 3 * latency


def test_never_programmed_pairs_reach_the_read_stage():
    # Program (1, 1) into some pairs by writing the memory image: the stand-in reads them as +1,
    # the ideal read as 0. Both sides must agree with their twins.
    model = random_model([8, 5, 3], weight_kind="ternary", input_bits=2, seed=9)
    mmap = MemoryMap(4, tuple(model.sizes))
    codes = memory_codes([ly.weights for ly in model.layers], mmap)
    codes[::3, 1] = 0b11
    inputs = random_inputs(model, 4, seed=3)
    for stage, read in ((None, None), (flip_odd_rows(1), FlipOddRows())):
        engine = InferenceEngine(model, lanes=4, read_stage=stage, writable=True)
        run = run_with_writes(engine, writes=[(r, codes[r], (1 << 4) - 1) for r in range(mmap.rows)],
                              inputs=inputs)
        golden = reference(model, inputs, lanes=4, read=read, codes=codes)
        assert run["classes"] == golden.classes.tolist()
        assert run["scores"] == golden.scores.tolist()


def row_value(codes):
    return [{"bl": int(c) >> 1, "blb": int(c) & 1} for c in codes]


def run_with_writes(engine, writes, inputs, *, seed=0):
    """Write ``(row, codes, lane_mask)`` rows through ``engine.weights`` while the engine is idle,
    then stream ``inputs`` through it (random backpressure); return classes and scores."""
    rng = random.Random(seed)
    result = {"classes": [], "scores": []}

    async def testbench(ctx):
        assert ctx.get(engine.idle)
        for row, codes, mask in writes:
            ctx.set(engine.weights.addr, row)
            ctx.set(engine.weights.data, row_value(codes))
            ctx.set(engine.weights.en, mask)
            await ctx.tick()
        ctx.set(engine.weights.en, 0)

    async def producer(ctx):
        await ctx.tick().repeat(len(writes) + 1)
        for vector in inputs:
            for value in vector:
                await stream_put(ctx, engine.i, int(value), rng=rng, valid=0.8)

    async def consumer(ctx):
        for _ in inputs:
            scores = []
            while True:
                beat = await stream_get(ctx, engine.o, rng=rng, ready=0.6)
                scores.append(beat.score)
                if beat.last:
                    break
            result["scores"].append(scores)
            result["classes"].append(beat.cls)

    sim = Simulator(engine)
    sim.add_clock(1e-6)
    sim.add_testbench(testbench)
    sim.add_testbench(producer)
    sim.add_testbench(consumer)
    sim.run()
    return result


def test_inference_after_a_write_sees_the_new_weights():
    model = random_model([10, 7, 4], weight_kind="ternary", input_bits=3, seed=11)
    lanes = 4
    mmap = MemoryMap(lanes, tuple(model.sizes))
    codes = memory_codes([ly.weights for ly in model.layers], mmap)
    new = codes.copy()
    rng = np.random.default_rng(4)
    writes = []
    for row in (0, 2, mmap.bases[1], mmap.rows - 1):
        fresh = rng.choice(np.array([PLUS, MINUS, ZERO], dtype=np.uint8), lanes)
        mask = 0b1011                         # lane 2 keeps its old code
        for p in range(lanes):
            if mask >> p & 1:
                new[row, p] = fresh[p]
        writes.append((row, fresh, mask))
    assert (new != codes).any()
    inputs = random_inputs(model, 6, seed=5)
    engine = InferenceEngine(model, lanes=lanes, writable=True)
    run = run_with_writes(engine, writes, inputs)
    golden = reference(model, inputs, lanes=lanes, codes=new)
    assert golden.scores.tolist() != reference(model, inputs, lanes=lanes).scores.tolist()
    assert run["scores"] == golden.scores.tolist()
    assert run["classes"] == golden.classes.tolist()


def test_single_row_argmax_keeps_the_lowest_index_on_ties():
    # The last layer fits in one row (4 inputs, 8 lanes): the argmax compares and updates in one
    # cycle. Equal scores in classes 1 and 3 above the rest: class 1 must win (and 1 of 1, 2, 3).
    from nmflow.golden.hwmodel import HardwareModel, Layer
    w0 = np.array([[1, 1, 0], [0, 1, 1], [1, 0, 1], [1, 1, 1]], dtype=np.int8)
    w1 = np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 1, 0, 0]], dtype=np.int8)
    model = HardwareModel(input_bits=2, weight_kind="ternary", layers=[
        Layer(w0, "ternary", t_hi=np.array([1, 1, 1, 1]), t_lo=np.array([0, 0, 0, 0])),
        Layer(w1, "none", scale=np.array([1, 3, 1, 3]), offset=np.array([-5, 0, 0, 0]))])
    plan = EnginePlan(model, 8)
    assert not plan.split_argmax
    inputs = np.array([[1, 1, 1], [0, 0, 0], [3, 0, 0]])
    golden = reference(model, inputs)
    # [1, 1, 1]: every hidden neuron fires (+1); [0, 0, 0]: all sit at 0; [3, 0, 0]: 1, 0, 1, 1.
    assert golden.scores.tolist() == [[-4, 3, 1, 3], [-5, 0, 0, 0], [-4, 0, 1, 0]]
    assert golden.classes.tolist() == [1, 1, 2]
    check(InferenceEngine(model, lanes=8), inputs, golden)


def test_ideal_read_stage_decodes_every_pair_code():
    stage = PCSARead(lanes=4, addr_bits=3)
    rows = [[PLUS, MINUS, ZERO, 0b11], [0b11, ZERO, MINUS, PLUS]]
    got = []

    async def testbench(ctx):
        for codes in rows:
            ctx.set(stage.i.payload.codes, row_value(codes))
            ctx.set(stage.i.valid, 1)
            await ctx.delay(1e-9)
            weights = ctx.get(stage.o.payload)
            got.append([(-1 if w.neg else 1) * w.nz for w in weights])
            assert ctx.get(stage.o.valid)

    sim = Simulator(stage)
    sim.add_testbench(testbench)
    sim.run()
    assert got == [pcsa_read(np.array(codes)).tolist() for codes in rows]


def test_component_latencies_are_the_plans():
    model = random_model([40, 8, 3], seed=1)
    for lanes in (1, 2, 16, 64):
        plan = EnginePlan(model, lanes)
        popcount = GXNORPopcount(lanes, plan.x_bits)
        Fragment.get(popcount, None)            # elaborated, as a design would
        assert popcount.latency == plan.popcount_latency
    plan = EnginePlan(model, 4)
    assert PCSARead.latency == plan.read_latency == 0
    assert ThresholdUnit.latency == plan.stage_cycles("threshold")
    assert WeightMemory.latency == plan.stage_cycles("weight read")
    # the activation store answers as the weight row arrives, registered: read plus register
    assert ActivationStore.read_latency == (plan.stage_cycles("weight read")
                                            + plan.stage_cycles("register"))


def test_read_stage_latency_must_be_an_integer():
    from helpers import refuses

    class NoLatency:
        pass
    refuses(lambda: InferenceEngine(random_model([8, 4], seed=0), read_stage=NoLatency),
            ValueError, "read_stage must have an integer latency, not None")


@pytest.mark.parametrize("sizes, lanes, interval, banks", [
    # rows 60 + 18; drain 9 between the layers, of which the second layer's first group overlaps
    # 2: it reads its 3 chunks a cycle apart, the last one written by the first layer's last
    # group; the last layer's drain runs under the next inference's first layer. So: the reads,
    # the gaps between layers of one inference, plus one cycle
    ([24, 10, 6], 4, 60 + 18 + (9 - 2) + 1, 1),
    # rows 10 + 6, drain 8, overlap 2 (3 chunks)
    ([3, 5, 2], 2, 10 + 6 + (8 - 2) + 1, 1),
    # rows 24 + 16 + 5, drains 10 + 10: the second layer reads 2 chunks (overlap 1), the third
    # one chunk (none)
    ([16, 12, 8, 5], 8, 24 + 16 + 5 + (10 - 1) + 10 + 1, 1),
    # 40 inputs: with one input bank they would load after the first layer's 10 rows (50
    # cycles, more than the 10 + 2 rows and the 10-cycle drain between the layers, one chunk
    # read: no overlap); with two they load while it runs, and the input load is the bound
    ([40, 2, 2], 8, 40, 2),
    # 20 inputs, rows 12 + 2: one bank would take 12 + 20; with two the rows and the gap are
    # the bound again
    ([20, 4, 2], 8, 12 + 2 + 10 + 1, 2),
    # one layer: the next inference waits for the scores (16 rows, 10 cycles of drain) to be
    # stored and the results (4 beats) to go out
    ([7, 4], 2, 16 + 10 + 4 + 2, 1),
])
def test_back_to_back_inferences_start_every_interval(sizes, lanes, interval, banks):
    # The next inference's inputs load while the current one computes its later layers, and its
    # first layer runs while the current one's last layer drains: back to back, the engine reads
    # its weight memory all but the drains between layers and a cycle per inference.
    model = random_model(sizes, weight_kind="ternary", input_bits=3, seed=len(sizes) + lanes)
    engine = InferenceEngine(model, lanes=lanes)
    plan = engine.plan
    inputs = random_inputs(model, 5, seed=1)
    run = check(engine, inputs, reference(model, inputs))
    assert (plan.interval_cycles, plan.input_banks) == (interval, banks)
    # the second vector loads once the first inference's first layer is issued (with two input
    # banks, at once)
    assert np.diff(run.starts).tolist() == ([sizes[0] + plan.layer_rows[0] * (banks == 1)]
                                            + [plan.interval_cycles] * 3)
    assert run.cycles.tolist() == [plan.cycles_per_inference] + [plan.cycles_back_to_back] * 4


def test_interval_figures_hold_on_random_networks():
    # The plan's figures against the engine on 16 random networks (one to four layers, one to
    # eight lanes), every output checked, the inputs offered as soon as they can be taken.
    rng = random.Random(7)
    for case in range(16):
        sizes = [rng.randint(1, 40)] + [rng.randint(1, 12) for _ in range(rng.randint(1, 4))]
        lanes = rng.choice([1, 2, 4, 8])
        model = random_model(sizes, weight_kind="ternary", input_bits=3, seed=case)
        engine = InferenceEngine(model, lanes=lanes)
        plan = engine.plan
        inputs = random_inputs(model, 4, seed=case)
        run = check(engine, inputs, reference(model, inputs))
        assert np.diff(run.starts).tolist() == ([plan.first_interval_cycles]
                                                + [plan.interval_cycles] * 2), (sizes, lanes)
        assert_back_to_back(run.cycles, plan)


@pytest.mark.parametrize("sizes, lanes", [([1, 1, 12], 1), ([2, 1, 16], 4), ([3, 9], 4)])
def test_results_are_never_overwritten(sizes, lanes):
    # Layers before the last so short that the next inference's last layer would begin while
    # the results still go out: the next inference waits before it starts, and every result
    # (checked against the reference) is the right one.
    model = random_model(sizes, weight_kind="ternary", input_bits=3, seed=5)
    engine = InferenceEngine(model, lanes=lanes)
    plan = engine.plan
    assert plan.waits_for_results == (len(sizes) == 2)     # one layer: before it starts
    inputs = random_inputs(model, 8, seed=2)
    run = check(engine, inputs, reference(model, inputs))
    # the last layer's rows and drain, the result beats and two cycles, from one last layer to
    # the next: longer than the rest of an inference
    compute = plan.ideal_cycles + sum(plan.layer_gaps) + 1
    assert plan.interval_cycles == plan.last_layer_gap == (
        plan.layer_rows[-1] + plan.drain_cycles[-1] + sizes[-1] + 2) > compute
    # the steady state from the third inference on (a deeper network's second one starts
    # before its last layer must wait)
    settled = 1 if plan.waits_for_results else 2
    assert plan.stalls_last_layer == (not plan.waits_for_results)
    assert np.diff(run.starts).tolist()[settled:] == [plan.interval_cycles] * (7 - settled)
    assert_back_to_back(run.cycles, plan)
