"""The harness's own test: a small stream design (:class:`StreamAdder`) and its cocotb testbench,
run by ``tests/test_sim_harness.py`` through :func:`nmflow.sim.runner.run_cocotb`.

Environment: ``NMFLOW_TB_BEATS`` (number of input beats), ``NMFLOW_TB_SEED``,
``NMFLOW_TB_READY`` / ``NMFLOW_TB_VALID`` (backpressure on ``o``, gaps on ``i``),
``NMFLOW_TB_WRONG`` (index of an output beat whose expected ``sum`` is made one too large: a
wrong expectation the scoreboard must catch; -1 for none), ``NMFLOW_TB_RUDE`` (1: the design was
built ``rude``, which breaks the stream rules), ``NMFLOW_TB_REPORT`` (JSON written at the end:
beats driven, taken and compared, the mismatches).

The testbench drives random beats (signed fields, an array of signed fields, a nested struct) on
``i`` with random gaps, watches ``i`` with a passive monitor (every beat taken must be the beat
driven), takes ``o`` with random backpressure and compares every output beat with the Python
model's in the scoreboard.
"""

import json
import os
import random
from pathlib import Path

import cocotb
from amaranth.hdl import Module, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from nmflow.sim.harness import Driver, Monitor, Scoreboard, Stream, port_shape
from nmflow.sim.tbutil import start


class Flags(data.Struct):
    keep: 1
    sign: 1


IN_LAYOUT = data.StructLayout({"a": signed(6), "b": data.ArrayLayout(signed(3), 3),
                               "flags": Flags, "tag": unsigned(4)})
OUT_LAYOUT = data.StructLayout({"sum": signed(8), "flags": Flags, "tag": unsigned(4)})


class StreamAdder(wiring.Component):
    """``o.sum = i.a + i.b[0] + i.b[1] + i.b[2]``, one cycle later, ``flags`` and ``tag`` carried
    along. ``i.ready`` depends on the payload (allowed by ``amaranth.lib.stream``): a beat with an
    odd ``tag`` is taken only in every other cycle. ``rude``: ``o.valid`` drops after a cycle
    not taken, the beat lost (a producer breaking the stream rules)."""

    def __init__(self, rude=False):
        self.rude = rude
        super().__init__({"i": In(stream.Signature(IN_LAYOUT)),
                          "o": Out(stream.Signature(OUT_LAYOUT))})

    def elaborate(self, platform):
        m = Module()
        phase = Signal()
        m.d.sync += phase.eq(~phase)
        beat = self.i.payload
        free = ~self.o.valid | self.o.ready
        m.d.comb += self.i.ready.eq(free & (~beat.tag[0] | phase))
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [self.o.valid.eq(1),
                         self.o.payload.sum.eq(beat.a + beat.b[0] + beat.b[1] + beat.b[2]),
                         self.o.payload.flags.eq(beat.flags), self.o.payload.tag.eq(beat.tag)]
        with m.Elif(self.o.ready | self.rude):
            m.d.sync += self.o.valid.eq(0)
        return m


def random_beats(rng, count):
    return [{"a": rng.randint(-32, 31), "b": [rng.randint(-4, 3) for _ in range(3)],
             "flags": {"keep": rng.randint(0, 1), "sign": rng.randint(0, 1)},
             "tag": rng.randint(0, 15)} for _ in range(count)]


def model(beat):
    return {"sum": beat["a"] + sum(beat["b"]), "flags": beat["flags"], "tag": beat["tag"]}


@cocotb.test()
async def harness_round_trip(dut):
    count = int(os.environ["NMFLOW_TB_BEATS"])
    rng = random.Random(int(os.environ.get("NMFLOW_TB_SEED", "0")))
    wrong = int(os.environ.get("NMFLOW_TB_WRONG", "-1"))
    design = StreamAdder(rude=os.environ.get("NMFLOW_TB_RUDE") == "1")
    beats = random_beats(rng, count)
    scoreboard = Scoreboard("model", log=dut._log)
    for n, beat in enumerate(beats):
        scoreboard.expect("i", beat, f"input beat {n}")
        want = model(beat)
        if n == wrong:
            want = dict(want, sum=want["sum"] + 1)
        scoreboard.expect("o", want, f"output beat {n}")
    stream_i = Stream(dut, "i", port_shape(design, "i"))
    taken = Monitor(stream_i, lambda beat, _: scoreboard.observe("i", beat), passive=True)
    out = Monitor(Stream(dut, "o", port_shape(design, "o")),
                  lambda beat, _: scoreboard.observe("o", beat),
                  rng=random.Random(rng.random()), ready=float(os.environ["NMFLOW_TB_READY"]))
    driver = Driver(stream_i, rng=random.Random(rng.random()),
                    valid=float(os.environ["NMFLOW_TB_VALID"]))

    await start(dut, i__valid=0, o__ready=0)
    taken.start()
    out.start()
    driver.start(beats)
    await out.wait(count, 20 * count + 100, lambda: f"{out.count} of {count} beats came out")
    scoreboard.finish()
    Path(os.environ["NMFLOW_TB_REPORT"]).write_text(json.dumps({
        "driven": driver.sent, "taken": taken.count, "out": out.count,
        "compared": scoreboard.compared, "errors": scoreboard.errors,
        "mismatches": scoreboard.messages()}))
    scoreboard.assert_clean()
