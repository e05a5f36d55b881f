"""cocotb testbench of the inference engine: driver, monitors, golden model and scoreboard.

Run through :func:`nmflow.sim.engine_sim.simulate_engine`. Settings come from the environment:

``NMFLOW_TB_MODEL``     hardware model (.json/.npz stem) the engine was generated from
``NMFLOW_TB_CONFIG``    ``engine.json`` of the Verilog (lanes, ``cycles_per_inference``, the read-error
                        injection the golden model then reads with: its bit-exact twin)
``NMFLOW_TB_INPUTS``    .npz with ``x`` [N, n_inputs]
``NMFLOW_TB_OUT``       .npz written with what the RTL produced (classes, scores, acts, cycles,
                        finish: the clock period of each inference's last result beat)
``NMFLOW_TB_READY``     probability that the result stream is ready in a cycle (default 1.0)
``NMFLOW_TB_VALID``     probability that the driver offers its next beat in a cycle (default 1.0)
``NMFLOW_TB_SEED``      seed of the ready and gap patterns (default 0)
``NMFLOW_TB_PROGRESS``  file to append ``images_done sim_cycles seconds`` lines to, now and then

The shape is cocotb's matrix_multiplier example: a :class:`Driver` offers the input vectors on the
engine's input stream, holding ``valid`` high whenever it has a value, whether or not the engine is
ready (the next vector waits there while the engine computes); :class:`Backpressure` drives the
result stream's ``ready`` from a seeded RNG; an :class:`InputMonitor` sees each accepted input
vector and hands it to the golden :class:`Model` (:func:`nmflow.golden.reference.reference`), whose
outputs go into the :class:`Scoreboard`'s expected queue; an :class:`OutputMonitor` sees accepted
result beats and trace beats and hands each inference to the scoreboard, which compares the class,
every score and every hidden activation with ``==``. The test fails unless it counts 0 errors, and
a watchdog fails it with ``engine stalled: ...`` when no inference finishes within
:func:`~nmflow.sim.streams.watchdog_cycles` of the engine's ``cycles_per_inference``.

Speed: the coroutines wake on clock edges only while beats move (the input load, trace beats,
result beats); while the engine computes they sleep on the rising edge of a ``valid`` or a
``ready``.
"""

import json
import os
import random
import time
from collections import deque
from pathlib import Path

import cocotb
import numpy as np
from cocotb.simtime import get_sim_time
from cocotb.triggers import Event, First, RisingEdge, Timer

from nmflow.fileio import atomic_path
from nmflow.golden import hwmodel
from nmflow.golden.reference import reference
from nmflow.rtl.engine import result_layout, trace_layout
from nmflow.rtl.verilog import engine_read_function
from nmflow.sim.payload import field
from nmflow.sim.streams import watchdog_cycles
from nmflow.sim.tbutil import PERIOD_NS, start


def edge_count():
    """The number of the clock period the simulation is in (rising edges fall on multiples)."""
    return int(get_sim_time("ns")) // PERIOD_NS


class Unpacker:
    """Turns a flat payload into a tuple of its layout's members, signed where a member is."""

    def __init__(self, layout):
        self.names = [name for name, _ in layout]
        self.fields = []
        for name in self.names:
            offset, width, signed = field(layout, name)
            self.fields.append((offset, (1 << width) - 1, 1 << (width - 1) if signed else 0))

    def __call__(self, value):
        out = []
        for offset, mask, sign in self.fields:
            raw = (value >> offset) & mask
            out.append(raw - (sign << 1) if sign and raw & sign else raw)
        return tuple(out)


class Driver:
    """Offers the input vectors on the ``i`` stream, one value per beat.

    Follows ``amaranth.lib.stream``'s rules: ``valid`` goes high with the next value whenever the
    driver has one, without looking at ``ready`` first, and stays high until a rising edge where
    ``ready`` is high takes the beat. With ``rng``, each beat is preceded by idle cycles, each with
    probability ``1 - valid`` (gaps; never a retraction).
    """

    def __init__(self, dut, inputs, *, rng=None, valid=1.0):
        self.dut = dut
        self.values = [int(v) for v in np.asarray(inputs).reshape(-1)]
        self.rng, self.valid = rng, valid

    def start(self):
        return cocotb.start_soon(self._run())

    async def _run(self):
        dut = self.dut
        edge = RisingEdge(dut.clk)
        valid, payload, ready = dut.i__valid, dut.i__payload, dut.i__ready
        gaps = self.rng is not None and self.valid < 1.0
        high = False
        for value in self.values:
            while gaps and self.rng.random() >= self.valid:
                if high:
                    valid.value, high = 0, False
                await edge
            payload.value = value
            if not high:
                valid.value, high = 1, True
            await edge
            while not ready.value:                  # not taken: sleep while the engine is busy
                await RisingEdge(ready)
                await edge
        valid.value = 0


