"""Atomic file writes: a reader never sees a half-written artifact, and a step's outputs appear
together or not at all.

A temporary file is named ``.<name>.nmflow-<pid>-<random>.tmp`` beside its target, a staging folder
``.<folder>.nmflow-<pid>-<random>`` inside the destination folder (the same file system);
one left by a process that no longer runs (killed with ``kill -9``) is removed the next time
nmflow writes into that folder. An :class:`OSError` while writing (a full disk, a read-only
folder) becomes one line naming the path and the reason.
"""

import contextlib
import json
import math
import os
import re
import shutil
import struct
import tempfile
import zipfile
import zlib
from pathlib import Path

import numpy as np

from .errors import NmflowError

__all__ = ["make_folder", "atomic_path", "write_bytes", "write_text", "write_json", "json_text",
           "staged_outputs", "Outputs", "read_npz", "UNREADABLE"]

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


_TEMPORARY = re.compile(r"\.(?P<name>.+)\.nmflow-(?P<pid>\d+)-[a-z0-9_]+(?:\.tmp)?")


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _sweep(folder):
    """Remove the temporary files and staging folders in ``folder`` that processes no longer
    running left behind (a step killed before it finished)."""
    with contextlib.suppress(OSError):
        for entry in os.scandir(folder):
            found = _TEMPORARY.fullmatch(entry.name)
            if found and int(found["pid"]) != os.getpid() and not _alive(int(found["pid"])):
                with contextlib.suppress(OSError):
                    if entry.is_dir(follow_symlinks=False):
                        shutil.rmtree(entry.path)
                    else:
                        os.unlink(entry.path)


def _temporary_name(name):
    return f".{name}.nmflow-{os.getpid()}-"


def _cannot_write(path, error):
    reason = error.strerror or str(error)
    return NmflowError(f"{str(path)!r} cannot be written: {reason}")


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside ``path``; rename it over ``path`` only on success. An
    :class:`OSError` (a full disk, say) becomes one line naming ``path``."""
    path = Path(path)
    make_folder(path.parent)
    if path.is_dir():
        raise NmflowError(f"file {str(path)!r} cannot be written: it is a folder")
    _sweep(path.parent)
    try:
        fd, tmp = tempfile.mkstemp(prefix=_temporary_name(path.name), suffix=".tmp",
                                   dir=path.parent)
    except OSError as error:
        raise _cannot_write(path, error) from None
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException as error:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(error, OSError) and error.errno is not None:
            raise _cannot_write(path, error) from None
        raise


def write_bytes(path, data: bytes):
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path, text: str):
    write_bytes(path, text.encode())


def _no_nan(obj, reasons, where=""):
    """``obj`` with every NaN or infinite float replaced by None (JSON has neither)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        reasons.append(where or "value")
        return None
    if isinstance(obj, dict):
        return {key: _no_nan(value, reasons, f"{where}.{key}" if where else str(key))
                for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_no_nan(value, reasons, f"{where}[{i}]") for i, value in enumerate(obj)]
    return obj


def json_text(obj):
    """``obj`` as JSON text. JSON has no NaN or infinity: such a value is refused (a bug in the
    step that made it, which must write ``null`` with its reason beside it)."""
    try:
        return json.dumps(obj, indent=2, sort_keys=False, allow_nan=False) + "\n"
    except ValueError:
        reasons = []
        _no_nan(obj, reasons)
        raise ValueError(f"JSON output holds a value that is not a finite number at "
                         f"{', '.join(reasons[:3])}") from None


def write_json(path, obj):
    write_text(path, json_text(obj))


