"""Export a trained float network (:class:`~nmflow.golden.layers.QuantNet`) to the integer hardware
model (:class:`~nmflow.golden.hwmodel.HardwareModel`).

Weights
    The quantized weights, as int8 in {-1, 0, +1}.
Hidden layers: BatchNorm folded into integer thresholds
    In eval mode a hidden neuron computes ``y = gamma * (a - mu) / sigma + beta`` with
    ``sigma = sqrt(running_var + eps)`` on the integer pre-activation ``a = W_q @ x``, then the
    activation. Where ``gamma < 0`` the weight row (and ``mu``) is negated, so that ``y`` grows with
    the stored row's pre-activation ``a'``; then, in float64,

    - sign: ``y >= 0  <=>  a' >= t``, ``t = mu' - beta * sigma / gamma``: ``t_hi = ceil(t)``;
    - ternary: ``y > th  <=>  a' > t_up``: ``t_hi = floor(t_up) + 1``;
      ``y < -th  <=>  a' < t_dn``: ``t_lo = ceil(t_dn)`` (so ``t_lo <= t_hi``);
    - ``gamma == 0``: the output is the constant ``act(beta)``; thresholds give that constant.

    Every threshold is clamped to ``[-(B + 1), B + 1]``, ``B`` the layer's pre-activation bound.
    The float model computes ``y`` in float32, which can land on the other side of a threshold
    than the float64 formula when ``y`` is within rounding of it. So each threshold is then checked
    against the float model's own BatchNorm and activation modules at the integers on both sides
    of it (``y`` is monotonic in ``a'``) and, if it disagrees, replaced by the exact one found by
    bisection; ``meta["export"]["threshold_corrections"]`` counts them. The integer model then
    gives the float model's hidden activations exactly, for every legal input.
Convolutions
    Each output channel is a neuron as above, its BatchNorm the channel's; the geometry (input
    map, kernel, padding, pooling) goes with the layer, and the weights are taken in the hardware
    model's order (:meth:`~nmflow.golden.layers.QuantNet.quantized_weights`). The pooling takes
    the maximum of the activations, so the thresholds stay exact.
Last layer: per-class fixed-point affine
    BatchNorm scales every class differently, so it stays: ``score_j = scale_j * a'_j + offset_j``
    with ``scale = round(|gamma| / sigma * 2**F)`` and ``offset = round((beta - gamma * mu / sigma)
    * 2**F)``, the row negated where ``gamma < 0`` (so ``scale >= 0``). ``F`` (``score_frac_bits``)
    is the largest value, at most 40, for which every rounded ``scale`` is below ``2**15`` and every
    rounded ``offset`` below ``2**31`` in magnitude (the engine has a 16-bit multiplier). The class
    (argmax of the scores) matches the float model's unless two logits are within the rounding.
"""

import json

import numpy as np
import torch

from ..errors import NmflowError
from .hwmodel import OFFSET_LIMIT, SCALE_LIMIT, HardwareModel, Layer, preact_bound
from .layers import QuantNet

__all__ = ["export", "training_meta", "MAX_FRAC_BITS"]

#: Largest ``score_frac_bits`` the export picks (the hardware model allows up to 40).
MAX_FRAC_BITS = 40
#: Pre-activations are exact in the float32 model only below 2**24.
FLOAT32_EXACT = 1 << 24


def _batchnorm(norm, index):
    """The eval-mode BatchNorm parameters of layer ``index`` in float64, checked finite."""
    params = {
        "gamma": norm.weight.detach().double().numpy() if norm.affine else None,
        "beta": norm.bias.detach().double().numpy() if norm.affine else None,
        "mean": norm.running_mean.detach().double().numpy()
        if norm.running_mean is not None else None,
        "var": norm.running_var.detach().double().numpy() if norm.running_var is not None else None,
    }
    if params["mean"] is None or params["var"] is None:
        raise NmflowError(f"layer {index} BatchNorm must keep running statistics "
                          f"(track_running_stats=True) to be folded")
    n = len(params["mean"])
    if params["gamma"] is None:
        params["gamma"], params["beta"] = np.ones(n), np.zeros(n)
    labels = {"gamma": "weight (gamma)", "beta": "bias (beta)", "mean": "running_mean",
              "var": "running_var"}
    for name, value in params.items():
        bad = ~np.isfinite(value)
        if bad.any():
            j = int(np.flatnonzero(bad)[0])
            raise NmflowError(f"layer {index} BatchNorm {labels[name]} must be finite, "
                              f"not {float(value[j])} at neuron {j}")
    if (params["var"] < 0).any():
        j = int(np.flatnonzero(params["var"] < 0)[0])
        raise NmflowError(f"layer {index} BatchNorm running_var must be >= 0, "
                          f"not {float(params['var'][j])} at neuron {j}")
    params["sigma"] = np.sqrt(params["var"] + float(norm.eps))
    return params


