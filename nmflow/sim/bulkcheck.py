"""The checker of the bulk testbench: every captured beat against the golden model, with ``==``.

:mod:`nmflow.sim.tb_engine_bulk` reads back, at the end of a run, the payload of every result
beat and every trace beat the engine produced, in order, and the cycles of each inference's
first input beat and last result beat (:mod:`nmflow.sim.bulk`). :func:`check_beats` decodes them
in the ports' own Amaranth layouts (:func:`decode_fields`), compares every field of every beat
with what :func:`nmflow.golden.reference.reference` says the engine must show, in the order the
engine shows it (the scoreboard of :mod:`nmflow.sim.tb_engine` expects the same beats), and
rebuilds the outputs in the golden model's shapes (classes, scores, hidden activations, cycles,
finish) as the beat testbench does. The work is NumPy over whole arrays: no Python per beat
unless a beat is wrong.

A mismatch is one line naming the image (numbered in the whole input set), the beat and its
wrong fields: ``image 183: result beat 4: score is 1021, golden model 1023``.
"""

from dataclasses import dataclass, field

import numpy as np
from amaranth.hdl import Shape
from amaranth.lib import data

__all__ = ["read_words", "decode_fields", "expected_beats", "check_beats", "BulkCheck",
           "hidden_shapes"]


def read_words(path):
    """The words of a ``$writememh`` file, in order, as Python integers (``//`` comments and
    ``@`` addresses skipped: the testbench writes from address 0 on). A word with an ``x`` or
    ``z`` digit (never written) is a :class:`ValueError` naming it."""
    words = []
    with open(path) as f:
        for number, line in enumerate(f, 1):
            text = line.split("//", 1)[0].strip()
            if not text or text.startswith("@"):
                continue
            for token in text.split():
                try:
                    words.append(int(token, 16))
                except ValueError:
                    raise ValueError(f"{path}: line {number}: {token!r} is not a defined "
                                     f"hexadecimal word") from None
    return words


def _flat_fields(layout, offset=0, name=()):
    """``(name path, offset, width, signed)`` of every scalar field of ``layout``."""
    if isinstance(layout, data.StructLayout):
        for key, member in layout:
            yield from _flat_fields(member.shape, offset + member.offset, name + (key,))
    elif isinstance(layout, data.ArrayLayout):
        width = Shape.cast(layout.elem_shape).width
        for k in range(layout.length):
            yield from _flat_fields(layout.elem_shape, offset + k * width, name + (k,))
    else:
        shape = Shape.cast(layout)
        yield name, offset, shape.width, shape.signed


def decode_fields(words, layout):
    """The fields of payload ``words`` (integers) of ``layout``: a dict from each field of a
    struct to an int64 array (an array field: a 2-D array, one column per element); signed
    fields in two's complement."""
    width = Shape.cast(layout).width
    raw = np.array(words, dtype=np.int64 if width < 63 else object)
    if not len(words):
        raw = np.zeros(0, dtype=np.int64)
    columns = {}
    for name, offset, bits, signed in _flat_fields(layout):
        value = ((raw >> offset) & ((1 << bits) - 1)).astype(np.int64)
        if signed:
            value = np.where(value >> (bits - 1) & 1, value - (1 << bits), value)
        columns[name] = value
    out = {}
    for name, value in columns.items():
        if len(name) == 1:
            out[name[0]] = value
        else:                                       # an array's elements, in order
            out.setdefault(name[0], []).append(value)
    return {key: np.stack(value, axis=1) if isinstance(value, list) else value
            for key, value in out.items()}


def hidden_shapes(model):
    """Each hidden layer's output as ``(pixels, channels)``: a convolution's pooled map, a
    fully connected layer's neurons as one pixel."""
    return [(layer.out_shape[1] * layer.out_shape[2], layer.n_out)
            for layer in model.layers[:-1]]


