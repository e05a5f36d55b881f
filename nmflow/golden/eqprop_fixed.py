"""The fixed-point twin of Equilibrium Propagation: integer-only NumPy, bit for bit what the EP
learning unit computes (docs/contracts.md, contracts 3 and 4).

It is the float model of :mod:`nmflow.golden.eqprop` (squared-error output inside the dynamics,
hard sigmoid, alternating layer updates, symmetric estimate) with every number an integer of a
:class:`~nmflow.fixedpoint.FixedFormat`. It runs on a batch (vectorised) and on one sample at a
time (``batch=1``, which is what the hardware does); the arithmetic per sample is the same.

Formats (defaults; all are fields of :class:`FixedEqPropConfig`)
----------------------------------------------------------------
* state ``S = u0.8``: unsigned fraction, ``raw`` 0..255 is ``raw / 256`` (the top of the hard
  sigmoid is 255/256, the format's largest value). The inputs use the same format.
* weight and bias ``W = s2.13``: 16-bit two's complement, ``raw / 2**13`` in [-4, 4).
* accumulator ``A``: signed, ``W.frac + S.frac`` (21) fraction bits, exact (never rounded or
  wrapped); :func:`accumulator_format` gives the width that holds every value (31 bits for
  64-128-10).
* ``beta = 2**-beta_shift`` (default 1/4), learning rate of layer ``k`` ``eta_k = 2**-lr_shifts[k]``,
  batch ``B = 2**m``: every scale is a shift.

One time step (``alternate`` order: odd state layers 1, 3, ... first, then even layers 2, 4, ...
from the odd layers just written; within a group no layer reads another)
---------------------------------------------------------------------------------------------
For state layer ``k`` (1..N, ``s_0 = x``, ``s_N`` the output):

1. ``acc = sum_i W_{k-1}[j, i] * s_{k-1}[i] + (b_{k-1}[j] << S.frac)``
   ``      + sum_i W_k[i, j] * s_{k+1}[i]`` (if ``k < N``: the transposed weights of the layer above)
2. output layer in a nudged phase (sign ``+1`` for ``+beta``, ``-1`` for ``-beta``):
   ``acc += sign * ((y_raw[j] - s_N[j]) << (W.frac - beta_shift))`` with ``y_raw = 2**S.frac``
   (the value 1.0) for the label and 0 elsewhere. Exact: ``beta_shift <= W.frac`` is required.
3. rescale to the state format and clip (the hard sigmoid):
   ``s_k[j] = min(max((acc + 2**(h-1)) >> h, 0), S.max_raw)`` with ``h = W.frac`` for
   ``clip(x, 0, 1)`` or ``W.frac + 1`` for ``clip(x/2, 0, 1)`` (``half=True``): round to nearest,
   ties up (one adder and an arithmetic shift), then saturate at 0 and at 255.

Phases: the state starts at 0; ``T`` free steps give ``s*``; ``K`` steps with ``+beta`` from ``s*``
give ``s+``; ``K`` steps with ``-beta`` from ``s*`` (again) give ``s-``.

The update (symmetric estimate, [T] eq. 3.12), per weight layer ``k`` (``s_0 = x``):

4. ``D_W[j, i] = sum_batch (s+_{k+1}[j] s+_k[i] - s-_{k+1}[j] s-_k[i])`` (exact, ``2 S.frac``
   fraction bits), ``D_b[j] = sum_batch (s+_{k+1}[j] - s-_{k+1}[j])`` (``S.frac`` fraction bits).
5. ``dW = D_W * 2**(W.frac - 2 S.frac) * eta_k / (2 beta B)`` is the shift right by
   ``r_W = 2 S.frac - W.frac + lr_shifts[k] - beta_shift + 1 + m`` (``r_b`` likewise with
   ``S.frac`` in place of ``2 S.frac``); a negative ``r`` is an exact left shift. The shift
   rounds by ``update_rounding``:

   * ``stochastic`` (default): ``q = D >> r`` (floor), ``rest = D - (q << r)``; one draw ``u``
     (16 bits) of the LFSR below; ``dW = q + 1`` if ``(u << r) < (rest << 16)`` else ``q``, i.e.
     up with probability ``rest / 2**r`` (exactly, for ``r <= 16``).
   * ``nearest_up``: ``(D + 2**(r-1)) >> r``; ``floor``: ``D >> r``.

6. ``W = clip(W + dW, W.min_raw, W.max_raw)`` (saturate), likewise ``b``.

The one-sided estimate ([T] Alg. 4 with a fixed sign) is the same with ``s*`` in place of ``s-``
and one shift less (``1 / beta`` instead of ``1 / (2 beta)``).

Binary weights and metaplastic consolidation (``weights="binary"``, ``m``)
-------------------------------------------------------------------------
With ``weights="binary"`` the stored ``W`` are hidden weights ``W_h`` and the dynamics (steps 1-3)
use ``alpha_k sign(W_h)`` in their place: ``+a_k`` where ``W_h >= 0``, else ``-a_k``, with
``a_k`` the raw weight-format value of ``alpha_k = alpha_scale / (2 sqrt(n_k))``
(:attr:`binary_alphas`; ``alpha_scale`` 1 by default; 64 inputs: 1/16, raw 512; at
``alpha_scale = 1.25``, raw 640). A row's sum is then ``a_k * sum_i (+-s_i)``: additions and
subtractions of states and one product per neuron. Biases stay real. The update (steps 4-5)
is computed from the states as before and moves the hidden weights.

With ``m > 0`` (binary weights only) step 6 of the weights is the metaplastic rule of
:mod:`nmflow.golden.metafixed` on the hidden weights (Laborieux et al. 2021, the integer rule of
the metaplastic unit) with ``d = -dW`` in the weight format: where ``dW`` moves ``W_h`` toward 0
(``dW * W_h < 0``) it is scaled by the ``f_meta(m, W_h)`` table entry and rounded to nearest
(ties up); elsewhere it is added whole; then saturated. ``m = 0`` is step 6 as above. Biases
always take the plain step.

Decay (``decay_shift = d > 0``): the weights' step also takes ``W * 2**-d`` off, rounded with
the step in one rounding of step 5: ``dW = round(N / 2**R)`` with ``R = max(r_W, d)`` and
``N = (D << (R - r_W)) - (W << (R - d))`` (:func:`decay_numerator`), so that a weight decays by
``W * 2**-d`` on average however small that is against the weight's last bit (rounded on its
own, to nearest, a weight below ``2**(d-1)`` raw would never decay: at ``d = 15``, every hidden
weight under 2.0). With ``m > 0`` the decay of a consolidated hidden weight is scaled like any
step toward 0. ``decay_shift = 0`` (default): no decay.

Random source (stochastic rounding)
-----------------------------------
:class:`Lfsr32`: a 32-bit Galois LFSR, shifting right: ``lsb = s & 1; s >>= 1; if lsb: s ^=
0x80200003`` (feedback polynomial ``x^32 + x^22 + x^2 + x + 1``, maximal length 2**32 - 1; the state
is never 0). A draw advances the LFSR 16 steps and takes its low 16 bits. :data:`LFSR` (an
:class:`nmflow.lfsr.Lfsr`) describes it once, for this twin and for the unit. Every update takes
one draw per parameter, whether it rounds or not, in this order: layer 0's weights row-major
(output neuron ``j`` outer, input ``i`` inner), layer 0's biases, then layer 1, and so on; within a
batch update this is once per parameter (the batch is summed first).
"""

