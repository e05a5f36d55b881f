"""cocotb testbench of the EP settling and learning unit (:class:`~nmflow.rtl.eqprop.EqPropUnit`,
built with ``observe=True``) against the fixed-point twin.

Environment: ``NMFLOW_TB_CONFIG`` (JSON of the twin's settings, see
:func:`nmflow.sim.eqprop_sim.config_to_json`), ``NMFLOW_TB_LANES``, ``NMFLOW_TB_SAMPLES`` (JSON
file: ``[[x raw states], label, train], ...``), ``NMFLOW_TB_SEED`` (of the stalls),
``NMFLOW_TB_READY`` / ``NMFLOW_TB_VALID`` (probabilities of accepting an output beat / of
offering an input beat in a cycle), ``NMFLOW_TB_REPORT`` (JSON written at the end).

The twin (:func:`nmflow.sim.eqprop_sim.expected_trace`) runs over the samples from the same
initial parameters and LFSR seed and says what the unit must show, beat by beat, in the ports'
layouts: on ``obs`` the states of every layer after every settling step (rows of ``L`` states,
each layer's last row padded with zeros) and, after every update, every weight (row by row, word
``b`` of a beat from bank ``b``) and every bias (lane 0); on ``o`` the prediction of every
sample. The streams run on the harness (:mod:`nmflow.sim.harness`): a driver offers the input
beats on ``i`` after random gaps, never waiting for ``ready``, and holds each until it is taken;
monitors take the beats of ``obs`` and ``o``, lowering and raising ``ready`` at random, and the
scoreboard compares every beat with the twin's with ``==``.
"""

import json
import os
import random
from pathlib import Path

import cocotb
import numpy as np
from amaranth.hdl import signed

from nmflow.golden import eqprop_fixed as ef
from nmflow.golden.pairs import sign_codes
from nmflow.rtl.eqprop import EqPropUnit
from nmflow.sim.eqprop_sim import config_from_json, expected_trace, input_beats
from nmflow.sim.harness import Codec, Driver, Monitor, Scoreboard, Stream, cycle, port_shape
from nmflow.sim.tbutil import start


def state_beats(layout, states):
    """The ``obs`` beats of one settling step: the states of layers 1..N (``states``), rows of
    ``L``, each layer's last row padded with zeros."""
    L, beats = layout.lanes, []
    for k, values in enumerate(states, start=1):
        row = [int(v) for v in values] + [0] * (layout.padded[k] - len(values))
        beats += [row[r * L:(r + 1) * L] for r in range(layout.chunks[k])]
    return beats


