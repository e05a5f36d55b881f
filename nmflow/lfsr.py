"""Linear-feedback shift registers: one description, a software face and a gateware face.

An :class:`Lfsr` states a pseudo-random source once: its width, its taps, Fibonacci or Galois,
the direction it shifts and how a draw is taken. The golden models step it on integers and NumPy
arrays (:meth:`Lfsr.step`, :meth:`Lfsr.draws`, :class:`LfsrSource`); the gateware asks it for the
next state of an Amaranth value (:meth:`Lfsr.next`) or instantiates :class:`LfsrRegister`. Both
faces take their arithmetic from the same step matrix, so a unit and its twin (docs/contracts.md,
contract 4) draw the same bits by construction.

Conventions: bit ``i`` of the state is ``s[i]``; bit ``i`` of ``taps`` names state bit ``i``;
``mask = 2**width - 1``.

``fibonacci``
    The feedback bit is the parity of ``state & taps``. Shifting right it enters at the top:
    ``s' = s >> 1 | f << (width - 1)`` (bit 0 is the oldest bit of the sequence); shifting left
    it enters at the bottom: ``s' = (s << 1 | f) & mask``.
``galois``
    The bit shifted out toggles the ``taps`` bits. Shifting right:
    ``s' = s >> 1 ^ (taps if s & 1 else 0)``; shifting left:
    ``s' = (s << 1 & mask) ^ (taps if s >> (width - 1) else 0)``.

The bit shifted out must come back (``taps`` holds bit 0 for a right-shifting Fibonacci or a
left-shifting Galois register, bit ``width - 1`` for the two others), so that no state is lost;
the state sequence then has the characteristic polynomial :attr:`Lfsr.polynomial` and a period
of ``2**width - 1`` from any non-zero state when that polynomial is primitive.

A step is linear over GF(2), and so are ``n`` steps: a ``width`` x ``width`` bit matrix, held as
its columns (:meth:`Lfsr.jump`: the images of the states with one bit set). Software applies it
by byte tables; gateware wires it, output bit ``o`` being the XOR of the input bits whose column
has bit ``o`` set. An ``n``-step next state is therefore bit wiring plus XORs: for a
right-shifting Fibonacci register and ``n`` up to ``width`` minus its highest tap, each of the
``n`` new bits is the XOR of tapped old bits and every other bit a wire (software then shifts
them in at once, without the matrix).

A draw advances :attr:`Lfsr.draw_steps` steps and takes the low :attr:`Lfsr.draw_bits` bits of
the new state.
"""

import functools
import operator
from dataclasses import dataclass

import numpy as np
from amaranth.hdl import Cat, Module, Value
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .errors import NmflowError, check_choice, check_int

__all__ = ["Lfsr", "LfsrSource", "LfsrRegister", "KINDS", "SHIFTS", "MAX_WIDTH"]

#: Feedback structures.
KINDS = ("fibonacci", "galois")
#: Shift directions.
SHIFTS = ("right", "left")
#: The widest state the software face steps (NumPy's uint64).
MAX_WIDTH = 64


def _is_int(value):
    return not isinstance(value, bool) and isinstance(value, (int, np.integer))


