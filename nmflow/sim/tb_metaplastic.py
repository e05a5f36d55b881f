"""cocotb testbench of the metaplastic update unit (:class:`~nmflow.rtl.metaplastic.MetaplasticUnit`)
against its fixed-point twin (:class:`~nmflow.golden.metafixed.MetaFixedRule`).

Environment: ``NMFLOW_TB_RULE`` (JSON, :func:`nmflow.sim.metaplastic_sim.rule_to_json`),
``NMFLOW_TB_LANES``, ``NMFLOW_TB_ENGINE_LANES``, ``NMFLOW_TB_GROUP_BITS``,
``NMFLOW_TB_VALUE_BITS``, ``NMFLOW_TB_BEATS`` (JSON file of beats), ``NMFLOW_TB_INIT`` (JSON file:
the initial hidden words), ``NMFLOW_TB_SEED``, ``NMFLOW_TB_READY`` / ``NMFLOW_TB_VALID``
(probabilities of accepting a result / offering a beat in a cycle), ``NMFLOW_TB_REPORT``.

The twin runs over the same beats (:func:`nmflow.sim.metaplastic_sim.expected_results`); every
beat's result is compared with ``==`` in the scoreboard and, at the end, every pair code the unit
wrote to the engine's port with the sign of the twin's final hidden weight. The streams run on the
harness (:mod:`nmflow.sim.harness`), beats in the ports' layouts: a driver offers the beats on
``i`` after random gaps (``i.ready`` depends on the payload, the group: the harness samples
``ready`` after the payload is set), a monitor takes the results on ``o`` with random
backpressure. ``idle`` drops at random.
"""

import json
import os
import random
from pathlib import Path

import cocotb
import numpy as np
from amaranth.hdl import signed
from amaranth.lib import data
from cocotb.triggers import FallingEdge, ReadOnly

from nmflow.golden.metafixed import round_shift
from nmflow.golden.pairs import MINUS, PLUS
from nmflow.rtl.metaplastic import OP_UPDATE, beat_layout
from nmflow.rtl.weights import PairCode, pair_row
from nmflow.sim.harness import Codec, Driver, Monitor, Scoreboard, Stream
from nmflow.sim.metaplastic_sim import expected_results, rule_from_json
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


async def watch_writes(dut, elanes, rng_idle, writes, cycles):
    """Every cycle: drive ``idle`` (high 95 % of the time, drawn from ``rng_idle``), count the
    cycle in ``cycles[0]`` and record the pair code of each of the ``elanes`` lanes the unit
    writes to the engine's weight memory (``writes[(row, lane)]``, the last write wins)."""
    codes, enables = Codec(pair_row(elanes)), Codec(data.ArrayLayout(1, elanes))
    while True:
        dut.idle.value = int(rng_idle.random() < 0.95)
        await ReadOnly()
        cycles[0] += 1
        en = dut.weights__en.value.to_unsigned()
        if en:
            addr = dut.weights__addr.value.to_unsigned()
            row = codes.decode(dut.weights__data.value.to_unsigned())
            for lane, enabled in enumerate(enables.decode(en)):
                if enabled:
                    writes[(addr, lane)] = row[lane]
        await FallingEdge(dut.clk)


def check_codes(scoreboard, writes, final, lanes, elanes):
    """Every pair code written is the sign of the twin's final hidden weight."""
    pair = Codec(PairCode)
    k = elanes // lanes
    for (addr, q), code in sorted(writes.items()):
        g, p = addr * k + q // lanes, q % lanes
        scoreboard.check(f"pair code row {addr} lane {q}", code,
                         pair.decode(PLUS if final[g, p] >= 0 else MINUS))


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
    want, final = expected_results(rule, init, beats)
    scoreboard = Scoreboard("twin", log=dut._log, logged=10)
    for n, (beat, weights) in enumerate(zip(beats, want)):
        scoreboard.expect("o", weights, f"beat {n} {beat}")
    stream_i = Stream(dut, "i", layout)
    stream_o = Stream(dut, "o", data.ArrayLayout(signed(rule.w_format.width), lanes))
    writes, cycles = {}, [0]

    await start(dut, i__valid=0, o__ready=0, idle=1)
    monitor = Monitor(stream_o, lambda beat, _: scoreboard.observe("o", beat),
                      rng=random.Random(seed + 1), ready=p_ready)
    monitor.start()
    cocotb.start_soon(watch_writes(dut, elanes, random.Random(seed + 2), writes, cycles))
    Driver(stream_i, rng=random.Random(seed), valid=p_valid).start(beats)
    await monitor.wait(len(beats), 40 * len(beats) + 1000,
                       lambda: f"the unit stalled after {monitor.count} results")
    check_codes(scoreboard, writes, final, lanes, elanes)
    scoreboard.finish()
    code_errors = sum(label.startswith("pair code") for label, _, _ in scoreboard.mismatches)
    report = {"beats": monitor.count, "codes_checked": len(writes), "code_errors": code_errors,
              "cycles": cycles[0], "corners": corners(rule, init, beats),
              "mismatches": scoreboard.messages(10), "final": final.tolist()}
    Path(os.environ["NMFLOW_TB_REPORT"]).write_text(json.dumps(report))
    scoreboard.assert_clean()