import math
import time
from dataclasses import dataclass

import numpy as np

from ..errors import NmflowError, check_choice, check_int, check_number
from ..fixedpoint import FixedFormat, shift_right
from ..lfsr import Lfsr, LfsrSource
from .eqprop import check_sizes

__all__ = ["STATE_FORMAT", "WEIGHT_FORMAT", "LFSR", "LFSR_MASK", "UPDATE_ROUNDINGS",
           "FIXED_ESTIMATES", "FixedEqPropConfig", "Lfsr32", "accumulator_format", "init_params",
           "from_float", "dynamics_params", "meta_rule", "WEIGHT_KINDS", "inputs_to_raw", "relax", "free_phase", "predict", "accuracy", "update",
           "train_step", "train", "round_shift", "decay_numerator"]

#: Neuron states (and inputs): unsigned 8-bit fraction over [0, 1); round to nearest, ties up;
#: saturate (the clip of the hard sigmoid).
STATE_FORMAT = FixedFormat(False, 0, 8, rounding="nearest_up", overflow="saturate")
#: Weights and biases: signed 16 bits with 13 fraction bits, [-4, 4); saturate on update.
WEIGHT_FORMAT = FixedFormat(True, 2, 13, rounding="nearest_even", overflow="saturate")
#: Galois mask of the LFSR (taps 32, 22, 2, 1).
LFSR_MASK = 0x80200003
UPDATE_ROUNDINGS = ("stochastic", "nearest_up", "floor")
#: ``real``: the weights are the parameters; ``binary``: the dynamics use ``a_k sign(W_h)``.
WEIGHT_KINDS = ("real", "binary")
FIXED_ESTIMATES = ("symmetric", "one_sided")
DRAW_BITS = 16
#: The random source of stochastic rounding (:class:`nmflow.lfsr.Lfsr`), one description for the
#: twin (:class:`Lfsr32`) and the unit: a 32-bit Galois LFSR shifting right with the mask
#: :data:`LFSR_MASK`; a draw is 16 steps on, the low :data:`DRAW_BITS` bits.
LFSR = Lfsr(32, LFSR_MASK, "galois", draw_steps=16, draw_bits=DRAW_BITS)