class Backpressure:
    """Drives the result stream's ``ready``: in each cycle a result beat is offered, high with
    probability ``ready`` (a seeded :class:`random.Random`); always high when ``ready`` is 1."""

    def __init__(self, dut, *, rng, ready=1.0):
        self.dut, self.rng, self.ready = dut, rng, ready

    def start(self):
        return cocotb.start_soon(self._run())

    async def _run(self):
        dut = self.dut
        if self.ready >= 1.0:
            dut.o__ready.value = 1
            return
        edge, o_valid, o_ready = RisingEdge(dut.clk), dut.o__valid, dut.o__ready
        while True:
            o_ready.value = int(self.rng.random() < self.ready)
            await edge
            if not o_valid.value:
                await RisingEdge(o_valid)


class InputMonitor:
    """Observes the input stream: each beat taken (``valid & ready`` at a rising edge) is recorded;
    each complete vector goes to ``callback(vector, first)``, ``first`` being the clock period of
    its first beat."""

    def __init__(self, dut, n_inputs, callback):
        self.dut, self.n_inputs, self.callback = dut, n_inputs, callback
        self.vectors = []

    def start(self):
        return cocotb.start_soon(self._run())

    async def _run(self):
        dut = self.dut
        edge = RisingEdge(dut.clk)
        valid, ready, payload = dut.i__valid, dut.i__ready, dut.i__payload
        beats, first = [], 0
        while True:
            await edge
            is_valid, is_ready = valid.value, ready.value
            if is_valid and is_ready:
                if not beats:
                    first = edge_count()
                beats.append(payload.value.to_unsigned())
                if len(beats) == self.n_inputs:
                    self.vectors.append(beats)
                    self.callback(beats, first)
                    beats = []
            elif not is_valid:
                await RisingEdge(valid)
            else:
                await RisingEdge(ready)


class OutputMonitor:
    """Observes the result stream (beats taken: ``valid & ready`` at a rising edge) and the
    always-ready trace stream (beats: ``valid`` at a rising edge), each in its own coroutine; on
    each result beat flagged ``last`` it hands the inference to ``callback(results, acts, last)``:
    the result beats as ``(index, score, cls, last)``, the trace beats as ``(layer, neuron,
    act)`` of the inference, and the clock period of the last beat.

    The engine computes one inference at a time and traces every hidden neuron once, so the
    trace stream is each inference's ``sum(hidden)`` beats, inference after inference. The next
    inference's first layers may already be traced while the results of the last go out, so at
    each ``last`` result beat the monitor hands over the first ``sum(hidden)`` trace beats not
    yet handed over and keeps the rest (a missing or extra beat then shows as mismatches).
    """

    def __init__(self, dut, model, callback):
        self.dut, self.callback = dut, callback
        self.result = Unpacker(result_layout(model.n_classes, model.score_bits))
        hidden = [layer.n_out for layer in model.layers[:-1]]
        self.trace = Unpacker(trace_layout(len(model.layers), max(hidden, default=1)))
        self.per_inference = sum(hidden)
        assert self.result.names == ["index", "score", "cls", "last"]
        assert self.trace.names == ["layer", "neuron", "act"]
        self.acts = []

    def start(self):
        return cocotb.start_soon(self._results()), cocotb.start_soon(self._trace())

    async def _trace(self):
        dut = self.dut
        edge, valid, payload = RisingEdge(dut.clk), dut.trace__valid, dut.trace__payload
        while True:
            await edge
            if valid.value:
                self.acts.append(self.trace(payload.value.to_unsigned()))
            else:
                await RisingEdge(valid)

    async def _results(self):
        dut = self.dut
        edge = RisingEdge(dut.clk)
        valid, ready, payload = dut.o__valid, dut.o__ready, dut.o__payload
        results = []
        while True:
            await edge
            if not valid.value:
                await RisingEdge(valid)
            elif ready.value:
                beat = self.result(payload.value.to_unsigned())
                results.append(beat)
                if beat[3]:
                    n = self.per_inference
                    acts, self.acts = self.acts[:n], self.acts[n:]
                    self.callback(results, acts, edge_count())
                    results = []


