"""Random hardware models with realistic thresholds, for tests and benchmarks of the hardware.

The thresholds are drawn from the spread of the pre-activations that random inputs produce, so
that every activation value (and, for ternary layers, all three) actually occurs.
"""

import numpy as np

from .arch import geometry, parse_arch
from .hwmodel import HardwareModel, Layer
from .reference import max_pool, windows

__all__ = ["random_model", "random_conv_model", "random_inputs"]


def random_inputs(model, count, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 1 << model.input_bits, size=(count, model.n_inputs), dtype=np.int64)


def random_model(sizes, *, input_bits=4, weight_kind="ternary", activation=None, seed=0,
                 zero_fraction=0.3):
    """A :class:`HardwareModel` of layer sizes ``sizes`` (inputs first) with random weights."""
    rng = np.random.default_rng(seed)
    activation = activation or ("ternary" if weight_kind == "ternary" else "sign")
    probe = rng.integers(0, 1 << input_bits, size=(64, sizes[0]))
    layers = []
    for index, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        w = rng.choice([-1, 1], size=(n_out, n_in)).astype(np.int8)
        if weight_kind == "ternary":
            w[rng.random((n_out, n_in)) < zero_fraction] = 0
        a = probe @ w.astype(np.int64).T
        if index == len(sizes) - 2:
            scale = rng.integers(1, 1 << 12, size=n_out).astype(np.int64)
            offset = rng.integers(-(1 << 16), 1 << 16, size=n_out).astype(np.int64)
            layers.append(Layer(w, "none", scale=scale, offset=offset))
            break
        centre = np.median(a, axis=0)
        spread = a.std(axis=0) + 1
        if activation == "sign":
            t_hi = np.round(centre + rng.normal(0, 0.2, n_out) * spread).astype(np.int64)
            layers.append(Layer(w, "sign", t_hi=t_hi))
            probe = np.where(a >= t_hi, 1, -1)
        else:
            half = np.abs(rng.normal(0.5, 0.2, n_out)) * spread
            t_hi = np.ceil(centre + half).astype(np.int64)
            t_lo = np.floor(centre - half).astype(np.int64)
            layers.append(Layer(w, "ternary", t_hi=t_hi, t_lo=t_lo))
            probe = np.where(a >= t_hi, 1, np.where(a < t_lo, -1, 0))
    return HardwareModel(input_bits=input_bits, weight_kind=weight_kind, layers=layers,
                         score_frac_bits=12, meta={"source": "random", "seed": seed})


def _thresholds(rng, a, activation):
    """Thresholds around the spread of pre-activations ``a`` [samples, neurons], and the
    activations they give."""
    n_out = a.shape[1]
    centre = np.median(a, axis=0)
    spread = a.std(axis=0) + 1
    if activation == "sign":
        t_hi = np.round(centre + rng.normal(0, 0.2, n_out) * spread).astype(np.int64)
        return {"t_hi": t_hi}, np.where(a >= t_hi, 1, -1)
    half = np.abs(rng.normal(0.5, 0.2, n_out)) * spread
    t_hi = np.ceil(centre + half).astype(np.int64)
    t_lo = np.floor(centre - half).astype(np.int64)
    return {"t_hi": t_hi, "t_lo": t_lo}, np.where(a >= t_hi, 1, np.where(a < t_lo, -1, 0))


def random_conv_model(arch, in_shape, *, input_bits=4, weight_kind="ternary", seed=0,
                      zero_fraction=0.3, probes=32):
    """A :class:`HardwareModel` of the layer string ``arch`` (:func:`~nmflow.golden.arch.
    parse_arch`, convolutions allowed) on images of ``in_shape`` (channels, height, width), with
    random weights and thresholds drawn around the pre-activations of ``probes`` random
    images (every activation value occurs)."""
    rng = np.random.default_rng(seed)
    activation = "ternary" if weight_kind == "ternary" else "sign"
    geo = geometry(parse_arch(arch), in_shape)
    channels, height, width = in_shape
    h = rng.integers(0, 1 << input_bits, size=(probes, channels, height, width))
    h = h.transpose(0, 2, 3, 1)                     # [N, H, W, C], as the reference holds maps
    layers = []
    for index, g in enumerate(geo):
        w = rng.choice([-1, 1], size=(g.n_out, g.n_in)).astype(np.int8)
        if weight_kind == "ternary":
            w[rng.random(w.shape) < zero_fraction] = 0
        if g.kind == "conv":
            a = windows(h, g.kernel, g.padding) @ w.astype(np.int64).T
            flat = a.reshape(-1, g.n_out)
        else:
            flat = a = h.reshape(probes, -1) @ w.astype(np.int64).T
        if index == len(geo) - 1:
            scale = rng.integers(1, 1 << 12, size=g.n_out).astype(np.int64)
            offset = rng.integers(-(1 << 16), 1 << 16, size=g.n_out).astype(np.int64)
            layers.append(Layer(w, "none", scale=scale, offset=offset))
            break
        params, acts = _thresholds(rng, flat, activation)
        conv = None
        if g.kind == "conv":
            conv = {"in_shape": list(g.in_shape), "kernel": g.kernel, "padding": g.padding,
                    "pool": g.pool}
            acts = max_pool(acts.reshape(a.shape), g.pool)
        layers.append(Layer(w, activation, conv=conv, **params))
        h = acts
    return HardwareModel(input_bits=input_bits, weight_kind=weight_kind, layers=layers,
                         score_frac_bits=12, meta={"source": "random", "seed": seed,
                                                   "arch": arch, "in_shape": list(in_shape)})
