"""Read errors of a ternary 2T2R memory read by a precharge sense amplifier (thesis, chapter 4).

A PCSA read of a pair can go wrong in three ways (thesis Table 4.2):

* **type 1**, a sign flip: a non-zero weight is read with the opposite sign (LRS/HRS read as
  HRS/LRS). Rare (< 1e-6 in the measured chip) and the most harmful.
* **type 2**, a non-zero weight read as 0 (the LRS device is resistive enough that the PCSA does
  not converge within the sense window). Below 1 %.
* **type 3**, a zero read as +1 or -1 (one of the two HRS devices is conductive enough that the
  PCSA converges). 6.5 % with 100 us programming pulses, 18.5 % with 1 us; the network barely
  notices.

:class:`ErrorRates` holds the three probabilities; each is *per read of an eligible weight* (types
1 and 2 per read of a non-zero weight, type 3 per read of a zero). :func:`inject` draws errors
with numpy's generator, for experiments in software (sweeps of accuracy against error rate); the
engine's injector and its bit-exact golden twin live in :mod:`nmflow.golden.injector`.
"""

import math
from dataclasses import dataclass

import numpy as np

from ..errors import NmflowError

__all__ = ["ErrorRates", "ERROR_TYPES", "inject", "decide"]

#: The error types, in the order of the thesis.
ERROR_TYPES = ("type1", "type2", "type3")


@dataclass(frozen=True)
class ErrorRates:
    """Probabilities of the three PCSA read errors, per read of an eligible weight.

    Parameters
    ----------
    type1 : float
        A non-zero weight read with the opposite sign.
    type2 : float
        A non-zero weight read as 0.
    type3 : float
        A zero read as +1 or -1, either with probability 1/2.

    Types 1 and 2 exclude each other on one read, so ``type1 + type2`` is at most 1.
    """
    type1: float = 0.0
    type2: float = 0.0
    type3: float = 0.0

    def __post_init__(self):
        for name in ERROR_TYPES:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float, np.floating,
                                                                 np.integer)):
                raise NmflowError(f"error rate {name} must be a number in [0, 1], not {value!r}")
            if not (math.isfinite(value) and 0.0 <= value <= 1.0):
                raise NmflowError(f"error rate {name} must be in [0, 1], not {value!r}")
            object.__setattr__(self, name, float(value))
        if self.type1 + self.type2 > 1.0:
            raise NmflowError(f"error rates type1 + type2 must be at most 1 (both apply to "
                              f"non-zero weights), not {self.type1} + {self.type2}")

    @classmethod
    def only(cls, kind, rate):
        """Rates with only error type ``kind`` (``"type1"``, ``"type2"`` or ``"type3"``)."""
        if kind not in ERROR_TYPES:
            raise NmflowError(f"error type must be one of {', '.join(ERROR_TYPES)}, not {kind!r}")
        return cls(**{kind: rate})

    @property
    def clean(self):
        """True if no error can happen."""
        return self.type1 == self.type2 == self.type3 == 0.0

    def as_dict(self):
        return {name: getattr(self, name) for name in ERROR_TYPES}


def inject(weights, rates, rng):
    """Return ``weights`` (ternary, any shape) as read with errors drawn independently per weight.

    Parameters
    ----------
    weights : int array in {-1, 0, +1}
    rates : :class:`ErrorRates`
    rng : numpy.random.Generator
    """
    w = np.asarray(weights)
    if w.size and (np.abs(w) > 1).any():
        raise NmflowError("weights must be ternary (-1, 0 or +1) to inject read errors")
    w = w.astype(np.int8)
    u = rng.random(w.shape)
    negative = rng.random(w.shape) < 0.5
    return decide(w, u, negative, rates.type1, rates.type1 + rates.type2, rates.type3)


def decide(w, u, negative, t1, t12, t3):
    """The weights read, from the ideal reads ``w`` and one uniform draw ``u`` per read (with
    ``negative``, the sign of a type 3 error): a non-zero ``w`` reads ``-w`` if ``u < t1``, 0 if
    ``t1 <= u < t12``; a zero reads -1 or +1 (``negative`` or not) if ``u < t3``. The draws and
    thresholds may be floats in [0, 1) or integers of a fixed-point format."""
    w = np.asarray(w, dtype=np.int8)
    nonzero = w != 0
    flip = nonzero & (u < t1)
    drop = nonzero & ~flip & (u < t12)
    appear = ~nonzero & (u < t3)
    out = np.where(flip, -w, np.where(drop, 0, w))
    return np.where(appear, np.where(negative, -1, 1), out).astype(np.int8)