@dataclass(frozen=True)
class FixedEqPropConfig:
    """Settings of the fixed-point twin (checked on construction; impossible ones refused)."""
    sizes: tuple = (64, 128, 10)
    state: FixedFormat = STATE_FORMAT
    weight: FixedFormat = WEIGHT_FORMAT
    T: int = 40
    K: int = 15
    beta_shift: int = 2
    lr_shifts: tuple = (7, 8)
    half: bool = False
    estimate: str = "symmetric"
    update_rounding: str = "stochastic"
    batch: int = 1
    epochs: int = 30
    seed: int = 0
    lfsr_seed: int = 1
    weights: str = "real"
    m: float = 0.0
    decay_shift: int = 0
    #: Scale of the binary weights (binary weights only): ``alpha_k = alpha_scale / (2
    #: sqrt(n_k))``, as :class:`nmflow.golden.eqprop.EqPropConfig`'s.
    alpha_scale: float = 1.0

    def __post_init__(self):
        sizes = check_sizes(self.sizes)
        for name in ("state", "weight"):
            if not isinstance(getattr(self, name), FixedFormat):
                raise NmflowError(f"{name} must be a FixedFormat, not {getattr(self, name)!r}")
        s, w = self.state, self.weight
        if s.signed or s.int_bits != 0 or s.overflow != "saturate":
            raise NmflowError(f"state format must be an unsigned saturating fraction (u0.F), "
                              f"not {s.describe()} ({s.overflow})")
        if s.width < 2:
            raise NmflowError(f"state format must have at least 2 bits, not {s.width}")
        if not w.signed or w.overflow != "saturate":
            raise NmflowError(f"weight format must be signed and saturating, not "
                              f"{w.describe()} ({w.overflow})")
        if w.width < 2:
            raise NmflowError(f"weight format must have at least 2 bits, not {w.width}")
        check_int("T", self.T, 1)
        check_int("K", self.K, 1)
        check_int("beta_shift", self.beta_shift, 0, w.frac_bits)
        lr = tuple(self.lr_shifts)
        if len(lr) != len(sizes) - 1:
            raise NmflowError(f"lr_shifts must give one shift per weight layer "
                              f"({len(sizes) - 1}), not {len(lr)}")
        for e in lr:
            check_int("lr_shifts", e, 0, 40)
        if not isinstance(self.half, bool):
            raise NmflowError(f"half must be True or False, not {self.half!r}")
        check_choice("estimate", self.estimate, FIXED_ESTIMATES)
        check_choice("update_rounding", self.update_rounding, UPDATE_ROUNDINGS)
        check_int("batch", self.batch, 1)
        if self.batch & (self.batch - 1):
            raise NmflowError(f"batch must be a power of two (the batch mean is a shift), "
                              f"not {self.batch}")
        check_int("epochs", self.epochs, 1)
        check_int("seed", self.seed, 0)
        check_int("lfsr_seed", self.lfsr_seed, 1, 2 ** 32 - 1)
        check_choice("weights", self.weights, WEIGHT_KINDS)
        check_int("decay_shift", self.decay_shift, 0, 62)
        object.__setattr__(self, "m", float(check_number("m", self.m, 0)))
        if self.m > 0 and self.weights != "binary":
            raise NmflowError(f"m must be 0 unless weights is 'binary' (metaplasticity "
                              f"consolidates binary synapses), not {self.m}")
        object.__setattr__(self, "alpha_scale",
                           check_number("alpha_scale", self.alpha_scale, above=0))
        if self.alpha_scale != 1.0 and self.weights != "binary":
            raise NmflowError(f"alpha_scale must be 1 unless weights is 'binary' (it scales "
                              f"the binary weights), not {self.alpha_scale:g}")
        object.__setattr__(self, "sizes", tuple(int(n) for n in sizes))
        object.__setattr__(self, "lr_shifts", tuple(int(e) for e in lr))
        accumulator_format(self)                      # refuses layers too wide for int64
        if self.weights == "binary":
            for k, (a, n) in enumerate(zip(self.binary_alphas, sizes)):
                alpha = f"alpha_{k} = {self.alpha_scale:g} / (2 sqrt({n}))"
                if a < 1:
                    raise NmflowError(f"weight format must resolve {alpha} of the binary "
                                      f"weights, not {w.describe()} (it rounds to 0)")
                if round(self._alpha(n) * 2 ** w.frac_bits) > w.max_raw:
                    raise NmflowError(f"weight format must hold {alpha} of the binary "
                                      f"weights, not {w.describe()} (its largest value is "
                                      f"{w.max_value:g})")

    def _alpha(self, n):
        return self.alpha_scale * 0.5 / math.sqrt(n)

    @property
    def binary_alphas(self):
        """``a_k``, the raw weight-format value of ``alpha_k = alpha_scale / (2 sqrt(n_k))`` per
        weight layer (nearest, ties to even): the magnitude of a binary weight in the dynamics."""
        return tuple(int(self.weight.quantize(self._alpha(n))) for n in self.sizes[:-1])

    @property
    def beta(self):
        return 2.0 ** -self.beta_shift

    @property
    def batch_shift(self):
        return self.batch.bit_length() - 1

    @property
    def rescale_shift(self):
        """``h``: the shift from the accumulator to the state format (step 3)."""
        return self.weight.frac_bits + int(self.half)

    def update_shifts(self, k):
        """``(r_W, r_b)`` of weight layer ``k`` (step 5)."""
        s, w = self.state.frac_bits, self.weight.frac_bits
        common = self.lr_shifts[k] - self.beta_shift + self.batch_shift \
            + (1 if self.estimate == "symmetric" else 0) - w
        return 2 * s + common, s + common

    def to_dict(self):
        return {"sizes": list(self.sizes), "state": self.state.to_dict(),
                "weight": self.weight.to_dict(), "accumulator": accumulator_format(self).to_dict(),
                "T": self.T, "K": self.K, "beta_shift": self.beta_shift, "beta": self.beta,
                "lr_shifts": list(self.lr_shifts),
                "learning_rates": [2.0 ** -e for e in self.lr_shifts], "half": self.half,
                "estimate": self.estimate, "update_rounding": self.update_rounding,
                "batch": self.batch, "epochs": self.epochs, "seed": self.seed,
                "lfsr_seed": self.lfsr_seed, "order": "alternate (odd layers, then even)",
                "weights": self.weights, "m": self.m, "decay_shift": self.decay_shift,
                "alpha_scale": self.alpha_scale,
                **({"binary_alphas_raw": list(self.binary_alphas)}
                   if self.weights == "binary" else {}),
                "update_shifts": [list(self.update_shifts(k))
                                  for k in range(len(self.sizes) - 1)]}


