"""From bitstream to a running board without a board attached: ``nmflow program`` (its
openFPGALoader command lines, its refusals, and the real openFPGALoader's "no cable" turned into
one line), ``--port auto`` over stand-in port lists, and ``nmflow host --check`` against the
simulated board."""

import hashlib
import json
import subprocess
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from nmflow.boards import program as programmer
from nmflow.boards.ports import find_port, port_interface, resolve_port
from nmflow.errors import NmflowError
from nmflow.golden import hwmodel
from nmflow.scripts import cli

from helpers import link_model


def fake_build(folder, board="icebreaker", model=None, bitstream=b"\xff\x00bitstream" * 50):
    """A build folder as ``nmflow build`` leaves it: the bitstream and build.json recording its
    SHA-256 (and the model's checksum)."""
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".bin" if board == "icebreaker" else ".bit"
    (folder / f"nmflow_top{suffix}").write_bytes(bitstream)
    record = {"board": board, "bitstream": str(folder / f"nmflow_top{suffix}"),
              "bitstream_sha256": hashlib.sha256(bitstream).hexdigest(),
              "model_checksum": None if model is None else hwmodel.model_checksum(model)}
    (folder / "build.json").write_text(json.dumps(record))
    return folder


def one_line(capsys, argv):
    assert cli.main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("nmflow: error: "), err
    return err[len("nmflow: error: "):-1]


# -- the command lines ------------------------------------------------------------------------------

def test_loader_command_lines():
    assert programmer.loader_command("icebreaker", "a.bin", loader="L") == [
        "L", "--board", "ice40_generic", "--write-flash", "a.bin"]       # boots from its flash
    assert programmer.loader_command("ulx3s", "a.bit", loader="L") == [
        "L", "--board", "ulx3s", "--write-sram", "a.bit"]
    assert programmer.loader_command("ulx3s", "a.bit", flash=True, loader="L") == [
        "L", "--board", "ulx3s", "--write-flash", "a.bit"]


def test_the_readme_gives_the_udev_rule():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert programmer.UDEV_RULE in readme


def test_the_pinned_loader_is_installed():
    path = Path(programmer.loader_path())
    assert path.is_file() and path.name == "openFPGALoader"
    result = subprocess.run([str(path), "--help"], capture_output=True, text=True, timeout=60)
    assert "--write-flash" in result.stdout, ("openFPGALoader does not run (it needs "
                                              "libusb-1.0-0 and libftdi1-2: run 'make setup')",
                                              result.stderr)


@pytest.mark.parametrize("board, title, ids", [("icebreaker", "iCEBreaker", "0403:6010"),
                                               ("ulx3s", "ULX3S-85F", "0403:6015")])
def test_no_board_on_usb_is_one_line_from_the_real_loader(capsys, tmp_path, board, title, ids):
    fake_build(tmp_path / "run" / board, board)
    line = one_line(capsys, ["program", "--run", tmp_path / "run", "--board", board])
    log = tmp_path / "run" / board / "program.log"
    assert line.startswith(f"no {title} found on USB: plug it in (its FTDI bridge is {ids}) and "
                           f"check with 'lsusb' (openFPGALoader: "), line
    assert line.endswith(f"; see {log})"), line
    assert "unable to open ftdi device" in log.read_text()


@pytest.mark.parametrize("output, start", [
    ("unable to open ftdi device: -8 (inappropriate permissions on device!)",
     "the USB device is not accessible to this user: add the udev rule of the README"),
    ("libusb: error [_get_usbfs_fd] libusb couldn't open USB device: Permission denied",
     "the USB device is not accessible to this user"),
    ("JTAG init failed with: fail to read idcode", "the ULX3S-85F's FPGA did not answer: check"),
    ("Erase flash: Fail", "writing the ULX3S-85F's flash failed"),
    ("something else went wrong: error 42", "openFPGALoader failed: something else went wrong"),
])
def test_loader_failures_say_what_to_do(tmp_path, output, start):
    build = fake_build(tmp_path / "b", "ulx3s")

    def run(argv, **kwargs):
        return SimpleNamespace(returncode=1, stdout="", stderr=output + "\n")

    with pytest.raises(NmflowError) as info:
        programmer.program(build, "ulx3s", run=run)
    assert str(info.value).startswith(start), str(info.value)
    assert "\n" not in str(info.value)


