"""UARTRx / UARTTx against a bit-level model of 8N1 framing, cycle by cycle.

The byte streams are driven with :mod:`nmflow.sim.streams`: the receiver's bytes are taken with
random backpressure, the transmitter's bytes offered with random gaps (or back to back where the
test times them).
"""

import random

import numpy as np
import pytest
from amaranth.hdl import Module
from amaranth.sim import Simulator

from nmflow.rtl.uart import UARTRx, UARTTx
from nmflow.sim.streams import stream_get, stream_put

from helpers import refuses

#: Chance that a consumer of received bytes is ready in a given cycle. A byte waits on the
#: receiver's output for a whole character time (40 cycles or more) before the next replaces it.
TAKE = 0.5


def frame_bits(byte, stop=1):
    """The 10 line levels of one 8N1 character: start, 8 data bits LSB first, stop."""
    return [0] + [(byte >> i) & 1 for i in range(8)] + [stop]


def line(chars, bit_cycles, gaps=None, lead=4, tail=None):
    """Per-cycle levels of a line carrying ``chars`` (``(byte, stop)`` pairs).

    ``bit_cycles`` may be fractional (a transmitter at a slightly different baud): bit ``k`` of a
    character starting at cycle ``t`` covers cycles ``t + round(k * bit_cycles)`` up to
    ``t + round((k + 1) * bit_cycles)``.
    """
    levels = [1] * lead
    for n, (byte, stop) in enumerate(chars):
        bits = frame_bits(byte, stop)
        for k, level in enumerate(bits):
            levels += [level] * (round((k + 1) * bit_cycles) - round(k * bit_cycles))
        levels += [1] * (gaps[n] if gaps is not None else 0)
    levels += [1] * (tail if tail is not None else int(3 * bit_cycles))
    return levels


def run_rx(divisor, levels, *, consume=None, dut=None, seed=0):
    """Drive ``levels`` onto ``rx``, one per cycle; return (bytes received, cycles in which a new
    beat appears on ``o``, cycles of ``frame_error``).

    ``consume(ctx, dut, got)`` takes the bytes into ``got``; by default every byte is taken, with
    random backpressure.
    """
    dut = UARTRx(divisor) if dut is None else dut
    got, valid_rises, frame_errors = [], [], []
    rng = random.Random(seed)

    async def line(ctx):
        for level in levels:
            ctx.set(dut.rx, level)
            await ctx.tick()

    async def take_all(ctx, dut, got):
        while True:
            got.append(await stream_get(ctx, dut.o, rng=rng, ready=TAKE))

    async def monitor(ctx):
        cycle, pending = 0, False
        async for *_, valid, ready, frame_error in ctx.tick().sample(dut.o.valid, dut.o.ready,
                                                                     dut.frame_error):
            if valid and not pending:
                valid_rises.append(cycle)
            if frame_error:
                frame_errors.append(cycle)
            pending = valid and not ready
            cycle += 1

    async def consumer(ctx):
        await (consume or take_all)(ctx, dut, got)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(line)
    sim.add_testbench(consumer, background=True)
    sim.add_testbench(monitor, background=True)
    sim.run()
    return got, valid_rises, frame_errors


@pytest.mark.parametrize("divisor", [3, 0, -8, 4.0, 4.5, "8", True, None])
def test_divisor_is_validated(divisor):
    for cls in (UARTRx, UARTTx):
        refuses(lambda: cls(divisor), ValueError,
                f"divisor must be an integer >= 4, not {divisor!r}")


@pytest.mark.parametrize("divisor", [4, 7])
def test_rx_receives_all_256_bytes_with_random_gaps(divisor):
    rng = np.random.default_rng(divisor)
    data = list(range(256))
    gaps = rng.integers(0, 2 * divisor, len(data)).tolist()
    got, _, frame_errors = run_rx(divisor, line([(b, 1) for b in data], divisor, gaps))
    assert got == data
    assert frame_errors == []


def test_rx_latency_is_exact():
    divisor = 6
    dut = UARTRx(divisor)
    assert dut.latency == 2 + 3 + 9 * 6 + 1
    lead = 5
    _, rises, _ = run_rx(divisor, line([(0x3C, 1)], divisor, lead=lead), dut=dut)
    assert rises == [lead + dut.latency]


@pytest.mark.parametrize("skew", [-0.02, 0.02])
def test_rx_tolerates_two_percent_baud_error(skew):
    divisor = 16
    rng = np.random.default_rng(7)
    data = rng.integers(0, 256, 64).tolist()
    got, _, frame_errors = run_rx(divisor, line([(b, 1) for b in data], divisor * (1 + skew),
                                                [0] * len(data)))
    assert got == data
    assert frame_errors == []