def accumulator_format(config):
    """The signed accumulator format (``W.frac + S.frac`` fraction bits) wide enough for every
    pre-activation of every layer, nudge included (step 1-2, the widest layer)."""
    s, w = config.state, config.weight
    wmax = max(-w.min_raw, w.max_raw)
    sizes, N = config.sizes, len(config.sizes) - 1
    bound = 0
    for k in range(1, N + 1):
        fan_in = sizes[k - 1] + (sizes[k + 1] if k < N else 0)
        b = fan_in * wmax * s.max_raw + (wmax << s.frac_bits)
        if k == N:
            b += (1 << s.frac_bits) << (w.frac_bits - min(config.beta_shift, w.frac_bits))
        bound = max(bound, b)
    frac = w.frac_bits + s.frac_bits
    width = bound.bit_length() + 1
    if width > 62:
        raise NmflowError(f"accumulator must fit in 62 bits, not {width} (layers too wide for "
                          f"the formats)")
    return FixedFormat(True, max(width - 1 - frac, 0), frac, rounding="nearest_up")


# -- random source -----------------------------------------------------------------------------------

class Lfsr32(LfsrSource):
    """The 32-bit Galois LFSR of the module docstring: :data:`LFSR` with a state. ``draws(n)``
    gives the next ``n`` 16-bit draws (each 16 steps on, the low 16 bits) as int64, vectorised by
    jumping ahead; ``step()`` advances one step and returns the state."""

    def __init__(self, seed=1):
        super().__init__(LFSR, check_int("lfsr_seed", seed, 1, 2 ** 32 - 1))

    def draws(self, n):
        return super().draws(check_int("n", n, 0)).astype(np.int64)


