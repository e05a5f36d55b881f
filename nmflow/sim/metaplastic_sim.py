"""Simulate the metaplastic update unit (:class:`~nmflow.rtl.metaplastic.MetaplasticUnit`)
against its fixed-point twin (:class:`~nmflow.golden.metafixed.MetaFixedRule`).

* :func:`expected_results` runs the twin (which knows nothing of the RTL) over a list of beats
  and returns the hidden weights each beat must show on ``o`` and the final memory.
* :func:`stress_beats` makes a beat list that visits every corner of the rule: runs of
  consecutive groups (full throughput, alternating SPRAM banks), random groups, repeated groups
  (read-after-write hazards), loads of the extreme weights (both ends, 0, +-1, the largest
  ``|W_h|``), the extreme updates, sign changes and disabled lanes.
* :func:`run_pysim` drives the unit in Amaranth's simulator (random gaps on ``i``, random
  backpressure on ``o``, optionally a pulsing ``idle``) and returns what ``o`` showed and the
  engine writes it saw.
* :func:`simulate_metaplastic` converts the unit to Verilog and runs the cocotb testbench
  :mod:`nmflow.sim.tb_metaplastic` under Icarus Verilog.
"""

import json
import random
from pathlib import Path

import numpy as np

from ..golden.metafixed import MetaFixedRule
from ..rtl.metaplastic import OP_LOAD, OP_UPDATE

__all__ = ["expected_results", "stress_beats", "run_pysim", "simulate_metaplastic",
           "rule_to_json", "rule_from_json", "binary_model", "run_with_engine",
           "training_step_updates"]


def expected_results(rule, words, beats):
    """The twin over ``beats`` from hidden memory ``words`` ([groups, lanes] raw). Returns
    ``(per-beat lists of lanes raw weights, final words)``."""
    words = np.array(words, dtype=np.int64, copy=True)
    out = []
    for beat in beats:
        g = beat["addr"]
        en = np.array([(beat["en"] >> p) & 1 for p in range(words.shape[1])], dtype=bool)
        value = np.asarray(beat["value"], dtype=np.int64)
        new = value if beat["op"] == OP_LOAD else rule.update(words[g], value)
        words[g] = np.where(en, new, words[g])
        out.append([int(v) for v in words[g]])
    return out, words


def stress_beats(rule, groups, lanes, n_beats, seed=0):
    """``n_beats`` beats (load and update) over ``groups`` groups, covering the corners (see the
    module text); the first ``groups`` beats load every group."""
    rng = np.random.default_rng(seed)
    wf, uf = rule.w_format, rule.u_format
    full = (1 << lanes) - 1
    special_w = [wf.min_raw, wf.max_raw, 0, 1, -1, wf.min_raw + 1, wf.max_raw - 1]
    special_d = [uf.min_raw, uf.max_raw, 0, 1, -1, uf.min_raw + 1]

    def mixed(fmt, k, special, small, p_special, p_small):
        """``k`` values of ``fmt``: a special one with probability ``p_special``, a small one
        (``|v| <= small``) up to ``p_small``, else any (drawn in this order, as ever)."""
        pick = rng.random(k)
        anything = rng.integers(fmt.min_raw, fmt.max_raw + 1, k)
        near = rng.integers(-small, small + 1, k)
        corner = rng.choice(special, k)
        return np.where(pick < p_special, corner,
                        np.where(pick < p_small, near, anything))

    def weights(k):
        return mixed(wf, k, special_w, 64, 0.3, 0.6)

    def updates(k):
        return mixed(uf, k, special_d, 200, 0.2, 0.7)

    beats = [{"addr": g, "op": OP_LOAD, "en": full, "value": [int(v) for v in weights(lanes)]}
             for g in range(groups)]
    while len(beats) < n_beats:
        kind = rng.random()
        if kind < 0.5:                       # a run of consecutive groups
            start = int(rng.integers(0, groups))
            addrs = [(start + i) % groups for i in range(int(rng.integers(2, 40)))]
        elif kind < 0.75:                    # random groups
            addrs = [int(a) for a in rng.integers(0, groups, int(rng.integers(1, 10)))]
        else:                                # the same group again and again (hazards)
            a = int(rng.integers(0, groups))
            addrs = [a] * int(rng.integers(2, 6))
        for a in addrs:
            if rng.random() < 0.06:
                beats.append({"addr": a, "op": OP_LOAD, "en": int(rng.integers(0, full + 1)),
                              "value": [int(v) for v in weights(lanes)]})
            else:
                en = full if rng.random() < 0.85 else int(rng.integers(0, full + 1))
                beats.append({"addr": a, "op": OP_UPDATE, "en": en,
                              "value": [int(v) for v in updates(lanes)]})
    return beats[:max(n_beats, groups)]


