# amaranth: UnusedElaboratable=no
"""Convolutional networks on the inference engine, in Amaranth's simulator, against the integer
reference (==): every pooled activation map, every score and class, and the plan's cycles."""

import numpy as np
import pytest

from nmflow.golden.hwmodel import HardwareModel, Layer
from nmflow.golden.injector import ErrorInjection, InjectedRead
from nmflow.golden.readerrors import ErrorRates
from nmflow.golden.pairs import MemoryMap
from nmflow.golden.plan import EnginePlan
from nmflow.golden.reference import reference
from nmflow.golden.synthetic import random_conv_model, random_inputs
from nmflow.rtl.engine import InferenceEngine
from nmflow.sim.pysim import run_engine

from helpers import assert_back_to_back


def check(engine, inputs, **kwargs):
    run = run_engine(engine, inputs, **kwargs)
    golden = reference(engine.model, inputs, lanes=engine.lanes, pe=engine.pe)
    assert run.classes.tolist() == golden.classes.tolist()
    assert run.scores.tolist() == golden.scores.tolist()
    assert len(run.acts) == len(golden.acts)
    for got, expected in zip(run.acts, golden.acts):
        assert got.tolist() == expected.tolist()
    # every (pooled pixel, group) of every hidden layer is traced once per inference
    per_image = sum(w.out_pixels * w.groups for w in engine.plan.walks[:-1])
    assert len(run.trace_events) == len(set(run.trace_events)) == per_image * len(inputs)
    return run


@pytest.mark.parametrize("arch, shape, kind, lanes, pe, bits", [
    # padding, a pooling of 2 on an odd map (its last row and column dropped), a second
    # convolution without padding, two channels in: one chunk per pixel
    ("c5k3p1-p2-c4k2-f6-f3", (2, 7, 6), "ternary", 4, 1, None),
    # two neurons a cycle, a pixel's channels over two rows (5 > simd = 4), bit-serial pixels
    ("c5k3p1-p2-c4k2-f6-f3", (2, 7, 6), "binary", 8, 2, 1),
    # one lane: every channel a chunk of its own; no pooling
    ("c3k2-c2k2-f3", (2, 4, 4), "ternary", 1, 1, None),
    # wide: a group of four output channels, a pooling of 3, three input channels
    ("c8k3p2-p3-f5", (3, 5, 5), "ternary", 16, 4, None),
    # a 1 x 1 kernel, pooling twice (one window of 4), several groups per buffer row
    ("c6k1-p2-p2-c4k3p1-f4", (1, 8, 8), "binary", 32, 2, 2),
])
def test_conv_engine_matches_reference(arch, shape, kind, lanes, pe, bits):
    model = random_conv_model(arch, shape, input_bits=4, weight_kind=kind, seed=lanes + pe)
    engine = InferenceEngine(model, lanes=lanes, pe=pe, first_layer_bits=bits)
    run = check(engine, random_inputs(model, 4, seed=lanes))
    assert_back_to_back(run.cycles, engine.plan)


def test_conv_engine_with_input_gaps_and_backpressure():
    model = random_conv_model("c4k3p1-p2-c4k3p1-f5", (1, 6, 6), seed=5)
    engine = InferenceEngine(model, lanes=8, pe=2)
    check(engine, random_inputs(model, 3, seed=6), ready=0.4, valid=0.6, seed=3)


def test_conv_engine_with_buffers_in_logic():
    model = random_conv_model("c4k3p1-p2-f5", (2, 4, 4), seed=7)
    check(InferenceEngine(model, lanes=4, buffers="logic"), random_inputs(model, 2, seed=8))


