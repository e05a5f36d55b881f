"""Accuracy of the integer hardware model under PCSA read errors (thesis, Fig. 4.9).

The weights are read again for every inference, so each input sees its own, independently drawn
read errors (:func:`read_per_image` draws them for a batch of inputs at once, as weights
``[N, out, in]`` per layer, with :func:`nmflow.golden.readerrors.inject`). The network itself is
exactly that of :func:`nmflow.golden.reference.reference` (same integer arithmetic, same
activation rules, same argmax); with zero error rates it gives the same classes and scores.

:func:`accuracy_with_errors` averages the accuracy over several passes over the inputs; pass
``p`` draws from ``numpy.random.default_rng([seed, p])``. Because :func:`inject` draws one
uniform number per weight whatever the rates, the same seed at two rates gives coupled draws: the
errors at the lower rate are a subset of those at the higher one (common random numbers), so a
sweep's curve is smooth in the rate instead of jittering from point to point.
"""

import math

import numpy as np

from .. import limits
from ..errors import NmflowError, check_int
from .readerrors import ErrorRates, inject
from .reference import activate, argmax_lowest, check_inputs, input_maps, max_pool, windows

__all__ = ["read_per_image", "classify_with_errors", "accuracy_with_errors", "pass_accuracies",
           "rate_grid", "check_rates", "BATCH_WEIGHTS"]

#: Weights drawn at once (images in a batch x the largest layer): bounds the memory of a batch
#: (about 50 bytes per weight while drawing). Fixed, so the draws do not depend on the machine.
BATCH_WEIGHTS = 1 << 21


def check_rates(model, rates):
    """Return ``rates`` (an :class:`ErrorRates`) if they apply to ``model``; refuse otherwise."""
    if not isinstance(rates, ErrorRates):
        raise NmflowError(f"rates must be an ErrorRates, not {type(rates).__name__}")
    if model.weight_kind == "binary" and (rates.type2 or rates.type3):
        raise NmflowError(f"error rates type2 and type3 must be 0 for a binary model (its weights "
                          f"are +-1, read without a zero), not {rates.type2!r} and "
                          f"{rates.type3!r}")
    return rates


