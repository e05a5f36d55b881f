"""Generate the engine's Verilog and simulate it under cocotb against the golden model."""

import json
import time
from pathlib import Path

import numpy as np

from ..errors import NmflowError
from ..fileio import atomic_path, write_json
from ..golden import hwmodel
from ..rtl.engine import InferenceEngine
from .runner import run_cocotb, to_verilog

__all__ = ["write_engine_verilog", "simulate_engine"]

TOPLEVEL = "nmflow_engine"


def write_engine_verilog(model, out_dir, *, lanes=16, memory="block"):
    """Write ``engine.v`` and ``engine.json`` (the configuration it came from) into ``out_dir``."""
    engine = InferenceEngine(model, lanes=lanes, memory=memory)
    out_dir = Path(out_dir)
    path = to_verilog(engine, TOPLEVEL, out_dir / "engine.v")
    write_json(out_dir / "engine.json", {
        "toplevel": TOPLEVEL, "lanes": lanes, "memory": memory, "sizes": model.sizes,
        "input_bits": model.input_bits, "weight_kind": model.weight_kind,
        "score_bits": model.score_bits, "acc_bits": engine.acc_bits,
        "weight_rows": engine.weight_rows, "weight_bits": engine.weight_bits,
        "ideal_cycles_per_inference": engine.ideal_cycles,
        "cycles_per_inference": engine.cycles_per_inference,
        "model_sha256": hwmodel.checksum(model.arrays()),
    })
    return path, engine


def simulate_engine(model_path, inputs, sim_dir, *, verilog_dir=None, lanes=16, memory="block",
                    waves=False, ready=1.0, seed=0):
    """Run the engine testbench on ``inputs`` ([N, n_inputs]); return a summary dict.

    The RTL outputs (classes, scores, hidden activations, cycles per inference) go to
    ``sim_dir/rtl_outputs.npz``; the testbench fails on any mismatch with the golden model.
    """
    model = hwmodel.load(model_path)
    sim_dir = Path(sim_dir).resolve()
    verilog_dir = Path(verilog_dir or sim_dir / "rtl")
    config_path = verilog_dir / "engine.json"
    verilog_path = verilog_dir / "engine.v"
    if verilog_path.is_file() and config_path.is_file():
        config = json.loads(config_path.read_text())
        if config.get("model_sha256") != hwmodel.checksum(model.arrays()):
            raise NmflowError(f"Verilog in {str(verilog_dir)!r} was generated from another hardware "
                              f"model: run 'nmflow verilog' again")
        lanes, memory = config["lanes"], config["memory"]
    else:
        write_engine_verilog(model, verilog_dir, lanes=lanes, memory=memory)
    inputs = np.asarray(inputs, dtype=np.int64)
    inputs_path = sim_dir / "vectors.npz"
    sim_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(inputs_path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, x=inputs)
    out_path = sim_dir / "rtl_outputs.npz"
    out_path.unlink(missing_ok=True)
    start = time.monotonic()
    result = run_cocotb(verilog_path, TOPLEVEL, "nmflow.sim.tb_engine", sim_dir / "work",
                        waves=waves, env={
                            "NMFLOW_TB_MODEL": Path(model_path).resolve(),
                            "NMFLOW_TB_INPUTS": inputs_path, "NMFLOW_TB_OUT": out_path,
                            "NMFLOW_TB_READY": ready, "NMFLOW_TB_SEED": seed})
    seconds = time.monotonic() - start
    summary = {"images": int(len(inputs)), "passed": result.passed, "tests": result.tests,
               "failed": result.failed, "log": str(result.log), "seconds": round(seconds, 2),
               "outputs": str(out_path) if out_path.is_file() else None, "lanes": lanes}
    if out_path.is_file():
        with np.load(out_path) as f:
            cycles = f["cycles"]
            summary["cycles_per_inference"] = float(cycles.mean())
            summary["sim_cycles"] = int(f["sim_cycles"])
            summary["sim_cycles_per_second"] = round(int(f["sim_cycles"]) / seconds, 1)
    return summary