def decay_numerator(D, W, r, d):
    """The weights' step with the decay, over one power of two, before its rounding (step 5):
    ``D * 2**-r - W * 2**-d`` is ``N * 2**-R`` with ``R = max(r, d)`` and
    ``N = (D << (R - r)) - (W << (R - d))``; returns ``(N, R)`` (``(D, r)`` when ``d = 0``)."""
    if not d:
        return D, r
    R = max(r, d)
    D = np.asarray(D, dtype=np.int64) << (R - r)
    return D - (np.asarray(W, dtype=np.int64) << (R - d)), R


def round_shift(value, r, rounding, draws=None):
    """``value / 2**r`` rounded to integers by ``rounding`` (step 5); ``draws`` (int64, one per
    element, 16 bits) for ``stochastic``. A negative ``r`` is an exact left shift."""
    value = np.asarray(value, dtype=np.int64)
    if r <= 0:
        return value << -r
    if rounding == "stochastic":
        q = value >> r
        rest = value - (q << r)
        u = np.asarray(draws, dtype=np.int64).reshape(value.shape)
        return q + ((u << r) < (rest << DRAW_BITS))
    return shift_right(value, r, rounding)


# -- parameters and data -------------------------------------------------------------------------------

def init_params(config):
    """Weights and biases (raw int64) of the float model's initialisation
    (:meth:`nmflow.golden.eqprop.EqPropNet.init`, same seed and draw order), quantized to the
    weight format (nearest, ties to even; saturate)."""
    rng = np.random.default_rng(config.seed)
    sizes = config.sizes
    floats = []
    for k in range(len(sizes) - 1):
        bound = 1.0 / math.sqrt(sizes[k])
        floats.append(rng.uniform(-bound, bound, size=(sizes[k + 1], sizes[k])))
        floats.append(rng.uniform(-bound, bound, size=(sizes[k + 1],)))
    return from_float(config, floats[0::2], floats[1::2])


def from_float(config, weights, biases):
    """``{"W": [...], "b": [...]}`` of raw int64 from float arrays (quantized and checked)."""
    W = [config.weight.quantize(w) for w in weights]
    b = [config.weight.quantize(v) for v in biases]
    sizes = config.sizes
    for k, (w, v) in enumerate(zip(W, b)):
        if w.shape != (sizes[k + 1], sizes[k]) or v.shape != (sizes[k + 1],):
            raise NmflowError(f"weights of layer {k} must have shape "
                              f"{(sizes[k + 1], sizes[k])} and biases {(sizes[k + 1],)}, not "
                              f"{w.shape} and {v.shape}")
    return {"W": W, "b": b}


def inputs_to_raw(x_uint, scale, state=STATE_FORMAT):
    """Host-side data preparation: pixels ``p`` to the state format, ``round(p / scale * 2**F)``
    (ties up), saturated at the format's top (so ``p = scale`` gives 255 for u0.8)."""
    return state.quantize(np.asarray(x_uint, dtype=np.float64) / float(scale))