def test_padding_reads_zero_even_where_the_map_holds_other_values():
    """A 2 x 2 image, a 3 x 3 kernel with padding 1: eight of the nine kernel positions of
    every output pixel fall outside the map. With every weight +1 and the inputs at their
    largest, the pre-activation is the sum of the four pixels (not of nine), so that the
    thresholds below split it from a sum that would count padding as anything else."""
    w0 = np.ones((1, 9), dtype=np.int8)
    # each pixel sees all four pixels (padding 1, 3 x 3): a = 4 * 15 = 60
    layers = [Layer(w0, "ternary", t_hi=np.array([60]), t_lo=np.array([59]),
                    conv={"in_shape": [1, 2, 2], "kernel": 3, "padding": 1, "pool": 1}),
              Layer(np.ones((2, 4), dtype=np.int8), "none", scale=np.array([1, 2]),
                    offset=np.array([0, 0]))]
    model = HardwareModel(input_bits=4, weight_kind="ternary", layers=layers)
    x = np.full((1, 4), 15)
    golden = reference(model, x, lanes=4)
    assert golden.acts[0].tolist() == [[1, 1, 1, 1]]
    assert golden.scores.tolist() == [[4, 8]] and golden.classes.tolist() == [1]
    run = check(InferenceEngine(model, lanes=4), x)
    assert run.scores.tolist() == [[4, 8]]


def test_plan_of_a_conv_network():
    """The figures of c5k3p1-p2-c4k2-f6-f3 on 2 x 7 x 6 inputs, 8 lanes, pe 2, counted by hand."""
    model = random_conv_model("c5k3p1-p2-c4k2-f6-f3", (2, 7, 6), seed=1)
    plan = EnginePlan(model, 8, pe=2)
    # simd 4: layer 0 reads 9 positions of 1 chunk (2 channels) per window position; its
    # 7 x 6 map pools to 3 x 3, so 6 x 6 positions are computed, 3 groups of 2 channels
    # layer 1 reads a 3 x 3 x 5 map: 4 positions x 2 chunks, 2 x 2 outputs, 2 groups
    # layer 2 reads 4 pixels x 1 chunk of 4 channels, 3 groups; layer 3: 2 chunks, 2 groups
    assert plan.per == (9, 8, 4, 2)
    assert plan.layer_reads == [36 * 3 * 9, 4 * 2 * 8, 3 * 4, 2 * 2]
    assert plan.ideal_cycles == 972 + 64 + 12 + 4
    assert plan.weight_rows == 3 * 9 + 2 * 8 + 3 * 4 + 2 * 2
    # the input buffer: 42 pixels a row each; the activation buffer: 9 pixels x 2 rows
    assert plan.input_rows == 42 and plan.hidden_rows == 18
    # a convolution's map is written and read pixel by pixel: the whole drain after it
    assert plan.layer_gaps[:2] == plan.drain_cycles[:2]


def test_memory_map_pads_each_pixels_channels_to_whole_chunks():
    model = random_conv_model("c3k2-f2", (5, 3, 3), seed=2)
    mmap = MemoryMap.for_model(model, 4)
    assert mmap.layer_blocks == ((4, 5), (4, 3))
    # kernel position p, channel c -> column p * 8 + c (two chunks of 4 per position)
    assert mmap.columns(0).tolist() == [p * 8 + c for p in range(4) for c in range(5)]
    # the 2 x 2 map of 3 channels, one chunk per pixel
    assert mmap.columns(1).tolist() == [p * 4 + c for p in range(4) for c in range(3)]
    codes = EnginePlan(model, 4).memory_codes()
    for layer in range(2):
        rows = codes[mmap.layer_rows(layer)]
        back = mmap.gather(layer, np.where(rows == 2, 1, np.where(rows == 1, -1, 0)))
        assert back.tolist() == model.layers[layer].weights.tolist()
        # the padding columns hold code 0
        padded = mmap.scatter(layer, np.ones_like(model.layers[layer].weights))
        assert padded.sum() == model.layers[layer].weights.size


