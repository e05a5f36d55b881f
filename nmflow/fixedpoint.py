"""Fixed-point formats: one description that the golden models and the RTL both take
(docs/contracts.md, contract 3).

A :class:`FixedFormat` states a number format once: signedness, integer bits, fraction bits, a
rounding rule and an overflow rule. The golden side quantizes and saturates NumPy arrays with it
(:meth:`FixedFormat.quantize`, :meth:`FixedFormat.overflow_to`, :meth:`FixedFormat.rescale`);
the RTL side asks it for its Amaranth shape (:meth:`FixedFormat.shape`). A value ``v`` of the
format is held as the integer ``raw = v * 2**frac_bits``; the format holds ``width = int_bits +
frac_bits (+ 1 sign bit if signed)`` bits, so that ``raw`` lies in ``[min_raw, max_raw]``.

This module is plain Python and NumPy: it imports Amaranth only inside :meth:`FixedFormat.shape`.
"""

from dataclasses import dataclass

import numpy as np

from .errors import NmflowError, check_choice

__all__ = ["FixedFormat", "ROUNDINGS", "OVERFLOWS", "integer_format", "shift_right"]

#: Rounding rules, applied when a value falls between two representable values.
#:
#: ``nearest_even``  to the nearest, ties to the even raw value (IEEE 754's default)
#: ``nearest_up``    to the nearest, ties toward +inf (``floor(x + 1/2)``: one adder in hardware)
#: ``nearest_away``  to the nearest, ties away from zero
#: ``floor``         toward -inf (an arithmetic right shift in hardware)
#: ``toward_zero``   truncation of the magnitude
#: ``stochastic``    up with a probability equal to the fraction dropped (needs a random source)
ROUNDINGS = ("nearest_even", "nearest_up", "nearest_away", "floor", "toward_zero", "stochastic")

#: Overflow rules: ``saturate`` clamps to the format's range, ``wrap`` keeps the low ``width``
#: bits (two's complement for signed formats).
OVERFLOWS = ("saturate", "wrap")


def _round(x, rounding, rng):
    """Round the float array ``x`` to integers by ``rounding``."""
    if rounding == "nearest_even":
        return np.rint(x)
    if rounding == "nearest_up":
        return np.floor(x + 0.5)
    if rounding == "nearest_away":
        return np.sign(x) * np.floor(np.abs(x) + 0.5)
    if rounding == "floor":
        return np.floor(x)
    if rounding == "toward_zero":
        return np.trunc(x)
    if rng is None:
        raise NmflowError("rounding 'stochastic' needs a random source: pass rng=")
    low = np.floor(x)
    return low + (rng.random(np.shape(x)) < (x - low))


def shift_right(raw, shift, rounding="floor", rng=None):
    """``raw / 2**shift`` rounded to an integer by ``rounding``, exactly (integers only).

    ``raw`` is an integer array (or int); ``shift`` >= 0. With ``floor`` this is the arithmetic
    right shift ``raw >> shift``; the other rules add what the hardware adds before it.
    """
    if not isinstance(shift, int) or shift < 0:
        raise NmflowError(f"shift must be a non-negative integer, not {shift!r}")
    raw = np.asarray(raw, dtype=np.int64)
    if shift == 0:
        return raw.copy()
    check_choice("rounding", rounding, ROUNDINGS)
    floor = raw >> shift
    rest = raw - (floor << shift)                  # 0 <= rest < 2**shift
    half = 1 << (shift - 1)
    if rounding == "floor":
        return floor
    if rounding == "nearest_up":
        return floor + (rest >= half)
    if rounding == "nearest_even":
        return floor + ((rest > half) | ((rest == half) & (floor & 1 == 1)))
    if rounding == "nearest_away":
        return floor + ((rest > half) | ((rest == half) & (raw >= 0)))
    if rounding == "toward_zero":
        return floor + ((rest != 0) & (raw < 0))
    if rng is None:
        raise NmflowError("rounding 'stochastic' needs a random source: pass rng=")
    return floor + (rng.integers(0, 1 << shift, size=np.shape(raw)) < rest)


