# amaranth: UnusedElaboratable=no
"""The inference engine in Amaranth's simulator against the integer reference model (==)."""

import numpy as np
import pytest
from amaranth.hdl import Fragment, Module, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from nmflow.errors import NmflowError
from nmflow.golden.hwmodel import HardwareModel, Layer
from nmflow.golden.reference import reference
from nmflow.golden.plan import EnginePlan
from nmflow.golden.synthetic import random_inputs, random_model
from nmflow.rtl.engine import InferenceEngine, result_layout, trace_layout
from nmflow.rtl.lanes import GXNORPopcount
from nmflow.sim.pysim import EngineStalled, run_engine

from helpers import assert_back_to_back, refuses


def check_against_reference(engine, inputs, **kwargs):
    run = run_engine(engine, inputs, **kwargs)
    golden = reference(engine.model, inputs, lanes=engine.lanes, pe=engine.pe)
    assert run.classes.tolist() == golden.classes.tolist()
    assert run.scores.tolist() == golden.scores.tolist()
    for got, expected in zip(run.acts, golden.acts):
        assert got.tolist() == expected.tolist()
    # every group of hidden activations is reported exactly once per inference
    per_image = sum(engine.plan.groups[:-1])
    assert len(run.trace_events) == len(set(run.trace_events)) == per_image * len(inputs)
    return run


@pytest.mark.parametrize("sizes, kind, lanes", [
    ([16, 12, 8, 5], "ternary", 4),      # several chunks per neuron, three layers
    ([20, 9, 3], "binary", 8),           # binary weights, sign activations, padded last chunk
    ([7, 4], "ternary", 2),              # a single layer: inputs straight to scores
    ([6, 5, 4], "ternary", 8),           # every layer fits in one row (one chunk per neuron)
    ([9, 6, 3], "ternary", 1),           # one lane: the tree degenerates to a register
    ([33, 17, 16, 10], "binary", 16),
    ([10, 9, 8, 7, 6, 3], "ternary", 2),  # four hidden layers: the buffers alternate twice
    ([1, 3, 2], "ternary", 4),           # a single input
])
def test_engine_matches_reference(sizes, kind, lanes):
    model = random_model(sizes, weight_kind=kind, input_bits=4, seed=sum(sizes))
    engine = InferenceEngine(model, lanes=lanes)
    inputs = random_inputs(model, 6, seed=lanes)
    run = check_against_reference(engine, inputs)
    # The harness offers each vector as soon as it can: the first inference takes
    # cycles_per_inference, every later one is offered right behind another.
    assert_back_to_back(run.cycles, engine.plan)


