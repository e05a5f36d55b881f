"""What the flow accepts as test vectors and simulation files: a valid result or one line, never a
pass on zero work."""

import re

import numpy as np
import pytest

from nmflow.errors import NmflowError
from nmflow.fileio import read_npz
from nmflow.flow.engine import _test_vectors
from nmflow.golden.synthetic import random_model

MODEL = random_model([6, 5, 3], input_bits=3, seed=2)


def refused(message, inputs, limit=None):
    with pytest.raises(NmflowError, match=f"^{re.escape(message)}$"):
        _test_vectors(MODEL, inputs, limit)


def test_zero_vectors_are_an_error_not_a_pass(tmp_path):
    np.savez(tmp_path / "x.npz", x=np.zeros((0, 6), dtype=np.int64))
    refused("inputs must hold at least one vector to simulate, not 0", tmp_path / "x.npz")


@pytest.mark.parametrize("y, message", [
    (np.zeros(5, dtype=np.int64), "labels 'y' must be 4 integers, one per input vector, not int64 "
                                  "of shape [5]"),
    (np.zeros((4, 1), dtype=np.int64), "labels 'y' must be 4 integers, one per input vector, not "
                                       "int64 of shape [4, 1]"),
    (np.zeros(4), "labels 'y' must be 4 integers, one per input vector, not float64 of shape [4]"),
    (np.array([0, 1, 3, 2]), "labels 'y' must be classes 0 to 2, not 3"),
])
def test_labels_are_checked_against_the_vectors(tmp_path, y, message):
    np.savez(tmp_path / "x.npz", x=np.zeros((4, 6), dtype=np.int64), y=y)
    refused(message, tmp_path / "x.npz")


def test_good_vectors_and_labels(tmp_path):
    x = np.arange(24).reshape(4, 6) % 8
    np.savez(tmp_path / "x.npz", x=x, y=np.array([0, 2, 1, 1]))
    got, y = _test_vectors(MODEL, tmp_path / "x.npz", None)
    assert got.tolist() == x.tolist() and y.tolist() == [0, 2, 1, 1]
    got, y = _test_vectors(MODEL, tmp_path / "x.npz", 2)
    assert len(got) == 2 and y.tolist() == [0, 2]


def test_files_that_are_not_npz_archives(tmp_path):
    (tmp_path / "text.npz").write_text("x = [1, 2, 3]\n")
    with pytest.raises(NmflowError, match=re.escape(
            f"inputs file {str(tmp_path / 'text.npz')!r} is unreadable (truncated or not an .npz "
            f"file: not a NumPy .npz archive)")):
        read_npz(tmp_path / "text.npz", "inputs file", required=("x",))
    (tmp_path / "dir.npz").mkdir()
    with pytest.raises(NmflowError, match=re.escape(
            f"inputs file {str(tmp_path / 'dir.npz')!r} is a directory, not an .npz file")):
        read_npz(tmp_path / "dir.npz", "inputs file")
    np.save(tmp_path / "single.npy", np.zeros(3))
    with pytest.raises(NmflowError, match="single array, not an archive of named arrays"):
        read_npz(tmp_path / "single.npy", "inputs file", required=("x",))
    np.savez(tmp_path / "other.npz", z=np.zeros(3))
    with pytest.raises(NmflowError, match=re.escape("must hold the arrays 'x'; 'x' is missing")):
        read_npz(tmp_path / "other.npz", "inputs file", required=("x",))
    with pytest.raises(NmflowError, match=re.escape("does not exist")):
        read_npz(tmp_path / "nowhere.npz", "inputs file")


def test_pickled_arrays_are_refused(tmp_path):
    np.savez(tmp_path / "p.npz", x=np.array([{"a": 1}], dtype=object))
    with pytest.raises(NmflowError, match=r"is unreadable \(truncated or not an \.npz file: not a "
                                          r"NumPy \.npz archive\)$"):
        read_npz(tmp_path / "p.npz", "inputs file", required=("x",))
