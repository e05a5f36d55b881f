"""The read-error injector: its description (rates in fixed point, the LFSR, the seeding), its
golden twin's statistics, the engine with the injector against the golden reference with the twin
(Amaranth's simulator, both modes, a configuration set at run time), and the read stage under
cocotb: more than 100,000 weight reads equal to the twin, error counts in the binomial 99.9 %
interval of the configured rates."""

import numpy as np
import pytest
from amaranth.sim import Simulator
from scipy.stats import binom

from nmflow.errors import NmflowError
from nmflow.golden.injector import (ErrorInjection, InjectedRead, lane_salt, lane_state,
                                    lfsr_step)
from nmflow.golden.pairs import MemoryMap, memory_codes, pcsa_read
from nmflow.golden.plan import EnginePlan
from nmflow.golden.readerrors import ErrorRates
from nmflow.golden.reference import reference
from nmflow.golden.synthetic import random_inputs, random_model
from nmflow.rtl.engine import InferenceEngine
from nmflow.rtl.injector import PCSAErrorRead, config_payload
from nmflow.sim.pysim import run_engine
from nmflow.sim.streams import stream_get, stream_put

from helpers import refuses


# -- the description ------------------------------------------------------------------------------

def serial_lfsr(state, steps):
    """The recurrence s[t+31] = s[t+3] ^ s[t], one bit at a time (bit 0 of the state is s[t])."""
    bits = [(state >> k) & 1 for k in range(31)]
    for _ in range(steps):
        bits.append(bits[-31] ^ bits[-28])
    return sum(b << k for k, b in enumerate(bits[-31:]))


@pytest.mark.parametrize("steps", [1, 5, 17, 28])
def test_lfsr_steps_are_the_serial_recurrence(steps):
    rng = np.random.default_rng(steps)
    for state in [1, (1 << 31) - 1, *rng.integers(1, 1 << 31, 20).tolist()]:
        assert lfsr_step(state, steps) == serial_lfsr(state, steps)
        vector = lfsr_step(np.array([state], dtype=np.uint64), np.uint64(steps))
        assert int(vector[0]) == serial_lfsr(state, steps)


def test_lfsr_is_maximal_on_its_divisors():
    # x^31 + x^3 + 1 is primitive: 2^31 - 1 is prime, so the period is 2^31 - 1 unless the state
    # returns after fewer steps; a short cycle would show as a return within 10^5 steps.
    start = state = 1
    for _ in range(100_000):
        state = lfsr_step(state, 1)
        assert state != start
    assert state != 0


def test_lane_states_differ_and_are_never_zero():
    for seed in (0, 1, 12345, (1 << 31) - 1, lane_salt(0), lane_salt(3) ^ 1):
        states = [lane_state(seed, p) for p in range(64)]
        assert len(set(states)) == 64 and all(0 < s < 1 << 31 for s in states)


def test_thresholds_are_the_rates_in_fixed_point():
    inj = ErrorInjection(ErrorRates(0.25, 0.5, 1.0), rate_bits=8)
    assert inj.thresholds() == (64, 192, 256)
    inj = ErrorInjection(ErrorRates(1e-6, 0.01, 0.065))
    assert inj.thresholds() == (0, 655, 4260)           # 0.01 * 65536 = 655.36, 0.065: 4259.84
    assert inj.realised == ErrorRates(0.0, 655 / 65536, 4260 / 65536)
    # type1 + type2 rounding up past one is clipped
    assert ErrorInjection(ErrorRates(0.5, 0.5), rate_bits=4).thresholds()[1] == 16


@pytest.mark.parametrize("make, message", [
    (lambda: ErrorRates(type1=-0.1), "error rate type1 must be in [0, 1], not -0.1"),
    (lambda: ErrorRates(type3=1.5), "error rate type3 must be in [0, 1], not 1.5"),
    (lambda: ErrorRates(type2=float("nan")), "error rate type2 must be in [0, 1], not nan"),
    (lambda: ErrorRates(0.6, 0.5), "error rates type1 + type2 must be at most 1 (both apply to "
                                   "non-zero weights), not 0.6 + 0.5"),
    (lambda: ErrorInjection(seed=-1), "seed must be an integer from 0 to 2147483647, not -1"),
    (lambda: ErrorInjection(seed=1 << 31), "seed must be an integer from 0 to 2147483647, "
                                           "not 2147483648"),
    (lambda: ErrorInjection(mode="sometimes"), "mode must be one of per_read, static, "
                                               "not 'sometimes'"),
    (lambda: ErrorInjection(rate_bits=3), "rate_bits must be an integer from 4 to 27, not 3"),
])
def test_bad_configurations_are_refused(make, message):
    refuses(make, NmflowError, message)


