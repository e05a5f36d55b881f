"""Simulate the EP unit (:class:`~nmflow.rtl.eqprop.EqPropUnit`) against the fixed-point twin.

* :func:`expected_trace` runs the twin (:mod:`nmflow.golden.eqprop_fixed`, which knows nothing of
  the RTL) one sample and one settling step at a time and lists what the unit's observation
  stream must show: the states of every layer after every step, the prediction, and the
  parameters after every update.
* :func:`run_pysim` drives the unit in Amaranth's simulator (inputs with random gaps, random
  backpressure on ``obs`` and ``o``) and returns what it observed.
* :func:`simulate_eqprop` converts the unit to Verilog and runs the cocotb testbench
  :mod:`nmflow.sim.tb_eqprop` under Icarus Verilog.
"""

import json
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..golden import eqprop_fixed as ef

__all__ = ["SampleTrace", "expected_trace", "input_beats", "run_pysim", "host_load", "simulate_eqprop",
           "config_to_json", "config_from_json", "compare"]


@dataclass
class SampleTrace:
    """What the twin computes for one sample: ``states`` is a list (one per settling step, free,
    then ``+beta``, then ``-beta``) of lists of int arrays (layers 1..N); ``prediction`` the
    argmax after the free phase (lowest index on ties); ``params`` after the update (None
    for an inference)."""
    states: list
    prediction: int
    params: dict | None


def expected_trace(config, params, x, y, train, lfsr):
    """The twin on one sample ``x`` (raw states, ``[n_0]``) with label ``y``, step by step
    (``relax`` one step at a time is ``relax`` over many steps: the step is a function of the
    state). ``lfsr`` is the :class:`~nmflow.golden.eqprop_fixed.Lfsr32` of the training run.
    Returns ``(SampleTrace, new params)``."""
    xb = np.asarray(x, dtype=np.int64).reshape(1, -1)
    s = [np.zeros((1, n), dtype=np.int64) for n in config.sizes[1:]]
    states = []
    for _ in range(config.T):
        s = ef.relax(config, params, xb, s, 1)
        states.append([v[0].copy() for v in s])
    s_star = s
    prediction = int(s_star[-1].argmax(axis=1)[0])
    assert prediction == int(ef.predict(config, params, xb)[0])
    if not train:
        return SampleTrace(states, prediction, None), params
    phases = {}
    for sign in (+1, -1):
        s = s_star
        for _ in range(config.K):
            s = ef.relax(config, params, xb, s, 1, sign, [y])
            states.append([v[0].copy() for v in s])
        phases[sign] = s
    new = ef.update(config, params, xb, phases[+1], phases[-1], lfsr)
    return SampleTrace(states, prediction, new), new


def input_beats(x, lanes):
    """The sample ``x`` as the ``i`` stream's ``x`` fields: lists of ``lanes`` raw states."""
    x = [int(v) for v in x]
    return [x[c:c + lanes] for c in range(0, len(x), lanes)]


def config_to_json(config):
    return json.dumps({"sizes": list(config.sizes), "T": config.T, "K": config.K,
                       "beta_shift": config.beta_shift, "lr_shifts": list(config.lr_shifts),
                       "half": config.half, "seed": config.seed, "lfsr_seed": config.lfsr_seed,
                       "weights": config.weights, "m": config.m,
                       "decay_shift": config.decay_shift, "alpha_scale": config.alpha_scale})


def config_from_json(text):
    fields = json.loads(text)
    return ef.FixedEqPropConfig(sizes=tuple(fields["sizes"]), T=fields["T"], K=fields["K"],
                                beta_shift=fields["beta_shift"],
                                lr_shifts=tuple(fields["lr_shifts"]), half=fields["half"],
                                seed=fields["seed"], lfsr_seed=fields["lfsr_seed"], batch=1,
                                weights=fields.get("weights", "real"), m=fields.get("m", 0.0),
                                decay_shift=fields.get("decay_shift", 0),
                                alpha_scale=fields.get("alpha_scale", 1.0))


