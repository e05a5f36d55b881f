"""The nmflow command line: every step on its own, end to end on digits, and bad input."""

import hashlib
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from nmflow.errors import NmflowError
from nmflow.golden import hwmodel
from nmflow.golden.synthetic import random_model
from nmflow.scripts.cli import main

from helpers import error_line

pytestmark = pytest.mark.slow       # the command line runs whole flow steps (training, simulation, builds)


def nmflow(*args, env=None):
    return subprocess.run([sys.executable, "-m", "nmflow.scripts.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=1800,
                          env=None if env is None else {**os.environ, **env})


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The flow step by step, as a user runs it, into one run folder. The simulation of the
    whole digits test set is under Verilator (14 s here, Icarus 46 s; the engine's testbenches
    run on Icarus in test_sim_cocotb)."""
    run = tmp_path_factory.mktemp("run")
    for step in (["train"], ["export"], ["verilog"], ["sim"], ["compare"],
                 ["build", "--board", "icebreaker"]):
        result = nmflow(*step, "--run", run, env={"SIM": "verilator"})
        assert result.returncode == 0, f"nmflow {step[0]} failed:\n{result.stderr[-3000:]}"
    return run


def test_golden_targets(run):
    golden = json.loads((run / "golden.json").read_text())
    assert golden["test_images"] == 360
    assert golden["float_accuracy"] >= 0.965 and golden["int_accuracy"] >= 0.965
    assert abs(golden["int_accuracy"] - golden["float_accuracy"]) <= 0.003
    assert golden["agreement"] >= 0.995


def test_every_test_image_matches_in_rtl(run):
    compare = json.loads((run / "compare.json").read_text())
    assert compare["images"] == 360
    assert compare["mismatches"] == 0 and compare["mismatch_list"] == []
    # classes + 10 scores + 256 hidden activations per image were all compared
    assert compare["outputs_checked"] == 360 * (1 + 10 + 128 + 128)
    golden = json.loads((run / "golden.json").read_text())
    assert compare["accuracy"] == golden["int_accuracy"]
    engine = json.loads((run / "rtl" / "engine.json").read_text())
    assert compare["cycles_per_inference"] == engine["cycles_per_inference"]
    # what was compared was simulated from the run's own Verilog
    summary = json.loads((run / "sim" / "summary.json").read_text())
    assert summary["verilog_sha256"] == compare["verilog_sha256"] == engine["verilog_sha256"]
    assert compare["cycles_per_inference"] <= 1.10 * engine["ideal_cycles_per_inference"]
    # the later images, offered while the engine computed, came one every interval_cycles
    assert compare["cycles_back_to_back"] == engine["cycles_back_to_back"]
    assert compare["interval_cycles"] == engine["interval_cycles"]
    assert compare["interval_cycles"] <= 1.03 * engine["ideal_cycles_per_inference"]


def test_every_test_image_matches_with_read_errors_injected(run):
    # The engine with the read-error injector at the rates of the thesis's 1 us programming
    # condition (Table 4.2; type 1 at 1e-3 so that some sign flips are made): every output of
    # every digits test image equals the golden model run with the injector's twin. Under
    # Verilator (Icarus took 390 s; the injector's testbenches run on Icarus in test_injector).
    rtl, sim = run / "rtl_errors", run / "sim_errors"
    for step in (["verilog", "--errors", "0.001,0.01,0.185", "--error-seed", "2021",
                  "--out", rtl],
                 ["sim", "--rtl", rtl, "--out", sim],
                 ["compare", "--rtl", rtl, "--sim", sim, "--out", run / "compare_errors.json"]):
        result = nmflow(*step, "--run", run, env={"SIM": "verilator"})
        assert result.returncode == 0, f"nmflow {step[0]} failed:\n{result.stderr[-3000:]}"
    compare = json.loads((run / "compare_errors.json").read_text())
    assert compare["images"] == 360 and compare["mismatches"] == 0
    # the errors were made: the RTL's activations differ from those of the clean engine
    with np.load(sim / "rtl_outputs.npz") as errors, \
            np.load(run / "sim" / "rtl_outputs.npz") as clean:
        assert (errors["acts0"] != clean["acts0"]).any()
    clean_accuracy = json.loads((run / "compare.json").read_text())["accuracy"]
    assert compare["accuracy"] >= clean_accuracy - 0.03


def test_bitstream_built(run):
    build = json.loads((run / "icebreaker" / "build.json").read_text())
    bitstream = run / "icebreaker" / "nmflow_top.bin"
    assert build["bitstream"] == str(bitstream)
    assert bitstream.stat().st_size > 100_000          # an iCE40UP5K image is ~104 kB
    assert 0 < build["logic_cells"] <= build["logic_cells_total"] == 5280
    assert build["block_rams"] >= 7 and build["fmax_mhz"] > 12


def test_compare_catches_a_changed_rtl_output(run, tmp_path):
    # Tamper with one RTL output: compare must report exactly that mismatch and exit 2.
    sim = tmp_path / "sim"
    sim.mkdir()
    for name in ("vectors.npz", "summary.json"):
        (sim / name).write_bytes((run / "sim" / name).read_bytes())
    with np.load(run / "sim" / "rtl_outputs.npz") as f:
        outputs = {name: f[name] for name in f.files}
    outputs["acts1"][17, 3] = -outputs["acts1"][17, 3] or 1
    np.savez(sim / "rtl_outputs.npz", **outputs)
    result = nmflow("compare", "--run", run, "--sim", sim, "--out", tmp_path / "c.json")
    assert result.returncode == 2
    assert result.stderr.strip() == "nmflow: error: 1 RTL outputs differ from the golden model"
    listed = json.loads((tmp_path / "c.json").read_text())["mismatch_list"]
    assert [(m["what"], m["image"], m["index"]) for m in listed] == [
        ("layer 1 activation", 17, [3])]


def tampered_sim(run, tmp_path, change):
    """A copy of the run's sim folder with ``change(folder)`` applied to it."""
    sim = tmp_path / "sim"
    sim.mkdir()
    for name in ("vectors.npz", "summary.json", "rtl_outputs.npz", "labels.npy"):
        (sim / name).write_bytes((run / "sim" / name).read_bytes())
    change(sim)
    return sim


def drop_array(name):
    def change(sim):
        with np.load(sim / "rtl_outputs.npz") as f:
            outputs = {key: f[key] for key in f.files if key != name}
        np.savez(sim / "rtl_outputs.npz", **outputs)
    return change


def truncate(name):
    def change(sim):
        data = (sim / name).read_bytes()
        (sim / name).write_bytes(data[:len(data) // 2])
    return change


def write(name, data):
    return lambda sim: (sim / name).write_bytes(data)


@pytest.mark.parametrize("change, message", [
    (truncate("rtl_outputs.npz"), lambda sim: f"simulation outputs {str(sim / 'rtl_outputs.npz')!r} "
                                              f"is unreadable (truncated or not an .npz file: "),
    (drop_array("acts1"), lambda sim: f"simulation outputs {str(sim / 'rtl_outputs.npz')!r} must "
                                      f"hold the arrays 'classes', 'scores', 'acts0', 'acts1'; "
                                      f"'acts1' is missing"),
    (write("vectors.npz", b"garbage, not a zip archive at all" * 10),
     lambda sim: f"simulation vectors {str(sim / 'vectors.npz')!r} is unreadable (truncated or "
                 f"not an .npz file: "),
    (write("vectors.npz", b"x = [1, 2, 3]\n"),
     lambda sim: f"simulation vectors {str(sim / 'vectors.npz')!r} is unreadable (truncated or "
                 f"not an .npz file: not a NumPy .npz archive)"),
    (lambda sim: np.save(sim / "labels.npy", np.zeros(361, dtype=np.int64)),
     lambda sim: f"simulation labels {str(sim / 'labels.npy')!r} must hold one label per vector "
                 f"(360), not shape [361]"),
], ids=["truncated outputs", "missing array", "garbage vectors", "text as npz", "labels too long"])
def test_compare_refuses_damaged_simulation_files(run, tmp_path, change, message):
    sim = tampered_sim(run, tmp_path, change)
    result = nmflow("compare", "--run", run, "--sim", sim, "--out", tmp_path / "c.json")
    assert result.returncode == 2, result.stderr[-2000:]
    line = result.stderr.strip()
    assert "\n" not in line and "Traceback" not in line
    assert line.startswith("nmflow: error: " + message(sim)), line
    assert not (tmp_path / "c.json").exists()


def test_missing_checkpoint(capsys, tmp_path):
    line = error_line(capsys, ["export", "--run", str(tmp_path)])
    assert re.fullmatch(r"nmflow: error: .*model\.pt.*", line)


def test_tampered_model_refused(capsys, tmp_path):
    model = random_model([8, 6, 3], seed=1)
    npz, _ = hwmodel.save(model, tmp_path / "hw")
    data = bytearray(npz.read_bytes())
    data[len(data) // 2] ^= 0xFF
    npz.write_bytes(bytes(data))
    line = error_line(capsys, ["verilog", "--run", str(tmp_path), "--model", str(tmp_path / "hw")])
    assert line.startswith("nmflow: error: hardware model ")


def test_bad_lanes_refused(capsys, tmp_path):
    hwmodel.save(random_model([8, 6, 3], seed=1), tmp_path / "hwmodel")
    line = error_line(capsys, ["verilog", "--run", str(tmp_path), "--lanes", "48"])
    assert line == "nmflow: error: lanes must be a power of two between 1 and 1024, not 48"


def test_design_too_big_for_the_board_refused(capsys, tmp_path):
    # 64-512-512-10 ternary at 16 lanes: 4*512 + 32*512 + 32*10 = 18752 rows of 32 bits; in
    # 256x16 blocks that is 2 blocks wide and ceil(18752 / 256) = 74 deep: 148 blocks for the
    # weights alone, of the device's 30.
    hwmodel.save(random_model([64, 512, 512, 10], input_bits=5, seed=2), tmp_path / "hwmodel")
    line = error_line(capsys, ["build", "--run", str(tmp_path), "--board", "icebreaker",
                               "--memory", "block"])
    match = re.fullmatch(r"nmflow: error: design does not fit icebreaker \(iCE40UP5K\): the engine "
                         r"needs (\d+) block RAMs \(ICESTORM_RAM\) with its buffers in logic, "
                         r"148 of them for the weights "
                         r"\(18752 rows of 32 bits\); the device has 30", line)
    assert match and int(match.group(1)) > 148, line
    assert not (tmp_path / "icebreaker").exists()
    # 64-1024-1024-10: 70,272 rows, in neither the block RAMs nor 2 x 5 SPRAMs (auto tries both)
    hwmodel.save(random_model([64, 1024, 1024, 10], input_bits=5, seed=2), tmp_path / "hwmodel")
    line = error_line(capsys, ["build", "--run", str(tmp_path), "--board", "icebreaker"])
    assert re.fullmatch(r"nmflow: error: design does not fit icebreaker \(iCE40UP5K\): the engine "
                        r"needs \d+ block RAMs \(ICESTORM_RAM\) with its buffers in logic, \d+ of "
                        r"them for the weights \(70272 rows of 32 bits\); the device has 30; nor "
                        r"in SPRAM: the weights \(70272 rows of 32 bits\) need 10 SPRAMs of 16K x "
                        r"16, the device has 4", line), line
    assert not (tmp_path / "icebreaker").exists()


def test_block_ram_estimate_matches_nextpnr(run):
    # The pre-synthesis estimate counts what nextpnr placed for the demo engine.
    from nmflow.boards.build import get_board
    from nmflow.flow import fit_memories
    build = json.loads((run / "icebreaker" / "build.json").read_text())
    # the demo board keeps its batch memory (and so the link's input buffer) in SPRAM
    assert build["batch_memory"] == "spram"
    needed, buffers = fit_memories(hwmodel.load(run / "hwmodel"), 16, get_board("icebreaker"),
                                   link_buffer=False)
    assert needed["weights"] == 2 * 7            # 1616 rows of 32 bits in 256x16 blocks
    assert buffers == {"inputs": "block", "activations": "block"}
    assert sum(needed.values()) == build["block_rams"]
    assert build["buffers"] == buffers and build["block_rams_estimated"] == needed


def test_wider_engines_move_their_buffers_to_logic():
    # The demo TNN 64-128-128-10 (5-bit inputs) on the iCE40UP5K's 30 block RAMs of 256 x 16.
    # 32 lanes: weights 808 x 64 (16), inputs 2 x 160 (10), the two activation banks in one
    # memory 8 x 64 (4), thresholds 256 x 24 (2), link buffer 64 x 5 (1): 33. Moving the inputs
    # (320 bits) leaves 23. 64 lanes: weights 404 x 128 (16), inputs 1 x 320 (20), activations
    # 4 x 128 (8): with the inputs moved, 27.
    from nmflow.boards.build import get_board
    from nmflow.flow import fit_memories
    model = random_model([64, 128, 128, 10], input_bits=5, weight_kind="ternary", seed=3)
    ice = get_board("icebreaker")
    needed, buffers = fit_memories(model, 32, ice)
    assert buffers == {"inputs": "logic", "activations": "block"}
    assert sum(needed.values()) == 23 and "inputs" not in needed
    needed, buffers = fit_memories(model, 64, ice)
    assert buffers == {"inputs": "logic", "activations": "block"}
    assert sorted(needed) == ["activations", "host link buffer", "thresholds", "weights"]
    assert sum(needed.values()) == 27
    # 128 lanes in one neuron: the weights alone (266 rows of 256 bits) take 32 block RAMs
    with pytest.raises(NmflowError, match=r"^design does not fit icebreaker \(iCE40UP5K\): the "
                                          r"engine needs 35 block RAMs \(ICESTORM_RAM\) with its "
                                          r"buffers in logic, 32 of them for the weights \(266 "
                                          r"rows of 256 bits\); the device has 30$"):
        fit_memories(model, 128, ice)
    assert fit_memories(model, 64, get_board("ulx3s"))[1] == {"inputs": "block",
                                                              "activations": "block"}
    # the metaplastic unit's tables count, and a link buffer in logic does not
    extra = {"f_meta table 0": (512, 13), "f_meta table 1": (512, 13)}
    needed, buffers = fit_memories(model, 16, ice, extra=extra, link_buffer=False)
    assert buffers == {"inputs": "block", "activations": "block"}
    assert needed["f_meta table 0"] == 2 and "host link buffer" not in needed
    assert sum(needed.values()) == 14 + 5 + 2 + 2 + 4
    needed, buffers = fit_memories(model, 16, ice, extra=dict(extra, other=(1024, 16)))
    assert buffers == {"inputs": "logic", "activations": "block"}      # 32 in block: over
    assert sum(needed.values()) == 14 + 2 + 2 + 4 + 4 + 1


def test_build_retries_with_more_buffers_in_logic(monkeypatch, tmp_path):
    # Yosys may map a memory into more block RAMs than the estimate (a memory written a lane at
    # a time): the build then moves more buffers to logic and tries once more.
    import nmflow.boards.build as boards_build
    from nmflow.boards.build import get_board
    from nmflow.flow import build_step, fit_memories
    model = random_model([64, 128, 128, 10], input_bits=5, weight_kind="ternary", seed=3)
    hwmodel.save(model, tmp_path / "hwmodel")
    ice = get_board("icebreaker")
    assert fit_memories(model, 16, ice, margin=6)[1] == {"inputs": "block",
                                                          "activations": "block"}  # 24 + 6
    assert fit_memories(model, 16, ice, margin=7)[1] == {"inputs": "logic",
                                                          "activations": "block"}
    seen = []

    class Result:
        def to_dict(self):
            return {"block_rams": 21}

    def fake_build(make, board, out, **kwargs):
        top = make(ice.clock_hz)
        seen.append(top)
        if len(seen) == 1:
            raise boards_build.DoesNotFit(
                "design does not fit icebreaker (iCE40UP5K): needs 31 block RAMs "
                "(ICESTORM_RAM), the device has 30", board=ice,
                needs={"ICESTORM_RAM": (31, 30)})
        return Result()
    monkeypatch.setattr(boards_build, "build", fake_build)
    summary = build_step(tmp_path, board="icebreaker", out=tmp_path / "out")
    assert len(seen) == 2
    assert seen[0].buffers == {"inputs": "block", "activations": "block"}
    assert seen[1].buffers == {"inputs": "logic", "activations": "block"}     # what was built
    # estimated 24, Yosys 31: 7 more kept free, so the input buffer (5 blocks) goes to logic
    assert summary["buffers"] == {"inputs": "logic", "activations": "block"}
    assert summary["block_rams_estimated"]["weights"] == 14
    assert "inputs" not in summary["block_rams_estimated"]


def test_bad_inputs_file_refused(capsys, tmp_path):
    hwmodel.save(random_model([8, 6, 3], input_bits=4, seed=1), tmp_path / "hwmodel")
    np.savez(tmp_path / "x.npz", x=np.full((2, 8), 16))
    line = error_line(capsys, ["sim", "--run", str(tmp_path), "--inputs", str(tmp_path / "x.npz")])
    assert line == "nmflow: error: inputs must hold unsigned 4-bit integers (0 to 15), not 16"
    np.savez(tmp_path / "y.npz", y=np.zeros(3))
    line = error_line(capsys, ["sim", "--run", str(tmp_path), "--inputs", str(tmp_path / "y.npz")])
    assert line == (f"nmflow: error: inputs file {str(tmp_path / 'y.npz')!r} must hold the arrays "
                    f"'x'; 'x' is missing")


@pytest.fixture
def small_rtl(tmp_path):
    """A run folder with a small model, its Verilog (4 lanes) and three input vectors."""
    model = random_model([8, 6, 3], input_bits=4, seed=1)
    hwmodel.save(model, tmp_path / "hwmodel")
    assert main(["verilog", "--run", str(tmp_path), "--lanes", "4"]) == 0
    np.savez(tmp_path / "x.npz", x=np.random.default_rng(0).integers(0, 16, size=(3, 8)))
    return tmp_path


def test_sim_refuses_verilog_without_its_configuration(capsys, small_rtl):
    # engine.v without engine.json: a hand-edited or foreign file whose configuration is unknown
    # is never simulated, and never overwritten.
    rtl = small_rtl / "rtl"
    text = (rtl / "engine.v").read_bytes()
    (rtl / "engine.json").unlink()
    capsys.readouterr()
    line = error_line(capsys, ["sim", "--run", str(small_rtl), "--inputs",
                               str(small_rtl / "x.npz")])
    assert re.fullmatch(rf"nmflow: error: '{re.escape(str(rtl))}/engine\.json' does not exist, so "
                        rf"the configuration of '{re.escape(str(rtl))}/engine\.v' is unknown: run "
                        rf"'nmflow verilog' to generate both, or restore engine\.json", line), line
    assert (rtl / "engine.v").read_bytes() == text
    (rtl / "engine.v").unlink()
    assert main(["verilog", "--run", str(small_rtl), "--lanes", "4"]) == 0
    (rtl / "engine.v").unlink()
    capsys.readouterr()
    line = error_line(capsys, ["sim", "--run", str(small_rtl), "--inputs",
                               str(small_rtl / "x.npz")])
    assert re.fullmatch(rf"nmflow: error: Verilog '{re.escape(str(rtl))}/engine\.v' does not "
                        rf"exist: run 'nmflow verilog'", line), line


def test_sim_refuses_edited_verilog(capsys, small_rtl):
    rtl = small_rtl / "rtl"
    recorded = json.loads((rtl / "engine.json").read_text())["verilog_sha256"]
    with open(rtl / "engine.v", "a") as f:
        f.write("// edited by hand\n")
    actual = hashlib.sha256((rtl / "engine.v").read_bytes()).hexdigest()
    capsys.readouterr()
    line = error_line(capsys, ["sim", "--run", str(small_rtl), "--inputs",
                               str(small_rtl / "x.npz")])
    assert re.fullmatch(rf"nmflow: error: '{re.escape(str(rtl))}/engine\.v' is not the Verilog "
                        rf"engine\.json describes \(its sha256 is {actual[:16]}\.\.\., "
                        rf"engine\.json records {recorded[:16]}\.\.\.\): run 'nmflow verilog', "
                        rf"or record the new verilog_sha256 in engine\.json if you edited "
                        rf"engine\.v on purpose", line), line
    assert not (small_rtl / "sim").exists()


def test_sim_refuses_other_lanes(capsys, small_rtl):
    capsys.readouterr()
    line = error_line(capsys, ["sim", "--run", str(small_rtl), "--lanes", "8", "--inputs",
                               str(small_rtl / "x.npz")])
    rtl = re.escape(str(small_rtl / "rtl"))
    assert re.fullmatch(rf"nmflow: error: lanes must match the Verilog: '{rtl}/engine\.v' was "
                        rf"generated with 4 lanes, not 8; run 'nmflow verilog --lanes 8' or leave "
                        rf"lanes out", line), line


def test_compare_checks_the_verilog_simulated(capsys, small_rtl):
    # sim records the checksum of the Verilog it ran; compare refuses outputs of other Verilog.
    assert main(["sim", "--run", str(small_rtl), "--lanes", "4", "--inputs",
                 str(small_rtl / "x.npz")]) == 0
    engine = json.loads((small_rtl / "rtl" / "engine.json").read_text())
    summary = json.loads((small_rtl / "sim" / "summary.json").read_text())
    assert summary["verilog_sha256"] == engine["verilog_sha256"] == hashlib.sha256(
        (small_rtl / "rtl" / "engine.v").read_bytes()).hexdigest()
    assert main(["compare", "--run", str(small_rtl)]) == 0
    assert main(["verilog", "--run", str(small_rtl), "--lanes", "2"]) == 0
    other = json.loads((small_rtl / "rtl" / "engine.json").read_text())["verilog_sha256"]
    capsys.readouterr()
    line = error_line(capsys, ["compare", "--run", str(small_rtl)])
    sim, rtl = (re.escape(str(small_rtl / name)) for name in ("sim", "rtl"))
    assert re.fullmatch(rf"nmflow: error: the simulation in '{sim}' ran other Verilog than "
                        rf"'{rtl}/engine\.v' \(sha256 {summary['verilog_sha256'][:16]}\.\.\., "
                        rf"the file has {other[:16]}\.\.\.\): run 'nmflow sim' again", line), line
    (small_rtl / "sim" / "summary.json").unlink()
    line = error_line(capsys, ["compare", "--run", str(small_rtl)])
    assert re.fullmatch(rf"nmflow: error: simulation summary '{sim}/summary\.json' does not "
                        rf"exist: run 'nmflow sim'", line), line


def test_compare_without_simulation(capsys, tmp_path):
    hwmodel.save(random_model([8, 6, 3], seed=1), tmp_path / "hwmodel")
    line = error_line(capsys, ["compare", "--run", str(tmp_path)])
    assert re.fullmatch(r"nmflow: error: simulation output '.*' does not exist: run 'nmflow sim'",
                        line)


def test_idx_needs_files(capsys, tmp_path):
    line = error_line(capsys, ["train", "--run", str(tmp_path), "--dataset", "idx"])
    assert line == ("nmflow: error: --dataset idx needs --images and --labels (MNIST-format IDX "
                    "files)")


@pytest.mark.parametrize("argv, message", [
    (["--dataset", "cifar10"], "--dataset cifar10 needs --folder (the folder of CIFAR-10's binary "
                               "batches, data_batch_1.bin ...)"),
    (["--folder", "x"], "--folder goes with --dataset cifar10, not digits"),
    (["--dataset", "cifar10", "--folder", "x", "--images", "y"],
     "--images and --labels go with --dataset idx, not cifar10"),
])
def test_cifar10_options_are_checked(capsys, tmp_path, argv, message):
    assert error_line(capsys, ["train", "--run", str(tmp_path), *argv]) == f"nmflow: error: {message}"


def test_cifar10_folder_is_checked(capsys, tmp_path):
    line = error_line(capsys, ["train", "--run", str(tmp_path / "run"), "--dataset", "cifar10",
                               "--folder", str(tmp_path)])
    assert line == (f"nmflow: error: CIFAR-10 folder {str(tmp_path)!r} must hold data_batch_1.bin "
                    f"... data_batch_5.bin (at least one), not none of them")


def test_argument_errors_exit_2_with_one_line():
    result = nmflow("train", "--epochs", "0")
    assert result.returncode == 2
    assert result.stderr == ("nmflow: error: train: --epochs must be an integer from 1 to 10000, "
                             "not '0' (see nmflow train --help)\n")


@pytest.mark.parametrize("command", ["train", "export", "verilog", "sim", "compare", "build",
                                     "program", "host", "demo", "bench"])
def test_help(command):
    result = nmflow(command, "--help")
    assert result.returncode == 0 and f"usage: nmflow {command}" in result.stdout


def test_flow_from_idx_files_a_user_brings(tmp_path):
    # MNIST-format files written here (gzipped images, raw labels): 8-bit inputs through the
    # whole flow, the RTL checked against the golden model on the first test vectors.
    import gzip
    import struct
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(10, dtype=np.uint8), 30)
    images = rng.integers(0, 40, size=(300, 6, 6), dtype=np.uint8)
    for digit in range(10):                       # a learnable pattern per class
        images[labels == digit, digit // 6, digit % 6] = 255
    with gzip.open(tmp_path / "images.gz", "wb") as f:
        f.write(struct.pack(">IIII", 0x803, 300, 6, 6) + images.tobytes())
    (tmp_path / "labels").write_bytes(struct.pack(">II", 0x801, 300) + labels.tobytes())
    run = tmp_path / "run"
    steps = [["train", "--dataset", "idx", "--images", tmp_path / "images.gz", "--labels",
              tmp_path / "labels", "--hidden", "32,16", "--epochs", "20"],
             ["export"], ["verilog", "--lanes", "8"], ["sim", "--limit", "12"], ["compare"]]
    for step in steps:
        result = nmflow(*step, "--run", run)
        assert result.returncode == 0, f"nmflow {step[0]} failed:\n{result.stderr[-3000:]}"
    model = hwmodel.load(run / "hwmodel")
    assert model.input_bits == 8 and model.sizes == [36, 32, 16, 10]
    compare = json.loads((run / "compare.json").read_text())
    assert compare["images"] == 12 and compare["mismatches"] == 0
    golden = json.loads((run / "golden.json").read_text())
    assert golden["test_images"] == 60 and golden["float_accuracy"] > 0.5


def test_flow_from_cifar10_batches_a_user_brings(tmp_path):
    # CIFAR-10's binary format written here (two training batches and a test batch; a bright
    # 3 x 3 patch per class in the green plane): a dense TNN on the 3,072 pixels, through the
    # RTL.
    rng = np.random.default_rng(1)
    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    for name, count in (("data_batch_1.bin", 200), ("data_batch_2.bin", 200),
                        ("test_batch.bin", 40)):
        labels = np.arange(count) % 10
        images = rng.integers(0, 60, size=(count, 3, 32, 32), dtype=np.uint8)
        for k, label in enumerate(labels):
            images[k, 1, 3 * label:3 * label + 3, 3 * label:3 * label + 3] = 255
        (folder / name).write_bytes(b"".join(bytes([int(label)]) + image.tobytes()
                                             for label, image in zip(labels, images)))
    run = tmp_path / "run"
    steps = [["train", "--dataset", "cifar10", "--folder", folder, "--hidden", "32",
              "--epochs", "15"],
             ["export"], ["verilog", "--lanes", "64"], ["sim", "--limit", "4"], ["compare"]]
    for step in steps:
        result = nmflow(*step, "--run", run)
        assert result.returncode == 0, f"nmflow {step[0]} failed:\n{result.stderr[-3000:]}"
    model = hwmodel.load(run / "hwmodel")
    assert model.input_bits == 8 and model.sizes == [3072, 32, 10]
    golden = json.loads((run / "golden.json").read_text())
    assert golden["test_images"] == 40 and golden["float_accuracy"] > 0.5
    compare = json.loads((run / "compare.json").read_text())
    assert compare["images"] == 4 and compare["mismatches"] == 0


def test_bnn_engine_in_rtl(tmp_path):
    # The binary network (binary weights, sign activations) through the RTL as well.
    run = tmp_path / "bnn"
    for step in (["train", "--kind", "bnn"], ["export"], ["sim", "--limit", "40"], ["compare"]):
        result = nmflow(*step, "--run", run)
        assert result.returncode == 0, f"nmflow {step[0]} failed:\n{result.stderr[-3000:]}"
    golden = json.loads((run / "golden.json").read_text())
    assert golden["weight_kind"] == "binary" and golden["int_accuracy"] >= 0.95
    assert golden["agreement"] >= 0.995
    compare = json.loads((run / "compare.json").read_text())
    assert compare["images"] == 40 and compare["mismatches"] == 0
    assert np.isin(hwmodel.load(run / "hwmodel").layers[1].weights, [-1, 1]).all()


def test_host_step_against_the_simulated_board(capsys, tmp_path):
    # The path a user takes with a real board: `nmflow host --port ...` sends INFER frames over
    # the UART (here the board's gateware in simulation behind a loopback socket) and compares
    # the class and every score with the golden model.
    from nmflow.sim.uart_bridge import simulated_board
    model = random_model([12, 10, 4], input_bits=4, weight_kind="ternary", seed=21)
    hwmodel.save(model, tmp_path / "hwmodel")
    x = np.random.default_rng(1).integers(0, 16, size=(3, 12))
    np.savez(tmp_path / "x.npz", x=x)
    with simulated_board(model, lanes=4) as url:
        assert main(["host", "--run", str(tmp_path), "--port", url,
                     "--inputs", str(tmp_path / "x.npz"), "--timeout", "30"]) == 0
    board = json.loads((tmp_path / "board.json").read_text())
    assert board["images"] == 3 and board["mismatches"] == 0
    other = random_model([12, 10, 5], input_bits=4, seed=22)      # five classes, not four
    hwmodel.save(other, tmp_path / "other")
    with simulated_board(model, lanes=4) as url:
        line = error_line(capsys, ["host", "--run", str(tmp_path), "--port", url, "--model",
                                   str(tmp_path / "other"), "--inputs", str(tmp_path / "x.npz"),
                                   "--timeout", "30"])
    assert line == (f"nmflow: error: the board at {url} has 4 classes, the hardware model 5: "
                    f"build and load the bitstream of this model")


def test_host_step_without_a_board(capsys, tmp_path):
    hwmodel.save(random_model([12, 10, 4], input_bits=4, seed=21), tmp_path / "hwmodel")
    np.savez(tmp_path / "x.npz", x=np.zeros((1, 12), dtype=int))
    line = error_line(capsys, ["host", "--run", str(tmp_path), "--port", "/dev/nonexistent-tty",
                               "--inputs", str(tmp_path / "x.npz")])
    assert line.startswith("nmflow: error: ") and "/dev/nonexistent-tty" in line


def test_bench_writes_its_figures(tmp_path):
    # The benchmark's JSON holds every figure it promises, consistent with each other (the
    # figures themselves are measured by `nmflow bench`, not asserted here).
    out = tmp_path / "bench.json"
    # the MNIST benchmark's section, written first, stays
    out.write_text(json.dumps({"mnist_spram": {"fits": True}, "boards": {"old": {}}}))
    # a small folding (the board's own is a long place and route): 8 lanes, two neurons a
    # cycle, a bit-serial first layer (the injector's second build must fit too: at 16 lanes
    # its place and route alone takes four minutes here); built at the board's clock, one
    # place and route each (the automatic clock has tests of its own)
    result = nmflow("bench", "--run", tmp_path / "bench", "--images", "2", "--sim-images", "3",
                    "--boards", "icebreaker", "--lanes", "8", "--pe", "2",
                    "--first-layer-bits", "1", "--clock", "board", "--out", out)
    assert result.returncode == 0, result.stderr[-3000:]
    bench = json.loads(out.read_text())
    assert bench["mnist_spram"] == {"fits": True} and list(bench["boards"]) == ["icebreaker"]
    board = bench["boards"]["icebreaker"]
    simd, pe = board["simd"], board["pe"]
    assert (simd, pe, board["first_layer_bits"]) == (4, 2, 1)
    assert (board["lanes"], pe, board["first_layer_bits"]) == tuple(
        bench["folding"]["icebreaker"].values())
    passes = -(-5 // board["first_layer_bits"])             # digits' pixels have 5 bits
    assert simd * pe == board["lanes"]

    def ceil(a, b):
        return -(-a // b)
    # the folding's ideal, from the network's sizes (digits TNN 64-128-128-10)
    assert board["ideal_cycles"] == (ceil(64, simd) * ceil(128, pe) + ceil(128, simd)
                                     * ceil(128, pe) + ceil(128, simd) * ceil(10, pe))
    cycles = bench["cycles"]["icebreaker"]
    assert cycles["ideal_cycles"] == board["ideal_cycles"]
    assert board["issue_cycles"] == board["ideal_cycles"] + (passes - 1) * ceil(64, simd) * ceil(
        128, pe)
    assert cycles["measured_latency_cycles"] == cycles["latency_cycles"]
    assert cycles["latency_cycles"] == sum(cycles["breakdown"].values()) + 1
    assert board["memory_bound"]["bits_per_cycle"] == 30 * 16
    # back to back, the next inference's inputs load while the current one computes, and its
    # first layer runs while the last layer drains: the row reads, the gaps between layers
    # and one cycle to start
    breakdown = cycles["breakdown"]
    assert board["cycles_per_inference"] == (breakdown["row_issue"]
                                             + breakdown["layer_gaps"] + 1)
    assert cycles["measured_interval_cycles"] == board["cycles_per_inference"]
    assert board["ratio_to_ideal"] == round(board["cycles_per_inference"]
                                            / board["ideal_cycles"], 4)
    assert board["images_per_second_at_fmax"] == round(
        board["fmax_mhz"] * 1e6 / board["cycles_per_inference"], 1)
    ops = 64 * 128 + 128 * 128 + 128 * 10
    assert board["synapse_ops_per_cell_cycle"] == round(
        ops / board["cycles_per_inference"] / board["logic_cells"], 4)
    # the board's batch memory: 256 vectors in the free SPRAMs of the iCE40UP5K
    assert (board["batch"], board["batch_memory"], board["sprams"]) == (256, "spram", 3)
    speed = bench["simulation"]
    assert speed["testbench_images"] == 3 and "test_set_seconds" not in speed
    for simulator in ("icarus", "verilator"):
        assert speed["cycles_per_second"][simulator] > 0
        assert 0 < speed["testbench_seconds"][simulator] < speed["wall_seconds"][simulator]
    assert board["run_clock_mhz"] * 1.05 <= board["fmax_mhz"]
    assert board["images_per_second_at_run_clock"] == round(
        board["run_clock_mhz"] * 1e6 / board["cycles_per_inference"], 1)
    # the injector's cost comes from a second build of the same engine with --errors
    injector = board["injector"]
    assert injector["logic_cells_added"] == injector["logic_cells"] - board["logic_cells"] > 0
    assert injector["block_rams"] == board["block_rams"]


def test_bench_sweep_records_each_folding_and_its_limit(tmp_path):
    # One folding that builds and one whose weight rows (512 bits) the iCE40's block RAMs cannot
    # deliver: the sweep records both, the second with what stopped it, and draws the plot.
    out = tmp_path / "sweep.json"
    result = nmflow("bench", "--run", tmp_path / "run", "--boards", "icebreaker", "--sweep",
                    "16x1,256x8d1", "--out", out)
    assert result.returncode == 0, result.stderr[-3000:]
    sweep = json.loads(out.read_text())
    small, wide = sweep["boards"]["icebreaker"]
    assert (small["simd"], small["pe"], small["passes"]) == (16, 1, 1)
    assert small["ideal_cycles"] == 4 * 128 + 8 * 128 + 8 * 10
    assert small["images_per_second_at_run_clock"] == round(
        small["run_clock_mhz"] * 1e6 / small["cycles_per_inference"], 1)
    assert small["limit"] == "none" and 0 < small["logic_cell_fraction"] < 0.85
    assert (wide["simd"], wide["pe"], wide["passes"]) == (32, 8, 5)
    assert wide["refused"] == "memory" and wide["limit"] == "memory"
    assert "logic_cells" not in wide and wide["error"].startswith("design does not fit")
    assert out.with_suffix(".png").stat().st_size > 10_000

    # Resumed with the 16x1 point's result gone: that point runs again and takes the build in
    # its folder as it is (no Yosys, no nextpnr); the same rows.
    from nmflow.jobs import _result_file
    (_result_file(tmp_path / "run" / ".sweep_jobs", ("icebreaker", 16, 1, None))).unlink()
    again = tmp_path / "again.json"
    result = nmflow("bench", "--run", tmp_path / "run", "--boards", "icebreaker", "--sweep",
                    "16x1,256x8d1", "--out", again, "--resume")
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(again.read_text()) == sweep
    build = json.loads((tmp_path / "run" / "sweep_icebreaker_16x1d5" / "build.json").read_text())
    assert build["reused"] is True


def test_an_interrupted_sweep_keeps_the_points_it_finished(tmp_path):
    # The first point (refused: its rows are wider than the block RAMs give) finishes, then the
    # sweep is interrupted; resumed, it runs only the other point.
    from nmflow.scripts.bench import run_sweep
    points = ((256, 8, 1), (512, 8, None))

    def stop(what, done, total, note):
        if done == 1:
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        run_sweep(tmp_path / "run", boards="icebreaker", points=points, progress=stop)
    assert not (tmp_path / "run" / "sweep.json").exists()
    assert len(list((tmp_path / "run" / ".sweep_jobs").glob("*.json"))) == 1
    seen = []
    result = run_sweep(tmp_path / "run", boards="icebreaker", points=points, resume=True,
                       progress=lambda what, done, total, note: seen.append(done))
    assert seen == [1, 2]                      # one point found done, one run
    first, second = result["boards"]["icebreaker"]
    assert first["refused"] == second["refused"] == "memory"
    assert first["ideal_cycles"] == 2 * 16 + 4 * 16 + 4 * 2


def test_bench_sweep_refuses_a_bad_point(tmp_path):
    result = nmflow("bench", "--run", tmp_path / "run", "--sweep", "64x4,16x8")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "nmflow: error: bench: --sweep pe must be a power of two with pe * pe <= lanes = 16 "
        "(each of the pe neurons over simd = lanes / pe >= pe lanes), not 8 (see nmflow bench "
        "--help)")


def test_weights_that_fit_no_block_ram_go_to_spram():
    # The MNIST-size TNN 784-256-256-10 (268,800 pair codes) over 32 lanes: 8528 rows of 64 bits,
    # 4 x 34 = 136 block RAMs of 256 x 16 (the UP5K has 30) or 4 SPRAMs of 16K x 16 side by side.
    from nmflow.boards.build import get_board
    from nmflow.flow import choose_memory, fit_memories
    model = random_model([784, 256, 256, 10], input_bits=8, weight_kind="ternary", seed=2)
    ice, ecp5 = get_board("icebreaker"), get_board("ulx3s")
    assert ice.sprams == 4 and ecp5.sprams == 0
    with pytest.raises(NmflowError, match=r"^design does not fit icebreaker \(iCE40UP5K\): the "
                                          r"engine needs \d+ block RAMs \(ICESTORM_RAM\) with its "
                                          r"buffers in logic, 136 of them for the weights \(8528 "
                                          r"rows of 64 bits\); the device has 30$"):
        fit_memories(model, 32, ice)
    kind, needed, buffers = choose_memory(model, 32, ice)
    assert kind == "spram" and "weights" not in needed
    assert sum(needed.values()) <= 30
    # 64 lanes: rows of 128 bits need 8 SPRAMs side by side
    with pytest.raises(NmflowError, match=r"; the device has 30; nor in SPRAM: the weights "
                                          r"\(4392 rows of 128 bits\) need 8 SPRAMs of 16K x 16, "
                                          r"the device has 4$"):
        choose_memory(model, 64, ice)
    with pytest.raises(NmflowError, match=r"^design does not fit icebreaker \(iCE40UP5K\): the "
                                          r"weights \(4392 rows of 128 bits\) need 8 SPRAMs of "
                                          r"16K x 16, the device has 4$"):
        choose_memory(model, 64, ice, memory="spram")
    with pytest.raises(NmflowError, match=r"^memory 'spram' needs a device with SPRAM: ulx3s "
                                          r"\(LFE5U-85F\) has none$"):
        choose_memory(model, 32, ecp5, memory="spram")
    # the digits TNN fits block RAM: auto keeps it there; spram when asked
    small = random_model([64, 128, 128, 10], input_bits=5, weight_kind="ternary", seed=3)
    assert choose_memory(small, 16, ice)[0] == "block"
    kind, needed, _ = choose_memory(small, 16, ice, memory="spram")
    assert kind == "spram" and "weights" not in needed
    with pytest.raises(NmflowError, match=r"^memory must be one of auto, block, spram, not 'x'$"):
        choose_memory(small, 16, ice, memory="x")
    with pytest.raises(NmflowError, match=r"the device has 4 \(the metaplastic unit's hidden "
                                          r"weights take 4\)$"):
        fit_memories(small, 16, ice, memory="spram", unit_sprams=4)


def test_batch_memory_goes_where_it_fits():
    # digits TNN 64-128-128-10: a batch of 256 vectors is 16,384 inputs of 5 bits and 2,560
    # result beats; on the iCE40UP5K it goes to the free SPRAMs, on the ECP5 to block RAM.
    from functools import partial
    from nmflow.boards.build import get_board
    from nmflow.flow import batch_memories, choose_batch, fit_memories
    small = random_model([64, 128, 128, 10], input_bits=5, weight_kind="ternary", seed=3)
    ice, ecp5 = get_board("icebreaker"), get_board("ulx3s")
    assert batch_memories(small, 256) == {"host link buffer": (16384, 5),
                                          "batch results": (2560, small.score_bits + 4 + 1)}
    fit_ice = partial(lambda hw, info, memories: fit_memories(hw, 16, info,
                                                                link_memories=memories),
                      small, ice)
    assert choose_batch(small, ice, "auto", sprams_free=4, fit=fit_ice)[:2] == (256, "spram")
    assert choose_batch(small, ice, 0, sprams_free=4, fit=fit_ice) == (None, None, None)
    # no SPRAM left (the MNIST weights hold them): the block RAMs the engine leaves free
    capacity, kind, (needed, buffers) = choose_batch(small, ice, "auto", sprams_free=0,
                                                     fit=fit_ice)
    assert kind == "block" and capacity < 256 and sum(needed.values()) <= 30
    assert buffers == fit_memories(small, 16, ice)[1]       # the engine's buffers stay put
    capacity, kind, (needed, _) = choose_batch(
        small, ecp5, "auto", sprams_free=0,
        fit=lambda memories: fit_memories(small, 16, ecp5, link_memories=memories))
    assert (capacity, kind) == (256, "block") and needed["host link buffer"] >= 5
    with pytest.raises(NmflowError, match=r"^a batch memory of 1000 vectors does not fit "
                                          r"icebreaker beside the engine: the engine needs \d+ "
                                          r"block RAMs .*; nor in its 0 free SPRAMs \(it needs "
                                          r"\d+\)$"):
        choose_batch(small, ice, 1000, sprams_free=0, fit=fit_ice)
    with pytest.raises(NmflowError, match=r"^batch capacity must be at most 65535 // n_inputs "
                                          r"= 1023 vectors \(a request's payload\), not 2000$"):
        choose_batch(small, ice, 2000, sprams_free=4, fit=fit_ice)


def test_auto_batch_is_dropped_when_its_logic_does_not_fit(tmp_path, monkeypatch):
    # `--batch auto` adds a batch memory where its memory fits; when place and route then finds
    # no room for its logic, the build is made again without it, and build.json says why.
    import nmflow.boards.build as boards_build
    from nmflow.boards.build import DoesNotFit, get_board
    from nmflow.flow import build_step
    hwmodel.save(random_model([64, 128, 128, 10], input_bits=5, weight_kind="ternary", seed=3),
                 tmp_path / "hwmodel")
    seen = []

    class Built:
        def to_dict(self):
            return {"board": "icebreaker"}

    def fake_build(make, board, out, **kwargs):
        top = make(42e6)
        seen.append(None if top.core.batch is None else top.core.batch.capacity)
        if len(seen) == 1:
            raise DoesNotFit("design does not fit icebreaker: 5391 ICESTORM_LC of 5280",
                             board=get_board("icebreaker"), needs={"ICESTORM_LC": (5391, 5280)})
        return Built()

    monkeypatch.setattr(boards_build, "build", fake_build)
    summary = build_step(tmp_path, out=tmp_path / "out")
    assert seen == [256, None]
    assert summary["batch"] is None and summary["batch_memory"] is None
    assert summary["batch_dropped"] == ("batch 256 dropped: design does not fit icebreaker: "
                                        "5391 ICESTORM_LC of 5280")
    # asked for, a batch that does not fit is an error, not dropped
    seen.clear()
    with pytest.raises(DoesNotFit):
        build_step(tmp_path, out=tmp_path / "out", batch=64)
    assert seen == [64]


def test_spram_weights_and_the_metaplastic_unit_refused_together(capsys, tmp_path):
    hwmodel.save(random_model([64, 128, 128, 10], input_bits=5, weight_kind="ternary", seed=3),
                 tmp_path / "hwmodel")
    line = error_line(capsys, ["build", "--run", str(tmp_path), "--metaplastic", "5",
                               "--memory", "spram"])
    assert line == ("nmflow: error: memory 'spram' is taken on icebreaker: the metaplastic unit "
                    "keeps its hidden weights in the SPRAMs (4 of 4); the engine's weights must "
                    "fit block RAM")
    assert not (tmp_path / "icebreaker").exists()


def _write_idx(path, array, magic):
    header = magic.to_bytes(4, "big") + b"".join(n.to_bytes(4, "big") for n in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def test_bench_mnist_section_on_idx_files_the_test_writes(tmp_path):
    # A small network on MNIST-format files written here (the real set is a benchmark): trained,
    # built for the iCEBreaker, simulated under Verilator and compared; the section is merged
    # into an existing bench.json.
    from nmflow.scripts.bench import run_mnist
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(10), 10)
    images = rng.integers(0, 60, (100, 6, 6))
    for c in range(10):
        images[labels == c, c // 6, c % 6] = 250          # one bright pixel per class
    folder = tmp_path / "mnist"
    folder.mkdir()
    _write_idx(folder / "t10k-images-idx3-ubyte", images, 0x00000803)
    _write_idx(folder / "t10k-labels-idx1-ubyte", labels, 0x00000801)
    out = tmp_path / "bench.json"
    out.write_text(json.dumps({"boards": {"kept": True}}))
    result = run_mnist(tmp_path / "run", folder, lanes=8, hidden=(12,), epochs=3, images=6,
                       jobs=2, out=out)
    section = json.loads(out.read_text())["mnist_spram"]
    assert json.loads(out.read_text())["boards"] == {"kept": True}
    assert section == result["mnist_spram"]
    assert section["sizes"] == [36, 12, 10] and section["test_images"] == 20
    assert section["fits"] and section["memory"] == "block"     # small: block RAM holds it
    assert section["mismatches"] == 0 and section["simulated_images"] == 6
    assert section["images_per_second_at_run_clock"] == round(
        section["run_clock_mhz"] * 1e6 / section["cycles_per_inference"], 1)
    assert section["measured_interval_cycles"] == section["cycles_per_inference"]


def test_bench_mnist_refuses_a_folder_without_the_files(capsys, tmp_path):
    line = error_line(capsys, ["bench", "--run", str(tmp_path / "run"), "--mnist",
                               str(tmp_path)])
    assert line == (f"nmflow: error: mnist folder {str(tmp_path)!r} must hold "
                    f"t10k-images-idx3-ubyte[.gz] and t10k-labels-idx1-ubyte[.gz], "
                    f"train-images-idx3-ubyte[.gz] and train-labels-idx1-ubyte[.gz]")
