"""Atomic writes and folders: one line when a file stands where a folder must be, nothing left
half-written."""

import re

import numpy as np
import pytest

from nmflow.errors import NmflowError
from nmflow.fileio import make_folder, write_json, write_text
from nmflow.golden import hwmodel
from nmflow.golden.synthetic import random_model

from helpers import error_line


def test_a_file_where_a_folder_must_be(tmp_path):
    (tmp_path / "afile").write_text("x")
    message = (f"folder {str(tmp_path / 'afile' / 'sub')!r} cannot be made: "
               f"{str(tmp_path / 'afile')!r} is a file, not a folder")
    with pytest.raises(NmflowError, match=f"^{re.escape(message)}$"):
        make_folder(tmp_path / "afile" / "sub")
    with pytest.raises(NmflowError, match="is a file, not a folder"):
        write_json(tmp_path / "afile" / "sub" / "x.json", {})
    (tmp_path / "adir").mkdir()
    with pytest.raises(NmflowError, match=r"^file '.*adir' cannot be written: it is a folder$"):
        write_text(tmp_path / "adir", "x")


def test_a_failed_write_leaves_nothing(tmp_path):
    write_text(tmp_path / "a.txt", "old")
    with pytest.raises(TypeError):
        write_json(tmp_path / "a.txt", {"x": object()})
    assert (tmp_path / "a.txt").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


@pytest.mark.parametrize("step", [["train"], ["verilog"], ["export"]])
def test_run_folder_that_is_a_file(capsys, tmp_path, step):
    (tmp_path / "afile").write_text("x")
    line = error_line(capsys, [*step, "--run", str(tmp_path / "afile")])
    assert line.startswith("nmflow: error: ") and "afile" in line


def test_verilog_out_that_is_a_file(capsys, tmp_path):
    hwmodel.save(random_model([8, 5, 3], seed=1), tmp_path / "hwmodel")
    (tmp_path / "afile").write_text("x")
    line = error_line(capsys, ["verilog", "--run", str(tmp_path), "--out", str(tmp_path / "afile")])
    assert line == (f"nmflow: error: folder {str(tmp_path / 'afile')!r} cannot be made: "
                    f"{str(tmp_path / 'afile')!r} is a file, not a folder")


def test_model_that_is_a_folder(capsys, tmp_path):
    (tmp_path / "hw.json").mkdir()
    np.savez(tmp_path / "hw.npz", x=np.zeros(1))
    line = error_line(capsys, ["verilog", "--run", str(tmp_path), "--model", str(tmp_path / "hw.json")])
    assert line == (f"nmflow: error: hardware model file {str(tmp_path / 'hw.json')!r} is a "
                    f"directory, not a file")
