"""The stream register stage: every beat passes once, in order, under any backpressure."""

import random

from amaranth.sim import Simulator

from nmflow.rtl.pipe import StreamRegister


def run(ready_probability, valid_probability, count=300, seed=0):
    dut = StreamRegister(16)
    rng = random.Random(seed)
    sent, received, cycles = [], [], [0]

    async def testbench(ctx):
        value = 0
        while len(received) < count:
            offer = value < count and rng.random() < valid_probability
            ctx.set(dut.i.valid, offer)
            ctx.set(dut.i.payload, value)
            ready = rng.random() < ready_probability
            ctx.set(dut.o.ready, ready)
            if ready and ctx.get(dut.o.valid):
                received.append(ctx.get(dut.o.payload))
            if offer and ctx.get(dut.i.ready):
                sent.append(value)
                value += 1
            await ctx.tick()
            cycles[0] += 1
            assert cycles[0] < 20 * count, "stream register stalled"

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(testbench)
    sim.run()
    return sent, received, cycles[0]


def test_every_beat_once_in_order_under_backpressure():
    for ready, valid in [(1.0, 1.0), (0.3, 1.0), (1.0, 0.3), (0.5, 0.5)]:
        sent, received, _ = run(ready, valid)
        assert received == sent[:len(received)] == list(range(300))


def test_one_beat_per_cycle_when_always_ready():
    _, received, cycles = run(1.0, 1.0)
    assert len(received) == 300 and cycles == 300 + StreamRegister.latency
