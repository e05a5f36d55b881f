"""LFSRs (nmflow/lfsr.py): the software face against bit-by-bit textbook definitions written here
(first states from a known seed, maximal periods of small primitive polynomials, n steps equal to
n single steps, draws), the gateware face (the next-state wiring and the register) against the
software face in Amaranth's simulator, and the project's sources against their definitions."""

import numpy as np
import pytest
from amaranth.hdl import Module, Signal
from amaranth.sim import Simulator

from nmflow.errors import NmflowError
from nmflow.golden import eqprop_fixed, injector
from nmflow.lfsr import KINDS, SHIFTS, Lfsr, LfsrRegister

from helpers import refuses


# -- textbook definitions, one bit at a time -------------------------------------------------------

def bits_of(state, width):
    return [state >> k & 1 for k in range(width)]


def int_of(bits):
    return sum(b << k for k, b in enumerate(bits))


def reference_step(lfsr, state):
    """One step by the textbook, on a list of bits (``bits[k]`` is state bit ``k``)."""
    w, bits = lfsr.width, bits_of(state, lfsr.width)
    taps = [k for k in range(w) if lfsr.taps >> k & 1]
    if lfsr.kind == "fibonacci":
        feedback = 0
        for k in taps:
            feedback ^= bits[k]
        bits = bits[1:] + [feedback] if lfsr.shift == "right" else [feedback] + bits[:-1]
    else:
        out = bits[0] if lfsr.shift == "right" else bits[-1]
        bits = bits[1:] + [0] if lfsr.shift == "right" else [0] + bits[:-1]
        for k in taps:
            bits[k] ^= out
    return int_of(bits)


def reference_steps(lfsr, state, n):
    for _ in range(n):
        state = reference_step(lfsr, state)
    return state


def recurrence(state, steps, width=31, lags=(0, 3)):
    """The Fibonacci sequence by its recurrence ``s[t+width] = xor of s[t+lag]`` (bit 0 of the
    state is the oldest bit ``s[t]``): the state ``steps`` bits on."""
    seq = bits_of(state, width)
    for t in range(steps):
        bit = 0
        for lag in lags:
            bit ^= seq[t + lag]
        seq.append(bit)
    return int_of(seq[steps:])


def galois_right(state, mask, steps):
    """``lsb = s & 1; s >>= 1; if lsb: s ^= mask``, ``steps`` times."""
    for _ in range(steps):
        lsb = state & 1
        state >>= 1
        if lsb:
            state ^= mask
    return state


def with_polynomial(width, poly, kind, shift):
    """The LFSR of ``kind`` and ``shift`` whose state sequence has the characteristic polynomial
    ``poly`` (bit k = coefficient of x^k, x^width included), from the companion matrices: the
    taps are the low coefficients for a right-shifting Fibonacci or a left-shifting Galois
    register, reversed for the others."""
    low = [k for k in range(width) if poly >> k & 1]
    if (kind, shift) in (("fibonacci", "left"), ("galois", "right")):
        low = [width - 1 - k for k in low]
    return Lfsr(width, sum(1 << k for k in low), kind, shift)


ALL_KINDS = [(kind, shift) for kind in KINDS for shift in SHIFTS]
#: Small primitive polynomials: x^4+x+1, x^5+x^2+1, x^7+x+1, x^8+x^4+x^3+x^2+1.
PRIMITIVE = [(4, 0b10011), (5, 0b100101), (7, 0b10000011), (8, 0b100011101)]


# -- the software face ------------------------------------------------------------------------------

@pytest.mark.parametrize("kind, shift", ALL_KINDS)
@pytest.mark.parametrize("width, taps", [(5, 0b10101), (5, 0b11001), (8, 0b10111001),
                                         (31, 0b1001 | 1 << 30), (32, 0x80200003),
                                         (64, 0x800000000000001B)])
