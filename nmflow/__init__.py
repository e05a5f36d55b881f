"""nmflow: a design flow for neuromorphic hardware.

From a binarized or ternary PyTorch network to a verified, synthesized circuit on an open FPGA board.
Sub-packages follow the flow: ``golden`` (PyTorch/NumPy models), ``rtl`` (Amaranth components),
``sim`` (cocotb testbenches and runner), ``boards`` (board descriptions and tops, builds, host
driver), ``flow`` (every step of every unit) and ``scripts`` (the ``nmflow`` command line). Below
them all sit plain modules that every layer may use: ``errors``, ``fileio``, ``fixedpoint``,
``lfsr``, ``protocol`` (the host links' contract shared by the gateware and the host) and
``toolchain`` (where the open FPGA tools are). Imports only go downwards (``golden <- rtl <-
sim``, ``rtl <- boards``, everything ``<- flow <- scripts``); ``tests/test_layering.py`` checks it.

The steps are nmflow's Python API, importable from here without the command line (each is loaded
on first use, so ``import nmflow`` stays light)::

    import nmflow
    nmflow.train_step("build/run", nmflow.TrainConfig.tnn(hidden=(128, 128)), nmflow.DatasetSpec())
    nmflow.export_step("build/run")
    nmflow.sim_step("build/run", limit=20)
    nmflow.compare_step("build/run")
    nmflow.build_step("build/run", board="icebreaker")
"""

import importlib

__version__ = "0.1.0"

#: The public API: name -> the module that defines it.
_API = {
    **{name: "nmflow.flow.engine" for name in (
        "ARTIFACTS", "DatasetSpec", "load_dataset", "train_step", "export_step", "verilog_step",
        "sim_step", "compare_step", "build_step", "host_step", "program_step", "fit_memories")},
    "run_sweep": "nmflow.flow.sweep",
    "run_pcsa": "nmflow.flow.pcsa",
    "run_continual_step": "nmflow.flow.continual",
    "eqprop_train": ("nmflow.flow.eqprop", "run_train"),
    "eqprop_sim": ("nmflow.flow.eqprop", "run_unit_sim"),
    "eqprop_build": ("nmflow.flow.eqprop", "build_unit"),
    "eqprop_host": ("nmflow.flow.eqprop", "run_host"),
    "TrainConfig": "nmflow.golden.train",
    "ContinualConfig": "nmflow.golden.continual",
    "FixedEqPropConfig": "nmflow.golden.eqprop_fixed",
    "NmflowError": "nmflow.errors",
}

__all__ = sorted(_API)


def __getattr__(name):
    """Load an API name from its module on first use."""
    if name not in _API:
        raise AttributeError(f"module 'nmflow' has no attribute {name!r}")
    target = _API[name]
    module, attribute = target if isinstance(target, tuple) else (target, name)
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + list(_API))