def _conv(net, index):
    """Layer ``index``'s convolution geometry as the hardware model stores it, or None."""
    g = None if net.geometry is None else net.geometry[index]
    if g is None or g.kind != "conv":
        return None
    return {"in_shape": [int(v) for v in g.in_shape], "kernel": g.kernel, "padding": g.padding,
            "pool": g.pool}


class _FloatNeuron:
    """The float model's activation of layer ``index`` as a function of the stored row's integer
    pre-activation ``a'`` (``a = sign * a'``), evaluated with the model's own modules."""

    def __init__(self, net, index, sign):
        self.net, self.norm, self.sign = net, net.norms[index], sign

    @torch.no_grad()
    def __call__(self, a_stored):
        a = np.asarray(a_stored, dtype=np.int64) * self.sign
        a = torch.as_tensor(a, dtype=torch.float32).reshape(1, -1)
        if isinstance(self.norm, torch.nn.BatchNorm2d):      # a convolution: one per channel
            a = a.reshape(1, -1, 1, 1)
        y = self.norm(a)
        return self.net.activate(y).reshape(-1).numpy()


def _settle(candidate, predicate, bound):
    """Make each threshold exact for a non-decreasing predicate on the integers [-bound, bound].

    The exact threshold ``t[j]`` satisfies ``predicate(a)[j] == (a >= t[j])`` for every legal
    ``a``. A candidate is kept if the predicate agrees on both sides of it; otherwise it is replaced
    by bisection. Returns ``(thresholds, number_replaced)``.
    """
    c = np.clip(candidate, -(bound + 1), bound + 1).astype(np.int64)
    at = predicate(np.clip(c, -bound, bound))
    below = predicate(np.clip(c - 1, -bound, bound))
    ok = ((c > bound) | at) & ((c <= -bound) | ~below)
    wrong = ~ok
    if wrong.any():
        lo = np.full(len(c), -bound, dtype=np.int64)
        hi = np.full(len(c), bound + 1, dtype=np.int64)
        while (lo[wrong] < hi[wrong]).any():
            mid = (lo + hi) // 2
            hit = predicate(np.clip(mid, -bound, bound)) & (mid <= bound)
            active = wrong & (lo < hi)
            hi = np.where(active & hit, mid, hi)
            lo = np.where(active & ~hit, mid + 1, lo)
        c = np.where(wrong, lo, c)
    return c, int(wrong.sum())


def _thresholds(net, index, bn, sign, bound):
    """``(t_hi, t_lo or None, corrections)`` of hidden layer ``index``."""
    gamma = np.abs(bn["gamma"])
    mu = sign * bn["mean"]
    beta, sigma = bn["beta"], bn["sigma"]
    flat = gamma == 0
    safe = np.where(flat, 1.0, gamma)
    neuron = _FloatNeuron(net, index, sign)
    with np.errstate(invalid="ignore", over="ignore"):
        if net.activation == "sign":
            t = mu - beta * sigma / safe
            t_hi = np.ceil(t)
            # gamma == 0: y = beta everywhere, +1 (always) if beta >= 0 else -1 (never +1)
            t_hi = np.where(flat, np.where(beta >= 0, -(bound + 1), bound + 1), t_hi)
            t_lo = None
        else:
            th = net.act_threshold
            t_up = mu + (th - beta) * sigma / safe
            t_dn = mu + (-th - beta) * sigma / safe
            t_hi = np.floor(t_up) + 1
            t_lo = np.ceil(t_dn)
            t_hi = np.where(flat, np.where(beta > th, -(bound + 1), bound + 1), t_hi)
            t_lo = np.where(flat, np.where(beta < -th, bound + 1, -(bound + 1)), t_lo)
    limit = float(bound + 1)
    t_hi, fixed = _settle(np.clip(np.nan_to_num(t_hi), -limit, limit),
                          lambda a: neuron(a) == 1, bound)
    if t_lo is not None:
        # -1 iff a' < t_lo, that is "not -1" is the non-decreasing predicate
        t_lo, fixed_lo = _settle(np.clip(np.nan_to_num(t_lo), -limit, limit),
                                 lambda a: neuron(a) != -1, bound)
        fixed += fixed_lo
        # "always +1" may settle at -B for t_hi and -(B+1) for t_lo or the other way round:
        # equal on legal inputs, and the contract wants t_lo <= t_hi
        t_lo = np.minimum(t_lo, t_hi)
    return t_hi, t_lo, fixed


