"""The engine plan (widths, memory map, figures) and the golden reference read through the memory
image and a read function."""

import re

import numpy as np
import pytest

from nmflow.golden.pairs import (MINUS, PLUS, ZERO, IdealRead, MemoryMap, ReadFunction,
                                 memory_codes, memory_image, pcsa_read, read_weights)
from nmflow.golden.plan import PIPELINE, EnginePlan
from nmflow.golden.reference import reference
from nmflow.golden.synthetic import random_inputs, random_model


def direct_reference(model, x):
    """The integer network straight from the weight matrices (no memory image): an independent
    twin of the reference, written from contract 1."""
    h = np.asarray(x, dtype=np.int64)
    acts = []
    for layer in model.layers:
        a = h @ layer.weights.astype(np.int64).T
        if layer.activation == "none":
            scores = a * layer.scale + layer.offset
            return acts, scores, np.argmax(scores, axis=1)
        if layer.activation == "sign":
            h = np.where(a >= layer.t_hi, 1, -1)
        else:
            h = np.where(a >= layer.t_hi, 1, np.where(a < layer.t_lo, -1, 0))
        acts.append(h)


def test_default_engine_figures():
    # The digits TNN 64-128-128-10 on 16 lanes: the figures the README reports.
    plan = EnginePlan(random_model([64, 128, 128, 10], input_bits=5, seed=1), 16)
    assert plan.per == (4, 8, 8)
    assert plan.mmap.bases == (0, 512, 1536)
    assert plan.ideal_cycles == plan.weight_rows == 4 * 128 + 8 * 128 + 8 * 10 == 1616
    assert plan.weight_bits == 1616 * 32
    assert plan.popcount_latency == 5
    assert plan.drain_cycles == [11, 11, 13]
    # a hidden layer's 8 chunks are read a cycle apart, the last written by the layer before's
    # last group: the next layer begins 7 cycles into the drain of 11
    assert plan.layer_gaps == [11 - 7, 11 - 7]
    assert plan.cycles_per_inference == 64 + 1616 + 4 + 4 + 13 + 10 + 1 == 1712
    assert plan.memories["weights"] == (1616, 32)
    assert plan.memories["inputs"] == (4, 80)
    assert plan.memories["activations"] == (16, 32)     # two banks of 8 rows


def test_pipeline_accounts_for_the_read_stage():
    model = random_model([20, 9, 3], seed=2)
    base, slow = EnginePlan(model, 4), EnginePlan(model, 4, read_latency=3)
    assert [s - b for s, b in zip(slow.drain_cycles, base.drain_cycles)] == [3, 3]
    assert slow.cycles_per_inference == base.cycles_per_inference + 6
    assert "read stage" in PIPELINE["hidden"] and "read stage" in PIPELINE["last"]


def test_widths_cover_every_value():
    model = random_model([30, 12, 7], input_bits=6, seed=3)
    plan = EnginePlan(model, 8)
    bound = max(model.preact_bound(i) for i in range(2))
    assert plan.acc_format.min_raw <= -(bound + 1) and bound + 1 <= plan.acc_format.max_raw
    assert plan.acc_bits - 1 == (bound + 1).bit_length()        # and no wider
    assert plan.x_format.max_raw >= 63 and plan.x_format.min_raw <= -63
    last = model.layers[-1]
    assert plan.scale_format.contains(last.scale).all()
    assert plan.offset_format.contains(last.offset).all()
    assert plan.score_format.width == model.score_bits


def test_memory_map_places_every_weight():
    model = random_model([13, 6, 5, 3], weight_kind="ternary", seed=4)
    mmap = MemoryMap(4, tuple(model.sizes))
    codes = memory_codes([layer.weights for layer in model.layers], mmap)
    for k, layer in enumerate(model.layers):
        for j in range(layer.n_out):
            for i in range(layer.n_in):
                row, lane = mmap.row(k, j, i // 4), i % 4
                assert pcsa_read(codes[row, lane]) == layer.weights[j, i]
        # padding lanes of the last chunk hold code 0
        pad = mmap.per[k] * 4 - layer.n_in
        if pad:
            last_rows = [mmap.row(k, j, mmap.per[k] - 1) for j in range(layer.n_out)]
            assert (codes[last_rows, 4 - pad:] == ZERO).all()
    rows, bases = memory_image(model, 4)
    assert bases == list(mmap.bases) and len(rows) == mmap.rows
    assert rows[0] == sum(int(c) << (2 * p) for p, c in enumerate(codes[0]))


@pytest.mark.parametrize("kind", ["binary", "ternary"])
@pytest.mark.parametrize("lanes", [1, 4, 16, 64])
def test_reference_through_the_memory_image_equals_the_direct_network(kind, lanes):
    model = random_model([17, 11, 9, 4], weight_kind=kind, input_bits=3, seed=lanes)
    x = random_inputs(model, 50, seed=1)
    acts, scores, classes = direct_reference(model, x)
    trace = reference(model, x, lanes=lanes)
    assert trace.scores.tolist() == scores.tolist()
    assert trace.classes.tolist() == classes.tolist()
    for got, expected in zip(trace.acts, acts):
        assert got.tolist() == expected.tolist()


class FlipOddRows(ReadFunction):
    """A stand-in read: the sign of every weight in an odd row is flipped."""

    def __call__(self, codes, addr):
        return pcsa_read(codes) * np.where(addr % 2 == 1, -1, 1)[:, None].astype(np.int8)


class CountingRead(ReadFunction):
    """A stateful stand-in: inference n reads every weight of row n as 0 (and counts calls)."""
    per_inference = True

    def __init__(self):
        self.calls = 0

    def __call__(self, codes, addr):
        out = pcsa_read(codes)
        out[self.calls % len(out)] = 0
        self.calls += 1
        return out


def test_a_read_function_changes_what_the_reference_sees():
    model = random_model([8, 6, 3], weight_kind="ternary", seed=5)
    x = random_inputs(model, 20, seed=2)
    mmap = MemoryMap(4, tuple(model.sizes))
    flipped = read_weights(memory_codes([ly.weights for ly in model.layers], mmap), mmap,
                           FlipOddRows())
    # rows 1, 3, 5 of layer 0 are the second chunks of neurons 0, 1, 2 (inputs 4..7)
    w0 = model.layers[0].weights
    assert flipped[0][0, 4:].tolist() == (-w0[0, 4:]).tolist()
    assert flipped[0][0, :4].tolist() == w0[0, :4].tolist()
    assert reference(model, x, lanes=4, read=IdealRead()).scores.tolist() \
        == reference(model, x, lanes=4).scores.tolist()
    counting = CountingRead()
    trace = reference(model, x, lanes=4, read=counting)
    assert counting.calls == len(x)
    for n in (0, 7, 19):
        # inference n alone, with row n read as zeros
        codes = memory_codes([ly.weights for ly in model.layers], mmap)
        codes[n % mmap.rows] = ZERO
        alone = reference(model, x[n], lanes=4, codes=codes)
        assert trace.scores[n].tolist() == alone.scores[0].tolist()


def test_pair_codes_and_the_ideal_read():
    assert pcsa_read(np.array([PLUS, MINUS, ZERO, 0b11])).tolist() == [1, -1, 0, 0]


def test_bad_memory_image_refused():
    model = random_model([8, 3], seed=0)
    mmap = MemoryMap(4, tuple(model.sizes))
    with pytest.raises(Exception, match=re.escape("memory image must have shape [6, 4], not [5, 4]")):
        read_weights(np.zeros((5, 4), dtype=np.uint8), mmap)