@dataclass(frozen=True)
class Lfsr:
    """A linear-feedback shift register (see the module docstring for the conventions).

    Parameters
    ----------
    width : int
        Bits of the state, 2 to 64.
    taps : int
        The tap mask: bit ``i`` set taps state bit ``i``. Must hold the bit shifted out.
    kind : ``"fibonacci"`` or ``"galois"``
    shift : ``"right"`` or ``"left"``
    draw_steps : int
        Steps per draw, at least 1.
    draw_bits : int, optional
        Bits per draw, the low bits of the state; the whole state by default.
    """
    width: int
    taps: int
    kind: str = "fibonacci"
    shift: str = "right"
    draw_steps: int = 1
    draw_bits: int = None

    def __post_init__(self):
        check_int("LFSR width", self.width, 2, MAX_WIDTH)
        check_int("LFSR taps", self.taps, 1, self.mask)
        check_choice("LFSR kind", self.kind, KINDS)
        check_choice("LFSR shift", self.shift, SHIFTS)
        if not self.taps >> self._out_bit & 1:
            raise NmflowError(f"LFSR taps must hold bit {self._out_bit}, the bit a {self.shift}-"
                              f"shifting {self.kind} register shifts out, not {self.taps:#x}")
        check_int("LFSR draw_steps", self.draw_steps, 1, 1 << 62)
        if self.draw_bits is None:
            object.__setattr__(self, "draw_bits", self.width)
        check_int("LFSR draw_bits", self.draw_bits, 1, self.width)

    @property
    def mask(self):
        """``2**width - 1``: the bits of a state."""
        return (1 << self.width) - 1

    @property
    def _out_bit(self):
        """The state bit that must feed back."""
        low = (self.kind == "fibonacci") == (self.shift == "right")
        return 0 if low else self.width - 1

    @property
    def polynomial(self):
        """The characteristic polynomial of the state sequence, as an integer (bit ``k`` is the
        coefficient of ``x^k``): ``x^width + sum x^i`` over the taps ``i`` for a right-shifting
        Fibonacci or a left-shifting Galois register, over ``width - 1 - i`` for the others."""
        taps = _ones(self.taps)
        if self._out_bit == self.width - 1:
            taps = [self.width - 1 - i for i in taps]
        return 1 << self.width | sum(1 << i for i in taps)

    def check_state(self, state, name="LFSR state"):
        """``state`` as an int if it is a state the register leaves (1 to ``mask``), else
        :class:`~nmflow.errors.NmflowError`."""
        return check_int(name, state, 1, self.mask)

    # -- software face -------------------------------------------------------------------------

    def step1(self, state):
        """The state one step after the integer ``state``, by the definition."""
        top = self.width - 1
        if self.kind == "fibonacci":
            f = (state & self.taps).bit_count() & 1
            return state >> 1 | f << top if self.shift == "right" else (state << 1 | f) & self.mask
        if self.shift == "right":
            return state >> 1 ^ (self.taps if state & 1 else 0)
        return (state << 1 & self.mask) ^ (self.taps if state >> top else 0)

    def jump(self, n):
        """The ``n``-step map: a tuple of ``width`` ints, the states ``n`` steps after
        ``1 << b`` for each bit ``b``."""
        return _jump(self.width, self.taps, self.kind, self.shift,
                     check_int("LFSR steps", n, 0, 1 << 62))

    def step(self, state, n=1):
        """The state(s) ``n`` steps after ``state``.

        Parameters
        ----------
        state : int or uint64 array (any shape)
        n : int

        Returns
        -------
        int or uint64 array, as ``state``.
        """
        n = check_int("LFSR steps", n, 0, 1 << 62)
        if n <= self._shift_in_limit:
            return self._shift_in(state, n)
        if isinstance(state, (np.ndarray, np.generic)):
            return _apply_array(self.jump(n), state)
        return _apply_int(self.jump(n), state)

    @property
    def _shift_in_limit(self):
        """Most steps :meth:`_shift_in` takes at once: a right-shifting Fibonacci register makes
        ``n`` new bits from the old state while ``n <= width - highest tap``."""
        if (self.kind, self.shift) != ("fibonacci", "right"):
            return 0
        return self.width - self.taps.bit_length() + 1

    def _shift_in(self, state, n):
        """``n`` steps of a right-shifting Fibonacci register at once (``n`` within
        :attr:`_shift_in_limit`): new bit ``j`` is the parity of the taps of ``state >> j``."""
        cast = np.uint64 if isinstance(state, (np.ndarray, np.generic)) else int
        new = 0
        for i in _ones(self.taps):
            new = new ^ state >> cast(i)
        new = new & cast((1 << n) - 1)
        return state >> cast(n) | new << cast(self.width - n)

    def draws(self, state, count):
        """The next ``count`` draws from ``state`` (an int) and the state after them.

        Returns
        -------
        (uint64 array ``[count]``, int)
            Draw ``k`` is the low :attr:`draw_bits` bits of the state ``(k + 1) * draw_steps``
            steps after ``state``. The draws are computed by jumping ahead, doubling the span
            each round, not one at a time.
        """
        count = check_int("draw count", count, 0, 1 << 62)
        if count == 0:
            return np.zeros(0, dtype=np.uint64), state
        states = np.array([self.step(state, self.draw_steps)], dtype=np.uint64)
        span = self.draw_steps
        while len(states) < count:
            take = min(len(states), count - len(states))
            states = np.concatenate([states, self.step(states[:take], span)])
            span *= 2
        low = np.uint64((1 << self.draw_bits) - 1)
        return states & low, int(states[-1])

    def source(self, seed):
        """A stateful software source starting from ``seed``: :class:`LfsrSource`."""
        return LfsrSource(self, seed)

    # -- gateware face -------------------------------------------------------------------------

    def next(self, state, n=1):
        """The Amaranth expression of the state ``n`` steps after ``state`` (a ``width``-bit
        value): wiring and XORs, no registers."""
        state = Value.cast(state)
        if len(state) != self.width:
            raise TypeError(f"an LFSR of width {self.width} steps a value of {self.width} bits, "
                            f"not {len(state)}")
        columns = self.jump(n)
        bits = []
        for out in range(self.width):
            terms = [state[b] for b in range(self.width) if columns[b] >> out & 1]
            bits.append(functools.reduce(operator.xor, terms))
        return Cat(*bits)

    def register(self, init=1):
        """A :class:`LfsrRegister` of this LFSR, reset to ``init``."""
        return LfsrRegister(self, init)


