"""The score-and-argmax unit against its twin (``scale * acc + offset``, argmax with the lowest
index on ties), with extreme values, ties and random backpressure on the result stream."""

import random

import numpy as np
import pytest
from amaranth.sim import Simulator

from nmflow.golden.plan import EnginePlan
from nmflow.golden.reference import argmax_lowest
from nmflow.golden.synthetic import random_model
from nmflow.rtl.scores import ScoreArgmax
from nmflow.sim.streams import stream_get


def run_scores(plan, rounds, *, ready=0.5, seed=0):
    """Feed each round's ``(acc, scale, offset)`` per class, ``pe`` classes a beat (padding
    classes get garbage), start, and collect the beats."""
    unit = ScoreArgmax(plan)
    gap = 2 if plan.split_argmax else 1
    rng = random.Random(seed)
    got = []

    async def testbench(ctx):
        for accs, scales, offsets in rounds:
            while ctx.get(unit.busy):
                await ctx.tick()
            pe, groups = plan.pe, plan.groups[-1]
            pad = groups * pe - len(accs)
            # padding classes with the highest score there can be: they would win if counted
            last = plan.model.layers[-1]
            accs = [int(a) for a in accs] + [plan.model.preact_bound(plan.n_layers - 1)] * pad
            scales = [int(a) for a in scales] + [int(np.abs(last.scale).max())] * pad
            offsets = [int(a) for a in offsets] + [int(np.abs(last.offset).max())] * pad
            for g in range(groups):
                ctx.set(unit.i.valid, 1)
                part = slice(g * pe, (g + 1) * pe)
                ctx.set(unit.i.payload, {"acc": accs[part], "scale": scales[part],
                                         "offset": offsets[part], "group": g,
                                         "end": int(g == groups - 1)})
                await ctx.tick()
                ctx.set(unit.i.valid, 0)
                for _ in range(gap - 1 + rng.randrange(2)):
                    await ctx.tick()
            for _ in range(4 + plan.pe_bits):   # the last score is stored within the pipeline
                await ctx.tick()
            ctx.set(unit.start, 1)
            await ctx.tick()
            ctx.set(unit.start, 0)

    async def consumer(ctx):
        for _ in rounds:
            beats = []
            while True:
                beat = await stream_get(ctx, unit.o, rng=rng, ready=ready)
                beats.append((beat.index, beat.score, beat.cls))
                if beat.last:
                    break
            got.append(beats)

    sim = Simulator(unit)
    sim.add_clock(1e-6)
    sim.add_testbench(testbench)
    sim.add_testbench(consumer)
    sim.run()
    return got


@pytest.mark.parametrize("lanes, pe", [
    (4, 1), (16, 1),        # two rows per class, or one (single-cycle argmax)
    (8, 2), (16, 4),        # two or four classes a beat, the last group padded (7 of 8)
    (64, 8),                # one group of eight: the tree alone decides (one padding class)
])
def test_scores_and_argmax_match_the_twin(lanes, pe):
    model = random_model([20, 12, 7], input_bits=4, seed=3)
    plan = EnginePlan(model, lanes, pe=pe)
    assert plan.split_argmax == (-(-12 * pe // lanes) >= 2)
    last = model.layers[-1]
    bound = model.preact_bound(1)
    rng = np.random.default_rng(lanes)
    rounds = [
        (np.full(7, bound), last.scale, last.offset),                 # extremes
        (np.full(7, -bound), last.scale, last.offset),
        (np.zeros(7, dtype=np.int64), last.scale, np.full(7, 5)),      # a seven-way tie
        (np.array([1, 3, 2, 3, 0, 3, -1]), np.ones(7, dtype=np.int64), np.zeros(7)),  # ties at 1
    ] + [(rng.integers(-bound, bound + 1, 7), last.scale, last.offset) for _ in range(12)]
    got = run_scores(plan, rounds, ready=0.4, seed=lanes + pe)
    for (accs, scales, offsets), beats in zip(rounds, got):
        scores = np.asarray(accs, dtype=np.int64) * scales + np.asarray(offsets, dtype=np.int64)
        cls = int(argmax_lowest(scores))
        assert beats == [(j, int(scores[j]), cls) for j in range(7)]
    assert [b[0][2] for b in got[2:4]] == [0, 1]