def run_pysim(unit, beats, *, seed=0, valid=0.8, ready=0.7, idle=1.0, engine=None):
    """Run ``unit`` in Amaranth's simulator over ``beats``. Returns ``(outputs, writes,
    cycles)``: the per-beat raw weights shown on ``o``, the engine writes seen (a dict ``(row,
    lane) -> code``, the last one wins) and the cycles until the last result."""
    from .pysim import run_benches
    from .streams import stream_get, stream_put

    rng_in, rng_out, rng_idle = random.Random(seed), random.Random(seed + 1), \
        random.Random(seed + 2)
    U = unit.lanes
    outputs, writes = [], {}
    cycles = [0]

    async def producer(ctx):
        for beat in beats:
            await stream_put(ctx, unit.i, beat, rng=rng_in, valid=valid)

    async def consumer(ctx):
        for _ in beats:
            beat = await stream_get(ctx, unit.o, rng=rng_out, ready=ready)
            outputs.append([int(beat[p]) for p in range(U)])

    async def watch(ctx):
        async for _, _, en, addr, data_ in ctx.tick().sample(
                unit.weights.en, unit.weights.addr, unit.weights.data):
            cycles[0] += 1
            ctx.set(unit.idle, rng_idle.random() < idle)
            en, addr = int(en), int(addr)
            for q in range(unit.engine_lanes):
                if (en >> q) & 1:
                    writes[(addr, q)] = data_[q].as_bits()      # the lane's PairCode
            if cycles[0] > 50 * len(beats) + 1000:
                raise RuntimeError("the unit stalled")

    run_benches(unit, producer, consumer, watch)
    return outputs, writes, cycles[0]


def rule_to_json(rule):
    return json.dumps({"m": rule.m, "w": [rule.w_format.int_bits, rule.w_format.frac_bits],
                       "u": [rule.u_format.int_bits, rule.u_format.frac_bits],
                       "table_size": rule.table_size, "input_bits": rule.input_bits,
                       "f_bits": rule.f_bits, "kind": rule.kind})


def rule_from_json(text):
    from ..fixedpoint import FixedFormat
    f = json.loads(text)
    wf = FixedFormat(True, *f["w"], rounding="nearest_up", overflow="saturate")
    uf = FixedFormat(True, *f["u"], rounding="nearest_up", overflow="saturate")
    return MetaFixedRule(f["m"], wf, uf, f["table_size"], f["input_bits"], f["f_bits"],
                         f["kind"])


def simulate_metaplastic(work_dir, unit, beats, *, seed=0, ready=0.7, valid=0.8,
                         wall_seconds=None):
    """Run the cocotb testbench :mod:`nmflow.sim.tb_metaplastic` on ``unit`` (a
    :class:`~nmflow.rtl.metaplastic.MetaplasticUnit`) over ``beats``. Returns
    ``(CocotbResult, report)``; the report (JSON written by the testbench) holds the beats and
    updates compared, the mismatches, the corner counts, the cycles and the final hidden
    weights."""
    from ..rtl.verilog import to_verilog
    from .runner import run_cocotb

    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    path, _ = to_verilog(unit, "nmflow_metaplastic", work_dir / "metaplastic.v")
    data = work_dir / "beats.json"
    data.write_text(json.dumps(beats))
    init = work_dir / "init.json"
    init.write_text(json.dumps(np.zeros((unit.groups, unit.lanes), dtype=np.int64).tolist()
                               if unit.init is None else unit.init.tolist()))
    report = (work_dir / "metaplastic_report.json").resolve()
    report.unlink(missing_ok=True)
    result = run_cocotb(path, "nmflow_metaplastic", "nmflow.sim.tb_metaplastic",
                        work_dir / "work", wall_seconds=wall_seconds,
                        env={"NMFLOW_TB_RULE": rule_to_json(unit.rule),
                             "NMFLOW_TB_LANES": unit.lanes, "NMFLOW_TB_ENGINE_LANES":
                             unit.engine_lanes, "NMFLOW_TB_GROUP_BITS": unit.group_bits,
                             "NMFLOW_TB_VALUE_BITS": unit.value_bits,
                             "NMFLOW_TB_BEATS": data.resolve(), "NMFLOW_TB_INIT": init.resolve(),
                             "NMFLOW_TB_SEED": seed, "NMFLOW_TB_READY": ready,
                             "NMFLOW_TB_VALID": valid, "NMFLOW_TB_REPORT": report})
    return result, (json.loads(report.read_text()) if report.exists() else None)



def binary_model(sizes=(64, 128, 128, 10), seed=0, input_bits=5):
    """A random binary HardwareModel (sign activations) and hidden weights whose signs are its
    weights: ``(model, hidden)``, hidden raw in the default ``w_format`` (small magnitudes and a
    few zeros, which read as +1)."""
    from ..golden.hwmodel import HardwareModel, Layer
    rng = np.random.default_rng(seed)
    layers, hidden = [], []
    for index, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        h = rng.integers(-600, 600, size=(n_out, n_in))
        h[rng.random(h.shape) < 0.02] = 0
        w = np.where(h >= 0, 1, -1).astype(np.int8)
        hidden.append(h.astype(np.int64))
        if index == len(sizes) - 2:
            layers.append(Layer(w, "none", scale=rng.integers(1, 50, n_out).astype(np.int64),
                                offset=rng.integers(-500, 501, n_out).astype(np.int64)))
        else:
            bound = n_in * ((1 << input_bits) - 1 if index == 0 else 1)
            layers.append(Layer(w, "sign", t_hi=rng.integers(-bound // 8, bound // 8 + 1,
                                                            n_out).astype(np.int64)))
    return HardwareModel(input_bits=input_bits, weight_kind="binary", layers=layers), hidden