@pytest.mark.parametrize("mode", ["per_read", "static"])
def test_conv_engine_with_the_read_error_injector_matches_its_twin(mode):
    """The injector draws per row read, and a convolution reads each of its rows once per
    position: the twin follows the engine's read order (repeats included) and equals it."""
    model = random_conv_model("c5k3p1-p2-c4k2-f6-f3", (2, 7, 6), seed=4)
    injection = ErrorInjection(ErrorRates(0.1, 0.1, 0.1), seed=5, mode=mode)
    engine = InferenceEngine(model, lanes=8, pe=2, errors=injection)
    x = random_inputs(model, 3, seed=2)
    run = run_engine(engine, x)
    twin = reference(model, x, lanes=8, pe=2, read=InjectedRead(injection, 8))
    assert run.scores.tolist() == twin.scores.tolist()
    assert run.classes.tolist() == twin.classes.tolist()
    for got, expected in zip(run.acts, twin.acts):
        assert got.tolist() == expected.tolist()
    # the errors did change what the network computes
    ideal = reference(model, x, lanes=8, pe=2)
    assert any((a != b).any() for a, b in zip(twin.acts, ideal.acts))


@pytest.mark.parametrize("batch", [None, 4])
def test_host_step_on_a_simulated_conv_board_with_read_errors(tmp_path, batch):
    """`nmflow host` against a conv network's board (HostTop in simulation behind a TCP port):
    the injector's rates, seed and mode set over the link, every reply equal to the twin's,
    one frame per image or the images in board-side batches."""
    from nmflow.flow import host_step
    from nmflow.golden import hwmodel
    from nmflow.sim.uart_bridge import simulated_board
    model = random_conv_model("c4k3p1-p2-f3", (1, 4, 4), input_bits=3, seed=11)
    hwmodel.save(model, tmp_path / "hwmodel")
    x = random_inputs(model, 5, seed=12)
    np.savez(tmp_path / "x.npz", x=x)
    errors = ErrorInjection(ErrorRates(0.05, 0.1, 0.1), seed=9, mode="per_read", rate_bits=8)
    reset = ErrorInjection(ErrorRates(0, 0, 0), seed=3, rate_bits=8)
    with simulated_board(model, lanes=8, pe=2, divisor=4, errors=reset, batch=batch) as url:
        result = host_step(tmp_path, url, inputs=tmp_path / "x.npz", timeout=30,
                           errors=errors, lanes=8, pe=2, batch=batch is not None)
    assert result["images"] == 5 and result["mismatches"] == 0
    twin = reference(model, x, lanes=8, pe=2, read=InjectedRead(errors, 8))
    assert twin.classes.tolist() != reference(model, x, lanes=8, pe=2).classes.tolist() or \
        twin.scores.tolist() != reference(model, x, lanes=8, pe=2).scores.tolist()


def _random_network(rng):
    """A random conv network: one or two convolutions (channels, kernel, padding, pooling
    drawn), a fully connected layer or none, the classes; a small random map; a folding."""
    channels = int(rng.integers(1, 4))
    side = int(rng.integers(4, 8))
    layers, size = [], side
    for _ in range(int(rng.integers(1, 3))):
        kernel = int(rng.integers(1, min(3, size) + 1))
        padding = int(rng.integers(0, kernel))
        out = int(rng.integers(1, 7))
        layers.append(f"c{out}k{kernel}" + (f"p{padding}" if padding else ""))
        size = size + 2 * padding - kernel + 1
        if size >= 2 and rng.random() < 0.5:
            pool = int(rng.integers(2, min(3, size) + 1))
            layers.append(f"p{pool}")
            size //= pool
    if rng.random() < 0.5:
        layers.append(f"f{int(rng.integers(2, 9))}")
    layers.append(f"f{int(rng.integers(2, 6))}")
    lanes = int(2 ** rng.integers(0, 6))
    pe = int(2 ** rng.integers(0, int(np.log2(lanes)) // 2 + 1))
    return "-".join(layers), (channels, side, side), lanes, pe


@pytest.mark.parametrize("seed", range(8))
def test_random_conv_networks_match_the_reference_and_the_plan(seed):
    rng = np.random.default_rng(1000 + seed)
    arch, shape, lanes, pe = _random_network(rng)
    kind = "binary" if seed % 2 else "ternary"
    model = random_conv_model(arch, shape, input_bits=3, weight_kind=kind, seed=seed)
    engine = InferenceEngine(model, lanes=lanes, pe=pe)
    run = check(engine, random_inputs(model, 3, seed=seed))
    assert_back_to_back(run.cycles, engine.plan)
