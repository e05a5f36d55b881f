"""Run the unit testbenches (popcount lanes, threshold unit) under cocotb."""

from pathlib import Path

from ..rtl.lanes import GXNORPopcount
from ..rtl.threshold import ThresholdUnit
from ..rtl.verilog import to_verilog
from .runner import run_cocotb

__all__ = ["simulate_popcount", "simulate_threshold"]


def simulate_popcount(work_dir, *, lanes=32, x_bits=2, rows=10000, seed=0, waves=False):
    from .tb_popcount import TAG_BITS
    work_dir = Path(work_dir)
    path, _ = to_verilog(GXNORPopcount(lanes, x_bits, TAG_BITS), "nmflow_popcount",
                         work_dir / "popcount.v")
    return run_cocotb(path, "nmflow_popcount", "nmflow.sim.tb_popcount", work_dir / "work",
                      waves=waves, env={"NMFLOW_TB_LANES": lanes, "NMFLOW_TB_XBITS": x_bits,
                                        "NMFLOW_TB_ROWS": rows, "NMFLOW_TB_SEED": seed})


def simulate_threshold(work_dir, *, acc_bits=10, seed=0, waves=False):
    work_dir = Path(work_dir)
    path, _ = to_verilog(ThresholdUnit(acc_bits, 16), "nmflow_threshold", work_dir / "threshold.v")
    return run_cocotb(path, "nmflow_threshold", "nmflow.sim.tb_threshold", work_dir / "work",
                      waves=waves, env={"NMFLOW_TB_ACCBITS": acc_bits, "NMFLOW_TB_SEED": seed})
