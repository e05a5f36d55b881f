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

__all__ = ["check_values", "Trace", "reference", "activate", "argmax_lowest", "check_inputs",
           "windows", "max_pool", "read_order", "input_maps"]


@dataclass(frozen=True, eq=False)
class Trace:
    """Everything the engine produces for a batch of N inputs.

    Members
    -------
    preacts : list of int64 [N, out], one per layer (a convolution's: [N, H' * W' * channels]
        before pooling)
    acts : list of int8 [N, out], one per hidden layer, values in {-1, 0, +1} (a convolution's:
        its pooled map, pixel by pixel, channels innermost)
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
    mmap = MemoryMap.for_model(model, lanes, pe)
    if codes is None:
        codes = memory_codes([layer.weights for layer in model.layers], mmap)
    read = IdealRead() if read is None else read
    if model.has_conv and read.per_read:
        return _reference_per_read(model, h, lanes, pe, read, codes)
    if not read.per_inference or len(h) <= 1:
        return _forward(model, h, read_weights(codes, mmap, read))
    traces = [_forward(model, h[n:n + 1], read_weights(codes, mmap, read)) for n in range(len(h))]
    return _concat(traces, len(model.layers))


def _concat(traces, layers):
    return Trace([np.concatenate([t.preacts[k] for t in traces]) for k in range(layers)],
                 [np.concatenate([t.acts[k] for t in traces]) for k in range(layers - 1)],
                 np.concatenate([t.scores for t in traces]),
                 np.concatenate([t.classes for t in traces]))


def read_order(plan):
    """The weight-memory rows an engine of ``plan`` reads in one inference, in its order: a
    fully connected layer's rows once each, in address order; a convolution's group rows once
    per position of the pooling window of every pooled pixel (the sequencer's walk,
    :class:`~nmflow.golden.plan.Walk`). int64 [reads]."""
    out = []
    for base, walk in zip(plan.mmap.bases, plan.walks):
        rows = base + np.arange(walk.groups)[:, None] * walk.per + np.arange(walk.per)
        out.append(np.broadcast_to(rows[None, :, None, :], (
            walk.out_pixels, walk.groups, walk.pool ** 2, walk.per)).reshape(-1))
    return np.concatenate(out)


def _reference_per_read(model, h, lanes, pe, read, codes):
    """:func:`reference` with a read function that draws per read (:attr:`~nmflow.golden.pairs.
    ReadFunction.per_read`) on a network with convolutions: the rows as the engine reads them
    (:func:`read_order`), each read with its own draw, in each inference (once for the batch
    when the function restarts after every inference: not ``per_inference``)."""
    from .plan import EnginePlan
    plan = EnginePlan(model, lanes, pe=pe)
    if codes is None:
        codes = plan.memory_codes()
    order = read_order(plan)
    rows = np.asarray(codes, dtype=np.uint8)[order]
    last = plan.mmap.rows - 1
    if not read.per_inference:
        return _forward_reads(model, h, plan, np.asarray(read.read_rows(rows, order, last)))
    return _concat([_forward_reads(model, h[n:n + 1], plan,
                                   np.asarray(read.read_rows(rows, order, last)))
                    for n in range(len(h))], len(model.layers))


def _forward_reads(model, h, plan, weights):
    """The integer network on inputs ``h`` with every row read of one inference, ``weights``
    int8 [reads, lanes] in :func:`read_order`: each output position of a convolution computed
    with the rows as read for it. A convolution's pre-activations at the positions its pooling
    drops (an odd side's last row or column, which the engine does not compute) are 0."""
    simd, pe, mmap = plan.simd, plan.pe, plan.mmap
    preacts, acts, offset = [], [], 0
    for index, (layer, walk) in enumerate(zip(model.layers, plan.walks)):
        s2, n_out = walk.pool ** 2, layer.n_out
        count = walk.out_pixels * walk.groups * s2 * walk.per
        w = (weights[offset:offset + count].astype(np.int64)
             .reshape(walk.out_pixels, walk.groups, s2, walk.per, pe, simd)
             .transpose(0, 2, 1, 4, 3, 5)
             .reshape(walk.out_pixels, s2, walk.groups * pe, walk.per * simd)[:, :, :n_out])
        offset += count
        if layer.conv is None:
            x = np.zeros((len(h), walk.per * simd), dtype=np.int64)
            x[:, mmap.columns(index)] = h
            h = _dense(x @ w[0, 0].T, layer, preacts, acts)
            if isinstance(h, Trace):
                return h
            continue
        channels = layer.conv["in_shape"][0]
        maps = input_maps(h, layer, index)
        padded = np.zeros(maps.shape[:3] + (walk.chunks * simd,), dtype=np.int64)
        padded[..., :channels] = maps
        win = windows(padded, layer.conv["kernel"], layer.conv["padding"])
        s, hp, wp = walk.pool, walk.out_height, walk.out_width
        win = (win[:, :hp * s, :wp * s].reshape(len(h), hp, s, wp, s, -1)
               .transpose(0, 1, 3, 2, 4, 5).reshape(len(h), hp * wp, s2, -1))
        a = np.einsum("npwc,pwoc->npwo", win, w)
        full = np.zeros((len(h),) + layer.conv_shape[1:] + (n_out,), dtype=np.int64)
        full[:, :hp * s, :wp * s] = (a.reshape(len(h), hp, wp, s, s, n_out)
                                     .transpose(0, 1, 3, 2, 4, 5)
                                     .reshape(len(h), hp * s, wp * s, n_out))
        preacts.append(full.reshape(len(h), -1))
        h = activate(a, layer).max(axis=2).reshape(len(h), -1).astype(np.int64)
        acts.append(h.astype(np.int8))
    raise AssertionError("the last layer of a validated model has activation 'none'")


def _dense(a, layer, preacts, acts):
    """A fully connected layer's pre-activations ``a`` recorded: the :class:`Trace` when it is
    the last layer, else its activations (int64, the next layer's inputs)."""
    preacts.append(a)
    if layer.activation == "none":
        scores = a * layer.scale + layer.offset
        return Trace(preacts, acts, scores, argmax_lowest(scores))
    h = activate(a, layer).astype(np.int64)
    acts.append(h.astype(np.int8))
    return h


def input_maps(h, layer, index):
    """The map convolution ``layer`` (layer ``index``) reads, [N, H, W, C], from its flat
    inputs ``h``: the network's inputs come channel by channel (the dataset's order), a
    layer's activations pixel by pixel, channels innermost."""
    channels, height, width = layer.conv["in_shape"]
    if index == 0:
        return h.reshape(len(h), channels, height, width).transpose(0, 2, 3, 1)
    return h.reshape(len(h), height, width, channels)


def windows(maps, kernel, padding):
    """Every ``kernel`` x ``kernel`` window of ``maps`` [N, H, W, C] (zero ``padding`` around
    them), stride 1: [N, H', W', kernel * kernel * C], each window ordered by kernel row, kernel
    column, then channel (a convolution's weight row, contract 1)."""
    n, height, width, channels = maps.shape
    padded = np.pad(maps, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    h_out, w_out = height + 2 * padding - kernel + 1, width + 2 * padding - kernel + 1
    out = np.empty((n, h_out, w_out, kernel, kernel, channels), dtype=maps.dtype)
    for dy in range(kernel):
        for dx in range(kernel):
            out[:, :, :, dy, dx, :] = padded[:, dy:dy + h_out, dx:dx + w_out, :]
    return out.reshape(n, h_out, w_out, kernel * kernel * channels)


def max_pool(maps, size):
    """The maximum over ``size`` x ``size`` windows, stride ``size``, of ``maps`` [N, H, W, C]
    (an odd side's last row or column dropped)."""
    n, height, width, channels = maps.shape
    h_out, w_out = height // size, width // size
    cut = maps[:, :h_out * size, :w_out * size, :]
    return cut.reshape(n, h_out, size, w_out, size, channels).max(axis=(2, 4))


def _forward(model, h, weights):
    """The integer network on inputs ``h`` with the weight matrices ``weights`` as read.
    Convolutions' pre-activations (before pooling) and activations (after) are flattened pixel
    by pixel, channels innermost."""
    preacts, acts = [], []
    for index, (layer, w) in enumerate(zip(model.layers, weights)):
        w = w.astype(np.int64)
        if layer.conv is not None:
            a = windows(input_maps(h, layer, index), layer.conv["kernel"], layer.conv["padding"]) @ w.T
            preacts.append(a.reshape(len(h), -1))
            pooled = max_pool(activate(a, layer), layer.conv["pool"])
            h = pooled.reshape(len(h), -1).astype(np.int64)
            acts.append(h.astype(np.int8))
            continue
        h = _dense(h @ w.T, layer, preacts, acts)
        if isinstance(h, Trace):
            return h
    raise AssertionError("the last layer of a validated model has activation 'none'")
