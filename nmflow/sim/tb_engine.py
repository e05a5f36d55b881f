"""cocotb testbench of the inference engine on the harness (:mod:`nmflow.sim.harness`): a driver,
monitors, the golden model and a scoreboard.

Run through :func:`nmflow.sim.engine_sim.simulate_engine`. Settings come from the environment:

``NMFLOW_TB_MODEL``     hardware model (.json/.npz stem) the engine was generated from
``NMFLOW_TB_CONFIG``    ``engine.json`` of the Verilog (lanes, ``cycles_per_inference``, the read-error
                        injection the golden model then reads with: its bit-exact twin)
``NMFLOW_TB_INPUTS``    .npz with ``x`` [N, n_inputs]
``NMFLOW_TB_FIRST``     the first vector of ``x`` to simulate (default 0): a chunk of a run split
                        over several simulators (:func:`~nmflow.sim.engine_sim.simulate_engine`)
``NMFLOW_TB_COUNT``     how many vectors from there (default: all the rest)
``NMFLOW_TB_OUT``       .npz written with what the RTL produced (classes, scores, acts, cycles,
                        finish: the clock period of each inference's last result beat)
``NMFLOW_TB_READY``     probability that the result stream is ready in a cycle (default 1.0)
``NMFLOW_TB_VALID``     probability that the driver offers its next beat in a cycle (default 1.0)
``NMFLOW_TB_SEED``      seed of the ready and gap patterns (default 0); a chunk's patterns come
                        from the seed and its first vector, so they do not depend on how many
                        chunks run or in which order
``NMFLOW_TB_PROGRESS``  file to append ``images_done sim_cycles seconds`` lines to, now and then

Messages number the images of ``x`` from 0 whichever chunk is simulated (``image 183: ...``).

An engine whose weights are in SPRAM (``memory`` ``"spram"`` in ``engine.json``) starts empty: the
testbench first writes every row of the weight memory image through its ``weights`` port.

The shape is cocotb's matrix_multiplier example. A :class:`~nmflow.sim.harness.Driver` offers the
input vectors on the engine's input stream ``i``, holding ``valid`` high whenever it has a value,
whether or not the engine is ready (the next vector waits there while the engine computes), after
random gaps if asked. A passive :class:`~nmflow.sim.harness.Monitor` sees each input beat taken;
each complete vector goes to the golden :class:`Model` (:func:`nmflow.golden.reference.reference`),
which queues the beats the engine must then show in the :class:`~nmflow.sim.harness.Scoreboard`:
one result beat per class (index, score, class, last) on ``o`` and one trace beat per hidden neuron
(layer, neuron, activation) on ``trace``, in order. A monitor takes the result beats, with random
backpressure if asked, another the beats of the always-ready trace stream; every beat is compared
with the expected one with ``==`` (every field), and so is every input beat with the one driven.
:class:`Inferences` keeps what the RTL produced in the golden model's shapes with the cycles of
each inference. The test fails unless the scoreboard counts 0 mismatches, and a watchdog fails it
with ``engine stalled: ...`` when no inference finishes within
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
from cocotb.triggers import Event, FallingEdge, First, Timer

from nmflow.fileio import atomic_path
from nmflow.golden import hwmodel
from nmflow.golden.pairs import pack_rows
from nmflow.golden.plan import EnginePlan
from nmflow.golden.reference import reference
from nmflow.rtl.engine import result_layout, trace_layout
from nmflow.rtl.verilog import engine_read_function
from nmflow.sim.bulkcheck import hidden_shapes
from nmflow.sim.harness import Driver, Monitor, Scoreboard, Stream, cycle
from nmflow.sim.streams import watchdog_cycles
from nmflow.sim.tbutil import PERIOD_NS, start


class Model:
    """The golden model on each input vector the input monitor saw: queues the result and trace
    beats the engine must show for it in the scoreboard."""

    def __init__(self, model, lanes, scoreboard, read=None, pe=1, first=0):
        self.model, self.lanes, self.scoreboard, self.read = model, lanes, scoreboard, read
        self.pe = pe
        self.images = first                     # the number of the next image in messages

    def __call__(self, vector):
        golden = reference(self.model, np.array([vector]), lanes=self.lanes, pe=self.pe,
                           read=self.read)
        image, self.images = self.images, self.images + 1
        n_classes = self.model.n_classes
        for index in range(n_classes):
            self.scoreboard.expect("o", {
                "index": index, "score": int(golden.scores[0, index]),
                "cls": int(golden.classes[0]), "last": int(index == n_classes - 1),
            }, f"image {image}: result beat {index}")
        pe = self.pe
        for layer, (acts, (pixels, channels)) in enumerate(zip(golden.acts,
                                                               hidden_shapes(self.model))):
            # a convolution's pooled map pixel by pixel (channels innermost)
            maps = np.asarray(acts[0]).reshape(pixels, channels)
            for pixel in range(pixels):
                padded = np.zeros(-(-channels // pe) * pe, dtype=np.int64)
                padded[:channels] = maps[pixel]     # padding neurons trace 0
                where = f"pixel {pixel} " if pixels > 1 else ""
                for group in range(len(padded) // pe):
                    self.scoreboard.expect("trace", {
                        "layer": layer, "group": group,
                        "acts": [int(v) for v in padded[group * pe:(group + 1) * pe]],
                    }, f"image {image}: layer {layer} {where}activations {group * pe} to "
                       f"{group * pe + pe - 1}")


class Inferences:
    """What the engine produced, beat by beat, in the golden model's shapes (:attr:`classes`,
    :attr:`scores`, :attr:`acts`), with the cycles of each inference from its first input beat
    to its last result beat (:attr:`cycles`) and the clock period of that last beat
    (:attr:`finish`). Each beat also goes to the scoreboard; ``model_of(vector)`` gets each
    complete input vector.

    The engine computes one inference at a time and traces every group of ``pe`` hidden neurons
    once, so the trace stream is each inference's hidden groups, inference after inference (the
    next inference's first layers may already be traced while the results of the last go out).
    """

    def __init__(self, model, images, scoreboard, model_of, on_inference=None, pe=1):
        self.model, self.images, self.scoreboard = model, images, scoreboard
        self.model_of, self.on_inference = model_of, on_inference
        self.hidden = hidden_shapes(model)
        self.classes = np.full(images, -1, dtype=np.int64)
        self.scores = np.zeros((images, model.n_classes), dtype=np.int64)
        self.acts = [np.zeros((images, pixels * channels), dtype=np.int8)
                     for pixels, channels in self.hidden]
        self.pe = pe
        # each beat's pixel, in the engine's order (layer, pixel, group)
        self.pixels = [pixel for pixels, channels in self.hidden for pixel in range(pixels)
                       for _ in range(-(-channels // pe))]
        self.per_inference = len(self.pixels)
        self.cycles = np.zeros(images, dtype=np.int64)
        self.finish = np.zeros(images, dtype=np.int64)
        self.vectors, self.vector, self.first = [], [], deque()
        self.done = self.traced = 0
        self.finished = Event()
        if images == 0:
            self.finished.set()

    def input_beat(self, value, period):
        self.scoreboard.observe("i", value)
        if not self.vector:
            self.first.append(period)
        self.vector.append(value)
        if len(self.vector) == self.model.n_inputs:
            self.vectors.append(self.vector)
            self.model_of(self.vector)
            self.vector = []

    def trace_beat(self, beat, period):
        self.scoreboard.observe("trace", beat)
        image, k = divmod(self.traced, max(self.per_inference, 1))
        self.traced += 1
        layer, group = beat["layer"], beat["group"]
        if image < self.images and layer < len(self.acts):
            channels = self.hidden[layer][1]
            for q, act in enumerate(beat["acts"]):
                channel = group * self.pe + q
                if channel < channels:
                    self.acts[layer][image, self.pixels[k] * channels + channel] = act

    def result_beat(self, beat, period):
        self.scoreboard.observe("o", beat)
        image = self.done
        if image < self.images and beat["index"] < self.model.n_classes:
            self.scores[image, beat["index"]] = beat["score"]
        if not beat["last"]:
            return
        self.done += 1
        first = self.first.popleft() if self.first else period
        if image < self.images:
            self.classes[image] = beat["cls"]
            self.cycles[image] = period - first + 1
            self.finish[image] = period
        if self.on_inference:
            self.on_inference(self.done, period)
        if self.done >= self.images:
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


async def wait_for_inferences(inferences, budget):
    """Wait until every inference finished; fail with ``engine stalled: ...`` when none finishes
    within ``budget`` cycles."""
    while not inferences.finished.is_set():
        before = inferences.done
        await First(inferences.finished.wait(), Timer(budget * PERIOD_NS, "ns"))
        assert inferences.finished.is_set() or inferences.done > before, (
            f"engine stalled: no inference finished in {budget} cycles ({inferences.done} of "
            f"{inferences.images} done)")


async def load_weight_rows(dut, plan):
    """Write every row of the weight memory image through the engine's ``weights`` port, a
    whole row per cycle, from a falling edge (where the testbenches drive) to a falling edge."""
    rows = pack_rows(plan.memory_codes())
    enable = (1 << plan.lanes) - 1
    for row, bits in enumerate(rows):
        dut.weights__addr.value = row
        dut.weights__data.value = int(bits)
        dut.weights__en.value = enable
        await FallingEdge(dut.clk)
    dut.weights__en.value = 0


def write_outputs(path, inferences, sim_cycles):
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, classes=inferences.classes, scores=inferences.scores,
                     cycles=inferences.cycles, finish=inferences.finish,
                     sim_cycles=np.int64(sim_cycles),
                     **{f"acts{n}": a for n, a in enumerate(inferences.acts)})


@cocotb.test()
async def engine_matches_golden(dut):
    """Stream every input vector through the engine; every output equals the golden model's."""
    model = hwmodel.load(os.environ["NMFLOW_TB_MODEL"])
    config = json.loads(Path(os.environ["NMFLOW_TB_CONFIG"]).read_text())
    first = int(os.environ.get("NMFLOW_TB_FIRST", "0"))
    with np.load(os.environ["NMFLOW_TB_INPUTS"]) as f:
        inputs = f["x"].astype(np.int64)
    count = int(os.environ.get("NMFLOW_TB_COUNT", len(inputs) - first))
    inputs = inputs[first:first + count]
    ready = float(os.environ.get("NMFLOW_TB_READY", "1.0"))
    valid = float(os.environ.get("NMFLOW_TB_VALID", "1.0"))
    seed = int(os.environ.get("NMFLOW_TB_SEED", "0"))
    # The patterns of a chunk from its first vector on (those of a whole run, from 0, as ever).
    pattern = f"{seed}" if first == 0 else f"{seed}/{first}"
    hidden = [layer.n_out for layer in model.layers[:-1]]
    # The layouts of the engine's ports; the harness checks their widths against the design.
    stream_i = Stream(dut, "i", model.input_bits)
    stream_o = Stream(dut, "o", result_layout(model.n_classes, model.score_bits))
    pe = config.get("pe", 1)
    stream_trace = Stream(dut, "trace", trace_layout(
        len(model.layers), max(-(-size // pe) for size in hidden + [model.n_classes]), pe))

    progress = ProgressFile(os.environ.get("NMFLOW_TB_PROGRESS"), len(inputs))
    scoreboard = Scoreboard("golden model", log=dut._log)
    read = engine_read_function(config)     # the injector's twin, if the engine has one
    golden = Model(model, config["lanes"], scoreboard, read, pe=pe, first=first)
    inferences = Inferences(model, len(inputs), scoreboard, golden, on_inference=progress, pe=pe)
    values = [int(v) for v in inputs.reshape(-1)]
    for n, value in enumerate(values):
        scoreboard.expect("i", value, f"image {first + n // model.n_inputs}: input beat "
                                      f"{n % model.n_inputs}")
    idle = {"i__valid": 0, "o__ready": 0}
    if read is not None:
        idle["errors__valid"] = 0           # the configuration after reset stays
    spram = config.get("memory") == "spram"
    if spram:
        idle.update({"weights__en": 0, "pairs__en": 0})
    await start(dut, **idle)
    if spram:                               # SPRAM starts empty: every row first, as a host does
        await load_weight_rows(dut, EnginePlan(model, config["lanes"], pe=pe,
                                               first_layer_bits=config.get("first_layer_bits")))
    progress.started = time.monotonic()
    Monitor(stream_i, inferences.input_beat, passive=True).start()
    Monitor(stream_o, inferences.result_beat, rng=random.Random(f"{pattern}/ready"),
            ready=ready).start()
    Monitor(stream_trace, inferences.trace_beat).start()
    Driver(stream_i, rng=random.Random(f"{pattern}/gaps"), valid=valid).start(values)

    await wait_for_inferences(inferences, watchdog_cycles(config["cycles_per_inference"],
                                                          ready=ready, valid=valid))
    sim_cycles = cycle()
    scoreboard.finish()
    out = os.environ.get("NMFLOW_TB_OUT")
    if out:
        write_outputs(out, inferences, sim_cycles)
    dut._log.info("%d inferences, %d beats compared, %d errors, %d cycles", len(inputs),
                  scoreboard.compared, scoreboard.errors, sim_cycles)
    scoreboard.assert_clean()
