"""The stream register stage: every beat passes once, in order, under any backpressure."""

import random

from amaranth.sim import Simulator

from nmflow.rtl.pipe import StreamRegister
from nmflow.sim.streams import stream_get, stream_put


def run(ready_probability, valid_probability, count=300, seed=0):
    """A producer and a consumer side by side, through the shared stream helpers: random gaps on
    the input, random backpressure on the output. Returns what was received and the cycles from
    the first cycle to the edge that took the last beat."""
    dut = StreamRegister(16)
    gaps, backpressure = random.Random(f"{seed}/gaps"), random.Random(f"{seed}/ready")
    received, cycles = [], [0]

    async def producer(ctx):
        for value in range(count):
            await stream_put(ctx, dut.i, value, rng=gaps, valid=valid_probability)

    async def consumer(ctx):
        for _ in range(count):
            received.append(await stream_get(ctx, dut.o, rng=backpressure,
                                             ready=ready_probability))

    async def clock(ctx):
        async for _ in ctx.tick():
            cycles[0] += 1
            assert cycles[0] < 20 * count, "stream register stalled"

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(producer)
    sim.add_testbench(consumer)
    sim.add_testbench(clock, background=True)
    sim.run()
    return received, cycles[0]


def test_every_beat_once_in_order_under_backpressure():
    for ready, valid in [(1.0, 1.0), (0.3, 1.0), (1.0, 0.3), (0.5, 0.5)]:
        received, cycles = run(ready, valid)
        assert received == list(range(300))
        if ready < 1.0:
            assert cycles > 300 + StreamRegister.latency       # the backpressure did stall


def test_one_beat_per_cycle_when_always_ready():
    received, cycles = run(1.0, 1.0)
    assert received == list(range(300)) and cycles == 300 + StreamRegister.latency
