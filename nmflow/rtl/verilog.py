# amaranth: UnusedElaboratable=no
"""Verilog from Amaranth components: the ``verilog`` step of the flow, and the unit testbenches'.

:func:`to_verilog` converts any ``wiring.Component`` into one flat Verilog module whose ports are
the signature's members, named as Amaranth flattens them (``i__payload``, ``o__ready``): the names
cocotb sees. :func:`write_engine_verilog` writes the inference engine as ``engine.v`` and the
configuration it came from as ``engine.json``, with the SHA-256 of ``engine.v`` as written;
:func:`read_engine_verilog` reads both back and refuses Verilog whose configuration is unknown
(``engine.json`` missing, or recording another ``engine.v``), made from another hardware model, or
with other lanes than asked for. Simulation never writes Verilog: it reads what this module wrote.
"""

import hashlib
import json
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from amaranth.back import rtlil
from amaranth.hdl import Signal, Value
from amaranth.lib import wiring

from ..errors import NmflowError
from ..fileio import staged_outputs, write_bytes, write_json
from ..toolchain import find_tool

__all__ = ["TOPLEVEL", "EngineVerilog", "component_ports", "to_verilog", "write_engine_verilog",
           "read_engine_verilog", "engine_read_function", "sha256_bytes"]

#: Module name of the engine in ``engine.v``.
TOPLEVEL = "nmflow_engine"

#: What Yosys does to the converted design before writing Verilog.
YOSYS_PASSES = ("proc -norom", "flatten", "opt -full", "opt_clean -purge", "pmuxtree",
                "memory_collect")


def sha256_bytes(data):
    """Hex SHA-256 of ``data`` (the checksum ``engine.json`` records for ``engine.v``)."""
    return hashlib.sha256(data).hexdigest()


def component_ports(component):
    """The signals of a component's signature, in signature order.

    Constant members (the ``ready`` of an always-ready stream) are left out: they are no ports.
    Each signal is named by its path in the signature joined with ``__`` (``trace__payload``),
    which is the port name Amaranth gives it.
    """
    ports = []
    for _, _, value in component.signature.flatten(component):
        value = Value.cast(value)
        if isinstance(value, Signal):
            ports.append(value)
    return ports


_PORT = re.compile(r"^\s*wire width \d+ (input|output) \d+\s+\\(\S+)$", re.MULTILINE)


def _check_directions(component, name, rtlil_text):
    """Every ``Out`` member is an output port of the top module ``name`` (Amaranth infers
    directions from what the design drives when ports are given as a list: an output nothing
    drives would become an input)."""
    top = re.search(rf"^module \\{re.escape(name)}$(.*?)^end$", rtlil_text,
                    re.MULTILINE | re.DOTALL)
    directions = {port: direction for direction, port in _PORT.findall(top.group(1))}
    for path, member, value in component.signature.flatten(component):
        port = "__".join(map(str, path))
        if member.flow == wiring.Out and isinstance(Value.cast(value), Signal) \
                and directions.get(port) != "output":
            raise NmflowError(f"output {port!r} of {type(component).__name__} must be driven by "
                             f"the design, not left undriven")


_TRIGGER = re.compile(r"^(\s*)reg (\S*dump_module\S* ?) = 0;$", re.MULTILINE)


def _settle_at_time_zero(text):
    """Make every ``always @*`` block run once after time 0.

    Yosys guards each combinational block with a dummy register declared ``= 0`` so that its
    initialisation wakes the block; Icarus applies declaration initialisers before the blocks
    start waiting (the time-0 race), so outputs that only depend on registers that keep their
    initial value stay X. Toggling the dummy register at 1 ps settles them; it drives nothing.
    """
    return _TRIGGER.sub(
        lambda m: f"{m.group(0)}\n{m.group(1)}initial #0.001 {m.group(2)}= 1'h1;", text)


def _yosys(script, what):
    """Run a Yosys script (on standard input) with the toolchain's Yosys; return its output."""
    yosys = find_tool("yosys")
    result = subprocess.run([yosys, "-q", "-"], input=script, capture_output=True, text=True)
    if result.returncode:
        lines = [line for line in (result.stderr or result.stdout).splitlines() if line.strip()]
        detail = next((line for line in lines if "ERROR" in line), lines[-1] if lines else "")
        raise NmflowError(f"yosys failed on {what} (exit status {result.returncode}): "
                          f"{detail.strip()}")
    return result.stdout


