"""The package's layers: imports only go downwards, and nothing touches a private Amaranth name.

Every module of ``nmflow`` is read with :mod:`ast` (nothing is imported) and each import of an
nmflow module, at the top or inside a function, absolute or relative, is checked against the
layer table below::

    scripts, nmflow.flow        may import anything
    boards                      base, golden, rtl, boards      (never sim)
    sim                         base, golden, rtl, sim
    rtl                         base, golden, rtl
    golden                      base, golden
    base                        base: nmflow.errors, fileio, fixedpoint, jobs, lfsr, limits,
                                protocol (a package), toolchain

The host protocol (:mod:`nmflow.protocol`), the LFSRs (:mod:`nmflow.lfsr`), the toolchain
(:mod:`nmflow.toolchain`) and the one way to run many jobs (:mod:`nmflow.jobs`: the chunked
simulation fans out through it as the flow's sweeps do) are base modules, so the gateware, the
simulation and the boards all share them without reaching up.

Every file of ``nmflow/`` and ``tests/`` is also checked for private Amaranth names: an import of
a module path with a component starting with ``_`` under ``amaranth`` (``amaranth._toolchain``,
``amaranth.hdl._ir``) or of a ``_name`` from an Amaranth module, an attribute starting with ``_``
reached from an Amaranth import (``Shape._cast_plain_enum``), and any name-mangled private
attribute (``x._MustUse__silence``, also as a string given to ``getattr``/``setattr``).
"""

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "nmflow"

#: Modules below every layer: plain Python each layer may import.
BASE = {"nmflow", "nmflow.errors", "nmflow.fileio", "nmflow.fixedpoint", "nmflow.jobs",
        "nmflow.lfsr", "nmflow.limits", "nmflow.toolchain"}
#: Module (or package) -> its layer.
LAYER_OF = {"nmflow.protocol": "base", "nmflow.golden": "golden", "nmflow.rtl": "rtl",
            "nmflow.sim": "sim", "nmflow.boards": "boards", "nmflow.scripts": "scripts",
            "nmflow.flow": "scripts"}
#: Layer -> the layers it may import.
ALLOWED = {
    "base": {"base"},
    "golden": {"base", "golden"},
    "rtl": {"base", "golden", "rtl"},
    "sim": {"base", "golden", "rtl", "sim"},
    "boards": {"base", "golden", "rtl", "boards"},
    "scripts": {"base", "golden", "rtl", "sim", "boards", "scripts"},
}

#: A name-mangled private attribute, ``_Class__name`` (not a dunder).
_MANGLED = re.compile(r"^_[A-Za-z][A-Za-z0-9]*__[A-Za-z0-9_]*[A-Za-z0-9]$")
_ATTRIBUTE_CALLS = {"getattr", "setattr", "hasattr", "delattr"}


def layer(module):
    """The layer of an nmflow module name, or ``None`` if the table does not know it."""
    if module in BASE:
        return "base"
    for prefix, name in LAYER_OF.items():
        if module == prefix or module.startswith(prefix + "."):
            return name
    return None


def module_name(path, root=ROOT):
    """``nmflow/rtl/hostlink.py`` -> ``nmflow.rtl.hostlink``; a package's ``__init__`` -> the
    package."""
    parts = list(Path(path).relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def package_modules(root=ROOT):
    """Every module of the package: name -> path."""
    return {module_name(path, root): path for path in sorted((root / PACKAGE).rglob("*.py"))}


def _source_files():
    files = sorted((ROOT / PACKAGE).rglob("*.py")) + sorted((ROOT / "tests").rglob("*.py"))
    return [path for path in files if "__pycache__" not in path.parts]


def nmflow_imports(tree, module, is_package, known):
    """``(line, imported module)`` for every import of an nmflow module in ``tree``.

    ``module`` is the name of the module the tree comes from; ``known`` the names of all nmflow
    modules, to tell ``from package import submodule`` from ``from module import name``.
    """
    package = module if is_package else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names
                      if alias.name == PACKAGE or alias.name.startswith(PACKAGE + ".")]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - (node.level - 1)])
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module
            if target != PACKAGE and not target.startswith(PACKAGE + "."):
                continue
            for alias in node.names:
                submodule = f"{target}.{alias.name}"
                found.append((node.lineno, submodule if submodule in known else target))
    return sorted(set(found))


def layering_errors(path, source, known, root=ROOT):
    """The upward (or unknown) imports of one nmflow module, one line each."""
    module = module_name(path, root)
    relative = Path(path).relative_to(root)
    own = layer(module)
    if own is None:
        return [f"{relative}: module {module} has no layer: add it to the table of "
                f"tests/test_layering.py"]
    tree = ast.parse(source, str(path))
    errors = []
    for line, imported in nmflow_imports(tree, module, Path(path).name == "__init__.py", known):
        if imported not in known:
            errors.append(f"{relative}:{line}: imports {imported}, which does not exist")
            continue
        theirs = layer(imported)
        if theirs not in ALLOWED[own]:
            errors.append(f"{relative}:{line}: {module} ({own}) imports {imported} ({theirs}): "
                          f"{own} may import only {', '.join(sorted(ALLOWED[own]))}")
    return errors


def _is_amaranth(module):
    return module == "amaranth" or module.startswith(("amaranth.", "amaranth_"))


