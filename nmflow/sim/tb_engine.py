"""cocotb testbench of the inference engine: driver, monitor, golden model and checker.

Run through :func:`nmflow.sim.engine_sim.simulate_engine`. Settings come from the environment:

``NMFLOW_TB_MODEL``   hardware model (.json/.npz stem) the engine was generated from
``NMFLOW_TB_INPUTS``  .npz with ``x`` [N, n_inputs]
``NMFLOW_TB_OUT``     .npz written with what the RTL produced (classes, scores, acts, cycles)
``NMFLOW_TB_READY``   probability that the result stream is ready in a cycle (default 1.0)
``NMFLOW_TB_SEED``    seed of the ready pattern

The golden model is :func:`nmflow.golden.reference.reference`; the checker compares every hidden
activation, every score and every class with ``==`` and the test fails unless it counts 0 errors.
"""

import os
import random

import cocotb
import numpy as np
from cocotb.triggers import FallingEdge, First, RisingEdge
from cocotb.utils import get_sim_time

from nmflow.fileio import atomic_path
from nmflow.golden import hwmodel
from nmflow.golden.reference import reference
from nmflow.rtl.engine import result_layout, trace_layout
from nmflow.sim.payload import unpack
from nmflow.sim.tbutil import PERIOD_NS, start


class Driver:
    """Feeds input vectors, one value per beat, whenever the engine is ready."""

    def __init__(self, dut, inputs):
        self.dut, self.inputs = dut, inputs
        self.image, self.position = 0, 0
        self.started = {}
        self.sent = False

    def step(self, cycle):
        dut = self.dut
        self.sent = self.image < len(self.inputs) and bool(int(dut.i__ready.value))
        if self.sent:
            if self.position == 0:
                self.started[self.image] = cycle
            dut.i__payload.value = int(self.inputs[self.image][self.position])
            dut.i__valid.value = 1
            self.position += 1
            if self.position == self.inputs.shape[1]:
                self.image, self.position = self.image + 1, 0
        else:
            dut.i__valid.value = 0


class Monitor:
    """Collects result beats and trace beats, calling back once per finished inference."""

    def __init__(self, dut, model, ready_probability, seed, on_inference):
        self.dut = dut
        self.result = result_layout(model.n_classes, model.score_bits)
        self.trace = trace_layout(len(model.layers), max([ly.n_out for ly in model.layers[:-1]],
                                                          default=1))
        self.rng = random.Random(seed)
        self.ready_probability = ready_probability
        self.on_inference = on_inference
        self.beats, self.acts = [], []

    def step(self, cycle):
        dut = self.dut
        if int(dut.trace__valid.value):
            beat = unpack(self.trace, dut.trace__payload.value.to_unsigned())
            self.acts.append((beat["layer"], beat["neuron"], beat["act"]))
        ready = 1 if self.rng.random() < self.ready_probability else 0
        dut.o__ready.value = ready
        if ready and int(dut.o__valid.value):
            beat = unpack(self.result, dut.o__payload.value.to_unsigned())
            self.beats.append(beat)
            if beat["last"]:
                self.on_inference(cycle, self.beats, self.acts)
                self.beats, self.acts = [], []


