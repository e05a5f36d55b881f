"""One way a step writes its outputs: every file rendered first, then all staged beside the
target folder and moved into place together (a run's JSON, CSV and PNG are all there, or none is
new; see :func:`nmflow.fileio.staged_outputs`)."""

from pathlib import Path

from ..fileio import json_text, staged_outputs

__all__ = ["write_outputs"]


def write_outputs(out, files):
    """Write ``files`` (``{name: content}``, in order) into the folder ``out``: a ``dict`` or
    ``list`` as JSON (finite numbers only), ``str`` as text, ``bytes`` as they are. All appear
    together, or, if one cannot be written, none does and the error propagates (one line for a
    full disk or a folder where a file goes). Returns the paths written."""
    rendered = {}
    for name, content in files.items():
        if isinstance(content, (dict, list)):
            rendered[name] = json_text(content).encode()
        elif isinstance(content, str):
            rendered[name] = content.encode()
        elif isinstance(content, (bytes, bytearray)):
            rendered[name] = bytes(content)
        else:
            raise TypeError(f"content of {name} must be JSON data, text or bytes, not "
                            f"{type(content).__name__}")
    with staged_outputs() as outputs:
        for name, data in rendered.items():
            outputs.file(Path(out) / name).write_bytes(data)
    return [Path(out) / name for name in rendered]
