"""Run the inference engine in Amaranth's own simulator (fast unit tests, no Verilog)."""

import random
from dataclasses import dataclass

import numpy as np
from amaranth.hdl import Module, Signal
from amaranth.sim import Simulator

from .streams import stream_get, stream_put, watchdog_cycles

__all__ = ["run_benches", "EngineRun", "EngineStalled", "run_engine", "write_weight_rows",
           "trace_positions"]

#: Clock period of the harness, in seconds (only waves show it).
PERIOD = 1e-6


@dataclass
class EngineRun:
    """What the engine produced for N inputs, in the golden model's shapes.

    Members
    -------
    classes : int64 [N]
        The ``cls`` of each inference's last result beat.
    scores : int64 [N, n_classes]
    acts : list of int8 [N, out], one per hidden layer
        The activations the trace stream reported.
    cycles : int64 [N]
        Cycles from each inference's first input beat to its last result beat (both counted).
    trace_events : list of (image, layer, pixel, group)
        Every trace beat (a group of ``pe`` hidden activations; ``pixel``: a convolution's
        pooled pixel, 0 otherwise), in order.
    starts : int64 [N]
        The cycle of each inference's first input beat (differences: the interval between
        inferences).
    """
    classes: np.ndarray
    scores: np.ndarray
    acts: list
    cycles: np.ndarray
    trace_events: list
    starts: np.ndarray = None


class EngineStalled(RuntimeError):
    """The engine finished no inference within :func:`~nmflow.sim.streams.watchdog_cycles`."""


def run_benches(dut, producer, consumer, watch):
    """Amaranth's simulator on ``dut`` (a 1 MHz clock): the ``producer`` and ``consumer``
    testbenches, and ``watch`` in the background, until both are done."""
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(producer)
    sim.add_testbench(consumer)
    sim.add_testbench(watch, background=True)
    sim.run()


async def write_weight_rows(ctx, port, codes):
    """Write every row of pair codes ``codes`` ([rows, lanes]) through a weight memory's write
    ``port``, a whole row per cycle (an engine's ``weights`` while it is idle)."""
    lanes = codes.shape[1]
    for row, lane_codes in enumerate(codes):
        ctx.set(port.addr, row)
        ctx.set(port.data, [{"blb": int(c) & 1, "bl": int(c) >> 1} for c in lane_codes])
        ctx.set(port.en, (1 << lanes) - 1)
        await ctx.tick()
    ctx.set(port.en, 0)


def trace_positions(plan):
    """The trace beats of one inference, in the engine's order, as ``(layer, pixel, group)``:
    layer after layer, a convolution's pooled pixel after pixel (0 for a fully connected
    layer), group after group."""
    return [(k, pixel, group) for k, walk in enumerate(plan.walks[:-1])
            for pixel in range(walk.out_pixels) for group in range(walk.groups)]


def run_engine(engine, inputs, *, ready=1.0, valid=1.0, seed=0, vcd=None):
    """Stream ``inputs`` ([N, n_inputs]) through ``engine``; return an :class:`EngineRun`.

    Three testbenches run side by side: a producer that offers every input vector, value after
    value, with :func:`~nmflow.sim.streams.stream_put` (so the next vector waits on the input
    stream while the engine is still busy with the previous one), a consumer that takes result
    beats with :func:`~nmflow.sim.streams.stream_get`, and a monitor of the always-ready trace
    stream. A watchdog ends the run with :class:`EngineStalled` if no inference finishes within
    :func:`~nmflow.sim.streams.watchdog_cycles` of the engine's ``cycles_per_inference``.

    Parameters
    ----------
    engine : :class:`~nmflow.rtl.engine.InferenceEngine`
    inputs : integer array [N, n_inputs]
    ready : float
        Probability that the consumer accepts a result beat in a cycle (random backpressure).
    valid : float
        Probability that the producer offers the next input beat in a cycle (random gaps).
    seed : int
        Seed of the backpressure and gap patterns.
    vcd : path, optional
        Write waves there.

    With ``ready=valid=1`` the first inference takes exactly ``engine.cycles_per_inference``
    cycles, the later ones ``engine.plan.cycles_back_to_back``; the second's first input beat
    comes ``engine.plan.first_interval_cycles`` after the first's, and then one every
    ``engine.plan.interval_cycles``.
    """
    model = engine.model
    inputs = np.asarray(inputs, dtype=np.int64)
    n = len(inputs)
    classes = np.full(n, -1, dtype=np.int64)
    scores = np.zeros((n, model.n_classes), dtype=np.int64)
    acts = [np.zeros((n, layer.n_outputs), dtype=np.int8) for layer in model.layers[:-1]]
    cycles = np.zeros(n, dtype=np.int64)
    starts = np.zeros(n, dtype=np.int64)
    events = []
    done = [0]
    gaps, backpressure = random.Random(f"{seed}/gaps"), random.Random(f"{seed}/ready")
    budget = watchdog_cycles(engine.cycles_per_inference, ready=ready, valid=valid)

    # The harness counts cycles in a register beside the engine: a testbench reads, after the
    # clock edge that took a beat, the count of that edge plus one.
    m = Module()
    m.submodules.engine = engine
    cycle = Signal(64)
    m.d.sync += cycle.eq(cycle + 1)

    async def producer(ctx):
        if getattr(engine, "memory", None) == "spram":   # the rows first, as a host loads them
            await write_weight_rows(ctx, engine.weights, engine.plan.memory_codes())
        for image, vector in enumerate(inputs):
            for position, value in enumerate(vector):
                await stream_put(ctx, engine.i, int(value), rng=gaps, valid=valid)
                if position == 0:
                    starts[image] = ctx.get(cycle) - 1

    async def consumer(ctx):
        for image in range(n):
            while True:
                beat = await stream_get(ctx, engine.o, rng=backpressure, ready=ready)
                scores[image, beat.index] = beat.score
                classes[image] = beat.cls
                if beat.last:
                    break
            cycles[image] = ctx.get(cycle) - starts[image]
            done[0] += 1

    # Each inference traces each hidden group once, one inference after the other (the next
    # one's first layers may be traced while the results of the last go out).
    pe = engine.pe
    positions = trace_positions(engine.plan)
    per_inference = len(positions)

    async def trace_monitor(ctx):
        async for _, _, is_valid, beat in ctx.tick().sample(engine.trace.valid,
                                                            engine.trace.payload):
            if is_valid:
                image, k = divmod(len(events), per_inference)
                layer, group = int(beat.layer), int(beat.group)
                _, pixel, _ = positions[k]
                events.append((image, layer, pixel, group))
                for q in range(pe):
                    channel = group * pe + q
                    if image < n and layer < len(acts) and \
                            channel < model.layers[layer].n_out:
                        acts[layer][image, pixel * model.layers[layer].n_out + channel] = \
                            beat.acts[q]

    async def watchdog(ctx):
        while True:
            before = done[0]
            await ctx.delay(budget * PERIOD)
            if done[0] == before:
                raise EngineStalled(f"engine stalled: no inference finished in {budget} cycles "
                                    f"({done[0]} of {n} done)")

    sim = Simulator(m)
    sim.add_clock(PERIOD)
    sim.add_testbench(producer)
    sim.add_testbench(consumer)
    sim.add_testbench(trace_monitor, background=True)
    sim.add_testbench(watchdog, background=True)
    if vcd:
        with sim.write_vcd(vcd):
            sim.run()
    else:
        sim.run()
    return EngineRun(classes, scores, acts, cycles, events, starts)
