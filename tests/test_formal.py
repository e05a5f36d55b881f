"""Bounded model checking (SymbiYosys, Yices) through :mod:`nmflow.sim.formal`: the one-hot state
machine of the host link keeps exactly one state, whatever its inputs do; the host link, on the
shared frame receiver and sender (:mod:`nmflow.rtl.framing`), and the engine's sequencer keep the
properties of :mod:`nmflow.sim.proofs` in small configurations. Every proof also runs on a deliberately broken copy of its block and must fail
there, at one of the harness's assertions."""

import importlib.util
import sys
from pathlib import Path

import pytest
from amaranth.hdl import Assert, Elaboratable, Module, Signal

import nmflow.rtl.framing
import nmflow.rtl.hostlink
import nmflow.rtl.onehot
import nmflow.rtl.sequencer
from nmflow.errors import NmflowError
from nmflow.golden.plan import EnginePlan
from nmflow.golden.synthetic import random_model
from nmflow.sim.formal import prove
from nmflow.sim.proofs import LinkProof, SequencerProof

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


def test_mode_is_checked(tmp_path):
    with pytest.raises(NmflowError, match=r"^mode must be one of bmc, prove, not 'cover'$"):
        prove(None, depth=1, work_dir=tmp_path, mode="cover")


# -- the host link and the sequencer, in small configurations ------------------------------------
# The host link: 2 inputs of 2 bits, 2 classes, 4-bit scores (1 score byte), a 3-cycle timeout.
# A byte is taken at most every other cycle, so an INFER request (7 bytes) has its CRC byte in
# by cycle 12 and its 2 values fed by cycle 16.
LINK_DEPTH = 18
# "idle": after the last byte the link took it is idle within 14 cycles (13 does not hold: an
# INFO reply is 13 bytes); 28 cycles cover that bound after a whole INFER request (CRC byte by
# cycle 12).
IDLE_BOUND, IDLE_DEPTH = 14, 28

# The sequencer: a 3-2-2 network on 2 lanes: rows per neuron (2, 1), layer bases (0, 4), 6 rows.
# An inference with no stalls loads in 3 cycles and issues its 6 rows within 14.
PLAN = EnginePlan(random_model([3, 2, 2], input_bits=2, seed=0), 2)
SEQ_DEPTH = 20
# "idle": with the last layer's completions 2 cycles after a neuron's last row (the hidden layer's
# gap to the next is the plan's, 8 cycles), an emit comes within 17 cycles of the last emit or
# complete vector (16 fails, when the next vector, loaded during the gap, waits for the last
# emit); 36 steps reach a second inference whose inputs loaded while the first computed.
SEQ_BOUND, SEQ_IDLE_DEPTH = 17, 36

BROKEN = {
    # the shared frame receiver never checks the CRC byte
    "engine": (nmflow.rtl.framing, "with m.If(~crc_ok):", "with m.If(0):"),
    # after a reply's CRC byte the shared frame sender starts the reply over
    "once": (nmflow.rtl.framing, 'm.d.comb += self.done.eq(1)\n                    m.next = "IDLE"',
             'm.d.comb += self.done.eq(1)\n                    m.next = "HEAD"'),
    # in the shared frame receiver, an unfinished frame never times out
    "idle": (nmflow.rtl.framing, "with m.Elif(quiet):", "with m.Elif(0):"),
    # a neuron's last chunk is never seen: rows run on past the layer
    "rows": (nmflow.rtl.sequencer, "chunk_end.eq(chunk + 1 == self.cur_per_last)",
             "chunk_end.eq(chunk + 2 == self.cur_per_last)"),
    # after the last layer the sequencer stays in DRAIN instead of going back to IDLE
    "seq_idle": (nmflow.rtl.sequencer, 'm.next = "IDLE"', 'm.next = "DRAIN"'),
}


def link_harness(check, link_class=nmflow.rtl.hostlink.HostLink):
    return LinkProof(link_class, check, n_inputs=2, input_bits=2, n_classes=2, score_bits=4,
                     timeout=3, bound=IDLE_BOUND if check == "idle" else None)


def seq_harness(check, sequencer_class=nmflow.rtl.sequencer.Sequencer):
    return SequencerProof(sequencer_class, PLAN, check, latency=2,
                          bound=SEQ_BOUND if check == "idle" else None)


def run(harness, depth, tmp_path):
    return prove(harness, depth=depth, work_dir=tmp_path, ports=harness.ports)


def assert_fails(proof):
    assert not proof.passed, proof.log.read_text()[-3000:]
    assert proof.failed_at and "proofs.py" in proof.failed_at, proof.failed_at
    assert proof.trace is not None and proof.trace.stat().st_size > 0


def test_sequencer_plan_is_small():
    assert (PLAN.mmap.per, PLAN.mmap.bases, PLAN.mmap.rows) == ((2, 1), (0, 4), 6)


@pytest.mark.parametrize("check", ["engine", "once", "idle"])
def test_host_link(check, tmp_path):
    depth = IDLE_DEPTH if check == "idle" else LINK_DEPTH
    proof = run(link_harness(check), depth, tmp_path)
    assert proof.passed, proof.log.read_text()[-3000:]


@pytest.mark.parametrize("check", ["engine", "once", "idle"])
def test_host_link_proof_fails_on_a_broken_link(check, tmp_path):
    """The proofs are of the shared framing: a host link built on a broken copy of the frame
    receiver or sender fails them."""
    framing = broken(*BROKEN[check])
    link = broken(nmflow.rtl.hostlink, "from .framing import",
                  f"from {framing.__name__} import")
    depth = IDLE_DEPTH if check == "idle" else LINK_DEPTH
    assert_fails(run(link_harness(check, link.HostLink), depth, tmp_path))


@pytest.mark.parametrize("check", ["rows", "idle"])
def test_sequencer(check, tmp_path):
    depth = SEQ_IDLE_DEPTH if check == "idle" else SEQ_DEPTH
    proof = run(seq_harness(check), depth, tmp_path)
    assert proof.passed, proof.log.read_text()[-3000:]


@pytest.mark.parametrize("check", ["rows", "idle"])
def test_sequencer_proof_fails_on_a_broken_sequencer(check, tmp_path):
    bad = broken(*BROKEN["seq_idle" if check == "idle" else check])
    depth = SEQ_IDLE_DEPTH if check == "idle" else SEQ_DEPTH
    assert_fails(run(seq_harness(check, bad.Sequencer), depth, tmp_path))
