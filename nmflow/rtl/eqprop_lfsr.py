"""The EqProp unit's LFSR jump: the twin's 32-bit Galois LFSR (:class:`~nmflow.golden.eqprop_fixed.
Lfsr32`) advanced several steps in one cycle, as an XOR network.

Kept apart on purpose: the update datapath (its draws) and :class:`~nmflow.rtl.eqprop.
EqPropSynthTop` (its stimulus) are its only users.
"""

from amaranth.hdl import Cat, Const

from ..golden.eqprop_fixed import LFSR_MASK

__all__ = ["lfsr_jump_columns", "lfsr_jump"]


def lfsr_jump_columns(steps):
    """The images of the 32 unit states after ``steps`` steps of the Galois LFSR (GF(2)-linear)."""
    cols = []
    for bit in range(32):
        s = 1 << bit
        for _ in range(steps):
            s = (s >> 1) ^ (LFSR_MASK if s & 1 else 0)
        cols.append(s)
    return cols


def lfsr_jump(state, steps):
    """Amaranth expression of the LFSR state ``steps`` steps after ``state`` (XOR network)."""
    cols = lfsr_jump_columns(steps)
    bits = []
    for out in range(32):
        terms = [state[b] for b in range(32) if cols[b] >> out & 1]
        v = Const(0, 1)
        for t in terms:
            v = v ^ t
        bits.append(v)
    return Cat(*bits)