def _trace_order(hidden, pe):
    """The trace beats of one inference as arrays ``layer, pixel, group``: layer after layer,
    pixel after pixel, group after group (the engine's order)."""
    order = [(k, pixel, group) for k, (pixels, channels) in enumerate(hidden)
             for pixel in range(pixels) for group in range(-(-channels // pe))]
    return {name: np.array([o[i] for o in order], dtype=np.int64)
            for i, name in enumerate(("layer", "pixel", "group"))}


def expected_beats(golden, n_classes, hidden, pe):
    """The beats the engine must show for the golden model's trace ``golden``: result fields
    ``index, score, cls, last`` as [N, n_classes] arrays and trace fields ``layer, group`` as
    [beats] arrays (the same for every inference) and ``acts`` as [N, beats, pe] (padding
    neurons, past a layer's outputs, trace 0). ``hidden``: :func:`hidden_shapes`."""
    images = len(golden.classes)
    results = {"index": np.broadcast_to(np.arange(n_classes), (images, n_classes)),
               "score": np.asarray(golden.scores, dtype=np.int64),
               "cls": np.broadcast_to(np.asarray(golden.classes, dtype=np.int64)[:, None],
                                      (images, n_classes)),
               "last": np.broadcast_to(np.arange(n_classes) == n_classes - 1,
                                       (images, n_classes)).astype(np.int64)}
    acts = []
    for layer, (pixels, channels) in enumerate(hidden):
        count = -(-channels // pe)
        padded = np.zeros((images, pixels, count * pe), dtype=np.int64)
        padded[:, :, :channels] = np.asarray(golden.acts[layer]).reshape(images, pixels,
                                                                         channels)
        acts.append(padded.reshape(images, pixels * count, pe))
    order = _trace_order(hidden, pe)
    traces = {"layer": order["layer"], "group": order["group"],
              "acts": np.concatenate(acts, axis=1) if acts else np.zeros((images, 0, pe))}
    return results, traces


@dataclass
class BulkCheck:
    """What :func:`check_beats` found.

    Members
    -------
    compared : int
        Beats compared (result and trace beats expected, and any beyond).
    mismatches : list of str
        One line per wrong beat (a missing or unexpected beat too), image by image, each
        image's trace beats before its result beats (the engine's order).
    outputs : dict
        ``classes`` [N], ``scores`` [N, n_classes], ``acts{n}`` [N, size] (int8), ``cycles``
        and ``finish`` [N]: what the RTL produced, in the golden model's shapes.
    """
    compared: int = 0
    mismatches: list = field(default_factory=list)
    outputs: dict = field(default_factory=dict)

    @property
    def errors(self):
        return len(self.mismatches)

    def failure(self, reference="golden model"):
        """``"<errors> mismatches against the golden model, the first: <message>"``."""
        if not self.mismatches:
            return f"no mismatches against the {reference}"
        return (f"{self.errors} mismatches against the {reference}, the first: "
                f"{self.mismatches[0]}")


def _compare(got, expected, labels, reference, order):
    """The mismatch lines of beats ``got`` against ``expected`` (dicts of field arrays over the
    same beats, flattened to [beats, ...]): ``labels(k)`` names beat ``k``; fields in
    ``order``."""
    if not len(labels):
        return []
    wrong = np.zeros(len(labels), dtype=bool)
    for name in order:
        diff = got[name] != expected[name]
        wrong |= diff.reshape(len(wrong), -1).any(axis=1)
    lines = []
    for k in np.flatnonzero(wrong):
        k = int(k)
        parts = []
        for name in order:
            g, e = got[name][k], expected[name][k]
            if np.any(g != e):
                g, e = (g.tolist(), e.tolist())
                parts.append(f"{name} is {g!r}, {reference} {e!r}")
        lines.append((k, f"{labels[k]}: {'; '.join(parts)}"))
    return lines


class _Labels:
    """Beat labels made on demand: ``image <first + k // per>: <what> <k % per>``."""

    def __init__(self, count, per, first, what):
        self.count, self.per, self.first, self.what = count, per, first, what

    def __len__(self):
        return self.count

    def __getitem__(self, k):
        return self.what(self.first + k // self.per, k % self.per)


def _stream(got, expected, per, first, what, stream, reference, order):
    """Compare a stream's beats (``got``: field arrays over the beats taken) with the beats
    expected (field arrays [images * per, ...]); a beat missing or beyond them is a mismatch.
    Returns ``(compared, [(beat, line), ...])``."""
    taken = len(got[order[0]])
    wanted = len(expected[order[0]])
    common = min(taken, wanted)
    lines = _compare({k: v[:common] for k, v in got.items()},
                     {k: v[:common] for k, v in expected.items()},
                     _Labels(common, per, first, what), reference, order)
    for k in range(common, wanted):
        lines.append((k, f"{what(first + k // per, k % per)}: never came ({taken} {stream} "
                         f"beats of {wanted})"))
    for k in range(wanted, taken):
        lines.append((k, f"{stream} beat {k}: no beat expected ({taken} {stream} beats of "
                         f"{wanted})"))
    return max(taken, wanted), lines


def check_beats(model, golden, results, traces, *, pe=1, first=0, starts=None, finishes=None,
                reference="golden model"):
    """Compare the engine's result and trace beats with the golden model's; return a
    :class:`BulkCheck`.

    Parameters
    ----------
    model : :class:`~nmflow.golden.hwmodel.HardwareModel`
    golden : :class:`~nmflow.golden.reference.Trace`
        The golden model on the images simulated (through the engine's read seam).
    results, traces : dict of arrays
        The fields of every result beat (``index, score, cls, last``) and trace beat
        (``layer, group, acts`` [beats, pe]) taken, in order (:func:`decode_fields`).
    pe : int
        Neurons per trace beat.
    first : int
        The number of the first image in messages.
    starts, finishes : int arrays, optional
        The cycle of each inference's first input beat and last result beat (for ``cycles``
        and ``finish``; zeros without them).
    """
    images, n_classes = len(golden.classes), model.n_classes
    want_results, want_traces = expected_beats(golden, n_classes, hidden_shapes(model), pe)
    per = len(want_traces["layer"])
    flat_results = {k: np.asarray(v).reshape(images * n_classes) for k, v in
                    want_results.items()}
    flat_traces = {"layer": np.tile(want_traces["layer"], images),
                   "group": np.tile(want_traces["group"], images),
                   "acts": np.asarray(want_traces["acts"]).reshape(images * per, pe)}
    check = BulkCheck()
    layer_of = want_traces["layer"]
    group_of = want_traces["group"]
    found = []
    # An inference's trace beats come before its result beats: mismatches in that order.
    for rank, (got, want, count, what, stream, order) in enumerate((
            (traces, flat_traces, per, lambda i, k: (
                f"image {i}: layer {layer_of[k]} activations {group_of[k] * pe} to "
                f"{group_of[k] * pe + pe - 1}"), "trace", ("layer", "group", "acts")),
            (results, flat_results, n_classes, lambda i, k: f"image {i}: result beat {k}", "o",
             ("index", "score", "cls", "last")))):
        compared, lines = _stream(got, want, count, first, what, stream, reference, order)
        check.compared += compared
        found += [(beat // max(count, 1), rank, beat, line) for beat, line in lines]
    check.mismatches = [line for *_, line in sorted(found)]
    check.outputs = _outputs(model, results, traces, images, pe, starts, finishes)
    return check


def _outputs(model, results, traces, images, pe, starts, finishes):
    """What the RTL produced in the golden model's shapes, placed by the beats' own fields as
    the beat testbench does: a result beat belongs to the inference of the ``last`` beats
    before it; the trace beats come ``per`` to an inference."""
    n_classes = model.n_classes
    classes = np.full(images, -1, dtype=np.int64)
    scores = np.zeros((images, n_classes), dtype=np.int64)
    last = np.asarray(results["last"], dtype=np.int64)
    image = np.cumsum(last) - last                  # the inference each result beat is of
    keep = (image < images) & (results["index"] < n_classes) & (results["index"] >= 0)
    scores[image[keep], results["index"][keep]] = results["score"][keep]
    ends = (last == 1) & (image < images)
    classes[image[ends]] = results["cls"][ends]

    hidden = hidden_shapes(model)
    acts = [np.zeros((images, pixels * channels), dtype=np.int8) for pixels, channels in hidden]
    order = _trace_order(hidden, pe)
    per = len(order["layer"])
    beats = len(traces["layer"])
    of = np.arange(beats) // max(per, 1)
    pixel = order["pixel"][np.arange(beats) % max(per, 1)] if per else np.zeros(beats, int)
    for layer, (out, (_, channels)) in enumerate(zip(acts, hidden)):
        for q in range(pe):
            channel = traces["group"] * pe + q
            keep = (of < images) & (traces["layer"] == layer) & (channel < channels)
            out[of[keep], pixel[keep] * channels + channel[keep]] = traces["acts"][keep, q]

    zeros = np.zeros(images, dtype=np.int64)
    starts = zeros if starts is None else np.asarray(starts, dtype=np.int64)
    finishes = zeros if finishes is None else np.asarray(finishes, dtype=np.int64)
    cycles = np.where(finishes > 0, finishes - starts + 1, 0)
    outputs = {"classes": classes, "scores": scores, "cycles": cycles, "finish": finishes}
    outputs.update({f"acts{n}": a for n, a in enumerate(acts)})
    return outputs
