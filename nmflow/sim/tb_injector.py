"""cocotb testbench of the error-injecting read stage (:class:`~nmflow.rtl.injector.PCSAErrorRead`).

Environment: ``NMFLOW_TB_LANES``, ``NMFLOW_TB_ADDRBITS``, ``NMFLOW_TB_LASTROW``,
``NMFLOW_TB_ROWS`` (row reads per phase), ``NMFLOW_TB_SEED`` (of the stimulus),
``NMFLOW_TB_PHASES`` (JSON list of :class:`~nmflow.golden.injector.ErrorInjection` fields: the
first is the design's reset configuration, each later one is sent on the ``config`` stream while
no read is under way).

Rows of random pair codes (all four codes, never-programmed (1, 1) included) are read with random
gaps, at addresses that count up and wrap after ``last_row`` as the engine's do, on the harness
(:mod:`nmflow.sim.harness`: drivers on ``i`` and ``config``, a monitor on ``o``, beats in the
ports' layouts). Every row read is compared with ``==`` in the scoreboard with the golden twin's
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
from cocotb.triggers import ClockCycles, FallingEdge
from scipy.stats import binom

from nmflow.golden.injector import ErrorInjection, InjectedRead
from nmflow.golden.pairs import pcsa_read
from nmflow.golden.readerrors import ErrorRates
from nmflow.rtl.injector import PCSAErrorRead, config_payload
from nmflow.rtl.weights import PairCode
from nmflow.sim.harness import Codec, Driver, Monitor, Scoreboard, Stream, port_shape
from nmflow.sim.tbutil import start

PAIR_CODE = Codec(PairCode)


def phase_injection(fields):
    fields = dict(fields)
    return ErrorInjection(ErrorRates(**fields.pop("rates")), **fields)


def pair_codes(row):
    """A row of pair codes (integers 0..3, ``blb`` in bit 0 and ``bl`` in bit 1) as the
    :class:`~nmflow.rtl.weights.PairCode` members of a ``codes`` field."""
    return [PAIR_CODE.decode(int(c)) for c in row]


def ternary_beat(row):
    """A ternary row as the stage's output beat (:class:`~nmflow.rtl.pcsa.TernaryWeight`)."""
    return [{"nz": int(w != 0), "neg": int(w < 0)} for w in row]


def ternary(beat):
    """The ternary row in an output beat."""
    return [(-1 if w["neg"] else 1) if w["nz"] else 0 for w in beat]


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
    stage = PCSAErrorRead(lanes=lanes, addr_bits=addr_bits, injection=phases[0],
                          last_row=last_row)
    reads = Driver(Stream(dut, "i", port_shape(stage, "i")), rng=gaps, valid=0.8)
    config = Driver(Stream(dut, "config", port_shape(stage, "config")))
    scoreboard = Scoreboard("twin", log=dut._log, logged=10)
    got = []

    def read(beat, _):
        got.append(ternary(beat))
        scoreboard.observe("o", beat)

    monitor = Monitor(Stream(dut, "o", port_shape(stage, "o")), read)
    await start(dut, i__valid=0, config__valid=0)
    monitor.start()
    await FallingEdge(dut.clk)
    report = []
    for index, injection in enumerate(phases):
        if index:                       # a new configuration while no read is under way
            await config.send([config_payload(injection)])
            await ClockCycles(dut.clk, 2, rising=False)
        twin = InjectedRead(injection, lanes)
        codes = rng.integers(0, 4, size=(rows, lanes), dtype=np.uint8)
        addr = np.arange(rows, dtype=np.int64) % (last_row + 1)
        expected = twin.read_rows(codes, addr, last_row)
        for n, row in enumerate(expected):
            scoreboard.expect("o", ternary_beat(row), f"phase {index} row {n}")
        reads.start([{"codes": pair_codes(codes[n]), "addr": int(addr[n])} for n in range(rows)])
        await monitor.wait((index + 1) * rows, 3 * rows + 100, "the read stage lost rows")
        got_rows = np.array(got[-rows:], dtype=np.int8)
        counts = count_errors(pcsa_read(codes).astype(np.int8), got_rows)
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
    scoreboard.finish()
    assert scoreboard.errors == 0, f"{scoreboard.errors} rows differ from the twin"
    for index, phase in enumerate(report):
        for kind, check in phase["errors"].items():
            assert check["within"], (f"phase {index} {kind}: {check['count']} errors in "
                                     f"{check['trials']} reads, outside {check['interval']}")
