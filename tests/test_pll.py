"""The PLL dividers of the run clock: the frequencies they give, the ranges they keep, the settings
icepll and ecppll publish, and the highest output at or below a request."""

import functools
from fractions import Fraction

import pytest
from hypothesis import given, settings, strategies as st

from nmflow.boards import pll
from nmflow.boards.catalog import BOARDS
from nmflow.errors import NmflowError


def ice40_output(input_hz, d):
    # Lattice TN1251, simple feedback: f_in * (DIVF + 1) / ((DIVR + 1) * 2**DIVQ)
    return Fraction(input_hz) * (d["DIVF"] + 1) / ((d["DIVR"] + 1) * 2 ** d["DIVQ"])


def ecp5_output(input_hz, d):
    # Lattice TN1263, feedback from CLKOP: f_in * CLKFB_DIV / CLKI_DIV
    return Fraction(input_hz) * d["CLKFB_DIV"] / d["CLKI_DIV"]


@pytest.mark.parametrize("family, input_mhz, request_mhz, dividers", [
    # icepll -i 12 -o 42 (an iCEBreaker design's 42 MHz), -o 30
    ("ice40", 12, 42, {"DIVR": 0, "DIVF": 55, "DIVQ": 4, "FILTER_RANGE": 1}),
    ("ice40", 12, 30, {"DIVR": 0, "DIVF": 79, "DIVQ": 5, "FILTER_RANGE": 1}),
    # ecppll -i 25 -o 120, -o 100, -o 50 (as published for the ULX3S)
    ("ecp5", 25, 120, {"CLKI_DIV": 5, "CLKFB_DIV": 24, "CLKOP_DIV": 5, "CLKOP_CPHASE": 2}),
    ("ecp5", 25, 100, {"CLKI_DIV": 1, "CLKFB_DIV": 4, "CLKOP_DIV": 6, "CLKOP_CPHASE": 2}),
    ("ecp5", 25, 50, {"CLKI_DIV": 1, "CLKFB_DIV": 2, "CLKOP_DIV": 12, "CLKOP_CPHASE": 5}),
])
def test_settings_are_the_published_ones(family, input_mhz, request_mhz, dividers):
    settings = pll.solve(family, input_mhz * 1e6, request_mhz * 1e6)
    assert settings.dividers == dividers
    assert settings.output_hz == request_mhz * 10**6


@functools.cache
def ice40_outputs():
    """Every iCE40 output from 12 MHz, by brute force over (DIVR, DIVF, DIVQ) in range."""
    found = set()
    for divr in range(16):
        for divf in range(128):
            for divq in range(1, 7):
                pfd = Fraction(12e6) / (divr + 1)
                vco = pfd * (divf + 1)
                out = vco / 2 ** divq
                if 10e6 <= pfd <= 133e6 and 533e6 <= vco <= 1066e6 and 16e6 <= out <= 275e6:
                    found.add(out)
    return sorted(found)


@functools.cache
def ecp5_outputs():
    """Every ECP5 output from 25 MHz: each ratio CLKFB_DIV / CLKI_DIV the phase detector allows
    (CLKI_DIV <= 8 at 25 MHz) whose output some CLKOP_DIV puts the VCO in range."""
    found = set()
    for clki in range(1, 9):
        for clkfb in range(1, 81):
            out = Fraction(25e6) * clkfb / clki
            if out <= 400e6 and any(400e6 <= out * k <= 800e6 for k in range(1, 129)):
                found.add(out)
    return sorted(found)


def test_the_output_lists_are_the_brute_force_ones():
    assert pll.frequencies("ice40", 12e6) == ice40_outputs()
    assert pll.frequencies("ecp5", 25e6) == ecp5_outputs()


@settings(max_examples=300, deadline=None)
@given(st.floats(16.2e6, 275e6))
def test_ice40_output_is_the_highest_at_or_below_the_request(request_hz):
    settings = pll.solve("ice40", 12e6, request_hz)
    d = settings.dividers
    assert settings.output_hz == ice40_output(12e6, d) <= request_hz
    assert 10e6 <= 12e6 / (d["DIVR"] + 1) <= 133e6
    assert 533e6 <= settings.vco_hz == Fraction(12e6) * (d["DIVF"] + 1) / (d["DIVR"] + 1) <= 1066e6
    assert not any(settings.output_hz < out <= request_hz for out in ice40_outputs())


@settings(max_examples=300, deadline=None)
@given(st.floats(10e6, 400e6))
def test_ecp5_output_is_the_highest_at_or_below_the_request(request_hz):
    settings = pll.solve("ecp5", 25e6, request_hz)
    d = settings.dividers
    assert settings.output_hz == ecp5_output(25e6, d) <= request_hz
    assert 400e6 <= settings.output_hz * d["CLKOP_DIV"] <= 800e6
    assert 3.125e6 <= Fraction(25e6) / d["CLKI_DIV"]
    assert not any(settings.output_hz < out <= request_hz for out in ecp5_outputs())