def test_one_step_is_the_textbook_step(kind, shift, width, taps):
    lfsr = Lfsr(width, taps, kind, shift)
    rng = np.random.default_rng(width)
    for state in [1, lfsr.mask, *(int(s) for s in rng.integers(1, 1 << min(width, 63), 50))]:
        assert lfsr.step(state) == lfsr.step1(state) == reference_step(lfsr, state)


@pytest.mark.parametrize("kind, shift", ALL_KINDS)
@pytest.mark.parametrize("width, poly", PRIMITIVE)
def test_primitive_polynomials_give_the_maximal_period(kind, shift, width, poly):
    lfsr = with_polynomial(width, poly, kind, shift)
    assert lfsr.polynomial == poly
    seen, state = [], 1
    while True:
        seen.append(state)
        state = reference_step(lfsr, state)
        assert lfsr.step(seen[-1]) == state
        if state == 1:
            break
    assert sorted(seen) == list(range(1, 1 << width))          # period 2^n - 1, no zero
    assert lfsr.step(1, (1 << width) - 1) == 1


@pytest.mark.parametrize("kind, shift", ALL_KINDS)
def test_a_reducible_polynomial_has_a_short_period(kind, shift):
    lfsr = with_polynomial(4, 0b10101, kind, shift)              # (x^2 + x + 1)^2
    assert all(lfsr.step(s, 6) == s for s in range(1, 16))       # its order is 6, not 15


@pytest.mark.parametrize("kind, shift", ALL_KINDS)
@pytest.mark.parametrize("width, taps", [(31, 0b1001 | 1 << 30), (32, 0x80200003), (9, 0x111)])
def test_n_steps_are_n_single_steps(kind, shift, width, taps):
    lfsr = Lfsr(width, taps, kind, shift)
    rng = np.random.default_rng(7)
    states = rng.integers(1, 1 << width, (3, 5), dtype=np.uint64)
    for n in [0, 1, 2, 7, 16, 17, 22, 23, 27, 28, 29, 31, 64, 100, 1000]:
        one = states.copy()
        for _ in range(n):
            one = lfsr.step(one)
        got = lfsr.step(states, n)
        assert got.dtype == np.uint64 and got.tolist() == one.tolist()
        scalar = int(states[0, 0])
        assert lfsr.step(scalar, n) == reference_steps(lfsr, scalar, n) == int(one[0, 0])


def test_draws_advance_draw_steps_and_take_the_low_bits():
    lfsr = Lfsr(13, 0b1000000001011, "galois", draw_steps=5, draw_bits=4)
    values, after = lfsr.draws(77, 300)
    state, expect = 77, []
    for _ in range(300):
        state = reference_steps(lfsr, state, 5)
        expect.append(state & 0xF)
    assert values.tolist() == expect and after == state
    assert lfsr.draws(77, 0)[0].size == 0 and lfsr.draws(77, 0)[1] == 77


def test_a_source_draws_the_same_in_pieces_and_in_one_go():
    lfsr = Lfsr(32, 0x80200003, "galois", draw_steps=16, draw_bits=16)
    whole = lfsr.source(0x1234567).draws(1000)
    pieces = lfsr.source(0x1234567)
    parts = [pieces.draws(n) for n in (1, 2, 0, 300, 697)]
    assert np.concatenate(parts).tolist() == whole.tolist() and pieces.state == \
        lfsr.step(0x1234567, 16 * 1000)
    it = iter(lfsr.source(0x1234567))
    assert [next(it) for _ in range(10)] == whole[:10].tolist()