def to_verilog(component, name, path):
    """Write ``component`` as one flat Verilog module ``name`` to ``path`` (atomically).

    Amaranth converts the component to RTLIL with its signature's signals as ports
    (:func:`component_ports`); Yosys (the toolchain's, :func:`nmflow.toolchain.find_tool`)
    flattens the hierarchy and optimises the netlist (:data:`YOSYS_PASSES`): the same logic with
    far fewer processes, which Icarus simulates tens of times faster than the direct output of
    Amaranth's Verilog backend. Memories stay memories with their contents. Combinational blocks
    are made to settle at time 0 under Icarus (:func:`_settle_at_time_zero`).

    Returns
    -------
    (Path, bytes)
        ``path`` and the Verilog as written.
    """
    rtlil_text = rtlil.convert(component, name=name, ports=component_ports(component),
                               emit_src=False)
    _check_directions(component, name, rtlil_text)
    script = "\n".join([f"read_rtlil <<rtlil\n{rtlil_text}\nrtlil", f"hierarchy -top {name}",
                        *YOSYS_PASSES, "write_verilog -noattr"])
    text = _settle_at_time_zero(_yosys(script, name)).encode()
    write_bytes(path, text)
    return Path(path), text


@dataclass(frozen=True)
class EngineVerilog:
    """The engine's Verilog and the configuration it came from, checked to belong together.

    Members
    -------
    path : Path
        ``engine.v``.
    config : dict
        ``engine.json``: toplevel, lanes, memory, the model's sizes and checksum, the engine's
        figures (``cycles_per_inference``, ...), ``errors`` and ``verilog_sha256``.
    text : bytes
        ``engine.v`` as read (or written): what a simulation of it compiles.
    sha256 : str
        Hex SHA-256 of ``text``, equal to ``config["verilog_sha256"]``.
    """
    path: Path
    config: dict
    text: bytes
    sha256: str


def write_engine_verilog(model, out_dir, *, lanes=16, pe=1, first_layer_bits=None,
                         memory="block", errors=None):
    """Write the inference engine for ``model`` as ``out_dir/engine.v`` and ``engine.json``.

    ``engine.json`` records the configuration (lanes, pe, first layer, memory kind), the model's sizes and
    checksum, the engine's figures (``acc_bits``, ``weight_rows``, ``weight_bits``,
    ``ideal_cycles_per_inference``, ``cycles_per_inference``, ``cycles_back_to_back`` for an
    inference offered right behind another, ``interval_cycles`` between back-to-back starts and
    ``first_interval_cycles`` between the first two), the read-error injection (``errors``: the fields of
    an :class:`~nmflow.golden.injector.ErrorInjection`, or ``None`` for the engine without an
    injector) and the SHA-256 of ``engine.v`` as written. Both files appear together, or
    neither.

    Returns
    -------
    :class:`EngineVerilog`

    Raises
    ------
    NmflowError
        If the engine refuses the configuration (``lanes``, ``pe``, ``memory``).
    """
    from .engine import InferenceEngine

    engine = InferenceEngine(model, lanes=lanes, pe=pe, first_layer_bits=first_layer_bits, memory=memory,
                             errors=errors)
    out_dir = Path(out_dir)
    path = out_dir / "engine.v"
    with staged_outputs() as outputs:
        _, text = to_verilog(engine, TOPLEVEL, outputs.file(path))
        config = _engine_config(engine, model, lanes, memory, errors, text)
        write_json(outputs.file(out_dir / "engine.json"), config)
    return EngineVerilog(path, config, text, config["verilog_sha256"])


def _engine_config(engine, model, lanes, memory, errors, text):
    from ..golden import hwmodel
    return {
        "toplevel": TOPLEVEL, "lanes": lanes, "pe": engine.pe, "simd": engine.plan.simd,
        "first_layer_bits": engine.plan.first_layer_bits,
        "memory": memory, "sizes": model.sizes,
        "input_bits": model.input_bits, "weight_kind": model.weight_kind,
        "score_bits": model.score_bits, "acc_bits": engine.acc_bits,
        "weight_rows": engine.weight_rows, "weight_bits": engine.weight_bits,
        "ideal_cycles_per_inference": engine.ideal_cycles,
        "cycles_per_inference": engine.cycles_per_inference,
        "cycles_back_to_back": engine.plan.cycles_back_to_back,
        "interval_cycles": engine.plan.interval_cycles,
        "first_interval_cycles": engine.plan.first_interval_cycles,
        "model_sha256": hwmodel.model_checksum(model),
        "errors": None if errors is None else errors.to_dict(),
        "verilog_sha256": sha256_bytes(text),
    }