def test_a_request_below_the_lowest_output_is_refused():
    with pytest.raises(NmflowError, match=r"^clock must be at least the ice40 PLL's lowest output "
                                          r"from 12 MHz \(16\.125 MHz\), not 10 MHz$"):
        pll.solve("ice40", 12e6, 10e6)


def test_an_unknown_family_is_refused():
    with pytest.raises(NmflowError, match=r"^family must be one of ice40, ecp5, not 'gowin'$"):
        pll.solve("gowin", 27e6, 50e6)


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_every_first_clock_is_a_pll_output(name):
    board = BOARDS[name]
    outputs = pll.frequencies(board.family, board.clock_hz)
    for unit, mhz in board.run_clocks_mhz.items():
        assert Fraction(mhz * 10**6) in outputs, (name, unit, mhz)
    assert board.first_clock_mhz() == board.run_clocks_mhz["engine"]
    assert board.first_clock_mhz("engine", "metaplastic") == board.run_clocks_mhz["metaplastic"]
    assert board.first_clock_mhz("engine", "something new") == board.clock_mhz
    # a measured folding starts at its own clock; the engine's with the metaplastic unit at the
    # unit's, the lower
    for folding, mhz in board.folding_clocks_mhz.items():
        assert Fraction(mhz * 10**6) in outputs, (name, folding, mhz)
        assert board.first_clock_mhz(folding=folding) == mhz
        assert board.first_clock_mhz("engine", "metaplastic", folding=folding) == min(
            mhz, board.run_clocks_mhz["metaplastic"])
    assert board.engine_folding in board.folding_clocks_mhz
    assert board.first_clock_mhz(folding=(2, 1, None)) == board.run_clocks_mhz["engine"]


def test_settings_to_dict_is_json_ready():
    d = pll.solve("ecp5", 25e6, 46.7e6).to_dict()
    assert d["output_mhz"] == round(25 * 13 / 7, 6) and d["family"] == "ecp5"
    assert d["dividers"]["CLKI_DIV"] == 7 and d["dividers"]["CLKFB_DIV"] == 13


def test_the_automatic_clock_only_takes_outputs_the_uart_divides_into_its_baud():
    from nmflow.flow.engine import clock_options
    from nmflow.protocol.framing import BAUD
    from nmflow.rtl.top import uart_divisor

    board = BOARDS["icebreaker"]
    options, first_hz = clock_options("auto", board, "engine", "eqprop", baud=BAUD)
    accept = options["accept_clock"]
    # the EqProp unit's first clock, the lower of the two (33 cycles a bit at 1 Mbaud, exact)
    assert options["first_clock_mhz"] == 33.0 and first_hz == 33e6
    # 16.5 MHz: 16 or 17 cycles a bit at 1 Mbaud, 3.1 % or 2.9 % off; 16.125 MHz: 16, 0.8 % off.
    assert not accept(16.5e6) and accept(16.125e6) and accept(42e6)
    # 16.875 MHz: 17 cycles, 0.7 % off; 16.5 MHz is skipped on the way down from 16.8.
    assert float(pll.solve("ice40", 12e6, 16.9e6, accept).output_hz) == 16.875e6
    assert float(pll.solve("ice40", 12e6, 16.8e6, accept).output_hz) == 16.3125e6
    for out in pll.frequencies("ice40", 12e6):
        if accept(float(out)):
            divisor = uart_divisor(float(out), BAUD)
            assert abs(float(out) / divisor - BAUD) <= 0.02 * BAUD
    _, hz = clock_options(48, board, "engine", baud=BAUD)
    assert hz == 48e6


def test_a_baud_the_oscillator_cannot_make_is_refused_with_clock_board():
    from nmflow.flow.engine import clock_options
    from nmflow.rtl.top import uart_divisor
    with pytest.raises(NmflowError, match=r"baud 3000000 is out of reach from clk_freq 25000000"):
        clock_options("board", BOARDS["ulx3s"], "engine", baud=3_000_000)
    options, hz = clock_options("auto", BOARDS["ulx3s"], "engine", baud=3_000_000)
    assert hz == 112.5e6 and uart_divisor(hz, 3_000_000) == 38      # 2.96 Mbaud, 1.3 % off


def test_a_first_layer_of_all_the_input_bits_is_the_parallel_folding():
    # bench and sweep pass the plan's resolved first_layer_bits (5 for 5-bit pixels): the
    # build must still start at the clock measured for the parallel folding
    from nmflow.flow.engine import folding_key
    from nmflow.golden.synthetic import random_model
    model = random_model([64, 16, 10], input_bits=5, seed=0)
    board = BOARDS["icebreaker"]
    assert folding_key(model, 64, 4, 5) == folding_key(model, 64, 4, None) == (64, 4, None)
    assert board.first_clock_mhz(folding=folding_key(model, 64, 4, 5)) == \
        board.folding_clocks_mhz[(64, 4, None)]
    assert folding_key(model, 64, 4, 1) == (64, 4, 1)
