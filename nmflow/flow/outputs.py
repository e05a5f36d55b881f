"""One way a step writes its outputs: every file rendered first, then each written atomically, and
none left behind if one fails (a run's JSON, CSV and PNG are all there, or none is new)."""

from pathlib import Path

from ..fileio import make_folder, write_bytes, write_json, write_text

__all__ = ["write_outputs"]


def write_outputs(out, files):
    """Write ``files`` (``{name: content}``, in order) into the folder ``out``: a ``dict`` or
    ``list`` as JSON, ``str`` as text, ``bytes`` as they are, each atomically. If any write fails,
    the files written before it in this call are removed and the error propagates. Returns the
    paths written."""
    out = make_folder(out)
    written = []
    try:
        for name, content in files.items():
            path = Path(out) / name
            if isinstance(content, (dict, list)):
                write_json(path, content)
            elif isinstance(content, str):
                write_text(path, content)
            elif isinstance(content, (bytes, bytearray)):
                write_bytes(path, bytes(content))
            else:
                raise TypeError(f"content of {name} must be JSON data, text or bytes, not "
                                f"{type(content).__name__}")
            written.append(path)
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    return written
