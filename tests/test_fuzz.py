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
