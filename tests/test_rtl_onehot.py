"""The one-hot state machine: transitions as written, one state at a time, clear refusals."""

import pytest
from amaranth.hdl import Fragment, Module, Signal
from amaranth.sim import Simulator

from nmflow.rtl.onehot import OneHotFSM


def test_one_state_at_a_time_and_transitions_as_written():
    m = Module()
    go = Signal()
    fsm = OneHotFSM(m, ["A", "B", "C"], init="A", name="t")
    with fsm.State("A"):
        with m.If(go):
            fsm.next("B")
    with fsm.State("B"):
        fsm.next("C")
    with fsm.State("C"):
        with m.If(~go):
            fsm.next("A")
    trace = []

    async def testbench(ctx):
        for value in [0, 1, 0, 1, 1, 1, 0, 0]:
            ctx.set(go, value)
            await ctx.tick()
            trace.append("".join(s for s in "ABC" if ctx.get(fsm.ongoing(s))))

    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(testbench)
    sim.run()
    # A waits for go, B always moves on, C waits for ~go
    assert trace == ["A", "B", "C", "C", "C", "C", "A", "A"]


def test_refusals():
    m = Module()
    with pytest.raises(ValueError, match=r"^init must be one of the states \['A', 'B'\], not 'C'$"):
        OneHotFSM(m, ["A", "B"], init="C")
    fsm = OneHotFSM(m, ["A", "B"], init="A")
    with pytest.raises(ValueError, match=r"^next\(\) must be called inside a State block$"):
        fsm.next("B")
    with pytest.raises(ValueError, match=r"^state must be one of \['A', 'B'\], not 'Z'$"):
        with fsm.State("Z"):
            pass
    with fsm.State("A"):
        with pytest.raises(ValueError, match=r"^state must be one of \['A', 'B'\], not 'Q'$"):
            fsm.next("Q")
    with pytest.raises(ValueError, match=r"^state 'A' is described twice$"):
        with fsm.State("A"):
            pass
    Fragment.get(m, None)                       # (a module built only to be refused from)
