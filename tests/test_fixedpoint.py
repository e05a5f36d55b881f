"""Fixed-point formats (contract 3): quantization, rounding, overflow, shapes, against exact
rational arithmetic."""

import math
import re
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nmflow.errors import NmflowError
from nmflow.fixedpoint import OVERFLOWS, ROUNDINGS, FixedFormat, integer_format, shift_right


def exact_round(q, rounding):
    """Round the Fraction ``q`` to an integer by ``rounding``, the way a person would."""
    floor = math.floor(q)
    rest = q - floor
    if rounding == "floor":
        return floor
    if rounding == "toward_zero":
        return floor if q >= 0 else math.ceil(q)
    if rest != Fraction(1, 2):
        return floor + (rest > Fraction(1, 2))
    if rounding == "nearest_up":
        return floor + 1
    if rounding == "nearest_even":
        return floor + (floor % 2)
    assert rounding == "nearest_away"
    return floor + 1 if q > 0 else floor


def test_width_and_range():
    s = FixedFormat(True, 2, 13)
    assert (s.width, s.min_raw, s.max_raw) == (16, -32768, 32767)
    assert (s.min_value, s.max_value) == (-4.0, 4.0 - 2 ** -13)
    u = FixedFormat(False, 0, 8)
    assert (u.width, u.min_raw, u.max_raw, u.max_value) == (8, 0, 255, 255 / 256)
    assert s.describe() == "s2.13" and u.describe() == "u0.8"


def test_amaranth_shape():
    from amaranth.hdl import signed, unsigned
    assert FixedFormat(True, 2, 13).shape() == signed(16)
    assert FixedFormat(False, 0, 8).shape() == unsigned(8)


@pytest.mark.parametrize("rounding, expected", [
    # values: 0.5, 1.5, 2.5, -0.5, -1.5, 0.25, -0.75 (in LSBs)
    ("nearest_even", [0, 2, 2, 0, -2, 0, -1]),
    ("nearest_up", [1, 2, 3, 0, -1, 0, -1]),
    ("nearest_away", [1, 2, 3, -1, -2, 0, -1]),
    ("floor", [0, 1, 2, -1, -2, 0, -1]),
    ("toward_zero", [0, 1, 2, 0, -1, 0, 0]),
])
def test_quantize_rounding_directed(rounding, expected):
    fmt = FixedFormat(True, 7, 2, rounding=rounding)
    lsb = 0.25
    values = np.array([0.5, 1.5, 2.5, -0.5, -1.5, 0.25, -0.75]) * lsb
    assert fmt.quantize(values).tolist() == expected


def test_overflow_saturate_and_wrap():
    sat = FixedFormat(True, 1, 2)           # raw -8 .. 7, values -2 .. 1.75
    assert sat.quantize([5.0, -5.0, 1.75, -2.0]).tolist() == [7, -8, 7, -8]
    wrap = FixedFormat(True, 1, 2, overflow="wrap")
    assert wrap.quantize([2.0, -2.25]).tolist() == [-8, 7]
    uwrap = FixedFormat(False, 2, 0, overflow="wrap")
    assert uwrap.quantize([4, 5, -1]).tolist() == [0, 1, 3]
    assert FixedFormat(False, 2, 0).quantize([-3, 9]).tolist() == [0, 3]


def test_stochastic_rounding_is_unbiased_and_needs_a_source():
    fmt = FixedFormat(True, 4, 0, rounding="stochastic")
    rng = np.random.default_rng(0)
    raw = fmt.quantize(np.full(200000, 0.3), rng=rng)
    assert set(raw.tolist()) == {0, 1}
    assert abs(raw.mean() - 0.3) < 0.005
    with pytest.raises(NmflowError, match=r"^rounding 'stochastic' needs a random source"):
        fmt.quantize([0.3])


@settings(max_examples=300, deadline=None)
@given(raw=st.integers(-(1 << 40), 1 << 40), shift=st.integers(0, 20),
       rounding=st.sampled_from([r for r in ROUNDINGS if r != "stochastic"]))
def test_shift_right_is_exact_rounding(raw, shift, rounding):
    assert int(shift_right(raw, shift, rounding)) == exact_round(Fraction(raw, 1 << shift),
                                                                 rounding)


@settings(max_examples=300, deadline=None)
@given(value=st.fractions(min_value=-40, max_value=40, max_denominator=1 << 12),
       frac_bits=st.integers(0, 10),
       rounding=st.sampled_from([r for r in ROUNDINGS if r != "stochastic"]),
       overflow=st.sampled_from(OVERFLOWS))
def test_quantize_matches_exact_arithmetic(value, frac_bits, rounding, overflow):
    fmt = FixedFormat(True, 3, frac_bits, rounding=rounding, overflow=overflow)
    raw = exact_round(value * (1 << frac_bits), rounding)
    if overflow == "saturate":
        raw = min(max(raw, fmt.min_raw), fmt.max_raw)
    else:
        raw = (raw + (1 << (fmt.width - 1))) % (1 << fmt.width) - (1 << (fmt.width - 1))
    assert int(fmt.quantize(float(value))) == raw


def test_rescale_between_formats():
    wide = FixedFormat(True, 2, 13)
    narrow = FixedFormat(True, 2, 6, rounding="nearest_up")
    raw = wide.quantize([0.5, 1.0 / 3.0, -1.0 / 3.0, 3.99])
    # 1/3 in s2.13 is 2731 / 8192; in s2.6 that is 21.34 LSBs -> 21; -1/3 -> -21.34 -> -21.
    assert narrow.rescale(raw, wide).tolist() == [32, 21, -21, 255]
    assert wide.rescale(narrow.rescale(raw, wide), narrow).tolist() == [4096, 2688, -2688, 32640]


def test_integer_format_is_the_narrowest():
    assert integer_format(0, 255) == FixedFormat(False, 8, 0)
    assert integer_format(-129, 129).width == 9
    assert integer_format(-128, 127).width == 8
    assert integer_format(-1, 0).width == 1
    for low, high in [(-300, 5), (0, 1), (-7, 7), (-8, 7)]:
        fmt = integer_format(low, high)
        assert fmt.min_raw <= low and high <= fmt.max_raw
        narrower = fmt.width - 1
        assert narrower == 0 or not (-(1 << (narrower - 1)) <= low and high < (1 << (narrower - 1)))


@pytest.mark.parametrize("kwargs, message", [
    ({"signed": 1, "int_bits": 2, "frac_bits": 3}, "signed must be True or False, not 1"),
    ({"signed": True, "int_bits": -1, "frac_bits": 3},
     "int_bits must be an integer from 0 to 62, not -1"),
    ({"signed": True, "int_bits": 2, "frac_bits": 3.0},
     "frac_bits must be an integer from 0 to 62, not 3.0"),
    ({"signed": False, "int_bits": 0, "frac_bits": 0},
     "width (int_bits + frac_bits + sign) must be between 1 and 63, not 0"),
    ({"signed": True, "int_bits": 2, "frac_bits": 3, "rounding": "up"},
     "rounding must be one of nearest_even, nearest_up, nearest_away, floor, toward_zero, "
     "stochastic, not 'up'"),
    ({"signed": True, "int_bits": 2, "frac_bits": 3, "overflow": "clip"},
     "overflow must be one of saturate, wrap, not 'clip'"),
])
def test_bad_formats_refused(kwargs, message):
    with pytest.raises(NmflowError, match=f"^{re.escape(message)}$"):
        FixedFormat(**kwargs)