def _affine(bn, index):
    """``(scale, offset, frac_bits)`` of the last layer (rows already oriented so gamma >= 0)."""
    gain = np.abs(bn["gamma"]) / bn["sigma"]
    bias = bn["beta"] - bn["gamma"] * bn["mean"] / bn["sigma"]
    for frac in range(MAX_FRAC_BITS, -1, -1):
        scale = np.rint(np.ldexp(gain, frac))
        offset = np.rint(np.ldexp(bias, frac))
        # compare the rounded integers, so a value that rounds onto the limit is refused
        if (np.abs(scale) < SCALE_LIMIT).all() and (np.abs(offset) < OFFSET_LIMIT).all():
            return scale.astype(np.int64), offset.astype(np.int64), frac
    j = int(np.argmax(np.maximum(gain / SCALE_LIMIT, np.abs(bias) / OFFSET_LIMIT)))
    raise NmflowError(f"layer {index} BatchNorm cannot be stored as scores: scale "
                      f"{gain[j]:.6g} and offset {bias[j]:.6g} at class {j} must round below "
                      f"{SCALE_LIMIT} and {OFFSET_LIMIT} even with 0 fraction bits")


def export(net, input_bits, meta=None):
    """Fold a trained float network into an integer :class:`HardwareModel`.

    Reads the network in eval mode (running BatchNorm statistics) and leaves its mode unchanged.

    Parameters
    ----------
    net : QuantNet
    input_bits : int
        Width of the unsigned inputs, 1 to 8 (5 for digits, 8 for MNIST); sets the pre-activation
        bound of the first layer.
    meta : dict, optional
        JSON-serialisable provenance (see :func:`training_meta`); stored with the model together
        with ``meta["export"]``: the network's description and the threshold corrections.

    Returns
    -------
    HardwareModel

    Raises
    ------
    NmflowError
        A net that is not a QuantNet, a bad ``input_bits``, non-finite BatchNorm parameters,
        pre-activations too wide for exact float32 arithmetic, or ``meta`` not JSON-serialisable.
    """
    if not isinstance(net, QuantNet):
        raise NmflowError(f"net must be a QuantNet, not {type(net).__name__}")
    if isinstance(input_bits, bool) or not isinstance(input_bits, int) or not 1 <= input_bits <= 8:
        raise NmflowError(f"input_bits must be an integer from 1 to 8, not {input_bits!r}")
    meta = {} if meta is None else dict(meta)
    was_training = net.training
    net.eval()
    try:
        layers, corrections = [], 0
        last = len(net.linears) - 1
        frac_bits = 0
        for index, (weights, norm) in enumerate(zip(net.quantized_weights(), net.norms)):
            w = weights.numpy().astype(np.int8)
            bound = preact_bound(w, input_bits, index)
            if bound >= FLOAT32_EXACT:
                raise NmflowError(f"layer {index} pre-activation bound must be below "
                                  f"{FLOAT32_EXACT} (exact in float32), not {bound}")
            bn = _batchnorm(norm, index)
            sign = np.where(bn["gamma"] < 0, -1, 1).astype(np.int64)
            w = (w * sign[:, None]).astype(np.int8)
            if index < last:
                t_hi, t_lo, fixed = _thresholds(net, index, bn, sign, bound)
                corrections += fixed
                layers.append(Layer(w, net.activation, t_hi=t_hi.astype(np.int64),
                                    t_lo=None if t_lo is None else t_lo.astype(np.int64),
                                    conv=_conv(net, index)))
            else:
                scale, offset, frac_bits = _affine(bn, index)
                layers.append(Layer(w, "none", scale=scale, offset=offset))
    finally:
        net.train(was_training)
    meta["export"] = {**net.describe(), "input_bits": input_bits,
                      "threshold_corrections": corrections, "score_frac_bits": frac_bits}
    try:
        json.dumps(meta)
    except (TypeError, ValueError) as error:
        raise NmflowError(f"meta must be JSON-serialisable, not ({error})") from None
    return HardwareModel(input_bits=input_bits, weight_kind=net.weight_kind, layers=layers,
                         score_frac_bits=frac_bits, meta=meta)


def training_meta(net, dataset, config=None, history=None):
    """The training provenance of ``net`` as a JSON-serialisable dict, for :func:`export`.

    Parameters
    ----------
    net : QuantNet
    dataset : nmflow.golden.datasets.Dataset
        The float accuracy is measured on its test part (eval mode).
    config : TrainConfig, optional
    history : History, optional

    Returns
    -------
    dict
        ``dataset`` (:meth:`Dataset.info`), ``float_accuracy`` (fraction), ``sizes``,
        ``weight_kind``, ``activation``, ``seed`` and ``config`` when given, ``train_seconds``.
    """
    from .train import evaluate

    meta = {"dataset": dataset.info(),
            "float_accuracy": evaluate(net, dataset.x_test, dataset.y_test),
            "sizes": list(net.sizes), "weight_kind": net.weight_kind,
            "activation": net.activation}
    if config is not None:
        meta["seed"] = config.seed
        meta["config"] = config.to_dict()
    if history is not None:
        meta["train_seconds"] = round(float(history.seconds), 3)
        meta["epochs_run"] = len(history.loss)
    return meta
