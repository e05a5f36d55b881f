# amaranth: UnusedElaboratable=no
"""The weight memory built from SPRAM (the iCE40UP5K's SB_SPRAM256KA, its behavioural model here):
rows written at run time and read back ==, across columns and banks; the engine on it, its rows
loaded first, against the integer reference."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from nmflow.golden.plan import EnginePlan, spram_tiles
from nmflow.golden.reference import reference
from nmflow.golden.synthetic import random_inputs, random_model
from nmflow.rtl.engine import InferenceEngine
from nmflow.rtl.weights import WeightMemory
from nmflow.sim.pysim import run_engine

from helpers import refuses


def codes_of(view):
    return [int(p.blb) | int(p.bl) << 1 for p in view]


@pytest.mark.parametrize("rows, lanes, expected", [
    (100, 1, (1, 1)), (16384, 8, (1, 1)), (16385, 8, (1, 2)), (8528, 32, (4, 1)),
    (8400, 64, (8, 1)), (40000, 4, (1, 3)),
])
def test_spram_tiles(rows, lanes, expected):
    assert spram_tiles(rows, 2 * lanes) == expected


def test_plan_counts_the_sprams_of_an_mnist_size_network():
    # 784-256-256-10 over 32 lanes: 25 * 256 + 8 * 256 + 8 * 10 = 8528 rows of 64 bits
    model = random_model([784, 256, 256, 10], weight_kind="ternary", input_bits=8, seed=0)
    plan = EnginePlan(model, 32)
    assert plan.weight_rows == 8528
    assert plan.weight_sprams == 4


@pytest.mark.parametrize("rows, lanes, depth", [
    (5, 1, 8),          # a lane narrower than a nibble
    (37, 4, 64),        # one column, part used
    (20, 16, 32),       # two columns side by side
    (70, 8, 32),        # three banks: the high address bits choose
])
def test_spram_weight_memory_reads_what_was_written(rows, lanes, depth):
    rng = np.random.default_rng(rows)
    codes = rng.integers(0, 4, (rows, lanes))
    dut = WeightMemory(np.zeros_like(codes), kind="spram", spram_depth=depth)
    assert dut.writable and dut.sprams == np.prod(spram_tiles(rows, 2 * lanes))   # silicon
    order = rng.permutation(rows)
    got = {}

    async def bench(ctx):
        for row in order:                       # written in a random order, whole rows
            ctx.set(dut.write.addr, int(row))
            ctx.set(dut.write.data, [{"blb": int(c) & 1, "bl": int(c) >> 1} for c in codes[row]])
            ctx.set(dut.write.en, (1 << lanes) - 1)
            await ctx.tick()
        ctx.set(dut.write.en, 0)
        for row in rng.permutation(rows):
            ctx.set(dut.read.addr, int(row))
            ctx.set(dut.read.en, 1)
            await ctx.tick()
            ctx.set(dut.read.en, 0)
            got[int(row)] = codes_of(ctx.get(dut.read.data))
            await ctx.tick()                    # the row holds while nothing reads
            assert codes_of(ctx.get(dut.read.data)) == got[int(row)]

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert got == {row: codes[row].tolist() for row in range(rows)}


def test_spram_reads_back_to_back_rows_from_alternating_banks():
    rows, lanes = 48, 2
    codes = np.arange(rows * lanes).reshape(rows, lanes) % 4
    dut = WeightMemory(np.zeros_like(codes), kind="spram", spram_depth=16)
    seen = []

    async def bench(ctx):
        for row in range(rows):
            ctx.set(dut.write.addr, row)
            ctx.set(dut.write.data, [{"blb": int(c) & 1, "bl": int(c) >> 1} for c in codes[row]])
            ctx.set(dut.write.en, 0b11)
            await ctx.tick()
        ctx.set(dut.write.en, 0)
        order = [0, 17, 33, 1, 47, 16]          # banks 0, 1, 2, 0, 2, 1
        for row in order:
            ctx.set(dut.read.addr, row)
            ctx.set(dut.read.en, 1)
            await ctx.tick()
            seen.append(codes_of(ctx.get(dut.read.data)))
        assert seen == [codes[r].tolist() for r in order]

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()


def test_spram_depth_validated():
    for bad in (24, 1, 32768, True):
        refuses(lambda: WeightMemory(np.zeros((40, 2), np.uint8), kind="spram", spram_depth=bad),
                ValueError, f"spram_depth must be a power of two from 2 to 16384, not {bad!r}")


@pytest.mark.parametrize("sizes, kind, lanes, pe, bits", [
    ([16, 12, 8, 5], "ternary", 4, 1, None),
    ([20, 9, 3], "binary", 8, 2, None),
    ([12, 10, 6], "ternary", 8, 2, 1),
])
def test_engine_on_spram_matches_reference(sizes, kind, lanes, pe, bits):
    model = random_model(sizes, weight_kind=kind, seed=len(sizes) + lanes)
    engine = InferenceEngine(model, lanes=lanes, pe=pe, first_layer_bits=bits, memory="spram")
    assert "weights" in engine.signature.members
    inputs = random_inputs(model, 5, seed=1)
    run = run_engine(engine, inputs, ready=0.7, valid=0.8, seed=3)
    golden = reference(model, inputs, lanes=lanes, pe=pe)
    assert run.classes.tolist() == golden.classes.tolist()
    assert run.scores.tolist() == golden.scores.tolist()
    for got, expected in zip(run.acts, golden.acts):
        assert got.tolist() == expected.tolist()


def test_spram_write_enables_cover_lane_pairs():
    # an SPRAM nibble holds two lanes: enabling either lane of a pair writes both, the other
    # pairs keep their codes
    dut = WeightMemory(np.zeros((4, 4), np.uint8), kind="spram", spram_depth=4)

    async def bench(ctx):
        def write(row, codes, en):
            ctx.set(dut.write.addr, row)
            ctx.set(dut.write.data, [{"blb": c & 1, "bl": c >> 1} for c in codes])
            ctx.set(dut.write.en, en)
        write(2, [1, 1, 1, 1], 0b1111)
        await ctx.tick()
        write(2, [3, 2, 3, 2], 0b0010)          # lane 1 only: lanes 0 and 1 written
        await ctx.tick()
        write(2, [0, 0, 0, 0], 0)
        ctx.set(dut.read.addr, 2)
        ctx.set(dut.read.en, 1)
        await ctx.tick()
        assert codes_of(ctx.get(dut.read.data)) == [3, 2, 1, 1]

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
