"""A state machine with one flip-flop per state."""

import contextlib

from amaranth.hdl import Signal

__all__ = ["OneHotFSM"]


class OneHotFSM:
    """A one-hot state machine written like Amaranth's ``m.FSM()``.

    Each state is a flip-flop of its own, high while the machine is in that state, so that
    deciding a transition needs no decoding of a state number and the logic behind each state
    flip-flop sees only the transitions into and out of that state. Amaranth's own FSM encodes the
    state as a binary number, and Yosys does not re-encode a register that has an initial value
    (every register on an FPGA does): where the transition logic is on the critical path, this
    machine keeps it a few levels shallower.

    Parameters
    ----------
    m : Module
    states : iterable of str
        Every state, in any order.
    init : str
        The state after reset.
    name : str
        Prefix of the state flip-flops' names.

    Use ``with fsm.State("A"):`` blocks (each entered once) and ``fsm.next("B")`` inside them,
    like ``m.next = "B"``; ``fsm.ongoing("A")`` is the flip-flop of state ``A``.
    """

    def __init__(self, m, states, *, init, name="fsm"):
        states = list(states)
        if init not in states:
            raise ValueError(f"init must be one of the states {states}, not {init!r}")
        self._m = m
        self._bits = {state: Signal(init=state == init, name=f"{name}_{state.lower()}")
                      for state in states}
        self._current = None
        self._entered = set()

    def ongoing(self, state):
        return self._bits[state]

    @contextlib.contextmanager
    def State(self, state):
        if state not in self._bits:
            raise ValueError(f"state must be one of {list(self._bits)}, not {state!r}")
        if state in self._entered:
            raise ValueError(f"state {state!r} is described twice")
        self._entered.add(state)
        with self._m.If(self._bits[state]):
            outer, self._current = self._current, state
            try:
                yield
            finally:
                self._current = outer

    def next(self, state):
        """Go to ``state`` at the next clock edge (inside a ``State`` block)."""
        if self._current is None:
            raise ValueError("next() must be called inside a State block")
        if state not in self._bits:
            raise ValueError(f"state must be one of {list(self._bits)}, not {state!r}")
        if state != self._current:
            self._m.d.sync += [self._bits[self._current].eq(0), self._bits[state].eq(1)]
