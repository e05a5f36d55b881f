"""Fixed-point twin of the metaplastic rule, for the hardware unit (integers only, NumPy).

The float rule (Laborieux et al. 2021, Algorithm 1) with the learning rate folded into the update
``D = lr * U``::

    W_h <- W_h - D * f_meta(m, W_h)   if D * W_h > 0      (the step shrinks |W_h|)
    W_h <- W_h - D                    otherwise

Here every quantity is a stored integer (contract 3 of docs/contracts.md):

=============  ===========================================================================
``w``          hidden weight, format ``w_format`` (signed; default ``s3.12``: 16 bits,
               range [-8, 8), step 2^-12)
``d``          the update, already quantized to ``u_format`` (signed; default ``s0.15``)
``table``      ``f_meta`` lookup table: ``table_size`` unsigned entries with ``f_bits``
               fraction bits (1.0 is ``2**f_bits``, so an entry needs ``f_bits + 1`` bits)
=============  ===========================================================================

Building the table (on the host, once per m; the RTL gets the integers)::

    mag_bits = w_format.width - 1                  # magnitude bits of |w|
    shift    = mag_bits - input_bits               # LSBs of |w| the table ignores
    bin i covers |w| in [i << shift, (i + 1) << shift) (raw); its centre, as a real number, is
        c_i = ((i << shift) + ((1 << shift) - 1) / 2) / 2**w_format.frac_bits
    table[i] = floor(f_meta(m, c_i) * 2**f_bits + 1/2)         (nearest, ties up)
    (the last entry also serves every |w| beyond the table: the index is clamped)

One update, step by step (all integer; widths stated for the RTL)::

    1. shrink = (w > 0 and d > 0) or (w < 0 and d < 0)       two sign bits and two zero tests
    2. a      = |w|                                           (|min_raw| = 2**mag_bits fits
                                                               mag_bits + 1 unsigned bits)
       index  = min(a >> shift, table_size - 1)
       f      = table[index]                                  unsigned, f_bits + 1 bits
    3. p      = d * f                                         signed product, fraction bits
                                                               u_frac + f_bits
    4. s1     = u_frac + f_bits - w_frac;  s0 = u_frac - w_frac
       scaled = round(p, s1),  plain = round(d, s0) where round(x, s) is
                  s > 0:  (x + (1 << (s - 1))) >> s        nearest, ties toward +inf (one adder
                                                            and an arithmetic shift)
                  s = 0:  x
                  s < 0:  x << -s                           exact
    5. delta  = scaled if shrink else plain
    6. w'     = min(max(w - delta, min_raw), max_raw)        saturating subtract
    7. binary weight = +1 if w' >= 0 else -1                  (W_h = 0 gives +1)

``d = 0`` and ``w = 0`` take the plain branch (``delta = round(d, s0)``). With ``m = 0`` every
table entry is ``2**f_bits`` and step 4 gives ``round(d * 2**f_bits, s1) == round(d, s0)``: the
plain rule. Refused settings: ``m < 0`` or not finite, ``table_size < 1``, ``input_bits`` outside
``[0, mag_bits]``, ``f_bits`` outside ``[1, 30]``, an unsigned ``w_format`` or ``u_format``, a
``w_format`` narrower than 2 bits, a product wider than 62 bits.

Defaults: 512 entries, ``f_bits = 12``, ``input_bits`` from :func:`auto_input_bits` (the finest
bins whose table still reaches the ``|W_h|`` where ``f_meta`` rounds to 0; for ``m = 20``: 13
bits, ``shift = 2``). Largest table error against the float ``f_meta`` over all 65,536 weights
(:func:`table_error`): 0.004 (m = 1.35), 0.007 (m = 5, 10), 0.006 (m = 20), 0.004 (m = 40); 256
entries double it, 1024 halve it. ``kind="hard"`` fills the table with the hard threshold of
thesis appendix A.4 (1.0 where the bin's centre is below ``m``, else 0).

In the training loop (:meth:`MetaFixedRule.torch_rule`) the float Adam step is quantized to
``u_format`` on the host by that format's rounding and overflow rules (``nearest_up`` and
``saturate`` by default); the weights then only change through :meth:`MetaFixedRule.update`.
"""

import math

import numpy as np

from ..errors import NmflowError, check_int
from ..fixedpoint import FixedFormat
from .metaplastic import check_m

__all__ = ["MetaFixedRule", "build_table", "auto_input_bits", "table_error", "round_shift",
           "binary_weight",
           "DEFAULT_W_FORMAT", "DEFAULT_U_FORMAT"]