class Checker:
    """Compares each inference with the golden model; counts errors and keeps every mismatch."""

    def __init__(self, model, inputs, log):
        self.model, self.log = model, log
        self.golden = reference(model, inputs)
        n, sizes = len(inputs), [ly.n_out for ly in model.layers]
        self.classes = np.full(n, -1, dtype=np.int64)
        self.scores = np.zeros((n, model.n_classes), dtype=np.int64)
        self.acts = [np.zeros((n, size), dtype=np.int8) for size in sizes[:-1]]
        self.errors, self.mismatches, self.done = 0, [], 0

    def _mismatch(self, image, what, got, expected):
        self.errors += 1
        self.mismatches.append((image, what, got, expected))
        if len(self.mismatches) <= 20:
            self.log.error("image %d: %s is %r, golden %r", image, what, got, expected)

    def check(self, beats, acts):
        image = self.done
        self.done += 1
        golden = self.golden
        if [b["index"] for b in beats] != list(range(self.model.n_classes)):
            self._mismatch(image, "result beat order", [b["index"] for b in beats], None)
        for beat in beats:
            j = beat["index"] % self.model.n_classes
            self.scores[image, j] = beat["score"]
            if beat["score"] != golden.scores[image, j]:
                self._mismatch(image, f"score {j}", beat["score"], int(golden.scores[image, j]))
            if beat["cls"] != golden.classes[image]:
                self._mismatch(image, "class", beat["cls"], int(golden.classes[image]))
        self.classes[image] = beats[-1]["cls"]
        seen = [set() for _ in self.acts]
        for layer, neuron, act in acts:
            if layer >= len(self.acts) or neuron >= self.acts[layer].shape[1] \
                    or neuron in seen[layer]:
                self._mismatch(image, "trace beat", (layer, neuron), "one per hidden neuron")
                continue
            seen[layer].add(neuron)
            self.acts[layer][image, neuron] = act
            if act != golden.acts[layer][image, neuron]:
                self._mismatch(image, f"layer {layer} activation {neuron}", act,
                               int(golden.acts[layer][image, neuron]))
        for layer, got in enumerate(seen):
            if len(got) != self.acts[layer].shape[1]:
                self._mismatch(image, f"layer {layer} activations seen", len(got),
                               self.acts[layer].shape[1])


@cocotb.test()
async def engine_matches_golden(dut):
    """Stream every input vector through the engine; every output equals the golden model's."""
    model = hwmodel.load(os.environ["NMFLOW_TB_MODEL"])
    with np.load(os.environ["NMFLOW_TB_INPUTS"]) as f:
        inputs = f["x"].astype(np.int64)
    ready = float(os.environ.get("NMFLOW_TB_READY", "1.0"))
    seed = int(os.environ.get("NMFLOW_TB_SEED", "0"))
    # Sizes are read back from the design.
    assert len(dut.i__payload) == model.input_bits
    assert len(dut.o__payload) == result_layout(model.n_classes, model.score_bits).size

    checker = Checker(model, inputs, dut._log)
    driver = Driver(dut, inputs)
    cycles = np.zeros(len(inputs), dtype=np.int64)

    def finished(cycle, beats, acts):
        image = checker.done
        cycles[image] = cycle - driver.started[image] + 1
        checker.check(beats, acts)

    monitor = Monitor(dut, model, ready, seed, finished)

    await start(dut, i__valid=0, o__ready=0)

    # One step per clock cycle while something moves on a port; in between, sleep until the
    # engine raises a valid or a ready (the compute phase, where most cycles pass).
    limit = 50 * len(inputs) * (inputs.shape[1] + 100 * sum(model.sizes))
    busy = True
    while checker.done < len(inputs):
        if not busy:
            await First(RisingEdge(dut.trace__valid), RisingEdge(dut.o__valid),
                        RisingEdge(dut.i__ready))
        await FallingEdge(dut.clk)
        cycle = get_sim_time(unit="ns") // PERIOD_NS
        driver.step(cycle)
        monitor.step(cycle)
        busy = driver.sent or bool(int(dut.trace__valid.value)) or bool(int(dut.o__valid.value))
        assert cycle < limit, f"engine stalled: {checker.done} of {len(inputs)} inferences done"
    cycle = get_sim_time(unit="ns") // PERIOD_NS

    out = os.environ.get("NMFLOW_TB_OUT")
    if out:
        with atomic_path(out) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, classes=checker.classes, scores=checker.scores, cycles=cycles,
                         sim_cycles=np.int64(cycle),
                         **{f"acts{n}": a for n, a in enumerate(checker.acts)})
    dut._log.info("%d inferences, %d errors, %d cycles", len(inputs), checker.errors, cycle)
    assert checker.errors == 0, f"{checker.errors} mismatches against the golden model"
