"""Property-based fuzzing of the input paths a user or a wire reaches.

The property is always the same: a valid result, or :class:`NmflowError` with one line, never
another exception. A few hundred examples per target in the everyday run;
``NMFLOW_FUZZ_EXAMPLES=20000 pytest tests/test_fuzz.py`` runs them long.
"""

import gzip
import io
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nmflow import protocol
from nmflow.errors import NmflowError
from nmflow.fileio import read_npz
from nmflow.golden import hwmodel
from nmflow.golden.datasets import read_idx
from nmflow.golden.synthetic import random_model

EXAMPLES = int(os.environ.get("NMFLOW_FUZZ_EXAMPLES", "300"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow])

MODEL = random_model([6, 5, 3], input_bits=3, seed=4)


def _saved_model():
    folder = Path(tempfile.mkdtemp(prefix="nmflow-fuzz-"))
    npz, header = hwmodel.save(MODEL, folder / "hw")
    return npz.read_bytes(), header.read_bytes()


NPZ, HEADER = _saved_model()


def mutated(data):
    """A strategy of byte strings near ``data``: bytes flipped, cut, inserted or replaced."""
    def apply(edits):
        out = bytearray(data)
        for kind, position, value in edits:
            if not out:
                out = bytearray([value])
                continue
            at = position % len(out)
            if kind == "flip":
                out[at] ^= 1 << (value % 8)
            elif kind == "set":
                out[at] = value
            elif kind == "cut":
                del out[at:]
            else:
                out[at:at] = bytes([value]) * (1 + value % 5)
        return bytes(out)

    edit = st.tuples(st.sampled_from(["flip", "set", "cut", "insert"]),
                     st.integers(0, 1 << 20), st.integers(0, 255))
    return st.lists(edit, min_size=1, max_size=4).map(apply)


def one_line(error):
    text = str(error)
    assert text and "\n" not in text, repr(text)


def load_from(tmp, npz, header):
    (tmp / "hw.npz").write_bytes(npz)
    (tmp / "hw.json").write_bytes(header)
    try:
        model = hwmodel.load(tmp / "hw")
    except NmflowError as error:
        one_line(error)
        return None
    assert isinstance(model, hwmodel.HardwareModel)
    return model


@pytest.fixture
def scratch():
    folder = Path(tempfile.mkdtemp(prefix="nmflow-fuzz-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@FUZZ
@given(npz=mutated(NPZ))
def test_hwmodel_loader_on_mutated_arrays(npz):
    with tempfile.TemporaryDirectory() as tmp:
        model = load_from(Path(tmp), npz, HEADER)
        if model is not None:                   # only an untouched archive passes the checksum
            assert hwmodel.model_checksum(model) == hwmodel.model_checksum(MODEL)


@FUZZ
@given(header=mutated(HEADER))
def test_hwmodel_loader_on_mutated_header_bytes(header):
    with tempfile.TemporaryDirectory() as tmp:
        load_from(Path(tmp), NPZ, header)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-2 ** 70, 2 ** 70)
    | st.floats(allow_nan=False, allow_subnormal=False)      # (torch may flush subnormals)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                max_size=3),
    max_leaves=8)


@FUZZ
@given(field=st.sampled_from(["schema", "version", "input_bits", "weight_kind", "sizes", "layers",
                              "score_frac_bits", "score_bits", "arrays", "meta", "rules"]),
       value=JSON_VALUES, rehash=st.booleans())
def test_hwmodel_loader_on_mutated_fields(field, value, rehash):
    # A field set to any JSON value, with the checksum renewed (as a careful forger would) or not.
    header = json.loads(HEADER)
    header[field] = value
    if rehash:
        with np.load(io.BytesIO(NPZ)) as f:
            arrays = {name: f[name] for name in f.files}
        header["sha256"] = hwmodel.checksum(header, arrays)
    with tempfile.TemporaryDirectory() as tmp:
        model = load_from(Path(tmp), NPZ, json.dumps(header).encode())
    if model is not None:
        assert model.sizes == MODEL.sizes and model.score_bits == MODEL.score_bits