def run_with_engine(model, unit_kwargs, rounds, *, engine_lanes=4, engine_pe=1, seed=0):
    """An :class:`~nmflow.rtl.engine.InferenceEngine` (``writable=True``) with a
    :class:`~nmflow.rtl.metaplastic.MetaplasticUnit` on its write port, in Amaranth's simulator.
    ``rounds`` is a list of ``(beats, inputs)``: the beats are streamed (random gaps and
    backpressure; the unit sees the engine's ``idle``), then, once the unit is no longer
    ``busy``, the inputs ([N, n_inputs]) are inferred. Returns ``[(outputs, classes [N], scores
    [N, n_classes]) per round]``."""
    from amaranth.hdl import Module
    from amaranth.lib import wiring
    from amaranth.sim import Simulator
    from ..rtl.engine import InferenceEngine
    from ..rtl.metaplastic import MetaplasticUnit
    from .streams import stream_get, stream_put

    engine = InferenceEngine(model, lanes=engine_lanes, pe=engine_pe, memory="block",
                             writable=True)
    unit = MetaplasticUnit(engine.plan, **unit_kwargs)
    top = Module()
    top.submodules.engine, top.submodules.unit = engine, unit
    wiring.connect(top, unit.weights, engine.weights)
    top.d.comb += unit.idle.eq(engine.idle)
    rng = random.Random(seed)
    results = []

    async def bench(ctx):
        for beats, inputs in rounds:
            outputs = []
            # producer and consumer interleaved in one testbench: offer, take, tick
            pending = list(beats)
            ctx.set(unit.o.ready, 0)
            while pending or len(outputs) < len(beats):
                offer = bool(pending) and rng.random() < 0.8
                if offer:
                    ctx.set(unit.i.valid, 1)
                    ctx.set(unit.i.payload, pending[0])
                else:
                    ctx.set(unit.i.valid, 0)
                take = rng.random() < 0.7
                ctx.set(unit.o.ready, take)
                _, _, i_ready, o_valid, o_data = await ctx.tick().sample(
                    unit.i.ready, unit.o.valid, unit.o.payload)
                if offer and i_ready:
                    pending.pop(0)
                if take and o_valid:
                    outputs.append([int(o_data[p]) for p in range(unit.lanes)])
            ctx.set(unit.i.valid, 0)
            ctx.set(unit.o.ready, 0)
            while ctx.get(unit.busy):
                await ctx.tick()
            n = len(inputs)
            classes = np.zeros(n, dtype=np.int64)
            scores = np.zeros((n, model.n_classes), dtype=np.int64)
            for image, vector in enumerate(inputs):
                for value in vector:
                    await stream_put(ctx, engine.i, int(value), rng=rng, valid=0.9)
                while True:
                    beat = await stream_get(ctx, engine.o, rng=rng, ready=0.8)
                    scores[image, beat.index] = beat.score
                    classes[image] = beat.cls
                    if beat.last:
                        break
            results.append((outputs, classes, scores))

    sim = Simulator(top)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return results


def training_step_updates(rule, sizes=(64, 16, 10), batch=64, seed=0, lr=0.005):
    """One real training step on digits: a binary :class:`~nmflow.golden.layers.QuantNet`, its
    float gradient on a batch of digits, the Adam step of
    :class:`~nmflow.golden.metaplastic.MetaplasticAdam` quantized to ``rule.u_format`` (the
    twin's own ``torch_rule`` path). Returns ``(hidden, d, new)``: per weight matrix the raw
    hidden weights before the step (``w_format``), the quantized updates (``u_format``) and the
    weights after the step as the twin computed them in the training loop."""
    import torch
    from ..golden.datasets import load_digits
    from ..golden.layers import QuantNet
    from ..golden.metaplastic import MetaplasticAdam

    torch.manual_seed(seed)
    data_ = load_digits(seed=seed)
    net = QuantNet(list(sizes), weight_kind="binary", activation="sign")
    params = [lin.weight for lin in net.linears]
    with torch.no_grad():                       # start on the w_format grid
        for p in params:
            p.copy_(torch.from_numpy(rule.w_format.quantize(p.numpy()) /
                                     2.0 ** rule.w_format.frac_bits).float())
    hidden = [rule.w_format.quantize(p.detach().numpy()) for p in params]
    captured = []
    twin = rule.torch_rule()

    def capture(p, step, group):
        captured.append(rule.u_format.quantize(step.detach().numpy()))
        twin(p, step, group)

    opt = MetaplasticAdam(params, lr=lr, meta=rule.m, weight_rule=capture)
    x = torch.from_numpy(data_.x_train[:batch].astype(np.float32))
    y = torch.from_numpy(data_.y_train[:batch])
    loss = torch.nn.functional.cross_entropy(net(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    new = [rule.w_format.quantize(p.detach().numpy()) for p in params]
    return hidden, captured, new