#: 16-bit hidden weights: range [-8, 8), step 2**-12.
DEFAULT_W_FORMAT = FixedFormat(True, 3, 12, rounding="nearest_up", overflow="saturate")
#: 16-bit updates: range [-1, 1), step 2**-15.
DEFAULT_U_FORMAT = FixedFormat(True, 0, 15, rounding="nearest_up", overflow="saturate")


def round_shift(x, s):
    """``x / 2**s`` rounded to nearest, ties toward +inf, for integer arrays (``s`` may be <= 0:
    then an exact left shift)."""
    x = np.asarray(x, dtype=np.int64)
    if s > 0:
        return (x + (1 << (s - 1))) >> s
    return x << (-s)


def binary_weight(w_raw):
    """``+1 if w >= 0 else -1`` (int8 array)."""
    return np.where(np.asarray(w_raw) >= 0, 1, -1).astype(np.int8)


def _check_format(name, fmt, min_width=1):
    if not isinstance(fmt, FixedFormat):
        raise NmflowError(f"{name} must be a FixedFormat, not {type(fmt).__name__}")
    if not fmt.signed:
        raise NmflowError(f"{name} must be signed, not {fmt.describe()}")
    if fmt.width < min_width:
        raise NmflowError(f"{name} must be at least {min_width} bits wide, not {fmt.describe()} "
                          f"({fmt.width} bits)")


def auto_input_bits(m, w_format=DEFAULT_W_FORMAT, table_size=512, f_bits=12):
    """The most index bits (finest bins) for which ``table_size`` bins still reach the ``|W_h|``
    beyond which ``f_meta(m, W_h)`` rounds to 0 with ``f_bits`` fraction bits (``1 - tanh^2(y)
    < 4 exp(-2y) <= 2**-(f_bits + 1)``); all magnitude bits for ``m = 0``."""
    m = check_m(m)
    _check_format("w_format", w_format, 2)
    mag_bits = w_format.width - 1
    table_size = check_int("table_size", table_size, 1, 1 << 20)
    f_bits = check_int("f_bits", f_bits, 1, 30)
    if m == 0:
        reach = float(2 ** mag_bits)
    else:
        reach = ((f_bits + 1) * math.log(2) + math.log(4)) / (2 * m) * 2.0 ** w_format.frac_bits
    shift = 0
    while shift < mag_bits and table_size * 2.0 ** shift < reach:
        shift += 1
    return mag_bits - shift


def build_table(m, w_format=DEFAULT_W_FORMAT, table_size=512, input_bits=None, f_bits=12,
                kind="tanh"):
    """The ``f_meta`` table (int64 array of ``table_size`` entries, see the module text);
    ``input_bits=None`` takes :func:`auto_input_bits`."""
    m = check_m(m)
    _check_format("w_format", w_format, 2)
    mag_bits = w_format.width - 1
    table_size = check_int("table_size", table_size, 1, 1 << 20)
    f_bits = check_int("f_bits", f_bits, 1, 30)
    if input_bits is None:
        input_bits = auto_input_bits(m, w_format, table_size, f_bits)
    input_bits = check_int("input_bits", input_bits, 0, mag_bits)
    shift = mag_bits - input_bits
    i = np.arange(table_size, dtype=np.float64)
    centre = (i * 2.0 ** shift + (2.0 ** shift - 1) / 2) / 2.0 ** w_format.frac_bits
    if kind == "tanh":
        f = 1.0 - np.tanh(m * centre) ** 2
    elif kind == "hard":
        f = (centre < m).astype(np.float64)
    else:
        raise NmflowError(f"kind must be one of tanh, hard, not {kind!r}")
    return np.floor(f * 2.0 ** f_bits + 0.5).astype(np.int64)


