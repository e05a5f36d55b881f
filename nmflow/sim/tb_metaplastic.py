"""cocotb testbench of the metaplastic update unit (:class:`~nmflow.rtl.metaplastic.MetaplasticUnit`)
against its fixed-point twin (:class:`~nmflow.golden.metafixed.MetaFixedRule`).

Environment: ``NMFLOW_TB_RULE`` (JSON, :func:`nmflow.sim.metaplastic_sim.rule_to_json`),
``NMFLOW_TB_LANES``, ``NMFLOW_TB_ENGINE_LANES``, ``NMFLOW_TB_GROUP_BITS``,
``NMFLOW_TB_VALUE_BITS``, ``NMFLOW_TB_BEATS`` (JSON file of beats), ``NMFLOW_TB_INIT`` (JSON file:
the initial hidden words), ``NMFLOW_TB_SEED``, ``NMFLOW_TB_READY`` / ``NMFLOW_TB_VALID``
(probabilities of accepting a result / offering a beat in a cycle), ``NMFLOW_TB_REPORT``.

The twin runs over the same beats (:func:`nmflow.sim.metaplastic_sim.expected_results`); every
beat's result is compared with ``==`` and, at the end, every pair code the unit wrote to the
engine's port with the sign of the twin's final hidden weight. Streams follow
``amaranth.lib.stream``: the producer raises ``valid`` after random gaps without looking at
``ready`` and holds it until the beat is taken; ``i.ready`` depends on the payload (the group),
so the testbench drives at the falling edge and samples ``ready``/``valid`` in the read-only
phase of the same time step, the values the coming rising edge sees. ``idle`` drops at random.
"""

import json
import os
import random
from pathlib import Path

import cocotb
import numpy as np
from cocotb.triggers import FallingEdge, ReadOnly, RisingEdge

from nmflow.golden.metafixed import round_shift
from nmflow.golden.pairs import MINUS, PLUS
from nmflow.rtl.metaplastic import OP_UPDATE, beat_layout
from nmflow.sim.metaplastic_sim import expected_results, rule_from_json
from nmflow.sim.payload import to_signed
from nmflow.sim.tbutil import start


def corners(rule, words, beats):
    """How often the twin's updates hit each corner (counted on the twin, not the RTL)."""
    words = np.array(words, dtype=np.int64, copy=True)
    wf = rule.w_format
    c = {"updates": 0, "sat_max": 0, "sat_min": 0, "sign_change": 0, "w_zero": 0,
         "w_min": 0, "w_max": 0, "shrink": 0, "d_zero": 0}
    for beat in beats:
        g, lanes = beat["addr"], words.shape[1]
        en = np.array([(beat["en"] >> p) & 1 for p in range(lanes)], dtype=bool)
        v = np.asarray(beat["value"], dtype=np.int64)
        if beat["op"] == OP_UPDATE:
            w = words[g]
            new = rule.update(w, v)
            shrink = ((w > 0) & (v > 0)) | ((w < 0) & (v < 0))
            raw = w - np.where(shrink, round_shift(v * rule.lookup(w), rule.s_scaled),
                               round_shift(v, rule.s_plain))   # before saturation
            e = en
            c["updates"] += int(e.sum())
            c["sat_max"] += int((e & (new == wf.max_raw) & (raw > wf.max_raw)).sum())
            c["sat_min"] += int((e & (new == wf.min_raw) & (raw < wf.min_raw)).sum())
            c["sign_change"] += int((e & ((w >= 0) != (new >= 0))).sum())
            c["w_zero"] += int((e & (w == 0)).sum())
            c["w_min"] += int((e & (w == wf.min_raw)).sum())
            c["w_max"] += int((e & (w == wf.max_raw)).sum())
            c["shrink"] += int((e & shrink).sum())
            c["d_zero"] += int((e & (v == 0)).sum())
        else:
            new = v
        words[g] = np.where(en, new, words[g])
    return c