# -- the twin's statistics ------------------------------------------------------------------------

def test_twin_errs_at_the_realised_rates():
    inj = ErrorInjection(ErrorRates(0.01, 0.04, 0.185), seed=99)
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 4, size=(20_000, 16), dtype=np.uint8)
    got = InjectedRead(inj, 16).read_rows(codes, np.arange(20_000) % 1000, 999)
    ideal = pcsa_read(codes).astype(np.int8)
    nonzero = ideal != 0
    for count, trials, rate in ((nonzero & (got == -ideal), nonzero, inj.realised.type1),
                                (nonzero & (got == 0), nonzero, inj.realised.type2),
                                (~nonzero & (got != 0), ~nonzero, inj.realised.type3)):
        low, high = binom.interval(0.999, int(trials.sum()), rate)
        assert low <= count.sum() <= high
    # type 3 errors take either sign about equally often
    appear = got[~nonzero & (got != 0)]
    low, high = binom.interval(0.999, len(appear), 0.5)
    assert low <= (appear > 0).sum() <= high


def test_static_map_repeats_every_inference_and_per_read_does_not():
    codes = np.random.default_rng(1).integers(0, 4, size=(50, 8), dtype=np.uint8)
    addr = np.arange(50)
    rates = ErrorRates(0.1, 0.1, 0.3)
    static = InjectedRead(ErrorInjection(rates, seed=3, mode="static"), 8)
    per_read = InjectedRead(ErrorInjection(rates, seed=3, mode="per_read"), 8)
    first, second = static(codes, addr), static(codes, addr)
    assert (first == second).all() and (first != pcsa_read(codes)).any()
    a, b = per_read(codes, addr), per_read(codes, addr)
    assert (a != b).any()
    assert (a == first).all()           # the first inference of both modes: the same draws
    # a new seed is a new map
    other = InjectedRead(ErrorInjection(rates, seed=4, mode="static"), 8)(codes, addr)
    assert (other != first).any()


def test_zero_rates_read_ideally():
    codes = np.random.default_rng(2).integers(0, 4, size=(30, 4), dtype=np.uint8)
    read = InjectedRead(ErrorInjection(seed=8), 4)
    assert (read(codes, np.arange(30)) == pcsa_read(codes)).all()


# -- the engine with the injector, in Amaranth's simulator ------------------------------------------

def check_engine(model, lanes, injection, inputs, pe=1, first_layer_bits=None, **kwargs):
    engine = InferenceEngine(model, lanes=lanes, pe=pe, errors=injection, first_layer_bits=first_layer_bits)
    run = run_engine(engine, inputs, **kwargs)
    golden = reference(model, inputs, lanes=lanes, pe=pe, read=InjectedRead(injection, lanes))
    assert run.classes.tolist() == golden.classes.tolist()
    assert run.scores.tolist() == golden.scores.tolist()
    for got, expected in zip(run.acts, golden.acts):
        assert got.tolist() == expected.tolist()
    return engine, run, golden


@pytest.mark.parametrize("mode", ["per_read", "static"])
def test_engine_with_errors_matches_the_reference_with_the_twin(mode):
    # rate_bits 4: a draw equals a threshold one time in 16, so a comparison off by one shows.
    model = random_model([12, 10, 6, 4], weight_kind="ternary", input_bits=3, seed=7)
    inputs = random_inputs(model, 8, seed=1)
    injection = ErrorInjection(ErrorRates(3 / 16, 2 / 16, 5 / 16), seed=2024, mode=mode,
                               rate_bits=4)
    engine, run, golden = check_engine(model, 4, injection, inputs, ready=0.6, valid=0.7, seed=3)
    clean = reference(model, inputs, lanes=4)
    assert golden.scores.tolist() != clean.scores.tolist()      # errors were made
    assert engine.plan.read_latency == PCSAErrorRead.latency == 1


@pytest.mark.parametrize("lanes, pe", [(4, 1), (8, 2), (16, 4)])
def test_padding_lanes_read_zero_activations_under_errors(lanes, pe):
    # Layer 2 (3 outputs) writes the bank layer 0 (10 outputs) wrote: the lanes of its row past
    # its last output must read 0, or type 3 errors on the padding weights (code 0) of layer 3
    # would add the stale activations of layer 0. Only type 3 errors, at a high rate.
    model = random_model([12, 10, 6, 3, 4], weight_kind="ternary", input_bits=3, seed=11)
    inputs = random_inputs(model, 6, seed=4)
    injection = ErrorInjection(ErrorRates(0, 0, 8 / 16), seed=99, mode="per_read", rate_bits=4)
    check_engine(model, lanes, injection, inputs, pe=pe)