def test_program_runs_the_loader_and_reports(tmp_path):
    build = fake_build(tmp_path / "b", "ulx3s")
    seen = []

    def run(argv, **kwargs):
        seen.append(argv)
        return SimpleNamespace(returncode=0, stdout="Load SRAM: [====] 100.00%\nDone\n",
                               stderr="")

    summary = programmer.program(build, "ulx3s", run=run)
    assert seen[0][1:] == ["--board", "ulx3s", "--write-sram", str(build / "nmflow_top.bit")]
    assert summary["memory"] == "sram" and summary["board"] == "ulx3s"
    assert "Done" in (build / "program.log").read_text()


# -- refusals before anything runs ------------------------------------------------------------------

def never(argv, **kwargs):
    raise AssertionError("the loader must not run")


def test_refusals(capsys, tmp_path):
    model = link_model(seed=1)
    other = link_model(seed=2)
    run = tmp_path / "run"
    hwmodel.save(model, run / "hwmodel")
    assert one_line(capsys, ["program", "--run", run, "--board", "icebreaker"]) == (
        f"no build in {str(run / 'icebreaker')!r} (build.json is missing): run 'nmflow build "
        f"--board icebreaker' first")
    fake_build(run / "icebreaker", "ulx3s", model)
    assert one_line(capsys, ["program", "--run", run, "--board", "icebreaker"]) == (
        f"the bitstream in {str(run / 'icebreaker')!r} was built for 'ulx3s', not 'icebreaker': "
        f"build for icebreaker or program the board it was built for")
    build = fake_build(run / "icebreaker", "icebreaker", other)
    line = one_line(capsys, ["program", "--run", run, "--board", "icebreaker"])
    assert line.startswith(f"the bitstream in {str(build)!r} holds another hardware model "), line
    fake_build(run / "icebreaker", "icebreaker", model)
    (build / "nmflow_top.bin").write_bytes(b"tampered")
    assert one_line(capsys, ["program", "--run", run, "--board", "icebreaker"]) == (
        f"bitstream {str(build / 'nmflow_top.bin')!r} is not the one its build wrote (its SHA-256 "
        f"differs from build.json's): run 'nmflow build' again")
    (build / "nmflow_top.bin").unlink()
    assert one_line(capsys, ["program", "--run", run, "--board", "icebreaker"]) == (
        f"bitstream {str(build / 'nmflow_top.bin')!r} is missing: run 'nmflow build --board "
        f"icebreaker' again")
    record = json.loads((build / "build.json").read_text())
    del record["bitstream_sha256"]
    (build / "nmflow_top.bin").write_bytes(b"x")
    (build / "build.json").write_text(json.dumps(record))
    with pytest.raises(NmflowError, match=r"holds no bitstream checksum \(an older build\)"):
        programmer.program(build, "icebreaker", run=never)
    (build / "build.json").write_text("{half")
    with pytest.raises(NmflowError, match=r"is not valid JSON"):
        programmer.program(build, "icebreaker", run=never)


# -- --port auto ------------------------------------------------------------------------------------

def port(device, vid=None, pid=None, location=None):
    return SimpleNamespace(device=device, vid=vid, pid=pid, location=location)


ICEBREAKER = [port("/dev/ttyUSB0", 0x0403, 0x6010, "1-1.2:1.0"),
              port("/dev/ttyUSB1", 0x0403, 0x6010, "1-1.2:1.1")]
ULX3S = [port("/dev/ttyUSB2", 0x0403, 0x6015, "1-1.3:1.0")]
OTHERS = [port("/dev/ttyS0"), port("/dev/ttyUSB3", 0x0403, 0x6001, "1-4:1.0"),
          port("/dev/ttyACM0", 0x2341, 0x0043, "1-5:1.0")]