class MetaFixedRule:
    """The integer rule of the module text, for one ``m``.

    Parameters
    ----------
    m : float
        Metaplasticity (>= 0).
    w_format, u_format : FixedFormat
        Formats of the hidden weights and of the (already quantized) updates; both signed.
    table_size : int
        Entries of the ``f_meta`` table (>= 1).
    input_bits : int, optional
        Bits of ``|w|`` (from the top of its ``width - 1`` magnitude bits) that form the index
        before it is clamped to ``table_size - 1``; default :func:`auto_input_bits` (the finest
        bins whose table still reaches where ``f_meta`` rounds to 0).
    f_bits : int
        Fraction bits of the table entries.
    kind : ``"tanh"`` or ``"hard"``

    Members
    -------
    table : int64 ndarray, shift, s_scaled, s_plain : the constants of steps 2 and 4.
    """

    def __init__(self, m, w_format=DEFAULT_W_FORMAT, u_format=DEFAULT_U_FORMAT, table_size=512,
                 input_bits=None, f_bits=12, kind="tanh"):
        self.m = check_m(m)
        _check_format("w_format", w_format, 2)
        _check_format("u_format", u_format, 1)
        if input_bits is None:
            input_bits = auto_input_bits(m, w_format, table_size, f_bits)
        self.w_format, self.u_format, self.kind = w_format, u_format, kind
        self.table = build_table(m, w_format, table_size, input_bits, f_bits, kind)
        self.table_size, self.input_bits, self.f_bits = int(table_size), int(input_bits), \
            int(f_bits)
        self.shift = w_format.width - 1 - self.input_bits
        if u_format.width + f_bits + 1 > 62:
            raise NmflowError(f"u_format and f_bits give a {u_format.width + f_bits + 1}-bit "
                              f"product, more than 62 (u_format {u_format.describe()}, f_bits "
                              f"{f_bits})")
        self.s_scaled = u_format.frac_bits + self.f_bits - w_format.frac_bits
        self.s_plain = u_format.frac_bits - w_format.frac_bits
        for s, what in ((self.s_scaled, "u_format.frac_bits + f_bits"),
                        (self.s_plain, "u_format.frac_bits")):
            if s < 0 and w_format.width - s > 62:
                raise NmflowError(f"{what} is too far below w_format's fraction bits "
                                  f"({w_format.describe()}) for 62-bit arithmetic")

    def describe(self):
        return {"m": self.m, "w_format": self.w_format.describe(),
                "u_format": self.u_format.describe(), "table_size": self.table_size,
                "input_bits": self.input_bits, "f_bits": self.f_bits, "shift": self.shift,
                "kind": self.kind, "rounding": "nearest, ties toward +inf",
                "binary_weight": "+1 if W_h >= 0 else -1"}

    def lookup(self, w_raw):
        """Step 2: the table entry each hidden weight reads."""
        a = np.abs(np.asarray(w_raw, dtype=np.int64))
        return self.table[np.minimum(a >> self.shift, self.table_size - 1)]

    def update(self, w_raw, d_raw):
        """Steps 1-6 on integer arrays of the same shape; returns the new ``w`` (int64)."""
        w = np.asarray(w_raw, dtype=np.int64)
        d = np.asarray(d_raw, dtype=np.int64)
        if w.shape != d.shape:
            raise NmflowError(f"d_raw must have the shape of w_raw {w.shape}, not {d.shape}")
        if not (self.w_format.contains(w).all() if w.size else True):
            raise NmflowError(f"w_raw must lie in {self.w_format.describe()}'s range "
                              f"[{self.w_format.min_raw}, {self.w_format.max_raw}]")
        if not (self.u_format.contains(d).all() if d.size else True):
            raise NmflowError(f"d_raw must lie in {self.u_format.describe()}'s range "
                              f"[{self.u_format.min_raw}, {self.u_format.max_raw}]")
        shrink = ((w > 0) & (d > 0)) | ((w < 0) & (d < 0))
        scaled = round_shift(d * self.lookup(w), self.s_scaled)
        plain = round_shift(d, self.s_plain)
        delta = np.where(shrink, scaled, plain)
        return np.clip(w - delta, self.w_format.min_raw, self.w_format.max_raw)

    def table_error(self):
        """Largest ``|table f - f_meta(m, w)|`` over every stored ``w`` of ``w_format``."""
        return table_error(self)

    def torch_rule(self):
        """A ``weight_rule`` for :class:`~nmflow.golden.metaplastic.MetaplasticAdam`: the
        parameter's values are quantized to ``w_format`` (exact once they are), the float Adam
        step is quantized to ``u_format`` by its rounding and saturation, and :meth:`update`
        gives the new weights."""
        import torch

        scale_w = 2.0 ** self.w_format.frac_bits

        def rule(p, step, group):
            w = self.w_format.quantize(p.detach().numpy())
            d = self.u_format.quantize(step.detach().numpy())
            new = self.update(w, d) / scale_w          # exact in float32 for widths <= 24
            p.copy_(torch.from_numpy(new.astype(p.detach().numpy().dtype)))
        return rule


def table_error(rule):
    """Largest absolute error of ``rule``'s table against the float ``f_meta`` over all ``w``."""
    fmt = rule.w_format
    w = np.arange(fmt.min_raw, fmt.max_raw + 1, dtype=np.int64) if fmt.width <= 24 else \
        np.random.default_rng(0).integers(fmt.min_raw, fmt.max_raw + 1, 1 << 22)
    real = w / 2.0 ** fmt.frac_bits
    if rule.kind == "tanh":
        exact = 1.0 - np.tanh(rule.m * real) ** 2
    else:
        exact = (np.abs(real) < rule.m).astype(np.float64)
    got = rule.lookup(w) / 2.0 ** rule.f_bits
    return float(np.max(np.abs(got - exact)))
