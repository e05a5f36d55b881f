"""cocotb testbench of the error-injecting read stage (:class:`~nmflow.rtl.injector.PCSAErrorRead`).

Environment: ``NMFLOW_TB_LANES``, ``NMFLOW_TB_ADDRBITS``, ``NMFLOW_TB_LASTROW``,
``NMFLOW_TB_ROWS`` (row reads per phase), ``NMFLOW_TB_SEED`` (of the stimulus),
``NMFLOW_TB_PHASES`` (JSON list of :class:`~nmflow.golden.injector.ErrorInjection` fields: the
first is the design's reset configuration, each later one is sent on the ``config`` stream while
no read is under way).

Rows of random pair codes (all four codes, never-programmed (1, 1) included) are read with random
gaps, at addresses that count up and wrap after ``last_row`` as the engine's do. Every weight read
is compared with ``==`` with the golden twin
(:class:`~nmflow.golden.injector.InjectedRead`), and the testbench counts each error type among
the eligible reads and checks the counts against the binomial 99.9 % interval of the realised
rates. The counts are written to the JSON file ``NMFLOW_TB_REPORT``.
"""

import json
import os
import random
from pathlib import Path

import cocotb
import numpy as np
from cocotb.triggers import FallingEdge
from scipy.stats import binom

from nmflow.golden.injector import ErrorInjection, InjectedRead
from nmflow.golden.pairs import pcsa_read
from nmflow.golden.readerrors import ErrorRates
from nmflow.rtl.injector import config_payload, error_config_layout
from nmflow.rtl.pcsa import read_row
from nmflow.sim.payload import pack
from nmflow.sim.tbutil import start


def phase_injection(fields):
    fields = dict(fields)
    return ErrorInjection(ErrorRates(**fields.pop("rates")), **fields)


def codes_value(row):
    """A row of pair codes as the stage takes it: lane ``p`` at bits ``2p+1:2p``."""
    return sum(int(c) << (2 * p) for p, c in enumerate(row))


def weights_of(value, lanes):
    """The ternary row in an output value (``nz`` at bit ``2p``, ``neg`` at ``2p + 1``)."""
    out = np.zeros(lanes, dtype=np.int8)
    for p in range(lanes):
        nz, neg = (value >> (2 * p)) & 1, (value >> (2 * p + 1)) & 1
        out[p] = 0 if not nz else (-1 if neg else 1)
    return out


def count_errors(ideal, got):
    """Eligible reads and errors of each type, from ideal and actual reads."""
    nonzero = ideal != 0
    return {
        "nonzero": int(nonzero.sum()), "zero": int((~nonzero).sum()),
        "type1": int((nonzero & (got == -ideal)).sum()),
        "type2": int((nonzero & (got == 0)).sum()),
        "type3": int((~nonzero & (got != 0)).sum()),
    }


def within_interval(count, trials, rate, confidence=0.999):
    low, high = binom.interval(confidence, trials, rate)
    return bool(low <= count <= high), (int(low), int(high))


@cocotb.test()
async def injector_matches_its_twin(dut):
    lanes = int(os.environ["NMFLOW_TB_LANES"])
    addr_bits = int(os.environ["NMFLOW_TB_ADDRBITS"])
    last_row = int(os.environ["NMFLOW_TB_LASTROW"])
    rows = int(os.environ["NMFLOW_TB_ROWS"])
    phases = [phase_injection(p) for p in json.loads(os.environ["NMFLOW_TB_PHASES"])]
    rng = np.random.default_rng(int(os.environ.get("NMFLOW_TB_SEED", "0")))
    gaps = random.Random(int(os.environ.get("NMFLOW_TB_SEED", "0")))
    cfg_layout = error_config_layout(phases[0].rate_bits)
    row_layout = read_row(lanes, addr_bits)

    await start(dut, i__valid=0, config__valid=0)
    report, mismatches = [], 0
    for index, injection in enumerate(phases):
        if index:                       # a new configuration while no read is under way
            await FallingEdge(dut.clk)
            dut.config__payload.value = pack(cfg_layout, **config_payload(injection))
            dut.config__valid.value = 1
            await FallingEdge(dut.clk)
            dut.config__valid.value = 0
            await FallingEdge(dut.clk)
        twin = InjectedRead(injection, lanes)
        codes = rng.integers(0, 4, size=(rows, lanes), dtype=np.uint8)
        addr = np.arange(rows, dtype=np.int64) % (last_row + 1)
        expected = twin.read_rows(codes, addr, last_row)
        got = np.zeros_like(expected)
        sent = received = cycle = 0
        while received < rows:
            await FallingEdge(dut.clk)
            cycle += 1
            if int(dut.o__valid.value):
                got[received] = weights_of(dut.o__payload.value.to_unsigned(), lanes)
                if (got[received] != expected[received]).any():
                    mismatches += 1
                    if mismatches <= 10:
                        dut._log.error("phase %d row %d: read %s, twin %s", index, received,
                                       got[received].tolist(), expected[received].tolist())
                received += 1
            if sent < rows and gaps.random() < 0.8:
                dut.i__payload.value = pack(row_layout, codes=codes_value(codes[sent]), addr=int(addr[sent]))
                dut.i__valid.value = 1
                sent += 1
            else:
                dut.i__valid.value = 0
            assert cycle < 3 * rows + 100, "the read stage lost rows"
        dut.i__valid.value = 0
        counts = count_errors(pcsa_read(codes).astype(np.int8), got)
        realised = injection.realised
        checks = {}
        for kind, trials in (("type1", "nonzero"), ("type2", "nonzero"), ("type3", "zero")):
            ok, interval = within_interval(counts[kind], counts[trials], getattr(realised, kind))
            checks[kind] = {"count": counts[kind], "trials": counts[trials],
                            "rate": counts[kind] / counts[trials],
                            "configured": getattr(realised, kind), "interval": interval,
                            "within": ok}
        report.append({"mode": injection.mode, "seed": injection.seed, "rows": rows,
                       "weight_reads": rows * lanes, "errors": checks})
        dut._log.info("phase %d (%s): %s", index, injection.mode,
                      {k: (v["count"], v["trials"]) for k, v in checks.items()})
    Path(os.environ["NMFLOW_TB_REPORT"]).write_text(json.dumps(report, indent=2))
    assert mismatches == 0, f"{mismatches} rows differ from the twin"
    for index, phase in enumerate(report):
        for kind, check in phase["errors"].items():
            assert check["within"], (f"phase {index} {kind}: {check['count']} errors in "
                                     f"{check['trials']} reads, outside {check['interval']}")