@pytest.mark.parametrize("make, message", [
    (lambda: Lfsr(1, 1), "LFSR width must be an integer from 2 to 64, not 1"),
    (lambda: Lfsr(65, 1), "LFSR width must be an integer from 2 to 64, not 65"),
    (lambda: Lfsr(8, 0), "LFSR taps must be an integer from 1 to 255, not 0"),
    (lambda: Lfsr(8, 256), "LFSR taps must be an integer from 1 to 255, not 256"),
    (lambda: Lfsr(8, 0x1D, "ring"), "LFSR kind must be one of fibonacci, galois, not 'ring'"),
    (lambda: Lfsr(8, 0x1D, shift="up"), "LFSR shift must be one of right, left, not 'up'"),
    (lambda: Lfsr(8, 0x1C), "LFSR taps must hold bit 0, the bit a right-shifting fibonacci "
                            "register shifts out, not 0x1c"),
    (lambda: Lfsr(8, 0x1D, "galois"), "LFSR taps must hold bit 7, the bit a right-shifting "
                                      "galois register shifts out, not 0x1d"),
    (lambda: Lfsr(8, 0x1D, draw_steps=0), "LFSR draw_steps must be an integer from 1 to "
                                          f"{1 << 62}, not 0"),
    (lambda: Lfsr(8, 0x1D, draw_bits=9), "LFSR draw_bits must be an integer from 1 to 8, not 9"),
    (lambda: Lfsr(8, 0x1D).source(0), "LFSR seed must be an integer from 1 to 255, not 0"),
    (lambda: Lfsr(8, 0x1D).step(1, -1), f"LFSR steps must be an integer from 0 to {1 << 62}, "
                                        "not -1"),
])
def test_refusals(make, message):
    refuses(make, NmflowError, message)


# -- the gateware face ------------------------------------------------------------------------------

GATEWARE = [Lfsr(31, 0b1001), Lfsr(32, 0x80200003, "galois"), Lfsr(32, 0x80200003),
            Lfsr(11, 0b10100000001, "fibonacci", "left"), Lfsr(11, 0b101, "galois", "left")]
STEPS = [0, 1, 2, 3, 16, 17, 28, 29, 31, 40, 100]


@pytest.mark.parametrize("lfsr", GATEWARE, ids=lambda lfsr: f"{lfsr.kind}-{lfsr.shift}-"
                                                           f"{lfsr.width}-{lfsr.taps:x}")
def test_next_state_wiring_equals_the_software_face(lfsr):
    m = Module()
    state = Signal(lfsr.width)
    outs = [Signal(lfsr.width, name=f"next{n}") for n in STEPS]
    m.d.comb += [out.eq(lfsr.next(state, n)) for n, out in zip(STEPS, outs)]
    rng = np.random.default_rng(lfsr.width)
    seeds = [1, lfsr.mask, *(int(s) for s in rng.integers(1, 1 << lfsr.width, 200))]
    got = []

    async def testbench(ctx):
        for seed in seeds:
            ctx.set(state, seed)
            got.append([ctx.get(out) for out in outs])

    sim = Simulator(m)
    sim.add_testbench(testbench)
    sim.run()
    assert got == [[lfsr.step(seed, n) for n in STEPS] for seed in seeds]


def test_next_refuses_a_value_of_another_width():
    refuses(lambda: Lfsr(8, 0x1D).next(Signal(9)), TypeError,
            "an LFSR of width 8 steps a value of 8 bits, not 9")


@pytest.mark.parametrize("lfsr, init", [(Lfsr(32, 0x80200003, "galois", draw_steps=16,
                                              draw_bits=16), 0xACE1),
                                        (Lfsr(31, 0b1001, draw_steps=17, draw_bits=17), 5)])
def test_register_draws_as_the_source(lfsr, init):
    dut = LfsrRegister(lfsr, init)
    rng = np.random.default_rng(init)
    plan = [(int(rng.random() < 0.7), int(rng.random() < 0.05), int(rng.integers(1, lfsr.mask)))
            for _ in range(300)]
    got = []

    async def testbench(ctx):
        for en, load, seed in plan:
            ctx.set(dut.en, en)
            ctx.set(dut.load, load)
            ctx.set(dut.seed, seed)
            got.append((ctx.get(dut.state), ctx.get(dut.draw)))
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(testbench)
    sim.run()
    source, expect = lfsr.source(init), []
    for en, load, seed in plan:
        ahead = lfsr.step(source.state, lfsr.draw_steps)
        expect.append((source.state, ahead & (1 << lfsr.draw_bits) - 1))
        if load:
            source.state = seed
        elif en:
            assert source.draws(1).tolist() == [expect[-1][1]]
    assert got == expect