def _batch(model):
    return max(1, BATCH_WEIGHTS // max(layer.weights.size for layer in model.layers))


def read_per_image(model, count, rates, rng):
    """The weights as ``count`` inferences read them, each with its own errors.

    Returns
    -------
    list of int8 [count, out, in], one per layer
    """
    return [inject(np.broadcast_to(layer.weights, (count, *layer.weights.shape)), rates, rng)
            for layer in model.layers]


def _forward(model, h, weights):
    """The integer network on inputs ``h`` [N, in] with per-input weights [N, out, in]: the
    arithmetic of :func:`nmflow.golden.reference._forward`, one weight matrix per input (a
    convolution's kernel as that input reads it, the same at every position of its map)."""
    for index, (layer, w) in enumerate(zip(model.layers, weights)):
        if layer.conv is not None:
            a = np.einsum("nhwc,noc->nhwo", windows(input_maps(h, layer, index),
                                                    layer.conv["kernel"],
                                                    layer.conv["padding"]), w.astype(np.int64))
            h = max_pool(activate(a, layer), layer.conv["pool"]).reshape(len(h), -1)
            h = h.astype(np.int64)
            continue
        a = np.matmul(w.astype(np.int64), h[:, :, None])[:, :, 0]
        if layer.activation == "none":
            scores = a * layer.scale + layer.offset
            return scores, argmax_lowest(scores)
        h = activate(a, layer).astype(np.int64)
    raise AssertionError("the last layer of a validated model has activation 'none'")


def classify_with_errors(model, x, rates, rng):
    """Scores and classes of inputs ``x`` with weights read under ``rates``, drawn per input.

    Inputs are taken in batches of a fixed size (a function of the model only), in order, so the
    result depends on ``rng``'s state and nothing else.

    Returns
    -------
    scores : int64 [N, classes]
    classes : int64 [N]
    """
    h = check_inputs(model, x)
    rates = check_rates(model, rates)
    batch = _batch(model)
    scores = np.zeros((len(h), model.n_classes), dtype=np.int64)
    classes = np.zeros(len(h), dtype=np.int64)
    for first in range(0, len(h), batch):
        part = h[first:first + batch]
        scores[first:first + len(part)], classes[first:first + len(part)] = _forward(
            model, part, read_per_image(model, len(part), rates, rng))
    return scores, classes


def _check_labels(model, x, y):
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != len(x) or not np.issubdtype(y.dtype, np.integer):
        raise NmflowError(f"labels y must be {len(x)} integers, one per input, not {y.dtype} of "
                          f"shape {list(y.shape)}")
    if len(y) == 0:
        raise NmflowError("inputs must hold at least one image, not 0")
    return y


def pass_accuracies(model, x, y, rates, *, passes=5, seed=0):
    """Accuracy (fraction) of each of ``passes`` passes over ``x``; pass ``p`` draws its errors
    from ``numpy.random.default_rng([seed, p])``. Returns float64 [passes]."""
    passes = check_int("passes", passes, 1)
    seed = check_int("seed", seed, 0)
    x = check_inputs(model, x)
    y = _check_labels(model, x, y)
    check_rates(model, rates)
    return np.array([float((classify_with_errors(model, x, rates, np.random.default_rng(
        [seed, p]))[1] == y).mean()) for p in range(passes)])


def accuracy_with_errors(model, x, y, rates, *, passes=5, seed=0):
    """Mean and standard deviation of the accuracy (fractions) over ``passes`` passes.

    Parameters
    ----------
    model : :class:`~nmflow.golden.hwmodel.HardwareModel`
    x : integer array [N, n_inputs]
    y : integer array [N]
    rates : :class:`~nmflow.golden.readerrors.ErrorRates`
        Types 2 and 3 must be 0 for a binary model.
    passes : int
        Passes over the inputs, each with fresh errors for every input (at least 1).
    seed : int
        Non-negative; pass ``p`` draws from ``default_rng([seed, p])``.

    Returns
    -------
    (mean, std) : floats; ``std`` is the sample standard deviation (``ddof=1``), 0 for one pass.
    """
    acc = pass_accuracies(model, x, y, rates, passes=passes, seed=seed)
    if (acc == acc[0]).all():           # exactly 0, not the rounding residue of the mean
        return float(acc[0]), 0.0
    return float(acc.mean()), float(acc.std(ddof=1))


def rate_grid(low=1e-4, high=0.5, per_decade=3):
    """Log-spaced error rates from ``low`` to ``high`` (both included): ``per_decade`` points
    per decade on the powers of ten above ``low`` (``1e-4, 2.15e-4, 4.64e-4, 1e-3, ...``), then
    ``high`` (which replaces a last point within half a step of it), rounded to 6 digits.

    Returns
    -------
    list of float
    """
    for name, value in (("low rate", low), ("high rate", high)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not (math.isfinite(value) and 0.0 < value <= 1.0):
            raise NmflowError(f"{name} must be in (0, 1] on a log grid, not {value!r}")
    if low >= high:
        raise NmflowError(f"low rate must be below high rate, not {low!r} >= {high!r}")
    per_decade = check_int("points per decade", per_decade, 1, limits.PER_DECADE)
    steps = math.floor(per_decade * math.log10(high / low) + 1e-9)
    grid = [low * 10.0 ** (k / per_decade) for k in range(steps + 1)]
    if len(grid) > 1 and high / grid[-1] < 10.0 ** (0.5 / per_decade):
        grid.pop()              # within half a step of high: high takes its place
    if grid[-1] < high:
        grid.append(high)
    return [float(np.float64(f"{r:.6g}")) for r in grid]