def idx_file(shape, data):
    return (b"\x00\x00\x08" + bytes([len(shape)])
            + b"".join(int(d).to_bytes(4, "big") for d in shape) + bytes(data))


IDX = idx_file((5, 4, 4), range(80))


@FUZZ
@given(data=mutated(IDX) | st.binary(max_size=64), compress=st.booleans())
def test_idx_reader(data, compress):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "images.idx"
        path.write_bytes(gzip.compress(data) if compress else data)
        try:
            array = read_idx(path)
        except NmflowError as error:
            one_line(error)
            return
        assert array.dtype == np.uint8 and array.size == len(data) - 4 - 4 * array.ndim


def npz_bytes(**arrays):
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


NPZ_VECTORS = npz_bytes(x=np.arange(12).reshape(2, 6) % 8, y=np.array([0, 2]))


@FUZZ
@given(data=mutated(NPZ_VECTORS) | st.binary(max_size=200))
def test_npz_reader(data):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "x.npz"
        path.write_bytes(data)
        try:
            arrays = read_npz(path, "inputs file", required=("x",), optional=("y",))
        except NmflowError as error:
            one_line(error)
            return
        assert isinstance(arrays["x"], np.ndarray)


FRAME = protocol.infer_request([1, 2, 3, 4, 5, 6])


@FUZZ
@given(data=mutated(FRAME) | st.binary(max_size=40))
def test_frame_decoder(data):
    try:
        command, payload = protocol.decode_frame(data)
    except NmflowError as error:
        one_line(error)
        return
    assert protocol.encode_frame(command, payload) == bytes(data)


@FUZZ
@given(data=mutated(FRAME) | st.binary(max_size=40))
def test_link_model_answers_every_burst_with_at_most_one_frame(data):
    fed = []

    def infer(values):
        fed.append(values)
        return 1, [0, -1, 5]

    link = protocol.LinkModel(6, 3, 3, 9, infer)
    reply = link.burst(data)
    if reply:
        command, payload = protocol.decode_frame(reply)      # a well-formed frame
        assert command in (protocol.Reply.INFO, protocol.Reply.INFER, protocol.Reply.ERROR)
    assert len(fed) <= 1
    assert all(len(values) == 6 and max(values) < 8 for values in fed)


# -- the command line ------------------------------------------------------------------------------
# argv lists for ``nmflow.scripts.cli.main``: a subcommand from the parser, random options from its
# own (and a few foreign ones) with random values, among them paths to a missing file, a folder, a
# plain file and garbage files, and huge or negative numbers. The property: ``main`` returns 0, or
# 2 with exactly one line on stderr, ``nmflow: error: ...``; or argparse refuses the line
# (SystemExit 2, that one line too) or prints help (SystemExit 0). Never another exception,
# never a traceback, never a hang (an alarm per example). No real work starts: every run points
# --run and --out into an empty temporary folder and ends with options that fail validation early
# (a bad model, checkpoint or dataset file), and the subcommands that would start long work from
# nothing (demo, bench, pcsa, ber-sweep) always get one value argparse refuses.

import contextlib
import re
import signal

from nmflow.scripts import cli

CLI_FILES = Path(tempfile.mkdtemp(prefix="nmflow-fuzz-cli-"))
(CLI_FILES / "folder").mkdir()
(CLI_FILES / "folder" / "hwmodel.json").write_text("{}")
(CLI_FILES / "plain.txt").write_text("just some text\n")
(CLI_FILES / "empty.json").write_bytes(b"")
(CLI_FILES / "garbage.bin").write_bytes(bytes(range(256)) * 3)
(CLI_FILES / "garbage.json").write_text('{"schema": "nmflow-hwmodel", "version": 1, "siz')
(CLI_FILES / "garbage.npz").write_bytes(b"PK\x03\x04" + bytes(range(200)))
(CLI_FILES / "garbage.pt").write_bytes(b"\x80\x02garbage" * 10)
(CLI_FILES / "garbage.idx").write_bytes(b"\x00\x00\x08\x03\x00\x00\x00\x05")
(CLI_FILES / "garbage.idx.gz").write_bytes(b"\x1f\x8b\x08\x00garbage")
(CLI_FILES / "x.npz").write_bytes(NPZ_VECTORS)
(CLI_FILES / "hw.json").write_bytes(HEADER)     # a header whose arrays are missing
BAD_PATHS = [str(CLI_FILES / name) for name in (
    "missing.json", "missing/deeper.npz", "folder", "plain.txt", "empty.json", "garbage.bin",
    "garbage.json", "garbage.npz", "garbage.pt", "garbage.idx", "garbage.idx.gz", "hw.json")]