def test_port_interface():
    assert port_interface(ICEBREAKER[1]) == 1 and port_interface(ULX3S[0]) == 0
    assert port_interface(port("/dev/ttyS0")) is None
    assert port_interface(port("x", location="1-1:1.x")) is None


def test_port_auto_finds_the_one_board():
    assert find_port(ports=OTHERS + ICEBREAKER) == "/dev/ttyUSB1"      # the UART, interface B
    assert find_port("icebreaker", OTHERS + ICEBREAKER + ULX3S) == "/dev/ttyUSB1"
    assert find_port("ulx3s", ICEBREAKER + ULX3S) == "/dev/ttyUSB2"
    assert find_port(ports=ULX3S + OTHERS) == "/dev/ttyUSB2"
    assert resolve_port("auto", ports=ULX3S) == "/dev/ttyUSB2"
    assert resolve_port("/dev/ttyUSB7", ports=[]) == "/dev/ttyUSB7"


def test_port_auto_refuses_none_or_many():
    with pytest.raises(NmflowError) as info:
        find_port(ports=OTHERS)
    assert str(info.value) == (
        "--port auto found no iCEBreaker or ULX3S-85F UART among the serial ports (found: "
        "/dev/ttyACM0 (2341:0043, interface 0), /dev/ttyS0 (no USB ids), /dev/ttyUSB3 "
        "(0403:6001, interface 0)): plug the board in, or give --port /dev/ttyUSB1")
    with pytest.raises(NmflowError, match=r"^--port auto found no iCEBreaker UART among the "
                                          r"serial ports \(found: none\)"):
        find_port("icebreaker", [])
    with pytest.raises(NmflowError) as info:
        find_port(ports=ICEBREAKER + ULX3S)
    assert str(info.value) == ("--port auto found 2 board UARTs (/dev/ttyUSB1 (iCEBreaker), "
                               "/dev/ttyUSB2 (ULX3S-85F)): give --port with one of them")
    two = ICEBREAKER + [port("/dev/ttyUSB5", 0x0403, 0x6010, "1-2:1.1")]
    with pytest.raises(NmflowError, match=r"^--port auto found 2 board UARTs"):
        find_port("icebreaker", two)


def test_host_port_auto_without_a_board_is_one_line(capsys, tmp_path, monkeypatch):
    from serial.tools import list_ports
    monkeypatch.setattr(list_ports, "comports", lambda: OTHERS)
    hwmodel.save(link_model(seed=1), tmp_path / "hwmodel")
    line = one_line(capsys, ["host", "--run", tmp_path, "--port", "auto", "--check"])
    assert line.startswith("--port auto found no iCEBreaker or ULX3S-85F UART"), line
    line = one_line(capsys, ["eqprop", "host", "--out", tmp_path / "e", "--port", "auto",
                             "--board", "ulx3s"])
    assert line.startswith("--port auto found no ULX3S-85F UART"), line


# -- host --check against the simulated board ------------------------------------------------------

@pytest.mark.slow
def test_host_check_against_the_simulated_board(capsys, tmp_path):
    from nmflow.sim.uart_bridge import simulated_board
    model = link_model(seed=4)
    hwmodel.save(model, tmp_path / "hwmodel")
    np.savez(tmp_path / "x.npz", x=np.random.default_rng(3).integers(0, 16, size=(5, 16)))
    with simulated_board(model, lanes=16, divisor=4) as url:
        code = cli.main(["host", "--run", str(tmp_path), "--port", url, "--inputs",
                         str(tmp_path / "x.npz"), "--check", "--timeout", "30"])
        out = json.loads(capsys.readouterr().out)
        assert code == 0 and out["check"] == "passed" and out["images"] == 1, out
        assert out["info"]["inputs"] == 16
        assert not (tmp_path / "board.json").exists()            # a check writes nothing
        other = link_model(seed=5)                               # another model: a mismatch
        hwmodel.save(other, tmp_path / "other")
        line = one_line(capsys, ["host", "--run", tmp_path, "--port", url, "--model",
                                 tmp_path / "other.json", "--inputs", tmp_path / "x.npz",
                                 "--check", "--timeout", "30"])
        assert line.startswith("the check failed: the board's "), line