def _private(name):
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def private_amaranth_errors(path, source, root=ROOT):
    """Every use of a private Amaranth name in one file, one line each."""
    relative = Path(path).relative_to(root)
    tree = ast.parse(source, str(path))
    amaranth_names = set()          # local names bound to Amaranth modules or objects
    errors = []

    def error(node, what):
        errors.append(f"{relative}:{node.lineno}: {what}: a private Amaranth name")

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if _is_amaranth(alias.name):
                    if any(_private(part) for part in alias.name.split(".")):
                        error(node, f"import {alias.name}")
                    amaranth_names.add(alias.asname or alias.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom) and not node.level and _is_amaranth(node.module):
            if any(_private(part) for part in node.module.split(".")):
                error(node, f"from {node.module} import ...")
            for alias in node.names:
                if _private(alias.name):
                    error(node, f"from {node.module} import {alias.name}")
                amaranth_names.add(alias.asname or alias.name)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            if _MANGLED.match(node.attr):
                error(node, f"attribute {node.attr}")
                continue
            chain, root_node = [node.attr], node.value
            while isinstance(root_node, ast.Attribute):
                chain.append(root_node.attr)
                root_node = root_node.value
            if (isinstance(root_node, ast.Name) and root_node.id in amaranth_names
                    and _private(node.attr)):
                error(node, f"{root_node.id}.{'.'.join(reversed(chain))}")
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
              and node.func.id in _ATTRIBUTE_CALLS and len(node.args) >= 2
              and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str)
              and _MANGLED.match(node.args[1].value)):
            error(node, f"{node.func.id}(..., {node.args[1].value!r})")
    return sorted(errors, key=lambda text: int(text.split(":")[1]))


# -- the checker itself ------------------------------------------------------------------------

KNOWN = {"nmflow", "nmflow.errors", "nmflow.protocol", "nmflow.rtl", "nmflow.rtl.top",
         "nmflow.rtl.hostlink", "nmflow.sim", "nmflow.sim.runner", "nmflow.boards",
         "nmflow.boards.build", "nmflow.golden", "nmflow.golden.hwmodel"}


def test_checker_resolves_relative_absolute_and_nested_imports():
    source = "\n".join([
        "from .. import protocol",                    # nmflow.protocol (base)
        "from ..golden.hwmodel import HardwareModel",  # golden
        "from . import top",                          # nmflow.rtl.top
        "import nmflow.errors",
        "def f():",
        "    from ..boards import build",             # inside a function: boards, upward
        "    from nmflow.sim.runner import to_verilog",  # upward too
        "from ..boards.toolchain import x",           # a module that does not exist
    ])
    errors = layering_errors(ROOT / "nmflow/rtl/hostlink.py", source, KNOWN)
    assert errors == [
        "nmflow/rtl/hostlink.py:6: nmflow.rtl.hostlink (rtl) imports nmflow.boards.build "
        "(boards): rtl may import only base, golden, rtl",
        "nmflow/rtl/hostlink.py:7: nmflow.rtl.hostlink (rtl) imports nmflow.sim.runner (sim): "
        "rtl may import only base, golden, rtl",
        "nmflow/rtl/hostlink.py:8: imports nmflow.boards.toolchain, which does not exist",
    ]
    assert layering_errors(ROOT / "nmflow/boards/build.py", "from ..sim import runner", KNOWN) == [
        "nmflow/boards/build.py:1: nmflow.boards.build (boards) imports nmflow.sim.runner (sim): "
        "boards may import only base, boards, golden, rtl"]
    assert layering_errors(ROOT / "nmflow/plans.py", "", KNOWN) == [
        "nmflow/plans.py: module nmflow.plans has no layer: add it to the table of "
        "tests/test_layering.py"]


def test_checker_finds_private_amaranth_names():
    source = "\n".join([
        "import amaranth",
        "from amaranth._toolchain.yosys import find_yosys",
        "from amaranth.hdl._ir import PortDirection",
        "from amaranth.hdl import Shape, _ast",
        "x._MustUse__silence = True",
        "Shape._cast_plain_enum(e)",
        "amaranth.hdl._ir",
        "setattr(x, '_MustUse__silence', True)",
        "from amaranth.lib import wiring, enum",     # public: fine
        "self._private = wiring.In(1).__class__",   # our own private attribute: fine
    ])
    errors = private_amaranth_errors(ROOT / "tests/x.py", source)
    assert [e.split(": ", 1)[0] for e in errors] == [
        f"tests/x.py:{n}" for n in (2, 3, 4, 5, 6, 7, 8)]
    assert errors[0] == "tests/x.py:2: from amaranth._toolchain.yosys import ...: a private " \
                        "Amaranth name"


# -- the package ---------------------------------------------------------------------------------

MODULES = package_modules()


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_go_downwards(module):
    path = MODULES[module]
    errors = layering_errors(path, path.read_text(), set(MODULES))
    assert not errors, "upward imports:\n" + "\n".join(errors)


@pytest.mark.parametrize("path", _source_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_private_amaranth_names(path):
    errors = private_amaranth_errors(path, path.read_text())
    assert not errors, "private Amaranth names:\n" + "\n".join(errors)


def test_golden_speaks_no_wire_protocol():
    """The twins of the links live in nmflow.protocol; the golden models compute without bytes."""
    found = []
    for module, path in MODULES.items():
        if layer(module) != "golden":
            continue
        tree = ast.parse(path.read_text())
        found += [f"{module}:{line} imports {name}" for line, name in
                  nmflow_imports(tree, module, path.name == "__init__.py", set(MODULES))
                  if name == "nmflow.protocol" or name.startswith("nmflow.protocol.")]
    assert not found, found