def compare(layout, config, trace, observed):
    """Mismatch messages (empty if all equal) between a :class:`SampleTrace` and what the unit
    showed: ``observed = {"states": [[row words] per step], "prediction": int,
    "weights": [beats], "biases": [words]}``."""
    problems = []
    N = layout.N
    if len(observed["states"]) != len(trace.states):
        problems.append(f"{len(observed['states'])} steps observed, twin made "
                        f"{len(trace.states)}")
    for step, (rows, want) in enumerate(zip(observed["states"], trace.states)):
        flat = [v for row in rows for v in row]
        for k in range(1, N + 1):
            start = layout.soff[k] * layout.lanes
            got = flat[start:start + config.sizes[k]]
            if list(map(int, want[k - 1])) != got:
                problems.append(f"step {step} layer {k}: unit {got}, twin "
                                f"{list(map(int, want[k - 1]))}")
            pad = flat[start + config.sizes[k]:start + layout.padded[k]]
            if any(pad):
                problems.append(f"step {step} layer {k}: padding states {pad} are not 0")
    if observed["prediction"] != trace.prediction:
        problems.append(f"prediction: unit {observed['prediction']}, twin {trace.prediction}")
    if trace.params is not None and config.weights == "binary":
        problems += _compare_codes(layout, trace.params, observed.get("codes"))
    if trace.params is not None:
        W, b = layout.decode_weights(observed["weights"], observed["biases"])
        for k in range(N):
            bad = np.argwhere(W[k] != trace.params["W"][k])
            if len(bad):
                r, i = bad[0]
                problems.append(f"W{k}: {len(bad)} weights differ, first [{r}, {i}]: unit "
                                f"{W[k][r, i]}, twin {trace.params['W'][k][r, i]}")
            if (b[k] != trace.params["b"][k]).any():
                problems.append(f"b{k}: unit {b[k].tolist()}, twin "
                                f"{trace.params['b'][k].tolist()}")
    return problems


def _compare_codes(layout, params, beats):
    """Mismatch messages between the pair codes a binary unit dumped (``beats``, in the
    weights' order) and the codes of the twin's hidden weights (``PLUS`` where ``W_h >= 0``,
    else ``MINUS``)."""
    from ..golden.pairs import sign_codes
    if beats is None:
        return ["no pair codes observed"]
    codes, _ = layout.decode_weights(beats, [0] * layout.bdepth)
    problems = []
    for k, w in enumerate(params["W"]):
        want = sign_codes(w)
        bad = np.argwhere(codes[k] != want)
        if len(bad):
            r, i = bad[0]
            problems.append(f"codes{k}: {len(bad)} pair codes differ, first [{r}, {i}]: unit "
                            f"{codes[k][r, i]:02b}, twin {want[r, i]:02b}")
    return problems


def host_load(unit, params):
    """A testbench process body (``await host_load(unit, params)(ctx)``) that writes the hidden
    weights ``params["W"]`` (raw) into the idle ``unit`` through its host port, one address of
    every bank a cycle, as the host link's LOAD does: how a unit with single-port hidden banks
    (``storage="spram"``) gets its weights."""
    from ..rtl.eqprop_memories import HOST_WEIGHTS
    image = unit.layout.weight_image(params)

    async def load(ctx):
        ctx.set(unit.p_sel, HOST_WEIGHTS)
        for addr in range(unit.layout.wdepth):
            ctx.set(unit.p_addr, addr)
            for b in range(unit.lanes):
                ctx.set(unit.p_wdata[b], image[b][addr])
            ctx.set(unit.p_we, 1)
            await ctx.tick()
        ctx.set(unit.p_we, 0)
    return load


