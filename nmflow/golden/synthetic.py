"""Random hardware models with realistic thresholds, for tests and benchmarks of the hardware.

The thresholds are drawn from the spread of the pre-activations that random inputs produce, so
that every activation value (and, for ternary layers, all three) actually occurs.
"""

import numpy as np

from .hwmodel import HardwareModel, Layer

__all__ = ["random_model", "random_inputs"]


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