@functools.cache
def _ones(mask):
    """The positions of the bits set in ``mask``."""
    return tuple(i for i in range(mask.bit_length()) if mask >> i & 1)


@functools.cache
def _jump(width, taps, kind, shift, n):
    """Columns of ``n`` steps: one step from the definition, ``n`` by squaring."""
    lfsr = Lfsr(width, taps, kind, shift)
    if n == 0:
        return tuple(1 << b for b in range(width))
    if n == 1:
        return tuple(lfsr.step1(1 << b) for b in range(width))
    half = _jump(width, taps, kind, shift, n // 2)
    square = _compose(half, half)
    return _compose(_jump(width, taps, kind, shift, 1), square) if n & 1 else square


def _compose(f, g):
    """Columns of ``f`` after ``g``."""
    return tuple(_apply_int(f, column) for column in g)


def _apply_int(columns, state):
    """The linear map ``columns`` applied to the int ``state``."""
    out, bit = 0, 0
    while state:
        if state & 1:
            out ^= columns[bit]
        state >>= 1
        bit += 1
    return out


@functools.cache
def _byte_tables(columns):
    """For each byte of a state, the images of its 256 values under ``columns`` (bits past the
    width map to 0)."""
    tables = []
    for base in range(0, len(columns), 8):
        byte = columns[base:base + 8] + (0,) * 8
        tables.append(np.array([_apply_int(byte, value) for value in range(256)],
                               dtype=np.uint64))
    return tables


def _apply_array(columns, state):
    """The linear map ``columns`` applied to a uint64 array of states."""
    state = np.asarray(state, dtype=np.uint64)
    out = np.zeros(state.shape, dtype=np.uint64)
    for k, table in enumerate(_byte_tables(columns)):
        out = out ^ table[(state >> np.uint64(8 * k)) & np.uint64(0xFF)]
    return out


class LfsrSource:
    """The software face with a state: what a golden twin holds.

    Parameters
    ----------
    lfsr : :class:`Lfsr`
    seed : int
        The state to start from, 1 to ``lfsr.mask``.

    Attributes
    ----------
    state : int
        The current state.
    """

    def __init__(self, lfsr, seed):
        self.lfsr = lfsr
        self.state = lfsr.check_state(seed, "LFSR seed")

    def step(self, n=1):
        """Advance ``n`` steps; return the new state."""
        self.state = self.lfsr.step(self.state, n)
        return self.state

    def draws(self, count):
        """The next ``count`` draws (uint64 ``[count]``), advancing the state past them."""
        values, self.state = self.lfsr.draws(self.state, count)
        return values

    def __iter__(self):
        return self

    def __next__(self):
        return int(self.draws(1)[0])


class LfsrRegister(wiring.Component):
    """The gateware face with a state: a register of an :class:`Lfsr` that draws on request.

    Parameters
    ----------
    lfsr : :class:`Lfsr`
    init : int
        The state after reset, 1 to ``lfsr.mask``.

    Members
    -------
    seed : In(width)
    load : In(1)
        Loads ``seed`` into the state at the clock edge (over an advance in the same cycle).
    en : In(1)
        Advances the state one draw (``draw_steps`` steps) at the clock edge.
    draw : Out(draw_bits)
        The draw the next advance gives: the low bits of the state one draw on (combinational,
        from the register).
    state : Out(width)
        The state register.
    """

    def __init__(self, lfsr, init=1):
        self._lfsr = lfsr
        self._init = lfsr.check_state(init, "LFSR init")
        super().__init__({"seed": In(lfsr.width), "load": In(1), "en": In(1),
                          "draw": Out(lfsr.draw_bits), "state": Out(lfsr.width, init=self._init)})

    lfsr = property(lambda self: self._lfsr)

    def elaborate(self, platform):
        m = Module()
        ahead = self._lfsr.next(self.state, self._lfsr.draw_steps)
        m.d.comb += self.draw.eq(ahead[:self._lfsr.draw_bits])
        with m.If(self.load):
            m.d.sync += self.state.eq(self.seed)
        with m.Elif(self.en):
            m.d.sync += self.state.eq(ahead)
        return m