@pytest.mark.parametrize("mode", ["per_read", "static"])
def test_bit_serial_engine_with_errors_draws_once_per_row(mode):
    # The first layer's row is read once for its bit planes: the injector draws once per row,
    # in address order, as its twin does.
    model = random_model([12, 10, 6, 4], weight_kind="ternary", input_bits=3, seed=8)
    inputs = random_inputs(model, 6, seed=5)
    injection = ErrorInjection(ErrorRates(3 / 16, 2 / 16, 5 / 16), seed=77, mode=mode,
                               rate_bits=4)
    _, _, golden = check_engine(model, 8, injection, inputs, pe=2, first_layer_bits=1,
                                ready=0.6, valid=0.7, seed=4)
    assert golden.scores.tolist() != reference(model, inputs, lanes=8, pe=2).scores.tolist()


def test_engine_with_zero_rates_computes_the_clean_network():
    model = random_model([20, 9, 5], weight_kind="binary", input_bits=2, seed=4)
    inputs = random_inputs(model, 5, seed=2)
    engine, run, golden = check_engine(model, 8, ErrorInjection(seed=5), inputs)
    assert golden.scores.tolist() == reference(model, inputs, lanes=8).scores.tolist()
    clean = EnginePlan(model, 8)
    assert engine.cycles_per_inference == clean.cycles_per_inference + clean.n_layers
    assert run.cycles.tolist()[0] == engine.cycles_per_inference


def test_configuration_set_at_run_time():
    # Two inferences under the reset configuration, a new one through the errors port while the
    # engine is idle, two more inferences: each matches the twin of its configuration.
    model = random_model([10, 8, 3], weight_kind="ternary", input_bits=2, seed=11)
    inputs = random_inputs(model, 4, seed=6)
    first = ErrorInjection(ErrorRates(0.2, 0.1, 0.2), seed=1, rate_bits=6)
    second = ErrorInjection(ErrorRates(0.05, 0.3, 0.4), seed=77, mode="static", rate_bits=6)
    engine = InferenceEngine(model, lanes=4, errors=first)
    results = []

    async def testbench(ctx):
        for index, vector in enumerate(inputs):
            if index == 2:
                while not ctx.get(engine.idle):
                    await ctx.tick()
                ctx.set(engine.errors.payload, config_payload(second))
                ctx.set(engine.errors.valid, 1)
                await ctx.tick()
                ctx.set(engine.errors.valid, 0)
            for value in vector:
                await stream_put(ctx, engine.i, int(value))
            scores = []
            for _ in range(model.n_classes):
                beat = await stream_get(ctx, engine.o)
                scores.append(beat.score)
            results.append(scores)

    sim = Simulator(engine)
    sim.add_clock(1e-6)
    sim.add_testbench(testbench)
    sim.run()
    a = reference(model, inputs[:2], lanes=4, read=InjectedRead(first, 4))
    b = reference(model, inputs[2:], lanes=4, read=InjectedRead(second, 4))
    assert results == a.scores.tolist() + b.scores.tolist()


def test_engine_refuses_an_injector_and_a_read_stage_together():
    from nmflow.rtl.pcsa import PCSARead
    model = random_model([8, 4], seed=1)
    refuses(lambda: InferenceEngine(model, lanes=4, errors=ErrorInjection(), read_stage=PCSARead),
            ValueError, "give either read_stage or errors, not both")


# -- the read stage under cocotb ---------------------------------------------------------------------

@pytest.mark.slow
def test_read_stage_under_cocotb_matches_its_twin_over_100k_reads(tmp_path):
    from nmflow.sim.units import simulate_injector
    phases = [ErrorInjection(ErrorRates(0.01, 0.03, 0.185), seed=77, mode="per_read"),
              ErrorInjection(ErrorRates(0.002, 0.008, 0.065), seed=5, mode="static"),
              ErrorInjection(ErrorRates(0.0, 0.0, 0.0), seed=9, mode="per_read")]
    result, counts = simulate_injector(tmp_path, phases, lanes=16, rows=2600, last_row=999)
    assert result.passed, result.log.read_text()[-3000:]
    assert sum(phase["weight_reads"] for phase in counts) >= 100_000
    assert all(check["within"] for phase in counts for check in phase["errors"].values())
    assert counts[0]["errors"]["type3"]["count"] > 1000          # errors were really made
    assert all(check["count"] == 0 for check in counts[2]["errors"].values())