def test_rx_bad_stop_bit_is_a_frame_error_and_the_next_byte_is_received():
    divisor = 5
    levels = line([(0x81, 0), (0x5A, 1)], divisor, gaps=[divisor, 0])
    got, _, frame_errors = run_rx(divisor, levels)
    assert got == [0x5A]
    assert len(frame_errors) == 1


def test_rx_break_gives_one_frame_error():
    divisor = 4
    levels = [1] * 4 + [0] * (30 * 10 * divisor) + line([(0xC3, 1)], divisor, lead=2)
    got, _, frame_errors = run_rx(divisor, levels)
    assert got == [0xC3]
    assert len(frame_errors) == 1


@pytest.mark.parametrize("divisor", [4, 9])
def test_rx_rejects_start_glitches_up_to_half_a_bit(divisor):
    half = divisor // 2
    levels = [1] * 4
    for width in range(1, half + 1):
        levels += [0] * width + [1] * (3 * divisor)
    levels += line([(0x42, 1)], divisor, lead=0)
    got, _, frame_errors = run_rx(divisor, levels)
    assert got == [0x42]
    assert frame_errors == []
    # One cycle longer is a start bit: the line then reads all ones, so the byte is 0xFF.
    got, _, frame_errors = run_rx(divisor, [1] * 4 + [0] * (half + 1) + [1] * (12 * divisor))
    assert got == [0xFF]
    assert frame_errors == []


def test_rx_unaccepted_byte_is_replaced_by_the_next():
    divisor = 4
    levels = line([(0x11, 1), (0x22, 1)], divisor, gaps=[0, 0])

    async def take_late(ctx, dut, got):         # ready only in the last two cycles
        await ctx.tick().repeat(len(levels) - 2)
        got.append(await stream_get(ctx, dut.o))

    got, _, _ = run_rx(divisor, levels, consume=take_late)
    assert got == [0x22]


def test_tx_waveform_is_exact_and_back_to_back():
    divisor = 5
    rng = np.random.default_rng(3)
    data = [0x00, 0xFF, 0x55, 0xA5] + rng.integers(0, 256, 12).tolist()
    dut = UARTTx(divisor)
    levels, accepted = [], []

    async def producer(ctx):
        for byte in data:
            await stream_put(ctx, dut.i, byte)          # back to back: no gaps
        await ctx.tick().repeat(10 * divisor + 20)

    async def monitor(ctx):
        cycle = 0
        async for *_, tx, valid, ready in ctx.tick().sample(dut.tx, dut.i.valid, dut.i.ready):
            levels.append(tx)
            if valid and ready:
                accepted.append(cycle)
            cycle += 1

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(producer)
    sim.add_testbench(monitor, background=True)
    sim.run()
    expected = [1] * dut.latency
    for byte in data:
        expected += [level for level in frame_bits(byte) for _ in range(divisor)]
    expected += [1] * (len(levels) - len(expected))
    assert levels == expected
    assert accepted == [n * 10 * divisor for n in range(len(data))]


@pytest.mark.parametrize("divisor", [4, 6])
def test_tx_to_rx_round_trip(divisor):
    rng = np.random.default_rng(100 + divisor)
    data = list(range(256)) + rng.integers(0, 256, 200).tolist()
    put_rng, get_rng = random.Random(divisor), random.Random(divisor + 1)

    m = Module()
    m.submodules.tx = tx = UARTTx(divisor)
    m.submodules.rx = rx = UARTRx(divisor)
    m.d.comb += rx.rx.eq(tx.tx)
    got, frame_errors = [], []

    async def producer(ctx):
        for byte in data:
            await stream_put(ctx, tx.i, byte, rng=put_rng, valid=0.7)

    async def consumer(ctx):
        while True:
            got.append(await stream_get(ctx, rx.o, rng=get_rng, ready=TAKE))

    async def watch(ctx):                       # frame errors, and a bound on the cycles
        for _ in range(len(data) * 10 * divisor * 2):
            *_, frame_error = await ctx.tick().sample(rx.frame_error)
            if frame_error:
                frame_errors.append(frame_error)
            if len(got) == len(data):
                break

    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(watch)
    sim.add_testbench(producer, background=True)
    sim.add_testbench(consumer, background=True)
    sim.run()
    assert got == data
    assert frame_errors == []
