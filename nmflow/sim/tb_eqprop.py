"""cocotb testbench of the EP settling and learning unit (:class:`~nmflow.rtl.eqprop.EqPropUnit`,
built with ``observe=True``) against the fixed-point twin.

Environment: ``NMFLOW_TB_CONFIG`` (JSON of the twin's settings, see
:func:`nmflow.sim.eqprop_sim.config_to_json`), ``NMFLOW_TB_LANES``, ``NMFLOW_TB_SAMPLES`` (JSON
file: ``[[x raw states], label, train], ...``), ``NMFLOW_TB_SEED`` (of the stalls),
``NMFLOW_TB_READY`` / ``NMFLOW_TB_VALID`` (probabilities of accepting an output beat / of
offering an input beat in a cycle), ``NMFLOW_TB_REPORT`` (JSON written at the end).

The twin (:func:`nmflow.sim.eqprop_sim.expected_trace`) runs next to the simulation, sample by
sample, from the same initial parameters and LFSR seed. Every state of every layer after every
settling step, the prediction of every sample and every weight and bias after every update are
compared with ``==``. Streams follow ``amaranth.lib.stream``: the input producer raises ``valid``
after random gaps, never waiting for ``ready``, and holds it until the beat is taken; the
consumer lowers and raises ``ready`` of ``obs`` and ``o`` at random. The testbench drives and
samples at falling edges; the unit's ``valid`` outputs are registers and its ``i.ready``
depends on its state only, so values read at a falling edge are those of the coming rising edge.
"""

import json
import os
import random
from pathlib import Path

import cocotb
import numpy as np
from cocotb.triggers import FallingEdge, RisingEdge
from cocotb.utils import get_sim_time

from nmflow.golden import eqprop_fixed as ef
from nmflow.rtl.eqprop import EqPropLayout
from nmflow.sim.eqprop_sim import compare, config_from_json, expected_trace, input_beats
from nmflow.sim.payload import to_signed
from nmflow.sim.tbutil import PERIOD_NS, start


class Streams:
    def __init__(self, dut, rng, ready):
        self.dut, self.rng, self.p = dut, rng, ready
        self.readies = [dut.obs__ready, dut.o__ready]

    async def take(self, valid, ready, payload):
        """One beat of an output stream (random backpressure); the other stream's ready is low."""
        while True:
            await FallingEdge(self.dut.clk)
            for other in self.readies:
                other.value = 0
            if not int(valid.value):
                await RisingEdge(valid)
                continue
            if self.rng.random() < self.p:
                ready.value = 1
                return int(payload.value.to_unsigned())


async def produce(dut, beats, label, train, rng, p_valid, width, label_bits):
    """Offer the input beats: random gaps first, then valid held until the beat is taken."""
    for beat in beats:
        await FallingEdge(dut.clk)
        while rng.random() >= p_valid:
            dut.i__valid.value = 0
            await FallingEdge(dut.clk)
        x = sum(int(v) << (width * b) for b, v in enumerate(beat))
        dut.i__payload.value = (x | (label << (width * len(beat)))
                                | (train << (width * len(beat) + label_bits)))
        dut.i__valid.value = 1
        while not int(dut.i__ready.value):
            await RisingEdge(dut.i__ready)
            await FallingEdge(dut.clk)
        # ready is high in this cycle: the beat is taken at the coming rising edge
    await FallingEdge(dut.clk)
    dut.i__valid.value = 0


@cocotb.test()
async def unit_matches_its_twin(dut):
    config = config_from_json(os.environ["NMFLOW_TB_CONFIG"])
    lanes = int(os.environ["NMFLOW_TB_LANES"])
    samples = json.loads(Path(os.environ["NMFLOW_TB_SAMPLES"]).read_text())
    seed = int(os.environ.get("NMFLOW_TB_SEED", "0"))
    p_ready = float(os.environ.get("NMFLOW_TB_READY", "0.6"))
    p_valid = float(os.environ.get("NMFLOW_TB_VALID", "0.7"))
    layout = EqPropLayout(config.sizes, lanes)
    sw, ww = config.state.width, config.weight.width
    word = max(sw, ww)
    label_bits = max(1, (config.sizes[-1] - 1).bit_length())
    streams = Streams(dut, random.Random(seed + 1), p_ready)
    rng_in = random.Random(seed)

    await start(dut, i__valid=0, o__ready=0, obs__ready=0)
    params = ef.init_params(config)
    lfsr = ef.Lfsr32(config.lfsr_seed)
    report = {"samples": 0, "training_samples": 0, "steps": 0, "states": 0, "weights": 0,
              "predictions_right": 0, "mismatches": [], "sample_ns": []}
    for index, (x, label, train) in enumerate(samples):
        t0 = get_sim_time("ns")
        cocotb.start_soon(produce(dut, input_beats(x, lanes), label, train, rng_in, p_valid, sw,
                                  label_bits))
        trace, params = expected_trace(config, params, np.array(x), label, train, lfsr)
        observed = {"states": [], "weights": [], "biases": []}
        for _ in range(len(trace.states)):
            rows = []
            for _ in range(layout.region_rows):
                v = await streams.take(dut.obs__valid, dut.obs__ready, dut.obs__payload)
                rows.append([(v >> (word * b)) & ((1 << sw) - 1) for b in range(lanes)])
            observed["states"].append(rows)
        if train:
            nw, nb = layout.dump_words()
            for _ in range(nw):
                v = await streams.take(dut.obs__valid, dut.obs__ready, dut.obs__payload)
                observed["weights"].append([to_signed(v >> (word * b), ww) for b in range(lanes)])
            for _ in range(nb):
                v = await streams.take(dut.obs__valid, dut.obs__ready, dut.obs__payload)
                observed["biases"].append(to_signed(v, ww))
        v = await streams.take(dut.o__valid, dut.o__ready, dut.o__payload)
        observed["prediction"] = v
        problems = compare(layout, config, trace, observed)
        if train:
            W, b = layout.decode_weights(observed["weights"], observed["biases"])
            report["rtl_final_params"] = {"W": [w.tolist() for w in W],
                                          "b": [v.tolist() for v in b]}
        for problem in problems[:5]:
            dut._log.error("sample %d: %s", index, problem)
        report["mismatches"] += [f"sample {index}: {p}" for p in problems[:5]]
        report["samples"] += 1
        report["training_samples"] += int(bool(train))
        report["steps"] += len(trace.states)
        report["states"] += len(trace.states) * sum(config.sizes[1:])
        report["weights"] += (sum(w.size + b.size for w, b in zip(params["W"], params["b"]))
                              if train else 0)
        report["predictions_right"] += int(trace.prediction == label)
        report["sample_ns"].append(get_sim_time("ns") - t0)
        if problems:
            break
    await FallingEdge(dut.clk)
    dut.o__ready.value = 0
    dut.obs__ready.value = 0
    report["cycles_per_sample_with_observation"] = [t // PERIOD_NS for t in report.pop("sample_ns")]
    Path(os.environ["NMFLOW_TB_REPORT"]).write_text(json.dumps(report))
    assert not report["mismatches"], report["mismatches"][0]