def read_engine_verilog(verilog_dir, *, model=None, lanes=None, pe=None):
    """Read ``engine.v`` and ``engine.json`` from ``verilog_dir`` and check they belong together.

    Parameters
    ----------
    verilog_dir : path
        The folder :func:`write_engine_verilog` wrote.
    model : :class:`~nmflow.golden.hwmodel.HardwareModel`, optional
        If given, the Verilog must have been generated from it (same checksum).
    lanes : int, optional
        If given, the Verilog must have been generated with this many lanes.
    pe : int, optional
        If given, the Verilog must have been generated with this many neurons per cycle.

    Returns
    -------
    :class:`EngineVerilog`

    Raises
    ------
    NmflowError
        One line naming the file and the reason: ``engine.v`` or ``engine.json`` is missing,
        ``engine.json`` is not valid or records another ``engine.v`` (a hand-edited file: its
        configuration is unknown), another hardware model, or other lanes.
    """
    verilog_dir = Path(verilog_dir)
    path, config_path = verilog_dir / "engine.v", verilog_dir / "engine.json"
    if not path.is_file():
        raise NmflowError(f"Verilog {str(path)!r} does not exist: run 'nmflow verilog'")
    if not config_path.is_file():
        raise NmflowError(f"{str(config_path)!r} does not exist, so the configuration of "
                          f"{str(path)!r} is unknown: run 'nmflow verilog' to generate both, or "
                          f"restore engine.json")
    try:
        config = json.loads(config_path.read_text())
        if not isinstance(config, dict):
            raise NmflowError(f"a JSON object is expected, not {type(config).__name__}")
        config.setdefault("pe", 1)              # written before the engine had pe
        for key, kind in (("lanes", int), ("pe", int), ("cycles_per_inference", int), ("toplevel", str),
                          ("model_sha256", str)):
            if not isinstance(config.get(key), kind):
                raise NmflowError(f"{key} must be {kind.__name__}, not {config.get(key)!r}")
        if config.get("errors") is not None:
            from ..golden.injector import ErrorInjection
            try:
                ErrorInjection.from_dict(config["errors"])
            except NmflowError as error:
                raise NmflowError(str(error)) from None
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise NmflowError(f"{str(config_path)!r} is not an engine configuration ({error}): run "
                          f"'nmflow verilog'") from None
    text = path.read_bytes()
    actual, recorded = sha256_bytes(text), config.get("verilog_sha256")
    if recorded is None:
        raise NmflowError(f"{str(config_path)!r} records no sha256 of engine.v, so the "
                          f"configuration of {str(path)!r} is unknown: run 'nmflow verilog'")
    if actual != recorded:
        raise NmflowError(f"{str(path)!r} is not the Verilog engine.json describes (its sha256 "
                          f"is {actual[:16]}..., engine.json records {str(recorded)[:16]}...): "
                          f"run 'nmflow verilog', or record the new verilog_sha256 in "
                          f"engine.json if you edited engine.v on purpose")
    if model is not None:
        from ..golden import hwmodel
        if config["model_sha256"] != hwmodel.model_checksum(model):
            raise NmflowError(f"Verilog in {str(verilog_dir)!r} was generated from another "
                              f"hardware model: run 'nmflow verilog' again")
    if lanes is not None and lanes != config["lanes"]:
        raise NmflowError(f"lanes must match the Verilog: {str(path)!r} was generated with "
                          f"{config['lanes']} lanes, not {lanes}; run 'nmflow verilog --lanes "
                          f"{lanes}' or leave lanes out")
    if pe is not None and pe != config["pe"]:
        raise NmflowError(f"pe must match the Verilog: {str(path)!r} was generated with pe "
                          f"{config['pe']}, not {pe}; run 'nmflow verilog --pe {pe}' or leave "
                          f"pe out")
    return EngineVerilog(path, config, text, actual)


def engine_read_function(config):
    """The golden read function of the engine an ``engine.json`` describes: the injector's twin
    if it records an error injection, else ``None`` (the ideal read)."""
    if config.get("errors") is None:
        return None
    from ..golden.injector import ErrorInjection, InjectedRead
    return InjectedRead(ErrorInjection.from_dict(config["errors"]), config["lanes"])
