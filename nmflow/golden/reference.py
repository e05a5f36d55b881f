"""Integer reference model: exactly what the inference engine computes, layer by layer.

``reference(model, x)`` is the golden twin of :class:`nmflow.rtl.engine.InferenceEngine`: the
cocotb checker compares every hidden activation, every score and every class with ``==``. Like the
engine, it reads its weights from the 2T2R memory image through a read function (the read seam of
docs/contracts.md, contract 6): the ideal PCSA read by default, or any
:class:`~nmflow.golden.pairs.ReadFunction` (a device-error model, say) that the engine's read
stage mirrors.
"""

from dataclasses import dataclass

import numpy as np

from ..errors import NmflowError
from .pairs import IdealRead, MemoryMap, memory_codes, read_weights

__all__ = ["check_values", "Trace", "reference", "activate", "argmax_lowest", "check_inputs"]


@dataclass(frozen=True, eq=False)
class Trace:
    """Everything the engine produces for a batch of N inputs.

    Members
    -------
    preacts : list of int64 [N, out], one per layer
    acts : list of int8 [N, out], one per hidden layer, values in {-1, 0, +1}
    scores : int64 [N, classes]
    classes : int64 [N]
    """
    preacts: list
    acts: list
    scores: np.ndarray
    classes: np.ndarray


def activate(a, layer):
    """Apply a hidden layer's activation rule (contract 1) to integer pre-activations."""
    a = np.asarray(a, dtype=np.int64)
    if layer.activation == "sign":
        return np.where(a >= layer.t_hi, 1, -1).astype(np.int8)
    if layer.activation == "ternary":
        return np.where(a >= layer.t_hi, 1, np.where(a < layer.t_lo, -1, 0)).astype(np.int8)
    raise NmflowError(f"activation must be 'sign' or 'ternary', not {layer.activation!r}")


def argmax_lowest(scores):
    """Index of the largest score per row, the lowest index on ties (what ``np.argmax`` does)."""
    return np.argmax(np.asarray(scores), axis=-1).astype(np.int64)


def check_values(x, n_inputs, input_bits, *, name="inputs", batch=None):
    """``x`` as an int64 ``[N, n_inputs]`` array of unsigned ``input_bits``-bit integers, or a
    one-line refusal naming ``name``: ``batch`` True asks for ``[N, n_inputs]``, False for one
    vector ``[n_inputs]``, None takes either."""
    x = np.asarray(x)
    if batch is None and x.ndim == 1:
        x = x[None, :]
    ndim = 1 if batch is False else 2
    shape = f"[{n_inputs}]" if batch is False else f"[N, {n_inputs}]"
    if x.ndim != ndim or x.shape[-1] != n_inputs:
        raise NmflowError(f"{name} must have shape {shape} (n_inputs = {n_inputs}), not "
                          f"{list(x.shape)}")
    if not np.issubdtype(x.dtype, np.integer):
        raise NmflowError(f"{name} must hold integers, not {x.dtype}")
    top = (1 << input_bits) - 1
    bad = (x < 0) | (x > top)
    if bad.any():
        raise NmflowError(f"{name} must hold unsigned {input_bits}-bit integers (0 to {top}), "
                          f"not {int(x[bad][0])}")
    return x.astype(np.int64).reshape(-1, n_inputs)


def check_inputs(model, x):
    """Return ``x`` (one vector or ``[N, n_inputs]``) as an int64 [N, n_inputs] array of the
    ``model``'s inputs, or refuse it with one line."""
    return check_values(x, model.n_inputs, model.input_bits)


def reference(model, x, *, lanes=16, pe=1, read=None, codes=None):
    """Run the integer network on inputs ``x`` ([N, n_inputs] or [n_inputs]); return a :class:`Trace`.

    Parameters
    ----------
    model : :class:`~nmflow.golden.hwmodel.HardwareModel`
    x : integer array
    lanes : int
        Pair codes per memory row: the layout of the memory image the weights are read from.
    pe : int
        Neurons per row of that image (:class:`~nmflow.golden.pairs.MemoryMap`).
    read : :class:`~nmflow.golden.pairs.ReadFunction` or None
        How a row of pair codes is read (the ideal PCSA read by default). A read function with
        ``per_inference`` set is called once per input, in input order, as the engine reads its
        memory once per inference.
    codes : uint8 array [rows, lanes] or None
        The memory image, if it differs from the model's weights (after an on-chip write, say).
    """
    h = check_inputs(model, x)
    mmap = MemoryMap(lanes, tuple(model.sizes), pe)
    if codes is None:
        codes = memory_codes([layer.weights for layer in model.layers], mmap)
    read = IdealRead() if read is None else read
    if not read.per_inference or len(h) <= 1:
        return _forward(model, h, read_weights(codes, mmap, read))
    traces = [_forward(model, h[n:n + 1], read_weights(codes, mmap, read)) for n in range(len(h))]
    return Trace([np.concatenate([t.preacts[k] for t in traces]) for k in range(len(model.layers))],
                 [np.concatenate([t.acts[k] for t in traces]) for k in range(len(model.layers) - 1)],
                 np.concatenate([t.scores for t in traces]),
                 np.concatenate([t.classes for t in traces]))


def _forward(model, h, weights):
    """The integer network on inputs ``h`` with the weight matrices ``weights`` as read."""
    preacts, acts = [], []
    for layer, w in zip(model.layers, weights):
        a = h @ w.astype(np.int64).T
        preacts.append(a)
        if layer.activation == "none":
            scores = a * layer.scale + layer.offset
            return Trace(preacts, acts, scores, argmax_lowest(scores))
        h = activate(a, layer).astype(np.int64)
        acts.append(h.astype(np.int8))
    raise AssertionError("the last layer of a validated model has activation 'none'")
