"""Bounded model checking (SymbiYosys, z3) through :mod:`nmflow.sim.formal`: the one-hot state
machine of the host link keeps exactly one state, whatever its inputs do, and the proof fails on a
deliberately broken copy."""

import importlib.util
import sys
from pathlib import Path

import pytest
from amaranth.hdl import Assert, Elaboratable, Module, Signal

import nmflow.rtl.onehot
from nmflow.errors import NmflowError
from nmflow.sim.formal import prove

pytestmark = pytest.mark.slow       # runs SymbiYosys


def broken(module, old, new):
    """A copy of ``module`` with ``old`` replaced by ``new`` in its source: a broken block."""
    source = Path(module.__file__).read_text()
    assert source.count(old) == 1, old
    name = f"{module.__name__}_broken"
    spec = importlib.util.spec_from_loader(name, loader=None)
    copy = importlib.util.module_from_spec(spec)
    copy.__package__ = module.__package__
    sys.modules[name] = copy
    exec(compile(source.replace(old, new), f"<broken {module.__name__}>", "exec"), copy.__dict__)
    return copy


class OneHotProof(Elaboratable):
    """A machine with the host link's kind of transitions (waits, branches, a state that only
    leaves on a condition) driven by free inputs: exactly one state flip-flop is high in every
    cycle."""

    STATES = ["HUNT", "CMD", "PAYLOAD", "CHECK", "REPLY", "DRAIN"]

    def __init__(self, fsm_class):
        self.fsm_class = fsm_class
        self.go = Signal(3)

    def elaborate(self, platform):
        m = Module()
        fsm = self.fsm_class(m, self.STATES, init="HUNT", name="p")
        go = self.go
        with fsm.State("HUNT"):
            with m.If(go[0]):
                fsm.next("CMD")
        with fsm.State("CMD"):
            with m.If(go[1]):
                fsm.next("PAYLOAD")
            with m.Elif(go[2]):
                fsm.next("DRAIN")
        with fsm.State("PAYLOAD"):
            with m.If(go == 5):
                fsm.next("CHECK")
        with fsm.State("CHECK"):
            with m.If(go[0]):
                fsm.next("REPLY")
            with m.Else():
                fsm.next("DRAIN")
        with fsm.State("REPLY"):
            fsm.next("HUNT")
        with fsm.State("DRAIN"):
            with m.If(go[1] & go[2]):
                fsm.next("HUNT")
        bits = [fsm.ongoing(state) for state in self.STATES]
        m.d.comb += Assert(sum(bits) == 1)
        return m


def test_one_hot_machine_keeps_exactly_one_state(tmp_path):
    harness = OneHotProof(nmflow.rtl.onehot.OneHotFSM)
    proof = prove(harness, depth=16, work_dir=tmp_path, ports=[harness.go])
    assert proof.passed, proof.log.read_text()[-3000:]


def test_one_hot_proof_fails_on_a_machine_that_keeps_its_old_state(tmp_path):
    bad = broken(nmflow.rtl.onehot, "self._m.d.sync += [self._bits[self._current].eq(0), "
                                    "self._bits[state].eq(1)]",
                 "self._m.d.sync += [self._bits[state].eq(1)]")
    harness = OneHotProof(bad.OneHotFSM)
    proof = prove(harness, depth=16, work_dir=tmp_path, ports=[harness.go])
    assert not proof.passed and proof.failed_at and "test_formal.py" in proof.failed_at
    assert proof.trace is not None and proof.trace.stat().st_size > 0


def test_depth_is_checked(tmp_path):
    with pytest.raises(NmflowError, match=r"^depth must be a positive integer number of cycles, "
                                          r"not 0$"):
        prove(None, depth=0, work_dir=tmp_path)