# -- the project's sources ---------------------------------------------------------------------------

def test_first_states_of_the_injector_source():
    lfsr = injector.LFSR
    # From 1 the feedback s[0] ^ s[3] is 1, so bit 30 is set; then the ones walk down.
    assert lfsr.step(1) == 1 << 30 and lfsr.step(1, 2) == 1 << 29
    assert [lfsr.step(1, n) for n in range(200)] == [recurrence(1, n) for n in range(200)]
    assert lfsr.polynomial == (1 << 31) | (1 << 3) | 1


@pytest.mark.parametrize("n", [1, 5, 17, 27, 28])
def test_the_injector_steps_shift_in_and_match_the_recurrence(n):
    # n <= 28: the new bits come from the old state at once (the twin's fast path)
    lfsr = injector.LFSR
    rng = np.random.default_rng(n)
    states = rng.integers(1, 1 << 31, 40, dtype=np.uint64)
    assert lfsr.step(states, n).tolist() == [recurrence(int(s), n) for s in states]
    assert injector.lfsr_step(states, np.uint64(n)).tolist() == lfsr.step(states, n).tolist()


def test_next_state_of_a_fibonacci_register_is_wires_and_one_xor_per_new_bit():
    # 17 steps of x^31 + x^3 + 1: bits 0..13 are wires, bits 14..30 one XOR of two old bits each
    lfsr, state = injector.LFSR, Signal(31)
    columns = lfsr.jump(17)
    weights = [sum(c >> out & 1 for c in columns) for out in range(31)]
    assert weights == [1] * 14 + [2] * 17
    assert len(lfsr.next(state, 17)) == 31


def test_first_states_of_the_eqprop_source():
    lfsr = eqprop_fixed.LFSR
    assert lfsr.step(1) == 0x80200003 and lfsr.step(2) == 1
    seed = 0xACE1
    assert [lfsr.step(seed, n) for n in range(200)] == \
        [galois_right(seed, 0x80200003, n) for n in range(200)]
    # x^32 + x^22 + x^2 + x + 1 names the taps; the state sequence has its reciprocal
    assert lfsr.polynomial == (1 << 32) | (1 << 31) | (1 << 30) | (1 << 10) | 1


def test_lfsr32_is_the_eqprop_source_with_a_state():
    lfsr = eqprop_fixed.LFSR
    assert (lfsr.width, lfsr.taps, lfsr.kind, lfsr.shift, lfsr.draw_steps, lfsr.draw_bits) == \
        (32, eqprop_fixed.LFSR_MASK, "galois", "right", 16, 16)
    twin = eqprop_fixed.Lfsr32(0x1234567)
    draws = twin.draws(1000)
    assert draws.dtype == np.int64
    assert draws.tolist() == lfsr.source(0x1234567).draws(1000).tolist()
    assert twin.step() == lfsr.step(0x1234567, 16 * 1000 + 1)


def test_the_eqprop_register_draws_what_lfsr32_draws():
    # The unit's update pipeline: on each issue the state moves one draw on and the draw is the
    # low 16 bits of the new state; the register advanced every cycle gives Lfsr32's draws.
    dut = eqprop_fixed.LFSR.register(0xACE1)
    got = []

    async def testbench(ctx):
        ctx.set(dut.en, 1)
        for _ in range(100):
            got.append(ctx.get(dut.draw))
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(testbench)
    sim.run()
    assert got == eqprop_fixed.Lfsr32(0xACE1).draws(100).tolist()