def _check_inputs(config, x):
    x = np.asarray(x, dtype=np.int64)
    if x.ndim != 2 or x.shape[1] != config.sizes[0]:
        raise NmflowError(f"inputs must have shape [batch, {config.sizes[0]}], not "
                          f"{list(x.shape)}")
    if x.size and (x.min() < 0 or x.max() > config.state.max_raw):
        raise NmflowError(f"inputs must be raw states 0..{config.state.max_raw}, not "
                          f"{int(x.min() if x.min() < 0 else x.max())}")
    return x


# -- dynamics ------------------------------------------------------------------------------------------

def _layer(config, params, bottom, s, k, sign, y_raw):
    """Steps 1-3 for state layer ``k`` (1-based) of a batch; ``bottom`` is the bottom-up part
    of step 1, ``W_{k-1} s_{k-1} + (b_{k-1} << S.frac)``."""
    N = len(s)
    acc = bottom
    if k < N:
        acc = acc + s[k] @ params["W"][k]
    if k == N and sign:
        diff = (y_raw - s[N - 1]) << (config.weight.frac_bits - config.beta_shift)
        acc = acc + diff if sign > 0 else acc - diff
    h = config.rescale_shift
    out = (acc + (1 << (h - 1))) >> h                   # round to nearest, ties up
    np.maximum(out, 0, out=out)
    np.minimum(out, config.state.max_raw, out=out)
    return out


def _bottom_up(config, params, x, s, k):
    below = x if k == 1 else s[k - 2]
    return below @ params["W"][k - 1].T + (params["b"][k - 1] << config.state.frac_bits)


def dynamics_params(config, params):
    """The weights the dynamics use: ``params`` itself, or with binary weights
    ``{"W": [+-a_k], "b": b}`` (``+a_k`` where the hidden weight is >= 0)."""
    if config.weights == "real":
        return params
    return {"W": [np.where(w >= 0, a, -a).astype(np.int64)
                  for w, a in zip(params["W"], config.binary_alphas)], "b": params["b"]}


def relax(config, params, x, s, steps, sign=0, y=None):
    """``steps`` alternating time steps from the state list ``s`` (raw int64 arrays); ``sign``
    is 0 (free), +1 (``+beta``) or -1 (``-beta``), then ``y`` holds the labels. ``params`` are
    the stored ones (hidden weights with binary weights)."""
    params = dynamics_params(config, params)
    N = len(s)
    y_raw = None
    if sign:
        y_raw = np.zeros((len(x), config.sizes[-1]), dtype=np.int64)
        y_raw[np.arange(len(x)), np.asarray(y, dtype=np.int64)] = 1 << config.state.frac_bits
    s = list(s)
    # The input is clamped: layer 1's input term is the same at every step (computed once).
    from_input = _bottom_up(config, params, x, s, 1)
    for _ in range(steps):
        for parity in (1, 0):
            for k in range(1, N + 1):
                if k % 2 == parity:
                    bottom = from_input if k == 1 else _bottom_up(config, params, x, s, k)
                    s[k - 1] = _layer(config, params, bottom, s, k, sign, y_raw)
    return s


def free_phase(config, params, x):
    x = _check_inputs(config, x)
    s = [np.zeros((len(x), n), dtype=np.int64) for n in config.sizes[1:]]
    return relax(config, params, x, s, config.T)


def predict(config, params, x):
    """Classes after ``T`` free steps: argmax of the output states, lowest index on ties."""
    return free_phase(config, params, x)[-1].argmax(axis=1)


def accuracy(config, params, x, y, chunk=2048):
    right = 0
    for start in range(0, len(y), chunk):
        right += int((predict(config, params, x[start:start + chunk])
                      == np.asarray(y[start:start + chunk])).sum())
    return right / max(len(y), 1)


_META_RULES = {}


def meta_rule(config):
    """The :class:`~nmflow.golden.metafixed.MetaFixedRule` of step 6 (``m > 0``): the hidden
    weights in the weight format, the update ``d = -dW`` in a 48-bit format with the same
    fraction bits (the plain branch adds it whole), the table's defaults."""
    from .metafixed import MetaFixedRule
    key = (config.m, config.weight)
    if key not in _META_RULES:
        w = config.weight
        u = FixedFormat(True, 47 - w.frac_bits, w.frac_bits, rounding="nearest_up",
                        overflow="saturate")
        _META_RULES[key] = MetaFixedRule(config.m, w_format=w, u_format=u)
    return _META_RULES[key]


