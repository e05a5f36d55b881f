"""Bounded inputs, one-line failures and all-or-nothing outputs, as a hostile user meets them.

Every case of the issue that found them: a full disk (a small tmpfs mounted in a private mount
namespace), unbounded counts and sizes, Verilog that does not compile, invalid JSON, outputs
that are not a set after a kill or a folder where a file goes, argparse's usage blocks, and
options that were silently accepted. Each ends in exactly one line ``nmflow: error: ...``, exit
status 2, and leaves nothing new behind.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from nmflow.golden import hwmodel
from nmflow.golden.synthetic import random_model
from nmflow.rtl.verilog import sha256_bytes
from nmflow.scripts import cli

pytestmark = pytest.mark.slow       # subprocesses that import torch, and small flow steps

NMFLOW = [sys.executable, "-m", "nmflow.scripts.cli"]
ONE_LINE = re.compile(r"nmflow: error: [^\n]+\n")


def nmflow(*argv, **kwargs):
    return subprocess.run([*NMFLOW, *map(str, argv)], capture_output=True, text=True,
                          timeout=600, **kwargs)


def refused(capsys, argv):
    """``nmflow argv`` in-process: exit status 2 and exactly one line on stderr, returned."""
    try:
        code = cli.main([str(a) for a in argv])
    except SystemExit as exit_:
        code = exit_.code
    captured = capsys.readouterr()
    assert code == 2, (argv, code, captured.err)
    assert ONE_LINE.fullmatch(captured.err), (argv, captured.err)
    return captured.err.rstrip("\n")


def leftovers(folder):
    """Every entry below ``folder``, as sorted relative paths."""
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*"))


# -- unbounded counts and sizes, refused before any work ------------------------------------------

@pytest.mark.parametrize("argv, line", [
    (["ber-sweep", "--per-decade", "1000000000"],
     "ber-sweep: --per-decade must be an integer from 1 to 100, not '1000000000'"),
    (["ber-sweep", "--jobs", "0"], "ber-sweep: --jobs must be an integer from 1 to {jobs} (four "
                                   "per usable core), not '0'"),
    (["ber-sweep", "--jobs", "10000"], "ber-sweep: --jobs must be an integer from 1 to {jobs} "
                                       "(four per usable core), not '10000'"),
    (["train", "--epochs", "99999999999999999999"],
     "train: --epochs must be an integer from 1 to 10000, not '99999999999999999999'"),
    (["train", "--hidden", "1000000000"],
     "train: --hidden must be 1 to 16 comma-separated integers from 1 to 65536 such as 128,128, "
     "not '1000000000'"),
    (["train", "--seed", str(2**70)],
     f"train: --seed must be an integer from 0 to 2147483647, not '{2**70}'"),
    (["pcsa", "--samples", "1000000000000"],
     "pcsa: --samples must be an integer from 2 to 20000000, not '1000000000000'"),
    (["pcsa", "--samples", "1"], "pcsa: --samples must be an integer from 2 to 20000000, not '1'"),
    (["pcsa", "--window", "1e300"],
     "pcsa: --window must be a finite number above 0 and at most 10000 (nanoseconds), not "
     "'1e300'"),
    (["bench", "--boards", ""],
     "bench: --boards must be comma-separated boards from icebreaker, ulx3s, not ''"),
    (["bench", "--boards", "icebreaker,de10"],
     "bench: --boards must be comma-separated boards from icebreaker, ulx3s, not "
     "'icebreaker,de10'"),
    (["host", "--port", "x", "--timeout", "inf"],
     "host: --timeout must be a finite number above 0 and at most 3600, not 'inf'"),
    (["continual", "--tasks", "1000"], "continual: --tasks must be an integer from 1 to 100, not "
                                       "'1000'"),
])
def test_counts_beyond_their_bound_are_refused_by_the_parser(capsys, tmp_path, argv, line):
    from nmflow.flow.sweep import max_jobs
    message = refused(capsys, [*argv, "--out" if argv[0] != "train" else "--run",
                               tmp_path / "out"])
    assert message == (f"nmflow: error: {line.format(jobs=max_jobs())} "
                       f"(see nmflow {argv[0]} --help)")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("argv, line", [
    (["eqprop", "train", "--check-steps", "1000000000"],
     "--check-steps must be an integer from 1 to 10000, not '1000000000'"),
    (["eqprop", "train", "--hidden", "1000000000"],
     "--hidden must be 1 to 16 layer widths from 1 to 65536 such as 128,128, not '1000000000'"),
    (["eqprop", "sim", "--samples", "99999999999"],
     "--samples must be an integer from 1 to 10000000, not '99999999999'"),
])
def test_eqprop_counts_beyond_their_bound_are_refused(capsys, tmp_path, argv, line):
    assert refused(capsys, [*argv, "--out", tmp_path / "out"]) == f"nmflow: error: {line}"
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("argv, pattern", [
    (["train", "--hidden", "65536,65536,65536"],
     r"training 64-65536-65536-65536-10 on 1437 images in batches of 100 would need about "
     r"207 GB of memory, more than the [\d.]+ GB a run may take on this machine \(half of its "
     r"[\d.]+ GB\)"),
    (["eqprop", "train", "--hidden", "60000,60000"],
     r"EqProp training of 64-60000-60000-10 with --T 40, --K 15 and --check-steps 200 would "
     r"need about \d+ GB of memory, more than the [\d.]+ GB .*"),
    (["continual", "--hidden", "60000,60000,60000"],
     r"continual learning of 64-60000-60000-60000-10 over 5 tasks would need about \d+ GB of "
     r"memory, .*"),
])
def test_runs_planning_more_memory_than_the_machine_has_are_refused(capsys, tmp_path, argv,
                                                                      pattern):
    out = "--run" if argv[0] == "train" else "--out"
    line = refused(capsys, [*argv, out, tmp_path / "out"])
    assert re.fullmatch(f"nmflow: error: {pattern}", line), line
    assert not (tmp_path / "out").exists()


def test_memory_estimate_uses_the_machines_memory(monkeypatch):
    from nmflow import limits
    from nmflow.errors import NmflowError
    monkeypatch.setattr(limits, "memory_total", lambda: 4 * 10**9)
    assert limits.check_memory("x", 2 * 10**9) == 2 * 10**9
    with pytest.raises(NmflowError, match=r"^x would need about 2\.1 GB of memory, more than the "
                                          r"2 GB a run may take on this machine \(half of its "
                                          r"4 GB\)$"):
        limits.check_memory("x", 2_100_000_000)


def test_help_states_the_bounds():
    text = cli.parser()._subparsers._group_actions[0].choices["train"].format_help()
    text = " ".join(text.split())
    assert "epochs [1 to 10_000] (default: 50)" in text
    assert "training seed [0 to 2_147_483_647] (default: 0)" in text
    assert "[1 to 16 layers of 1 to 65_536 neurons]" in text


# -- argparse refusals in one line ----------------------------------------------------------------

@pytest.mark.parametrize("argv, line", [
    ([], "a command is required (see nmflow --help)"),
    (["frobnicate"], "command must be one of train, export, import, verilog, sim, compare, build, program, host, "
                     "demo, bench, pcsa, ber-sweep, continual, eqprop, not 'frobnicate' (see "
                     "nmflow --help)"),
    (["train", "--epochs", "0"],
     "train: --epochs must be an integer from 1 to 10000, not '0' (see nmflow train --help)"),
    (["sim", "--limit", "0"],
     "sim: --limit must be an integer from 1 to 10000000, not '0' (see nmflow sim --help)"),
    (["build", "--board", "de10"],
     "build: --board must be one of icebreaker, ulx3s, not 'de10' (see nmflow build --help)"),
    (["build", "--clock", "fast"],
     "build: --clock must be auto, board or a number of MHz from 1 to 400, not 'fast' (see "
     "nmflow build --help)"),
    (["train", "--epochs"], "train: --epochs needs a value (see nmflow train --help)"),
    (["host"], "host: --port is required (see nmflow host --help)"),
    (["eqprop"], "eqprop: an action is required (see nmflow eqprop --help)"),
    (["train", "--bogus"], "unrecognized arguments: --bogus (see nmflow --help)"),
])
def test_argparse_refusals_are_one_line(capsys, argv, line):
    assert refused(capsys, argv) == f"nmflow: error: {line}"


def test_exported_raw_pickle_and_eqprop_print_no_library_warnings(tmp_path):
    import torch
    torch.save({"state_dict": {}}, tmp_path / "raw.pt", _use_new_zipfile_serialization=False)
    result = nmflow("export", "--run", tmp_path, "--checkpoint", tmp_path / "raw.pt")
    assert result.returncode == 2 and ONE_LINE.fullmatch(result.stderr), result.stderr
    result = nmflow("eqprop", "train", "--out", tmp_path / "eq", "--epochs", "1", "--hidden", "8",
                    "--T", "4", "--K", "2", "--check-steps", "4", "--methods", "symmetric",
                    "--losses", "squared", "--no-fixed")
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stderr == ""                          # not even a blank line
    # the outputs, and the finished trainings kept for --resume
    assert sorted(p.name for p in (tmp_path / "eq").iterdir()) == [
        ".jobs", "eqprop.csv", "eqprop.json", "eqprop.png"]


# -- a full disk ----------------------------------------------------------------------------------

def on_full_disk(tmp_path, *argv, size="64k"):
    """Run ``nmflow argv`` with ``tmp_path/full`` a fresh tmpfs of ``size`` in a private mount
    namespace (``unshare``); return the result and what the tmpfs holds afterwards."""
    full = tmp_path / "full"
    full.mkdir(exist_ok=True)
    listing = tmp_path / "listing.txt"
    script = ('mount -t tmpfs -o size="$1" tmpfs "$2" || exit 99; out="$2"; list="$3"; '
              'shift 3; "$@"; code=$?; (cd "$out" && find . -mindepth 1) > "$list"; exit $code')
    argv = [str(a).replace("FULL", str(full)) for a in argv]
    result = subprocess.run(["unshare", "--mount", "--map-root-user", "sh", "-c", script, "sh",
                             size, str(full), str(listing), *NMFLOW, *argv],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode != 99, ("a full disk is made with unshare(1) and tmpfs: install "
                                     "util-linux and allow user namespaces: " + result.stderr)
    return result, sorted(listing.read_text().split())


def full_disk_line(result, path):
    assert result.returncode == 2, result.stderr[-3000:]
    assert ONE_LINE.fullmatch(result.stderr), result.stderr[-3000:]
    assert "No space left on device" in result.stderr and path in result.stderr, result.stderr


def test_full_disk_train(tmp_path):
    result, left = on_full_disk(tmp_path, "train", "--run", "FULL", "--epochs", "1")
    full_disk_line(result, "model.pt")
    assert left == []


def test_full_disk_pcsa(tmp_path):
    result, left = on_full_disk(tmp_path, "pcsa", "--out", "FULL/pcsa", "--samples", "2000")
    full_disk_line(result, str(tmp_path / "full"))
    assert left in ([], ["./pcsa"])                     # the folder, and nothing in it


def test_full_disk_eqprop(tmp_path):
    result, left = on_full_disk(tmp_path, "eqprop", "train", "--out", "FULL", "--epochs", "1",
                                "--hidden", "8", "--T", "4", "--K", "2", "--check-steps", "4",
                                "--methods", "symmetric", "--losses", "squared", "--no-fixed",
                                size="16k")
    full_disk_line(result, str(tmp_path / "full"))
    # nothing half-written: only trainings that finished, each whole, kept for --resume
    jobs = [name for name in left if name != "./.jobs"]
    assert all(re.fullmatch(r"\./\.jobs/[0-9a-f]{24}\.json", name) for name in jobs), left
    assert "eqprop.json" not in " ".join(left) and "eqprop.csv" not in " ".join(left)


@pytest.fixture(scope="module")
def small_rtl(tmp_path_factory):
    """A small random model, its Verilog and a few input vectors, on the real disk."""
    folder = tmp_path_factory.mktemp("small")
    model = random_model([8, 6, 3], seed=1)
    hwmodel.save(model, folder / "hw")
    np.savez(folder / "x.npz", x=np.random.default_rng(0).integers(0, 16, (3, 8)))
    result = nmflow("verilog", "--run", folder, "--model", folder / "hw.json", "--out",
                    folder / "rtl", "--lanes", "4")
    assert result.returncode == 0, result.stderr
    return folder


def test_full_disk_verilog_and_sim(tmp_path, small_rtl):
    result, left = on_full_disk(tmp_path, "verilog", "--run", small_rtl, "--model",
                                small_rtl / "hw.json", "--out", "FULL", "--lanes", "4",
                                size="8k")
    full_disk_line(result, str(tmp_path / "full"))
    assert left == []
    result, left = on_full_disk(tmp_path, "sim", "--run", small_rtl, "--model",
                                small_rtl / "hw.json", "--rtl", small_rtl / "rtl", "--inputs",
                                small_rtl / "x.npz", "--out", "FULL/sim", size="16k")
    assert result.returncode == 2 and ONE_LINE.fullmatch(result.stderr), result.stderr[-3000:]
    assert "No space left on device" in result.stderr, result.stderr
    assert "vectors.npz" not in " ".join(left)          # not a partial set


# -- Verilog that does not compile -----------------------------------------------------------------

@pytest.mark.parametrize("cut", ["half", "empty"])
def test_verilog_that_does_not_compile_is_one_line_with_the_logs_first_error(tmp_path, small_rtl,
                                                                            cut):
    rtl = tmp_path / "rtl"
    rtl.mkdir()
    text = (small_rtl / "rtl" / "engine.v").read_bytes()
    text = text[:len(text) // 2] if cut == "half" else b""
    (rtl / "engine.v").write_bytes(text)
    config = json.loads((small_rtl / "rtl" / "engine.json").read_text())
    config["verilog_sha256"] = sha256_bytes(text)       # the checksum renewed: only the compiler
    (rtl / "engine.json").write_text(json.dumps(config))  # can tell
    result = nmflow("sim", "--run", small_rtl, "--model", small_rtl / "hw.json", "--rtl", rtl,
                    "--inputs", small_rtl / "x.npz", "--out", tmp_path / "sim")
    assert result.returncode == 2 and ONE_LINE.fullmatch(result.stderr), result.stderr[-3000:]
    found = re.fullmatch(r"nmflow: error: (\S+) does not compile \(icarus\)(: .+)? \(see "
                         r"(\S+)\)\n", result.stderr)
    assert found and found[1] in (str(rtl / "engine.v"),
                                  str(tmp_path / "sim" / "work" / "engine.v")), result.stderr
    log = found[3]
    assert os.path.isfile(log), log                     # the log the line names is kept
    if cut == "half":                                   # the compiler's own words
        assert found[2] and "error" in found[2].lower(), result.stderr


# -- outputs that are a set ------------------------------------------------------------------------

def test_folder_where_a_file_goes_leaves_nothing_written(capsys, tmp_path):
    (tmp_path / "out" / "pcsa.json").mkdir(parents=True)
    line = refused(capsys, ["pcsa", "--out", tmp_path / "out", "--samples", "2000"])
    assert line == f"nmflow: error: file {str(tmp_path / 'out' / 'pcsa.json')!r} cannot be " \
                   f"written: it is a folder"
    assert leftovers(tmp_path / "out") == ["pcsa.json"]


def test_a_kill_leaves_no_temporary_after_the_next_command(tmp_path):
    out = tmp_path / "pcsa"
    argv = [*NMFLOW, "pcsa", "--out", str(out), "--samples", "20000"]
    rng = np.random.default_rng(int(time.time()))
    for _ in range(3):                                  # kill at random points, writes included
        child = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(float(rng.uniform(2.0, 8.0)))
        child.send_signal(signal.SIGKILL)
        child.wait()
    # What a kill during the writes leaves (a staging folder, a temporary file), made certain:
    (out / ".pcsa.json.nmflow-999999999-x1.tmp").parent.mkdir(parents=True, exist_ok=True)
    (out / ".pcsa.json.nmflow-999999999-x1.tmp").write_text("half")
    (tmp_path / ".pcsa.nmflow-999999999-y2").mkdir()
    (tmp_path / ".pcsa.nmflow-999999999-y2" / "pcsa.json").write_text("half")
    result = nmflow("pcsa", "--out", out, "--samples", "2000")
    assert result.returncode == 0, result.stderr
    assert leftovers(out) == ["pcsa.json", "pcsa_rates.csv", "regime_map.png"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    json.loads((out / "pcsa.json").read_text())


def test_json_is_always_json(tmp_path):
    from nmflow.fileio import write_json
    with pytest.raises(ValueError, match=r"^JSON output holds a value that is not a finite number "
                                         r"at a\.b\[1\]$"):
        write_json(tmp_path / "x.json", {"a": {"b": [1.0, float("nan")]}})
    assert not (tmp_path / "x.json").exists()
    result = nmflow("pcsa", "--out", tmp_path / "p", "--samples", "2")
    assert result.returncode == 0, result.stderr
    json.loads((tmp_path / "p" / "pcsa.json").read_text(),
               parse_constant=lambda name: pytest.fail(f"{name} in pcsa.json"))