ANY_PATH = BAD_PATHS + [str(CLI_FILES / "x.npz"), "", "-", "/dev/null", "nul\x01char"]

def _subcommands(parser):
    return next((action.choices for action in parser._actions
                 if isinstance(action, __import__("argparse")._SubParsersAction)), None)


#: Every command line's parser, by its words: "train", ..., and "eqprop train" for a command with
#: actions of its own.
TOP = _subcommands(cli.parser())
COMMANDS = {}
for _name, _parser in TOP.items():
    _inner = _subcommands(_parser)
    COMMANDS.update({f"{_name} {action}": parser for action, parser in _inner.items()}
                    if _inner else {_name: _parser})
# Options that must fail validation early, appended last (argparse keeps the last value).
GUARDS = {
    "train": lambda p: ["--dataset", "idx", "--images", p, "--labels", p],
    "export": lambda p: ["--checkpoint", p],
    "verilog": lambda p: ["--model", p],
    "sim": lambda p: ["--model", p],
    "compare": lambda p: ["--model", p],
    "build": lambda p: ["--model", p],
    "host": lambda p: ["--model", p],
    "program": lambda p: ["--model", p],
    "import": lambda p: [p],
}
REFUSED = {"demo": ["--lanes", "x"], "bench": ["--images", "0"], "pcsa": ["--samples", "x"],
           "ber-sweep": ["--passes", "x"], "continual": ["--tasks", "x"],
           "eqprop train": ["--epochs", "x"], "eqprop sim": ["--samples", "x"],
           "eqprop build": ["--lanes", "x"], "eqprop host": ["--samples", "x"],
           "eqprop continual": ["--tasks", "x"]}


def _options(command):
    return {option: action for action in COMMANDS[command]._actions
            for option in action.option_strings if option.startswith("--")
            and option not in ("--help", "--run", "--out")}


HUGE = (st.integers(2**31 - 2, 2**80).map(str) | st.integers(-2**80, -1).map(str)
        | st.sampled_from(["1e12", "1e300", "99999999999999999999", "1000000000", "65537",
                           "1000000000,1000000000", "9" * 5000]))
VALUES = (st.sampled_from(ANY_PATH) | st.integers(-5, 70000).map(str) | HUGE
          | st.sampled_from(["0", "1", "16", "3", "1e9", "nan", "inf", "-0", "0x10", "1,2",
                             "0,0.01,0.1", "1,1,1", "-1,0,2", "128,128", "tnn", "bnn", "digits",
                             "idx", "icebreaker", "ulx3s", "block", "logic", "static", "per_read",
                             "", " ", "--", "é"])
          | st.text(max_size=6))
NUMBERS = (st.integers(-3, 300).map(str) | st.sampled_from(["0.5", "1e-3", "0,0.01,0.1", "1,1,1",
                                                           "0,0,0", "2,0,0", "64,32", "8"])
           | HUGE)


def _value(action):
    """Mostly a value of the option's own kind (a choice, a number, a path), at times anything."""
    if action.choices:
        own = st.sampled_from(sorted(action.choices))
    elif action.type is not None or isinstance(action.default, (int, float)):
        own = NUMBERS
    else:
        own = st.sampled_from(ANY_PATH)
    return st.one_of(own, own, own, VALUES)


