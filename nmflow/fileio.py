"""Atomic file writes: a reader never sees a half-written artifact."""

import contextlib
import json
import os
import struct
import tempfile
import zipfile
import zlib
from pathlib import Path

import numpy as np

from .errors import NmflowError

__all__ = ["make_folder", "atomic_path", "write_bytes", "write_text", "write_json",
           "read_npz", "UNREADABLE"]

#: What NumPy, zipfile and zlib raise on a damaged or foreign archive (found by fuzzing:
#: tests/test_fuzz.py): a reader of user files turns these into one line.
UNREADABLE = (OSError, ValueError, EOFError, KeyError, IndexError, zipfile.BadZipFile,
              NotImplementedError, RuntimeError, zlib.error, struct.error, UnicodeDecodeError,
              OverflowError)


def make_folder(path):
    """Create the folder ``path`` (and its parents) if missing; one line if a file stands where a
    folder must be."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocker = next((p for p in [path, *path.parents] if p.exists() and not p.is_dir()), path)
        raise NmflowError(f"folder {str(path)!r} cannot be made: {str(blocker)!r} is a file, "
                          f"not a folder") from None
    return path


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside ``path``; rename it over ``path`` only on success."""
    path = Path(path)
    make_folder(path.parent)
    if path.is_dir():
        raise NmflowError(f"file {str(path)!r} cannot be written: it is a folder")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_bytes(path, data: bytes):
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path, text: str):
    write_bytes(path, text.encode())


def write_json(path, obj):
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_npz(path, what, *, required=(), optional=()):
    """The arrays of an .npz file a user or an earlier step wrote, checked: one line for a file
    that is missing, a directory, truncated, not an npz, pickled, or lacking a required array."""
    path = Path(path)
    if path.is_dir():
        raise NmflowError(f"{what} {str(path)!r} is a directory, not an .npz file")
    if not path.is_file():
        raise NmflowError(f"{what} {str(path)!r} does not exist")
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise ValueError("a single array, not an archive of named arrays")
        with loaded as f:
            missing = [name for name in required if name not in f.files]
            if missing:
                raise NmflowError(f"{what} {str(path)!r} must hold the arrays "
                                  f"{', '.join(map(repr, required))}; {missing[0]!r} is missing")
            return {name: f[name] for name in (*required, *optional) if name in f.files}
    except NmflowError:
        raise
    except UNREADABLE as error:
        reason = str(error).split("\n")[0]
        if "pickle" in reason.lower():
            reason = "not a NumPy .npz archive"
        raise NmflowError(f"{what} {str(path)!r} is unreadable (truncated or not an .npz file: "
                          f"{reason})") from None

