"""Run the inference engine in Amaranth's own simulator (fast unit tests, no Verilog)."""

import random
from dataclasses import dataclass

import numpy as np
from amaranth.sim import Simulator

__all__ = ["EngineRun", "run_engine"]


@dataclass
class EngineRun:
    """What the engine produced for N inputs, in the golden model's shapes."""
    classes: np.ndarray
    scores: np.ndarray
    acts: list
    cycles: np.ndarray
    trace_events: list


def run_engine(engine, inputs, *, ready=1.0, seed=0, vcd=None):
    """Stream ``inputs`` ([N, n_inputs]) through ``engine``; return an :class:`EngineRun`.

    ``ready`` is the probability that the result stream accepts a beat in a cycle. ``cycles`` counts
    from each inference's first input beat to its last result beat.
    """
    model = engine.model
    inputs = np.asarray(inputs, dtype=np.int64)
    n = len(inputs)
    classes = np.full(n, -1, dtype=np.int64)
    scores = np.zeros((n, model.n_classes), dtype=np.int64)
    acts = [np.zeros((n, layer.n_out), dtype=np.int8) for layer in model.layers[:-1]]
    cycles = np.zeros(n, dtype=np.int64)
    events = []
    rng = random.Random(seed)

    async def testbench(ctx):
        cycle = 0
        for image, vector in enumerate(inputs):
            start = cycle
            for value in vector:
                ctx.set(engine.i.valid, 1)
                ctx.set(engine.i.payload, int(value))
                while True:
                    ready_now = ctx.get(engine.i.ready)
                    await ctx.tick()
                    cycle += 1
                    if ready_now:
                        break
            ctx.set(engine.i.valid, 0)
            while True:
                accept = rng.random() < ready
                ctx.set(engine.o.ready, accept)
                if ctx.get(engine.trace.valid):
                    beat = ctx.get(engine.trace.payload)
                    acts[beat.layer][image, beat.neuron] = beat.act
                    events.append((image, beat.layer, beat.neuron))
                last = False
                if accept and ctx.get(engine.o.valid):
                    beat = ctx.get(engine.o.payload)
                    scores[image, beat.index] = beat.score
                    classes[image] = beat.cls
                    last = bool(beat.last)
                await ctx.tick()
                cycle += 1
                if last:
                    break
            cycles[image] = cycle - start

    sim = Simulator(engine)
    sim.add_clock(1e-6)
    sim.add_testbench(testbench)
    if vcd:
        with sim.write_vcd(vcd):
            sim.run()
    else:
        sim.run()
    return EngineRun(classes, scores, acts, cycles, events)