class Model:
    """The golden model on each input vector the input monitor saw; its outputs go into the
    scoreboard's expected queue."""

    def __init__(self, model, lanes, scoreboard, read=None):
        self.model, self.lanes, self.scoreboard, self.read = model, lanes, scoreboard, read

    def __call__(self, vector, first):
        self.scoreboard.expect(reference(self.model, np.array([vector]), lanes=self.lanes,
                                         read=self.read), first)


class Scoreboard:
    """Pairs each expected inference (from the model) with the actual one (from the output
    monitor), in order, and compares the class, every score and every hidden activation with
    ``==``; counts errors and keeps every mismatch.

    What the RTL produced is kept in the golden model's shapes (:attr:`classes`, :attr:`scores`,
    :attr:`acts`) with the cycles of each inference, from its first input beat to its last result
    beat (:attr:`cycles`).
    """

    def __init__(self, model, images, log, on_inference=None):
        self.model, self.images, self.log = model, images, log
        self.on_inference = on_inference
        sizes = [layer.n_out for layer in model.layers]
        self.classes = np.full(images, -1, dtype=np.int64)
        self.scores = np.zeros((images, model.n_classes), dtype=np.int64)
        self.acts = [np.zeros((images, size), dtype=np.int8) for size in sizes[:-1]]
        self.cycles = np.zeros(images, dtype=np.int64)
        self.finish = np.zeros(images, dtype=np.int64)      # clock period of the last beat
        self.expected = deque()
        self.errors, self.mismatches, self.done = 0, [], 0
        self.finished = Event()
        if images == 0:
            self.finished.set()

    def expect(self, golden, first):
        """Queue the golden :class:`~nmflow.golden.reference.Trace` of one input vector, whose
        first beat was taken in clock period ``first``."""
        self.expected.append((golden, first))

    def _mismatch(self, image, what, got, expected):
        self.errors += 1
        self.mismatches.append((image, what, got, expected))
        if len(self.mismatches) <= 20:
            self.log.error("image %d: %s is %r, golden %r", image, what, got, expected)

    def actual(self, results, acts, last):
        """Check one inference the output monitor saw (result beats, trace beats, the clock period
        of its last result beat) against the head of the expected queue."""
        image = self.done
        if image >= self.images:
            self._mismatch(image, "inference", "an extra one", f"{self.images} inferences")
            return
        self.done += 1
        if not self.expected:
            self._mismatch(image, "inference", "results before its input vector", "none")
            golden, first = None, last
        else:
            golden, first = self.expected.popleft()
        self.cycles[image] = last - first + 1
        self.finish[image] = last
        n_classes = self.model.n_classes
        indices = [beat[0] for beat in results]
        if indices != list(range(n_classes)):
            self._mismatch(image, "result beat order", indices, list(range(n_classes)))
        for index, score, cls, _ in results:
            if index >= n_classes:
                continue
            self.scores[image, index] = score
            if golden is not None:
                if score != golden.scores[0, index]:
                    self._mismatch(image, f"score {index}", score, int(golden.scores[0, index]))
                if cls != golden.classes[0]:
                    self._mismatch(image, "class", cls, int(golden.classes[0]))
        self.classes[image] = results[-1][2]
        seen = [set() for _ in self.acts]
        for layer, neuron, act in acts:
            if layer >= len(self.acts) or neuron >= self.acts[layer].shape[1] \
                    or neuron in seen[layer]:
                self._mismatch(image, "trace beat", (layer, neuron), "one per hidden neuron")
                continue
            seen[layer].add(neuron)
            self.acts[layer][image, neuron] = act
            if golden is not None and act != golden.acts[layer][0, neuron]:
                self._mismatch(image, f"layer {layer} activation {neuron}", act,
                               int(golden.acts[layer][0, neuron]))
        for layer, got in enumerate(seen):
            if len(got) != self.acts[layer].shape[1]:
                self._mismatch(image, f"layer {layer} activations seen", len(got),
                               self.acts[layer].shape[1])
        if self.on_inference:
            self.on_inference(self.done, last)
        if self.done == self.images:
            self.finished.set()


