"""Run the unit testbenches (popcount lanes, threshold unit) under cocotb."""

from pathlib import Path

import json

from ..rtl.injector import PCSAErrorRead
from ..rtl.lanes import GXNORPopcount
from ..rtl.threshold import ThresholdUnit
from ..rtl.verilog import to_verilog
from .runner import run_cocotb

__all__ = ["simulate_popcount", "simulate_threshold", "simulate_injector"]


def simulate_popcount(work_dir, *, lanes=32, x_bits=2, pe=1, rows=10000, seed=0, waves=False):
    from .tb_popcount import TAG_BITS
    work_dir = Path(work_dir)
    path, _ = to_verilog(GXNORPopcount(lanes, x_bits, TAG_BITS, pe=pe), "nmflow_popcount",
                         work_dir / "popcount.v")
    return run_cocotb(path, "nmflow_popcount", "nmflow.sim.tb_popcount", work_dir / "work",
                      waves=waves, env={"NMFLOW_TB_LANES": lanes, "NMFLOW_TB_XBITS": x_bits, "NMFLOW_TB_PE": pe,
                                        "NMFLOW_TB_ROWS": rows, "NMFLOW_TB_SEED": seed})


def simulate_threshold(work_dir, *, acc_bits=10, seed=0, waves=False):
    work_dir = Path(work_dir)
    path, _ = to_verilog(ThresholdUnit(acc_bits, 16), "nmflow_threshold", work_dir / "threshold.v")
    return run_cocotb(path, "nmflow_threshold", "nmflow.sim.tb_threshold", work_dir / "work",
                      waves=waves, env={"NMFLOW_TB_ACCBITS": acc_bits, "NMFLOW_TB_SEED": seed})


def simulate_injector(work_dir, phases, *, lanes=16, addr_bits=10, last_row=999, rows=4096,
                      seed=0, waves=False):
    """Run the error-injecting read stage against its twin (see :mod:`nmflow.sim.tb_injector`).

    ``phases`` is a list of :class:`~nmflow.golden.injector.ErrorInjection`: the first is the
    configuration after reset, the others are set in turn through the ``config`` stream;
    ``rows`` row reads of ``lanes`` weights follow each. Returns ``(result, counts)``: the
    cocotb result and the error counts per phase the testbench measured.
    """
    work_dir = Path(work_dir)
    stage = PCSAErrorRead(lanes=lanes, addr_bits=addr_bits, injection=phases[0],
                          last_row=last_row)
    path, _ = to_verilog(stage, "nmflow_injector", work_dir / "injector.v")
    fields = [{"rates": p.rates.as_dict(), "seed": p.seed, "mode": p.mode,
               "rate_bits": p.rate_bits} for p in phases]
    report = (work_dir / "injector_counts.json").resolve()
    report.unlink(missing_ok=True)
    result = run_cocotb(path, "nmflow_injector", "nmflow.sim.tb_injector", work_dir / "work",
                        waves=waves, env={"NMFLOW_TB_LANES": lanes, "NMFLOW_TB_ADDRBITS": addr_bits,
                                          "NMFLOW_TB_LASTROW": last_row, "NMFLOW_TB_ROWS": rows,
                                          "NMFLOW_TB_SEED": seed,
                                          "NMFLOW_TB_PHASES": json.dumps(fields),
                                          "NMFLOW_TB_REPORT": report})
    counts = json.loads(report.read_text()) if report.exists() else None
    return result, counts
