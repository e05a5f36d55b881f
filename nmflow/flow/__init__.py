"""The flow: every step of every unit, as a function of (artifacts, settings) -> artifacts.

The command line only parses its options, calls one of these and prints; the same functions are
nmflow's Python API (also importable from :mod:`nmflow` itself, see the README's worked example):

* :mod:`~nmflow.flow.engine`: train -> export -> verilog -> sim -> compare -> build -> host, the
  inference engine's steps over a run folder;
* :mod:`~nmflow.flow.interop`: ``import``, a QONNX graph (Brevitas, FINN) into a run folder;
* :mod:`~nmflow.flow.sweep`: the read-error sweep (accuracy against PCSA error rate);
* :mod:`~nmflow.flow.pcsa`: the device model's error rates and regime map;
* :mod:`~nmflow.flow.continual`: continual learning with metaplastic networks;
* :mod:`~nmflow.flow.eqprop`: Equilibrium Propagation, float and fixed point, the unit under
  cocotb and on a board;
* :mod:`~nmflow.flow.outputs`: how every step writes its files (all or none).
"""

from .engine import (ARTIFACTS, DatasetSpec, batch_memories, build_step, choose_batch,
                     choose_memory, compare_step, export_step, fit_memories, host_step, load_dataset, program_step, sim_step, train_step,
                     verilog_step)
from .interop import import_step

__all__ = ["ARTIFACTS", "DatasetSpec", "load_dataset", "train_step", "export_step", "import_step",
           "verilog_step", "sim_step", "compare_step", "build_step", "host_step", "program_step",
           "fit_memories", "choose_memory", "choose_batch", "batch_memories"]