class ProgressFile:
    """Appends ``images_done sim_cycles seconds`` lines to a file at most every ``interval``
    seconds, and always after the last image (complete lines only: readers skip a partial one)."""

    def __init__(self, path, images, interval=0.5):
        self.path, self.images, self.interval = path, images, interval
        self.started = self.last = time.monotonic()
        if path:
            Path(path).write_text("")

    def __call__(self, done, cycles):
        now = time.monotonic()
        if not self.path or (now - self.last < self.interval and done < self.images):
            return
        self.last = now
        with open(self.path, "a") as f:
            f.write(f"{done} {cycles} {now - self.started:.3f}\n")


@cocotb.test()
async def engine_matches_golden(dut):
    """Stream every input vector through the engine; every output equals the golden model's."""
    model = hwmodel.load(os.environ["NMFLOW_TB_MODEL"])
    config = json.loads(Path(os.environ["NMFLOW_TB_CONFIG"]).read_text())
    with np.load(os.environ["NMFLOW_TB_INPUTS"]) as f:
        inputs = f["x"].astype(np.int64)
    ready = float(os.environ.get("NMFLOW_TB_READY", "1.0"))
    valid = float(os.environ.get("NMFLOW_TB_VALID", "1.0"))
    seed = int(os.environ.get("NMFLOW_TB_SEED", "0"))
    # Sizes are read back from the design.
    assert len(dut.i__payload) == model.input_bits
    assert len(dut.o__payload) == result_layout(model.n_classes, model.score_bits).size

    progress = ProgressFile(os.environ.get("NMFLOW_TB_PROGRESS"), len(inputs))
    scoreboard = Scoreboard(model, len(inputs), dut._log, on_inference=progress)
    idle = {"i__valid": 0, "o__ready": 0}
    read = engine_read_function(config)     # the injector's twin, if the engine has one
    if read is not None:
        idle["errors__valid"] = 0           # the configuration after reset stays
    await start(dut, **idle)
    progress.started = time.monotonic()
    monitor = InputMonitor(dut, model.n_inputs, Model(model, config["lanes"], scoreboard, read))
    monitor.start()
    OutputMonitor(dut, model, scoreboard.actual).start()
    Backpressure(dut, rng=random.Random(f"{seed}/ready"), ready=ready).start()
    Driver(dut, inputs, rng=random.Random(f"{seed}/gaps"), valid=valid).start()

    budget = watchdog_cycles(config["cycles_per_inference"], ready=ready, valid=valid)
    while not scoreboard.finished.is_set():
        before = scoreboard.done
        await First(scoreboard.finished.wait(), Timer(budget * PERIOD_NS, "ns"))
        assert scoreboard.finished.is_set() or scoreboard.done > before, (
            f"engine stalled: no inference finished in {budget} cycles ({scoreboard.done} of "
            f"{len(inputs)} done)")
    cycles = edge_count()

    seen = np.array(monitor.vectors, dtype=np.int64).reshape(-1, inputs.shape[1])
    if seen.shape != inputs.shape or (seen != inputs).any():
        scoreboard._mismatch(-1, "input vectors taken", f"{len(seen)} vectors",
                             f"the {len(inputs)} vectors driven")
    out = os.environ.get("NMFLOW_TB_OUT")
    if out:
        with atomic_path(out) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, classes=scoreboard.classes, scores=scoreboard.scores,
                         cycles=scoreboard.cycles, finish=scoreboard.finish,
                         sim_cycles=np.int64(cycles),
                         **{f"acts{n}": a for n, a in enumerate(scoreboard.acts)})
    dut._log.info("%d inferences, %d errors, %d cycles", len(inputs), scoreboard.errors, cycles)
    first = scoreboard.mismatches[0] if scoreboard.mismatches else None
    assert scoreboard.errors == 0, (
        f"{scoreboard.errors} mismatches against the golden model, the first: image {first[0]}: "
        f"{first[1]} is {first[2]!r}, golden {first[3]!r}")