@cocotb.test()
async def unit_matches_its_twin(dut):
    rule = rule_from_json(os.environ["NMFLOW_TB_RULE"])
    lanes = int(os.environ["NMFLOW_TB_LANES"])
    elanes = int(os.environ["NMFLOW_TB_ENGINE_LANES"])
    layout = beat_layout(lanes, int(os.environ["NMFLOW_TB_GROUP_BITS"]),
                         int(os.environ["NMFLOW_TB_VALUE_BITS"]))
    beats = json.loads(Path(os.environ["NMFLOW_TB_BEATS"]).read_text())
    init = np.array(json.loads(Path(os.environ["NMFLOW_TB_INIT"]).read_text()), dtype=np.int64)
    seed = int(os.environ.get("NMFLOW_TB_SEED", "0"))
    p_ready = float(os.environ.get("NMFLOW_TB_READY", "0.7"))
    p_valid = float(os.environ.get("NMFLOW_TB_VALID", "0.8"))
    ww = rule.w_format.width
    want, final = expected_results(rule, init, beats)
    packed = [layout.const(b).as_value().value for b in beats]

    await start(dut, i__valid=0, o__ready=0, idle=1)
    rng_in, rng_out, rng_idle = random.Random(seed), random.Random(seed + 1), \
        random.Random(seed + 2)
    got = []
    writes = {}
    cycles = [0]

    async def produce():
        for value in packed:
            while rng_in.random() >= p_valid:
                dut.i__valid.value = 0
                await FallingEdge(dut.clk)
            dut.i__payload.value = value
            dut.i__valid.value = 1
            while True:
                await ReadOnly()
                taken = int(dut.i__ready.value)
                await FallingEdge(dut.clk)
                if taken:
                    break
        dut.i__valid.value = 0

    async def consume_and_watch():
        limit = 40 * len(beats) + 1000
        while len(got) < len(beats):
            r = int(rng_out.random() < p_ready)
            dut.o__ready.value = r
            dut.idle.value = int(rng_idle.random() < 0.95)
            await ReadOnly()
            cycles[0] += 1
            if r and int(dut.o__valid.value):
                v = int(dut.o__payload.value.to_unsigned())
                got.append([to_signed(v >> (ww * p), ww) for p in range(lanes)])
            en = int(dut.weights__en.value.to_unsigned())
            if en:
                addr = int(dut.weights__addr.value.to_unsigned())
                row = int(dut.weights__data.value.to_unsigned())
                for q in range(elanes):
                    if (en >> q) & 1:
                        writes[(addr, q)] = (row >> (2 * q)) & 3
            assert cycles[0] < limit, f"the unit stalled after {len(got)} results"
            await FallingEdge(dut.clk)
        dut.o__ready.value = 0

    # the producer starts at a falling edge, like the consumer
    cocotb.start_soon(produce())
    await consume_and_watch()

    mismatches = []
    for n, (a, b) in enumerate(zip(got, want)):
        if a != b:
            mismatches.append(f"beat {n} {beats[n]}: unit {a}, twin {b}")
            if len(mismatches) >= 5:
                break
    k = elanes // lanes
    code_errors = 0
    for (addr, q), code in writes.items():
        g, p = addr * k + q // lanes, q % lanes
        expect = PLUS if final[g, p] >= 0 else MINUS
        if code != expect:
            code_errors += 1
            if len(mismatches) < 10:
                mismatches.append(f"pair code row {addr} lane {q}: unit {code:#04b}, twin "
                                  f"{expect:#04b}")
    report = {"beats": len(got), "codes_checked": len(writes), "code_errors": code_errors,
              "cycles": cycles[0], "corners": corners(rule, init, beats),
              "mismatches": mismatches, "final": final.tolist()}
    Path(os.environ["NMFLOW_TB_REPORT"]).write_text(json.dumps(report))
    assert not mismatches, mismatches[0]