@dataclass(frozen=True)
class FixedFormat:
    """A fixed-point number format.

    Parameters
    ----------
    signed : bool
        Two's complement if true.
    int_bits : int
        Integer bits, not counting the sign bit (>= 0).
    frac_bits : int
        Fraction bits (>= 0): the resolution is ``2**-frac_bits``.
    rounding : str
        One of :data:`ROUNDINGS`.
    overflow : str
        One of :data:`OVERFLOWS`.

    Examples
    --------
    An 8-bit neuron state over [0, 1): ``FixedFormat(False, 0, 8)``; a 16-bit signed weight with
    13 fraction bits: ``FixedFormat(True, 2, 13)``.
    """
    signed: bool
    int_bits: int
    frac_bits: int
    rounding: str = "nearest_even"
    overflow: str = "saturate"

    def __post_init__(self):
        if not isinstance(self.signed, bool):
            raise NmflowError(f"signed must be True or False, not {self.signed!r}")
        for name in ("int_bits", "frac_bits"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 62:
                raise NmflowError(f"{name} must be an integer from 0 to 62, not {value!r}")
        if self.width < 1 or self.width > 63:
            raise NmflowError(f"width (int_bits + frac_bits + sign) must be between 1 and 63, "
                              f"not {self.width}")
        check_choice("rounding", self.rounding, ROUNDINGS)
        check_choice("overflow", self.overflow, OVERFLOWS)

    # -- the numbers --------------------------------------------------------------------------
    @property
    def width(self):
        """Bits of a value: ``int_bits + frac_bits``, plus one if signed."""
        return self.int_bits + self.frac_bits + int(self.signed)

    @property
    def min_raw(self):
        return -(1 << (self.width - 1)) if self.signed else 0

    @property
    def max_raw(self):
        return (1 << (self.width - 1)) - 1 if self.signed else (1 << self.width) - 1

    @property
    def resolution(self):
        return 2.0 ** -self.frac_bits

    @property
    def min_value(self):
        return self.min_raw * self.resolution

    @property
    def max_value(self):
        return self.max_raw * self.resolution

    def describe(self):
        """A short name: ``s2.13`` (signed, 2 integer bits, 13 fraction bits), ``u0.8``."""
        return f"{'s' if self.signed else 'u'}{self.int_bits}.{self.frac_bits}"

    def to_dict(self):
        return {"signed": self.signed, "int_bits": self.int_bits, "frac_bits": self.frac_bits,
                "rounding": self.rounding, "overflow": self.overflow, "width": self.width}

    # -- golden side: NumPy ----------------------------------------------------------------------
    def overflow_to(self, raw):
        """Apply the overflow rule to integers ``raw`` (int64 array of raw values)."""
        raw = np.asarray(raw, dtype=np.int64)
        if self.overflow == "saturate":
            return np.clip(raw, self.min_raw, self.max_raw)
        low = raw & ((1 << self.width) - 1)
        if self.signed:
            low = np.where(low >> (self.width - 1) & 1, low - (1 << self.width), low)
        return low

    def quantize(self, x, rng=None):
        """Raw integers (int64) of the real values ``x``: round ``x * 2**frac_bits``, then apply
        the overflow rule. ``rng`` (a NumPy Generator) is needed for stochastic rounding."""
        x = np.asarray(x, dtype=np.float64)
        if not np.isfinite(x).all():
            raise NmflowError(f"values to quantize must be finite, not {x[~np.isfinite(x)][0]}")
        scaled = x * float(1 << self.frac_bits)
        limit = 2.0 ** 62
        scaled = np.clip(scaled, -limit, limit)
        return self.overflow_to(_round(scaled, self.rounding, rng).astype(np.int64))

    def to_float(self, raw):
        """The real values of raw integers."""
        return np.asarray(raw, dtype=np.float64) * self.resolution

    def rescale(self, raw, source, rng=None):
        """Raw values of ``source`` format converted to this format: shifted by the difference
        in fraction bits (rounded by this format's rule), then the overflow rule."""
        raw = np.asarray(raw, dtype=np.int64)
        shift = source.frac_bits - self.frac_bits
        if shift >= 0:
            out = shift_right(raw, shift, self.rounding, rng)
        else:
            out = raw << -shift
        return self.overflow_to(out)

    def contains(self, raw):
        """True where ``raw`` lies within the format's range."""
        raw = np.asarray(raw, dtype=np.int64)
        return (raw >= self.min_raw) & (raw <= self.max_raw)

    # -- RTL side: Amaranth ----------------------------------------------------------------------
    def shape(self):
        """The Amaranth shape of a raw value: ``signed(width)`` or ``unsigned(width)``."""
        from amaranth.hdl import signed, unsigned
        return signed(self.width) if self.signed else unsigned(self.width)


def integer_format(low, high, **kwargs):
    """The narrowest integer format (no fraction bits) that holds every integer in [low, high]."""
    low, high = int(low), int(high)
    if low > high:
        raise NmflowError(f"integer range must have low <= high, not [{low}, {high}]")
    if low >= 0:
        return FixedFormat(False, max(high.bit_length(), 1), 0, **kwargs)
    bits = max(high.bit_length(), (-low - 1).bit_length())
    return FixedFormat(True, bits, 0, **kwargs)
