"""UARTRx / UARTTx against a bit-level model of 8N1 framing, cycle by cycle."""


import numpy as np
import pytest
from amaranth.hdl import Module
from amaranth.sim import Simulator

from nmflow.rtl.uart import UARTRx, UARTTx

from helpers import refuses


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


def run_rx(divisor, levels, ready=None, dut=None):
    """Drive ``levels`` onto ``rx``; return (bytes received, cycles of o.valid rising, cycles of
    frame_error)."""
    dut = UARTRx(divisor) if dut is None else dut
    got, valid_rises, frame_errors = [], [], []

    async def tb(ctx):
        was_valid = 0
        for cycle, level in enumerate(levels):
            ctx.set(dut.rx, level)
            r = 1 if ready is None else ready(cycle)
            ctx.set(dut.o.ready, r)
            valid = ctx.get(dut.o.valid)
            if valid and not was_valid:
                valid_rises.append(cycle)
            if valid and r:
                got.append(ctx.get(dut.o.payload))
            if ctx.get(dut.frame_error):
                frame_errors.append(cycle)
            was_valid = valid and not r
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
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
    got, _, _ = run_rx(divisor, levels, ready=lambda cycle: cycle >= len(levels) - 2)
    assert got == [0x22]


def test_tx_waveform_is_exact_and_back_to_back():
    divisor = 5
    rng = np.random.default_rng(3)
    data = [0x00, 0xFF, 0x55, 0xA5] + rng.integers(0, 256, 12).tolist()
    dut = UARTTx(divisor)
    levels, accepted = [], []

    async def tb(ctx):
        pending = list(data)
        for cycle in range(len(data) * 10 * divisor + 20):
            ctx.set(dut.i.valid, bool(pending))
            if pending:
                ctx.set(dut.i.payload, pending[0])
                if ctx.get(dut.i.ready):
                    accepted.append(cycle)
                    pending.pop(0)
            levels.append(ctx.get(dut.tx))
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
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
    idle = rng.random(len(data) * 10 * divisor * 2) < 0.3       # cycles the source holds back

    m = Module()
    m.submodules.tx = tx = UARTTx(divisor)
    m.submodules.rx = rx = UARTRx(divisor)
    m.d.comb += rx.rx.eq(tx.tx)
    got, frame_errors = [], []

    async def tb(ctx):
        pending = list(data)
        ctx.set(rx.o.ready, 1)
        cycle = 0
        while len(got) < len(data) and cycle < len(idle):
            offer = bool(pending) and not idle[cycle]
            ctx.set(tx.i.valid, offer)
            if offer:
                ctx.set(tx.i.payload, pending[0])
                if ctx.get(tx.i.ready):
                    pending.pop(0)
            if ctx.get(rx.o.valid):
                got.append(ctx.get(rx.o.payload))
            if ctx.get(rx.frame_error):
                frame_errors.append(cycle)
            await ctx.tick()
            cycle += 1

    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    assert got == data
    assert frame_errors == []