class Outputs:
    """The outputs of one step, staged: each destination folder gets a staging folder inside it
    (:meth:`folder`, :meth:`file`; inside, so that it is on the same file system even when the
    destination is a mount point), written freely; :meth:`commit` moves every staged entry into
    its destination (replacing an entry of the same name), :meth:`discard` removes them all, and
    the destination folders this step created if they are still empty. Use it through
    :func:`staged_outputs`."""

    def __init__(self):
        self._stages = {}           # destination folder -> staging folder
        self._kept = []             # staged paths moved in even when the step fails
        self._created = []          # folders this step created, deepest last

    def folder(self, out):
        """The staging folder whose entries go into the folder ``out``."""
        out = Path(out)
        key = out.resolve()
        if key not in self._stages:
            missing = [folder for folder in (key, *key.parents) if not folder.exists()]
            make_folder(key)                    # one line if a file is where the folder goes
            self._created += reversed(missing)
            _sweep(key.parent)
            _sweep(key)
            try:
                self._stages[key] = Path(tempfile.mkdtemp(prefix=_temporary_name(out.name),
                                                          dir=key))
            except OSError as error:
                raise _cannot_write(out, error) from None
        return self._stages[key]

    def file(self, path):
        """The staged path of the file ``path``."""
        path = Path(path)
        if path.is_dir():
            raise NmflowError(f"file {str(path)!r} cannot be written: it is a folder")
        return self.folder(path.parent) / path.name

    def keep(self, staged):
        """Move the staged entry ``staged`` into place even if the step fails (a log that the
        step's error names)."""
        self._kept.append(Path(staged))

    def final(self, obj):
        """``obj`` with every staged path in its strings replaced by its destination."""
        if isinstance(obj, str):
            for out, stage in self._stages.items():
                obj = obj.replace(str(stage), str(out))
                obj = obj.replace(os.path.relpath(stage), os.path.relpath(out))
            return obj
        if isinstance(obj, Path):
            return Path(self.final(str(obj)))
        if isinstance(obj, dict):
            return {key: self.final(value) for key, value in obj.items()}
        if isinstance(obj, (list, tuple)):
            return type(obj)(self.final(value) for value in obj)
        return obj

    def _moves(self, only=None):
        moves = []
        for out, stage in self._stages.items():
            for entry in sorted(stage.iterdir()):
                if only is None or entry in only:
                    moves.append((entry, out / entry.name))
        return moves

    def commit(self, only=None):
        """Move the staged entries into place (all of them, or those in ``only``), then remove
        the staging folders. Every destination is checked first: a file cannot replace a
        folder, so nothing moves if one would."""
        moves = self._moves(only)
        for entry, target in moves:
            if target.is_dir() and not entry.is_dir():
                self.discard(created=True)
                raise NmflowError(f"file {str(target)!r} cannot be written: it is a folder")
        try:
            for out in {target.parent for _, target in moves}:
                out.mkdir(exist_ok=True)
            for entry, target in moves:
                if entry.is_dir() and target.is_dir() and not target.is_symlink():
                    shutil.rmtree(target)
                elif entry.is_dir() and target.exists():
                    target.unlink()
                os.replace(entry, target)
        except OSError as error:
            self.discard(created=True)
            raise _cannot_write(error.filename or target, error) from None
        self.discard(created=not moves)

    def discard(self, created=False):
        """Remove the staging folders; with ``created``, also the destination folders this step
        created that are still empty."""
        for stage in self._stages.values():
            shutil.rmtree(stage, ignore_errors=True)
        self._stages.clear()
        if created:
            for folder in reversed(self._created):
                with contextlib.suppress(OSError):
                    folder.rmdir()              # only if empty
        self._created.clear()


@contextlib.contextmanager
def staged_outputs():
    """Stage a step's outputs (:class:`Outputs`): all of them move into place when the block
    ends, or none (but those :meth:`Outputs.keep` names) if it raises or is interrupted. An
    :class:`OSError` inside becomes one line naming the destination and the reason."""
    outputs = Outputs()
    try:
        yield outputs
    except BaseException as error:
        folders = ", ".join(str(out) for out in outputs._stages) or "the outputs"
        if outputs._kept:
            with contextlib.suppress(OSError, NmflowError):
                outputs.commit(only=set(outputs._kept))
        outputs.discard(created=True)
        if isinstance(error, OSError) and error.errno is not None:
            where = outputs.final(error.filename) if error.filename else folders
            raise _cannot_write(where, error) from None
        raise
    outputs.commit()


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