@st.composite
def cli_argv(draw):
    command = draw(st.sampled_from(sorted(COMMANDS)))
    options = _options(command)
    argv = command.split()
    for _ in range(draw(st.integers(0, 5))):
        if draw(st.integers(0, 19)) == 0:       # now and then an option of another command
            argv.append(draw(st.sampled_from(["--lanes", "--verbose", "--model", "--errors"])))
            argv += [draw(VALUES)] if draw(st.booleans()) else []
            continue
        action = options[draw(st.sampled_from(sorted(options)))]
        argv.append(action.option_strings[-1])
        if action.nargs != 0 and draw(st.integers(0, 19)):     # a value, as a rule
            argv.append(draw(_value(action)))
    if command in GUARDS:
        argv += GUARDS[command](draw(st.sampled_from(BAD_PATHS)))
        if command == "host" and draw(st.booleans()):
            argv += ["--port", draw(st.sampled_from(BAD_PATHS + ["/dev/ttyNONE", "COM99"]))]
    else:
        argv += REFUSED[command]
    return argv


class _Hang(Exception):
    pass


def _alarm(signum, frame):
    raise _Hang("an example ran past its deadline")


CLI_DEADLINE = 60       # seconds per example (a first import of torch or amaranth takes a few)
USAGE_ERROR = re.compile(r"^nmflow( [\w-]+)*: error: .+$", re.DOTALL)


def run_cli(argv, run):
    """Run ``cli.main(argv)`` with ``--run``/``--out`` in ``run``; check the property."""
    out, err = io.StringIO(), io.StringIO()
    words = 2 if " ".join(argv[:2]) in COMMANDS else 1
    own = {option for action in COMMANDS[" ".join(argv[:words])]._actions
           for option in action.option_strings}
    folders = [option for option in ("--run", "--out") if option in own]
    argv = (argv[:words] + [x for option in folders for x in (option, str(run / option[2:]))]
            + argv[words:])
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(CLI_DEADLINE)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli.main(argv)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    stderr = err.getvalue()
    assert "Traceback" not in stderr, (argv, stderr)
    lines = stderr.strip("\n").split("\n")
    assert code in (0, 2), (argv, code, stderr)
    if code == 2:                               # argparse's refusals too: one line
        assert len(lines) == 1 and USAGE_ERROR.match(lines[0]), (argv, stderr)
    return code


CLI_FUZZ = settings(FUZZ, deadline=None)


@CLI_FUZZ
@given(argv=cli_argv())
def test_cli_refuses_bad_arguments_with_one_line(argv):
    with tempfile.TemporaryDirectory() as tmp:
        code = run_cli(argv, Path(tmp))
    # Every generated line fails validation: nothing runs to completion.
    assert code != 0, argv


@CLI_FUZZ
@given(argv=st.lists(st.sampled_from(sorted(TOP)) | VALUES
                     | st.sampled_from(["--help", "-h", "--version", "--run", "--out"]),
                     max_size=4).filter(lambda argv: not set(argv) & set(TOP)
                                        or "--help" in argv or "-h" in argv))
def test_cli_top_level_arguments(argv):
    # No subcommand, an unknown one, or help: argparse answers before any step runs.
    with tempfile.TemporaryDirectory() as tmp:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli.main(argv)
        assert code in (0, 2), (argv, code)
        stderr = err.getvalue()
        assert "Traceback" not in stderr
        if code == 2:
            lines = stderr.strip("\n").split("\n")
            assert len(lines) == 1 and USAGE_ERROR.match(lines[0]), (argv, stderr)


# -- a full disk, a folder where a file goes, a kill: the outputs of a step are a set --------------
# ``write_outputs`` (every step's JSON, CSV and PNG) and ``staged_outputs`` under a disk that
# fills after a random number of bytes (a patched writer raising ENOSPC), with a previous set of
# outputs in place and at times a folder where a file goes. The property: the new set entire, or
# one line naming the destination and the reason, the previous set untouched and no temporary
# left behind.