@pytest.mark.parametrize("sizes, kind, lanes, pe", [
    ([16, 12, 8, 5], "ternary", 16, 4),   # four neurons per row, padded last groups (5 of 8)
    ([20, 9, 3], "binary", 8, 2),         # binary, padding in every layer (9 and 3 outputs)
    ([7, 4], "ternary", 4, 2),            # a single layer: two scores per cycle
    ([33, 17, 16, 10], "ternary", 64, 8), # one row per group, eight neurons a cycle
    ([10, 9, 8, 7, 6, 3], "ternary", 16, 4),  # the buffers alternate twice, groups cross rows
    ([64, 32, 10], "ternary", 32, 4),     # several groups per buffer row, one score group split
    ([5, 40, 6], "binary", 4, 2),         # two lanes per neuron: groups fill a row exactly
])
def test_folded_engine_matches_reference(sizes, kind, lanes, pe):
    # pe neurons side by side, each over lanes / pe inputs: the reference reads the same folded
    # memory image; the ideal is sum(ceil(in / simd) * ceil(out / pe)).
    model = random_model(sizes, weight_kind=kind, input_bits=4, seed=sum(sizes) + pe)
    engine = InferenceEngine(model, lanes=lanes, pe=pe)
    simd = lanes // pe
    assert engine.ideal_cycles == sum(-(-n_in // simd) * -(-n_out // pe)
                                      for n_in, n_out in zip(sizes[:-1], sizes[1:]))
    inputs = random_inputs(model, 6, seed=lanes + pe)
    run = check_against_reference(engine, inputs)
    assert_back_to_back(run.cycles, engine.plan)


@pytest.mark.parametrize("sizes, kind, lanes, pe, bits, digit", [
    ([16, 12, 8, 5], "ternary", 16, 4, 4, 1),   # bit-serial: four planes a row
    ([20, 9, 3], "binary", 8, 2, 5, 1),
    ([7, 4], "ternary", 4, 2, 3, 1),            # a single, bit-serial layer: scores every 6 cycles
    ([9, 6, 3], "ternary", 1, 1, 2, 1),         # one lane
    ([33, 17, 16, 10], "ternary", 64, 8, 8, 1), # eight planes of 8-bit pixels (the 255 extremes)
    ([5, 3], "binary", 4, 2, 1, 1),             # 1-bit inputs: one plane, as the parallel lanes
    ([20, 9, 3], "ternary", 8, 2, 5, 2),        # digits of 2, 2 and 1 bits (the last one short)
    ([16, 12, 8, 5], "ternary", 16, 4, 6, 3),   # two 3-bit digits
    ([16, 12, 5], "binary", 16, 2, 8, 4),       # two 4-bit digits of 8-bit pixels
])
def test_digit_serial_first_layer_matches_reference(sizes, kind, lanes, pe, bits, digit):
    # Lanes digit + 1 bits wide (2 at least: a popcount tree for the hidden layers); the first
    # layer takes its pixels a digit per cycle, the row's weights read once, each digit's sum
    # shifted by its place.
    model = random_model(sizes, weight_kind=kind, input_bits=bits, seed=sum(sizes) + bits)
    engine = InferenceEngine(model, lanes=lanes, pe=pe, first_layer_bits=digit)
    assert engine.plan.x_bits == digit + 1
    passes = -(-bits // digit)
    assert engine.plan.issue_cycles == engine.ideal_cycles + (passes - 1) * engine.plan.layer_rows[0]
    top = (1 << bits) - 1
    inputs = np.concatenate([np.full((1, sizes[0]), top), np.zeros((1, sizes[0]), np.int64),
                             random_inputs(model, 4, seed=lanes + bits)])
    run = check_against_reference(engine, inputs)
    assert_back_to_back(run.cycles, engine.plan)


def test_folded_engine_ties_within_and_across_groups():
    # Every class scores the same: the argmax's tree and its running maximum must both keep the
    # lowest index; then the best two classes share a group, then lie in different groups.
    w0 = np.ones((4, 4), dtype=np.int8)
    w1 = np.ones((6, 4), dtype=np.int8)
    model = HardwareModel(
        input_bits=4, weight_kind="ternary",
        layers=[Layer(w0, "ternary", t_hi=np.zeros(4, dtype=np.int64),
                      t_lo=np.full(4, -1, dtype=np.int64)),
                Layer(w1, "none", scale=np.ones(6, dtype=np.int64),
                      offset=np.array([0, 0, 0, 0, 0, 0], dtype=np.int64))])
    inputs = np.array([[0, 0, 0, 0], [15, 15, 15, 15]])
    for offsets, want in (([0] * 6, 0), ([0, 3, 3, 0, 0, 0], 1), ([0, 0, 0, 2, 2, 0], 3),
                          ([0, 0, 0, 0, 0, 9], 5), ([-1, 0, 0, 0, 0, 0], 1)):
        model.layers[1].offset[:] = offsets
        for pe in (2, 4):
            run = check_against_reference(InferenceEngine(model, lanes=16, pe=pe), inputs)
            assert run.classes.tolist() == [want, want]


def test_engine_refuses_a_bad_pe():
    model = random_model([8, 4, 2], seed=1)
    for pe in (3, 0, 8, True):
        refuses(lambda: InferenceEngine(model, lanes=16, pe=pe), NmflowError,
                f"pe must be a power of two with pe * pe <= lanes = 16 (each of the pe neurons "
                f"over simd = lanes / pe >= pe lanes), not {pe!r}")


def test_engine_extreme_inputs_and_ties():
    # All-zero and all-maximum pixels; identical scores in every class make the argmax a tie,
    # which the lowest index must win.
    w0 = np.array([[1, -1, 0, 1], [-1, -1, -1, -1], [1, 1, 1, 1]], dtype=np.int8)
    w1 = np.ones((3, 3), dtype=np.int8)
    model = HardwareModel(
        input_bits=8, weight_kind="ternary",
        layers=[Layer(w0, "ternary", t_hi=np.array([1, 0, 1020], dtype=np.int64),
                      t_lo=np.array([0, -1020, -5], dtype=np.int64)),
                Layer(w1, "none", scale=np.full(3, 7, dtype=np.int64),
                      offset=np.zeros(3, dtype=np.int64))])
    inputs = np.array([[0, 0, 0, 0], [255, 255, 255, 255], [255, 0, 0, 0], [0, 255, 0, 0]])
    run = check_against_reference(InferenceEngine(model, lanes=2), inputs)
    assert run.classes.tolist() == [0, 0, 0, 0]


def test_engine_respects_backpressure():
    model = random_model([12, 10, 6], weight_kind="ternary", seed=5)
    engine = InferenceEngine(model, lanes=4)
    run = check_against_reference(engine, random_inputs(model, 5, seed=9), ready=0.3, seed=2)
    assert (run.cycles > engine.cycles_per_inference).any()


def test_engine_with_input_gaps_and_backpressure():
    # Gaps between input beats and backpressure on the results at once: only the cycles change.
    model = random_model([10, 8, 5], weight_kind="binary", seed=6)
    engine = InferenceEngine(model, lanes=2)
    run = check_against_reference(engine, random_inputs(model, 4, seed=1), ready=0.5, valid=0.5,
                                  seed=3)
    assert (run.cycles > engine.cycles_per_inference).all()


class StuckEngine(wiring.Component):
    """The engine's ports, taking every input beat and never offering a result."""

    def __init__(self, model):
        self.model, self.cycles_per_inference, self.pe = model, 20, 1
        self.plan = EnginePlan(model, 2)
        super().__init__({
            "i": In(stream.Signature(unsigned(model.input_bits))),
            "o": Out(stream.Signature(result_layout(model.n_classes, model.score_bits))),
            "trace": Out(stream.Signature(trace_layout(len(model.layers), 8), always_ready=True)),
        })

    def elaborate(self, platform):
        m = Module()
        m.d.comb += self.i.ready.eq(1)
        return m


def test_harness_watchdog_ends_a_stalled_engine():
    model = random_model([4, 3, 2], seed=2)
    with pytest.raises(EngineStalled, match=r"^engine stalled: no inference finished in 1081 "
                                            r"cycles \(0 of 2 done\)$"):
        run_engine(StuckEngine(model), random_inputs(model, 2, seed=0))


def test_logic_memory_kind_matches_reference():
    model = random_model([10, 8, 4], weight_kind="ternary", seed=11)
    check_against_reference(InferenceEngine(model, lanes=4, memory="logic"),
                            random_inputs(model, 4, seed=3))


def test_buffers_in_logic_match_reference():
    # weights in block RAM, the activation store's buffers in flip-flops (wider engines on the
    # iCE40UP5K); the engine must compute the same
    model = random_model([20, 12, 6, 4], weight_kind="ternary", seed=12)
    engine = InferenceEngine(model, lanes=8, buffers="logic")
    assert (engine.memory, engine.buffers) == ("block", {"inputs": "logic",
                                                         "activations": "logic"})
    check_against_reference(engine, random_inputs(model, 4, seed=4))
    check_against_reference(InferenceEngine(model, lanes=4, buffers={"inputs": "logic",
                                                                     "activations": "block"}),
                            random_inputs(model, 3, seed=5))
    with pytest.raises(ValueError, match=r"^buffers\['inputs'\] must be one of 'block', "
                                         r"'logic', not 'bram'$"):
        InferenceEngine(model, lanes=8, buffers="bram")
    with pytest.raises(ValueError, match=r"^buffers must be a memory kind or a dict with the "
                                         r"keys 'inputs' and 'activations', not \{'inputs': "
                                         r"'logic'\}$"):
        InferenceEngine(model, lanes=8, buffers={"inputs": "logic"})


def test_cycle_figures():
    model = random_model([64, 128, 128, 10], input_bits=5, seed=1)
    engine = InferenceEngine(model, lanes=16)
    assert engine.plan is not None and engine.ideal_cycles == 4 * 128 + 8 * 128 + 8 * 10
    assert engine.weight_rows == engine.ideal_cycles
    assert engine.weight_bits == engine.weight_rows * 32
    assert engine.cycles_per_inference <= 1.10 * engine.ideal_cycles
    Fragment.get(engine, None)                  # elaborated, as a design would
    # 2-bit activations: the products go straight into the first adder (4 levels, 4 cycles);
    # pixels of 5 bits (6-bit products) have a register of their own
    popcount = GXNORPopcount(16, 2)
    Fragment.get(popcount, None)
    assert popcount.latency == 4 and GXNORPopcount(16, 6).latency == 5
    assert GXNORPopcount(1, 2).latency == 1


@pytest.mark.parametrize("lanes", [0, 3, 48, 2048, 2.0])
def test_lanes_validated(lanes):
    model = random_model([8, 4], seed=0)
    refuses(lambda: InferenceEngine(model, lanes=lanes), ValueError,
            f"lanes must be a power of two between 1 and 1024, not {lanes!r}")


def test_memory_kind_validated():
    refuses(lambda: InferenceEngine(random_model([8, 4], seed=0), memory="sram"), ValueError,
            "memory must be one of 'block', 'logic', 'spram', not 'sram'")


def test_memory_budget_refused():
    model = random_model([64, 128, 128, 10], input_bits=5, seed=1)
    refuses(lambda: InferenceEngine(model, lanes=16, max_weight_bits=40000), ValueError,
            "network does not fit the memory budget: its weights need 51712 bits (1616 rows of "
            "16 pair codes), the budget is 40000 bits")


def test_model_type_checked():
    refuses(lambda: InferenceEngine({}, lanes=4), TypeError,
            "model must be a HardwareModel, not dict")