def dump_beats(layout, params, word, binary=False):
    """The ``obs`` beats of a parameter dump as ``(beat, label)``: the weight banks' words row by
    row (:meth:`~nmflow.golden.eqprop_layout.EqPropLayout.decode_weights` reads them back), then
    each bias in lane 0; ``word`` turns a raw parameter into the port's word. With ``binary``
    weights the pair codes follow in the weights' order (``PLUS`` where ``W_h >= 0``)."""
    L, beats = layout.lanes, []

    def rows(w, value, name):
        for r in range(w.shape[0]):
            for c in range(w.shape[1] // L):
                yield ([value(int(w[r, c * L + (bank - r) % L])) for bank in range(L)],
                       f"{name} row {r} chunk {c}")

    for k, w in enumerate(params["W"]):
        beats += rows(w, word, f"W{k}")
    for k, b in enumerate(params["b"]):
        beats += [([word(int(v))] + [0] * (L - 1), f"b{k}[{i}]") for i, v in enumerate(b)]
    if binary:
        for k, w in enumerate(params["W"]):
            beats += rows(w, sign_codes, f"pair codes {k}")
    return beats


class Twin:
    """The twin over the samples: queues every beat the unit must show in the scoreboard and
    counts what the report says was compared."""

    def __init__(self, config, unit, scoreboard):
        self.config, self.layout, self.scoreboard = config, unit.layout, scoreboard
        self.word = Codec(signed(config.weight.width)).encode
        self.params, self.lfsr = ef.init_params(config), ef.Lfsr32(config.lfsr_seed)
        self.report = {"samples": 0, "training_samples": 0, "steps": 0, "states": 0,
                       "weights": 0, "pair_codes": 0, "predictions_right": 0}
        self.obs_per_sample, self.trained = [], []

    def sample(self, index, x, label, train):
        trace, self.params = expected_trace(self.config, self.params, np.array(x), label, train,
                                            self.lfsr)
        expect, obs = self.scoreboard.expect, 0
        for step, states in enumerate(trace.states):
            for row, beat in enumerate(state_beats(self.layout, states)):
                expect("obs", beat, f"sample {index}: step {step} row {row}")
                obs += 1
        if train:
            for beat, label_ in dump_beats(self.layout, self.params, self.word,
                                           self.config.weights == "binary"):
                expect("obs", beat, f"sample {index}: {label_}")
                obs += 1
        expect("o", {"label": trace.prediction}, f"sample {index}: prediction")
        self.obs_per_sample.append(obs)
        self.trained.append(bool(train))
        r, sizes = self.report, self.config.sizes
        r["samples"] += 1
        r["training_samples"] += int(bool(train))
        r["steps"] += len(trace.states)
        r["states"] += len(trace.states) * sum(sizes[1:])
        r["weights"] += (sum(w.size + b.size for w, b in zip(self.params["W"], self.params["b"]))
                         if train else 0)
        r["pair_codes"] += (sum(w.size for w in self.params["W"])
                            if train and self.config.weights == "binary" else 0)
        r["predictions_right"] += int(trace.prediction == label)

    def budget(self, unit, p_ready, p_valid):
        """Cycles within which a working unit surely shows every beat."""
        steps, beats = self.report["steps"], sum(self.obs_per_sample)
        work = steps * unit.issue_cycles_per_step(nudged=True) + 3 * beats \
            + self.report["weights"] + 100 * len(self.trained)
        return int(4 * work / (p_ready * p_valid)) + 10_000


def final_params(layout, twin, observed, weight_bits):
    """The weights and biases of the unit's last parameter dump (``observed``: every ``obs``
    beat), or None if no sample trained."""
    if not any(twin.trained):
        return None
    last = max(n for n, t in enumerate(twin.trained) if t)
    end = sum(twin.obs_per_sample[:last + 1])
    nw, nb = layout.dump_words()
    nc = nw if twin.config.weights == "binary" else 0       # the pair codes at the end
    raw = Codec(signed(weight_bits)).decode
    dump = observed[end - nw - nb - nc:end - nc]
    W, b = layout.decode_weights([[raw(v) for v in beat] for beat in dump[:nw]],
                                 [raw(beat[0]) for beat in dump[nw:]])
    return {"W": [w.tolist() for w in W], "b": [v.tolist() for v in b]}


@cocotb.test()
async def unit_matches_its_twin(dut):
    config = config_from_json(os.environ["NMFLOW_TB_CONFIG"])
    lanes = int(os.environ["NMFLOW_TB_LANES"])
    samples = json.loads(Path(os.environ["NMFLOW_TB_SAMPLES"]).read_text())
    seed = int(os.environ.get("NMFLOW_TB_SEED", "0"))
    p_ready = float(os.environ.get("NMFLOW_TB_READY", "0.6"))
    p_valid = float(os.environ.get("NMFLOW_TB_VALID", "0.7"))
    unit = EqPropUnit(config, lanes=lanes, observe=True)
    scoreboard = Scoreboard("twin", log=dut._log, logged=5)
    twin = Twin(config, unit, scoreboard)
    beats = []
    for index, (x, label, train) in enumerate(samples):
        twin.sample(index, x, label, train)
        beats += [{"x": beat, "label": label, "train": train} for beat in input_beats(x, lanes)]

    await start(dut, i__valid=0, o__ready=0, obs__ready=0)
    ends = [cycle()]
    rng_out = random.Random(seed + 1)
    obs = Monitor(Stream(dut, "obs", port_shape(unit, "obs")),
                  lambda beat, _: scoreboard.observe("obs", beat), rng=rng_out, ready=p_ready,
                  keep=True)
    predictions = Monitor(Stream(dut, "o", port_shape(unit, "o")),
                          lambda beat, end: (scoreboard.observe("o", beat), ends.append(end)),
                          rng=rng_out, ready=p_ready)
    obs.start()
    predictions.start()
    Driver(Stream(dut, "i", port_shape(unit, "i")), rng=random.Random(seed),
           valid=p_valid).start(beats)
    await predictions.wait(len(samples), twin.budget(unit, p_ready, p_valid),
                           lambda: f"the unit stalled after {predictions.count} of "
                                   f"{len(samples)} samples")
    scoreboard.finish()
    report = dict(twin.report, mismatches=scoreboard.messages(20),
                  cycles_per_sample_with_observation=np.diff(ends).tolist())
    params = final_params(unit.layout, twin, obs.beats, config.weight.width)
    if params is not None:
        report["rtl_final_params"] = params
    Path(os.environ["NMFLOW_TB_REPORT"]).write_text(json.dumps(report))
    scoreboard.assert_clean()