import errno

from nmflow.fileio import staged_outputs
from nmflow.flow.outputs import write_outputs

NAMES = ["a.json", "b.csv", "c.png", "d.txt"]


@FUZZ
@given(sizes=st.lists(st.integers(0, 3000), min_size=1, max_size=4),
       budget=st.integers(0, 8000), folder_for=st.sampled_from([None, *NAMES]),
       previous=st.booleans(), nested=st.booleans())
def test_outputs_are_all_or_nothing_on_a_full_disk(sizes, budget, folder_for, previous, nested):
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / ("deep/er" if nested else "out")
        files = {name: bytes([i]) * size for i, (name, size) in enumerate(zip(NAMES, sizes))}
        if previous:
            out.mkdir(parents=True)
            for name in files:
                if name != folder_for:
                    (out / name).write_bytes(b"old " + name.encode())
        if folder_for in files:
            (out / folder_for).mkdir(parents=True, exist_ok=True)
        before = {p.relative_to(tmp): (p.read_bytes() if p.is_file() else None)
                  for p in Path(tmp).rglob("*")}
        left = [budget]
        write_bytes = Path.write_bytes

        def filling(path, data):
            if len(data) > left[0]:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            left[0] -= len(data)
            return write_bytes(path, data)

        Path.write_bytes = filling
        try:
            write_outputs(out, files)
            failed = None
        except NmflowError as error:
            failed = str(error)
        finally:
            Path.write_bytes = write_bytes
        after = {p.relative_to(tmp): (p.read_bytes() if p.is_file() else None)
                 for p in Path(tmp).rglob("*")}
        if failed is None:
            assert folder_for not in files and sum(sizes[:len(files)]) <= budget
            assert {name: (out / name).read_bytes() for name in files} == files
            assert set(after) == set(before) | {out.relative_to(tmp), *(
                (out / name).relative_to(tmp) for name in files)} | (
                {Path("deep")} if nested else set())
        else:
            assert "\n" not in failed
            assert failed.endswith(("No space left on device", "it is a folder")), failed
            assert after == before, (failed, before, after)


@FUZZ
@given(stop=st.integers(0, 3), error=st.sampled_from([KeyboardInterrupt, NmflowError, OSError]))
def test_staged_outputs_leave_nothing_when_interrupted(stop, error):
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        with pytest.raises((KeyboardInterrupt, NmflowError)):
            with staged_outputs() as outputs:
                for i, name in enumerate(NAMES):
                    if i == stop:
                        raise error(errno.EIO, "I/O error") if error is OSError else error("x")
                    outputs.file(out / name).write_text(name)
        assert list(Path(tmp).iterdir()) == []


@FUZZ
@given(stale=st.lists(st.tuples(st.sampled_from(["inside", "beside"]),
                                st.sampled_from(NAMES + ["out"]), st.booleans(),
                                st.integers(10**8, 10**9)), max_size=5),
       sizes=st.lists(st.integers(0, 500), min_size=1, max_size=4))
def test_the_next_step_sweeps_what_a_killed_one_left(stale, sizes):
    # What ``kill -9`` leaves at any point: temporary files and staging folders (with part of
    # the outputs) of a process id no system runs (above any pid_max), inside the destination
    # folder or beside it. The next step into that folder removes them and writes its set.
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        out.mkdir()
        for where, name, folder, pid in stale:
            parent = out if where == "inside" else Path(tmp)
            entry = parent / f".{name}.nmflow-{pid}-k1ll{'' if folder else '.tmp'}"
            if folder:
                entry.mkdir(exist_ok=True)
                (entry / "a.json").write_text("{half")
            elif not entry.exists():
                entry.write_text("half")
        files = {name: bytes([i]) * size for i, (name, size) in enumerate(zip(NAMES, sizes))}
        write_outputs(out, files)
        assert sorted(p.name for p in out.iterdir()) == sorted(files)
        assert [p.name for p in Path(tmp).iterdir()] == ["out"]