def update(config, params, x, s_plus, s_other, lfsr):
    """Steps 4-6: new ``params`` from the ``+beta`` state and ``s-`` (symmetric) or ``s*``
    (one-sided). Draws come from ``lfsr`` (an :class:`Lfsr32`) when rounding is stochastic."""
    W, b = params["W"], params["b"]
    rule = meta_rule(config) if config.m > 0 else None
    layers_p, layers_o = [x, *s_plus], [x, *s_other]
    w = config.weight
    new_W, new_b = [], []
    for k in range(len(W)):
        dW = layers_p[k + 1].T @ layers_p[k] - layers_o[k + 1].T @ layers_o[k]
        db = layers_p[k + 1].sum(axis=0) - layers_o[k + 1].sum(axis=0)
        r_W, r_b = config.update_shifts(k)
        stochastic = config.update_rounding == "stochastic"
        dW, r_W = decay_numerator(dW, W[k], r_W, config.decay_shift)
        dW = round_shift(dW, r_W, config.update_rounding,
                         lfsr.draws(dW.size) if stochastic else None)
        db = round_shift(db, r_b, config.update_rounding,
                         lfsr.draws(db.size) if stochastic else None)
        if rule is None:
            new_W.append(np.clip(W[k] + dW, w.min_raw, w.max_raw))
        else:
            new_W.append(rule.update(W[k], -dW))
        new_b.append(np.clip(b[k] + db, w.min_raw, w.max_raw))
    return {"W": new_W, "b": new_b}


def train_step(config, params, x, y, lfsr):
    """One learning step on the batch ``x`` (raw states ``[B, n_0]``, ``B`` = ``config.batch``
    or fewer for the last batch of an epoch, which is then still divided by ``config.batch``) with
    labels ``y``: free, ``+beta`` and ``-beta`` phases, then :func:`update`.
    Returns ``(params, s_free)``."""
    x = _check_inputs(config, x)
    s_star = free_phase(config, params, x)
    s_plus = relax(config, params, x, s_star, config.K, +1, y)
    if config.estimate == "symmetric":
        s_other = relax(config, params, x, s_star, config.K, -1, y)
    else:
        s_other = s_star
    return update(config, params, x, s_plus, s_other, lfsr), s_star


def train(config, x_train, y_train, x_test, y_test, params=None, progress=None):
    """Train in fixed point from :func:`init_params` (or ``params``): per epoch a shuffled order
    (NumPy generator seeded ``config.seed + 1000``), batches of ``config.batch``. ``x_*`` are raw
    states (:func:`inputs_to_raw`). Returns ``(params, history)``."""
    if x_train.shape[1] != config.sizes[0]:
        raise NmflowError(f"sizes must start with the input count {x_train.shape[1]}, not "
                          f"{config.sizes[0]}")
    if int(max(np.max(y_train, initial=0), np.max(y_test, initial=0))) >= config.sizes[-1]:
        raise NmflowError(f"sizes must end with the class count, not {config.sizes[-1]}")
    params = init_params(config) if params is None else params
    lfsr = Lfsr32(config.lfsr_seed)
    order_rng = np.random.default_rng(config.seed + 1000)
    x_train = np.asarray(x_train, dtype=np.int64)
    history = []
    for epoch in range(config.epochs):
        start = time.perf_counter()
        order = order_rng.permutation(len(y_train))
        right = 0
        for first in range(0, len(order), config.batch):
            idx = order[first:first + config.batch]
            params, s_star = train_step(config, params, x_train[idx], y_train[idx], lfsr)
            right += int((s_star[-1].argmax(axis=1) == y_train[idx]).sum())
        seconds = time.perf_counter() - start
        record = {"epoch": epoch + 1, "train_accuracy": right / max(len(y_train), 1),
                  "test_accuracy": accuracy(config, params, x_test, y_test),
                  "seconds": round(seconds, 4)}
        history.append(record)
        if progress is not None:
            progress("symmetric_fixed_point", epoch + 1, config.epochs, record)
    return params, history
