"""The cocotb harness (nmflow/sim/harness.py): its codec against Amaranth's own Layout.const and
Layout.from_bits, its scoreboard, and a small stream design under Icarus (nmflow/sim/tb_harness.py)
driven and monitored with gaps and backpressure, where a wrong expectation and a producer that
breaks the stream rules must fail the test."""

import json
import random
import re

import pytest
from amaranth.hdl import signed, unsigned
from amaranth.lib import data

from nmflow.rtl.engine import result_layout
from nmflow.rtl.pcsa import read_row, ternary_row
from nmflow.sim.harness import Codec, Scoreboard, decode, encode
from nmflow.sim.runner import run_cocotb
from nmflow.sim.tb_harness import IN_LAYOUT, OUT_LAYOUT, StreamAdder, random_beats


def plain(value):
    """A ``data.Const`` read member by member into dicts, lists and integers (the reference)."""
    if isinstance(value, data.Const):
        layout = data.Layout.cast(value.shape())
        if isinstance(layout, data.ArrayLayout):
            return [plain(value[i]) for i in range(layout.length)]
        return {name: plain(value[name]) for name, _ in layout}
    return int(value)


#: The popcount lanes' input layout (nmflow/rtl/lanes.py) with 16 lanes: arrays of structs.
POPCOUNT_IN = data.StructLayout({"weights": ternary_row(16), "x": data.ArrayLayout(signed(2), 16),
                                 "tag": unsigned(16)})


def popcount_beat(rng, lanes):
    return {"weights": [{"nz": rng.randint(0, 1), "neg": rng.randint(0, 1)} for _ in range(lanes)],
            "x": [rng.randint(-1, 1) for _ in range(lanes)], "tag": rng.randint(0, 65535)}


@pytest.mark.parametrize("shape, make", [
    (IN_LAYOUT, lambda rng: random_beats(rng, 1)[0]),
    (POPCOUNT_IN, lambda rng: popcount_beat(rng, 16)),
    (read_row(8, 5), lambda rng: {"codes": [{"blb": rng.randint(0, 1), "bl": rng.randint(0, 1)}
                                            for _ in range(8)], "addr": rng.randint(0, 31)}),
    (result_layout(10, 24), lambda rng: {"index": rng.randint(0, 9), "score": rng.randint(
        -(1 << 23), (1 << 23) - 1), "cls": rng.randint(0, 9), "last": rng.randint(0, 1)}),
])
def test_codec_is_layout_const_and_from_bits(shape, make):
    rng = random.Random(1)
    codec = Codec(shape)
    for _ in range(300):
        beat = make(rng)
        bits = codec.encode(beat)
        assert bits == shape.const(beat).as_bits()
        assert codec.decode(bits) == plain(shape.from_bits(bits)) == beat
        assert Codec(shape).decode(bits) == beat            # a fresh codec, nothing remembered
    for _ in range(300):
        bits = rng.getrandbits(data.Layout.cast(shape).size)
        assert codec.decode(bits) == plain(shape.from_bits(bits))


def test_codec_signed_members_and_plain_shapes():
    assert decode(OUT_LAYOUT, encode(OUT_LAYOUT, {"sum": -128, "tag": 3})) == {
        "sum": -128, "flags": {"keep": 0, "sign": 0}, "tag": 3}
    assert encode(data.ArrayLayout(signed(3), 2), [-1, 3]) == 0b011_111
    assert decode(data.ArrayLayout(signed(3), 2), 0b100_111) == [-1, -4]
    assert encode(signed(5), -1) == 31 and decode(signed(5), 31) == -1
    assert encode(unsigned(5), 17) == 17 and decode(unsigned(5), 17) == 17
    assert decode(ternary_row(2), 0b1101) == [{"nz": 1, "neg": 0}, {"nz": 1, "neg": 1}]
    with pytest.raises(ValueError, match="has no member 'c'"):
        encode(IN_LAYOUT, {"c": 1})


def test_scoreboard_counts_and_keeps_every_mismatch():
    board = Scoreboard("twin")
    for n in range(3):
        board.expect("o", {"v": n}, f"beat {n}")
    assert board.observe("o", {"v": 0})
    assert not board.observe("o", {"v": 5})
    assert board.check("code", 1, 1) and not board.check("code", 1, 2)
    assert not board.observe("x", 7)                          # nobody expected it
    board.finish()                                              # beat 2 never came
    assert (board.compared, board.errors) == (4, 4)
    assert board.messages() == ["beat 1 is {'v': 5}, twin {'v': 1}", "code is 1, twin 2",
                                "x beat 0 is 7, twin 'no beat'",
                                "beat 2 is 'nothing', twin {'v': 2}"]
    assert board.failure() == ("4 mismatches against the twin, the first: beat 1 is {'v': 5}, "
                               "twin {'v': 1}")
    with pytest.raises(AssertionError, match="^4 mismatches against the twin"):
        board.assert_clean()


# -- under cocotb --------------------------------------------------------------------------------

def run(tmp_path, *, beats=400, ready=0.5, valid=0.6, wrong=-1, rude=False, seed=3):
    from nmflow.rtl.verilog import to_verilog
    path, _ = to_verilog(StreamAdder(rude=rude), "nmflow_adder", tmp_path / "adder.v")
    report = tmp_path / "report.json"
    result = run_cocotb(path, "nmflow_adder", "nmflow.sim.tb_harness", tmp_path / "work",
                        env={"NMFLOW_TB_BEATS": beats, "NMFLOW_TB_SEED": seed,
                             "NMFLOW_TB_READY": ready, "NMFLOW_TB_VALID": valid,
                             "NMFLOW_TB_WRONG": wrong, "NMFLOW_TB_RUDE": int(rude),
                             "NMFLOW_TB_REPORT": report.resolve()},
                        wall_seconds=120)
    return result, (json.loads(report.read_text()) if report.exists() else None)


@pytest.mark.slow
def test_driver_monitor_and_scoreboard_on_a_stream_design(tmp_path):
    # gaps on i, backpressure on o, a ready that depends on the payload: every beat driven is
    # taken once, in order, and every output equals the model's
    result, report = run(tmp_path)
    assert result.passed, result.log.read_text()[-3000:]
    assert report == {"driven": 400, "taken": 400, "out": 400, "compared": 800, "errors": 0,
                      "mismatches": []}


@pytest.mark.slow
def test_scoreboard_catches_a_wrong_expectation(tmp_path):
    result, report = run(tmp_path, wrong=137)
    assert result.tests == 1 and result.failed == 1
    assert report["errors"] == 1 and report["compared"] == 800
    assert report["mismatches"][0].startswith("output beat 137 is {'sum': ")
    assert result.failures[0].startswith("1 mismatches against the model, the first: output "
                                         "beat 137 is "), result.failures


@pytest.mark.slow
def test_monitor_catches_a_producer_breaking_the_stream_rules(tmp_path):
    result, report = run(tmp_path, rude=True)
    assert result.tests == 1 and result.failed == 1 and report is None
    assert result.failures[0].startswith("o: the producer dropped valid before its beat "), (
        result.failures)


@pytest.mark.slow
def test_monitor_wait_ends_when_beats_stop_coming(tmp_path):
    # o is ready in 1 % of the cycles: the 400 beats need far more than the 20 * 400 + 100
    # cycles the testbench waits, which then fails with how far it got
    result, report = run(tmp_path, ready=0.01)
    assert result.tests == 1 and result.failed == 1 and report is None
    assert re.fullmatch(r"\d+ of 400 beats came out", result.failures[0]), result.failures