def run_pysim(unit, samples, *, seed=0, valid=0.7, ready=0.6, max_cycles=5_000_000,
              done=None, load=None):
    """Run ``unit`` (without ``observe``, only the predictions are read) in Amaranth's simulator
    on ``samples`` (a list of ``(x, label, train)``). Returns ``(observed per sample,
    step_cycles)``: the dicts :func:`compare` takes, and the cycle numbers of the ``step``
    pulses. ``done``, a list, gets the cycle number of every prediction taken from ``o``.
    ``load``: parameters written through the host port (:func:`host_load`) before the first
    sample."""
    from amaranth.hdl import Const, signed
    from .pysim import run_benches
    from .streams import stream_get, stream_put

    lay, cfg = unit.layout, unit.config
    weight = signed(cfg.weight.width)        # an obs word read as a raw parameter
    rng_in, rng_out = random.Random(seed), random.Random(seed + 1)
    observed = []
    pulses = []

    async def producer(ctx):
        if load is not None:
            await host_load(unit, load)(ctx)
        for x, label, train in samples:
            for beat in input_beats(x, unit.lanes):
                await stream_put(ctx, unit.i, {"x": beat, "label": int(label),
                                               "train": int(train)},
                                 rng=rng_in, valid=valid)

    async def consumer(ctx):
        for x, label, train in samples:
            steps = cfg.T + (2 * cfg.K if train else 0)
            record = {"states": [], "weights": [], "biases": []}
            for _ in range(steps if unit.observe else 0):
                rows = []
                for _ in range(lay.region_rows):
                    beat = await stream_get(ctx, unit.obs, rng=rng_out, ready=ready)
                    rows.append([int(beat[b]) for b in range(unit.lanes)])
                record["states"].append(rows)
            if train and unit.observe:
                nw, nb = lay.dump_words()
                for _ in range(nw):
                    beat = await stream_get(ctx, unit.obs, rng=rng_out, ready=ready)
                    record["weights"].append([Const(beat[b], weight).value
                                               for b in range(unit.lanes)])
                for _ in range(nb):
                    beat = await stream_get(ctx, unit.obs, rng=rng_out, ready=ready)
                    record["biases"].append(Const(beat[0], weight).value)
                if cfg.weights == "binary":
                    record["codes"] = []
                    for _ in range(nw):
                        beat = await stream_get(ctx, unit.obs, rng=rng_out, ready=ready)
                        record["codes"].append([int(beat[b]) for b in range(unit.lanes)])
            beat = await stream_get(ctx, unit.o, rng=rng_out, ready=ready)
            record["prediction"] = int(beat.label)
            observed.append(record)

    async def watch(ctx):
        cycle = 0
        async for _, _, step, o_valid, o_ready in ctx.tick().sample(unit.step, unit.o.valid,
                                                                     unit.o.ready):
            cycle += 1
            if step:
                pulses.append(cycle)
            if done is not None and o_valid and o_ready:
                done.append(cycle)
            if cycle > max_cycles:
                raise RuntimeError(f"the unit did not finish within {max_cycles} cycles")

    run_benches(unit, producer, consumer, watch)
    return observed, pulses


def simulate_eqprop(work_dir, config, samples, *, lanes=4, seed=0, ready=0.6, valid=0.7,
                    waves=False, wall_seconds=None):
    """Run the cocotb testbench :mod:`nmflow.sim.tb_eqprop` on the unit built from ``config``
    (its :func:`~nmflow.golden.eqprop_fixed.init_params`) with ``lanes``, over ``samples``
    (``(x, label, train)``, raw inputs). Returns ``(CocotbResult, report)``: the report (JSON
    written by the testbench) holds the numbers of steps, states and weights compared, the
    mismatches and the cycles per sample."""
    from ..rtl.eqprop import EqPropUnit
    from ..rtl.verilog import to_verilog
    from .runner import run_cocotb

    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    unit = EqPropUnit(config, lanes=lanes, observe=True)
    path, _ = to_verilog(unit, "nmflow_eqprop", work_dir / "eqprop.v")
    data = work_dir / "samples.json"
    data.write_text(json.dumps([[list(map(int, x)), int(y), int(t)] for x, y, t in samples]))
    report = (work_dir / "eqprop_report.json").resolve()
    report.unlink(missing_ok=True)
    result = run_cocotb(path, "nmflow_eqprop", "nmflow.sim.tb_eqprop", work_dir / "work",
                        waves=waves, wall_seconds=wall_seconds,
                        env={"NMFLOW_TB_CONFIG": config_to_json(config),
                             "NMFLOW_TB_LANES": lanes, "NMFLOW_TB_SAMPLES": data.resolve(),
                             "NMFLOW_TB_SEED": seed, "NMFLOW_TB_READY": ready,
                             "NMFLOW_TB_VALID": valid, "NMFLOW_TB_REPORT": report})
    return result, (json.loads(report.read_text()) if report.exists() else None)
