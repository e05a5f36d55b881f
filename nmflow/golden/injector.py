"""The engine's read-error injector, described once, and its bit-exact golden twin.

The injecting read stage (:class:`nmflow.rtl.injector.PCSAErrorRead`) reads a row of pair codes
like the ideal PCSA (:func:`nmflow.golden.pairs.pcsa_read`) and then, lane by lane, makes the three
read errors of :mod:`nmflow.golden.readerrors` at the rates of an :class:`ErrorInjection`:

* Rates are fixed-point probabilities of ``rate_bits`` fraction bits (16 by default, a resolution
  of 2^-16 = 1.5e-5): ``t = round(p * 2^rate_bits)``, to nearest even
  (:attr:`ErrorInjection.rate_format`, contract 3). The thresholds the hardware holds are
  ``t1 = t(type1)``, ``t12 = min(t1 + t(type2), 2^rate_bits)`` and ``t3 = t(type3)``
  (:meth:`ErrorInjection.thresholds`); the rates it realises are ``t / 2^rate_bits``
  (:attr:`ErrorInjection.realised`). A rate below half a step, such as the chip's type 1
  (< 1e-6), is 0 in hardware.
* Each lane has its own pseudo-random source: a 31-bit Fibonacci LFSR of the primitive trinomial
  ``x^31 + x^3 + 1`` (the recurrence ``s[t+31] = s[t+3] ^ s[t]``: period 2^31 - 1, the PRBS31
  sequence read backwards), advanced :attr:`ErrorInjection.step` = ``rate_bits + 1`` bits per
  read of a row. :data:`LFSR` (an :class:`nmflow.lfsr.Lfsr`) describes it once for both faces:
  the twin steps arrays of lane states with it, the gateware takes its next-state wiring.
  A read of a row by lane ``p`` uses the lane's state ``s`` before the step: ``u = s[rate_bits-1:0]``
  is a uniform integer in ``[0, 2^rate_bits)`` and ``s[rate_bits]`` the sign of a type 3 error.
* The decision, with ``w`` the ideal read: a non-zero ``w`` reads ``-w`` if ``u < t1`` (type 1),
  0 if ``t1 <= u < t12`` (type 2); a zero reads ``+1`` or ``-1`` (sign bit 0 or 1) if ``u < t3``
  (type 3). So each eligible read errs with exactly the realised probability.
* Seeding: lane ``p`` starts from ``((seed ^ salt(p)) & (2^31 - 1)) | 1`` (:func:`lane_state`),
  where ``salt`` is a fixed 31-bit constant per lane (:func:`lane_salt`, from splitmix64): the
  lanes run on distant, unrelated stretches of the sequence, and no state is ever all zeros.
* Two modes, as the thesis shows both sources of error. ``"per_read"``: the sources run on from
  read to read and inference to inference (the stochastic frontier of the sense amplifier: every
  read draws anew). ``"static"``: every lane restarts from its seed state after the last row of
  each inference, so each (row, lane) of the memory errs the same way in every inference (the
  device-to-device spread of the HRS, which a chip keeps until it is programmed again; a new
  seed is a new programming). Setting a new configuration restarts the sources from its seed.

The engine reads every row of its memory once per inference, in address order
(docs/contracts.md, contract 6), so the twin :class:`InjectedRead` reproduces the hardware's error
pattern bit for bit from the same configuration.
"""

from dataclasses import dataclass, replace

import numpy as np

from ..errors import NmflowError, check_choice
from ..fixedpoint import FixedFormat
from ..lfsr import Lfsr
from .pairs import ReadFunction, pcsa_read
from .readerrors import ERROR_TYPES, ErrorRates, decide

__all__ = ["ErrorInjection", "InjectedRead", "MODES", "SEED_BITS", "LFSR", "LFSR_BITS",
           "lane_salt", "lane_state", "lfsr_step", "max_rate_bits"]

#: Injection modes: errors drawn on every read, or a map drawn once per programming (seed).
MODES = ("per_read", "static")
#: Width of the LFSR (and of the seed): x^31 + x^3 + 1.
LFSR_BITS = 31
LFSR_TAP = 3
#: A lane's source (:class:`nmflow.lfsr.Lfsr`): Fibonacci, shifting right, tapping state bits 0
#: and 3; :attr:`ErrorInjection.lfsr` adds the steps and bits of a read's draw.
LFSR = Lfsr(LFSR_BITS, 1 | 1 << LFSR_TAP)
SEED_BITS = LFSR_BITS
_MASK = LFSR.mask


def max_rate_bits():
    """The largest ``rate_bits``: one step of ``rate_bits + 1`` bits must come from the old state
    (``rate_bits + 1 <= 31 - 3``)."""
    return LFSR_BITS - LFSR_TAP - 1


def lane_salt(lane):
    """The fixed 31-bit constant that separates lane ``lane``'s source from the others
    (splitmix64 of the lane index)."""
    z = (lane + 1) * 0x9E3779B97F4A7C15 & (1 << 64) - 1
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9 & (1 << 64) - 1
    z = (z ^ (z >> 27)) * 0x94D049BB133111EB & (1 << 64) - 1
    return (z ^ (z >> 31)) & _MASK


def lane_state(seed, lane):
    """The state lane ``lane`` starts from under ``seed``: never zero."""
    return ((seed ^ lane_salt(lane)) & _MASK) | 1


def lfsr_step(state, bits):
    """Advance 31-bit states (ints or a uint64 array) by ``bits`` steps of the recurrence
    ``s[t+31] = s[t+3] ^ s[t]`` (bit 0 is the oldest): :meth:`LFSR.step <nmflow.lfsr.Lfsr.step>`."""
    return LFSR.step(state, int(bits))


@dataclass(frozen=True)
class ErrorInjection:
    """A configuration of the engine's read-error injector.

    Parameters
    ----------
    rates : :class:`~nmflow.golden.readerrors.ErrorRates`
        The rates wanted; the hardware realises them to ``rate_bits`` fraction bits.
    seed : int
        The pseudo-random sources' seed, 0 to 2^31 - 1.
    mode : ``"per_read"`` or ``"static"``
        See the module docstring.
    rate_bits : int
        Fraction bits of the rates and of the uniform draw per read, 4 to 27.
    """
    rates: ErrorRates = ErrorRates()
    seed: int = 1
    mode: str = "per_read"
    rate_bits: int = 16

    def __post_init__(self):
        if not isinstance(self.rates, ErrorRates):
            raise NmflowError(f"rates must be ErrorRates, not {type(self.rates).__name__}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or \
                not 0 <= self.seed <= _MASK:
            raise NmflowError(f"seed must be an integer from 0 to {_MASK}, not {self.seed!r}")
        check_choice("mode", self.mode, MODES)
        top = max_rate_bits()
        if isinstance(self.rate_bits, bool) or not isinstance(self.rate_bits, int) or \
                not 4 <= self.rate_bits <= top:
            raise NmflowError(f"rate_bits must be an integer from 4 to {top}, "
                              f"not {self.rate_bits!r}")
        object.__setattr__(self, "seed", int(self.seed))

    @property
    def one(self):
        """Probability 1 in the fixed-point format: ``2^rate_bits``."""
        return 1 << self.rate_bits

    @property
    def rate_format(self):
        """The fixed-point format of a probability (contract 3): unsigned, one integer bit (so
        that 1 is exact), ``rate_bits`` fraction bits, rounded to nearest even."""
        return FixedFormat(False, 1, self.rate_bits, "nearest_even", "saturate")

    def thresholds(self):
        """``(t1, t12, t3)``: the integer thresholds the hardware compares its draws with."""
        def q(p):
            return int(self.rate_format.quantize(p))
        t1 = q(self.rates.type1)
        return t1, min(t1 + q(self.rates.type2), self.one), q(self.rates.type3)

    @property
    def realised(self):
        """The :class:`ErrorRates` the hardware makes (the rates after quantization)."""
        t1, t12, t3 = self.thresholds()
        return ErrorRates(t1 / self.one, (t12 - t1) / self.one, t3 / self.one)

    @property
    def step(self):
        """LFSR steps per read of a row: the draw's bits and the sign bit."""
        return self.rate_bits + 1

    @property
    def lfsr(self):
        """A lane's source, :data:`LFSR`, drawing :attr:`step` bits every :attr:`step` steps (a
        read uses the state before its draw: ``u`` and the sign are its low bits)."""
        return replace(LFSR, draw_steps=self.step, draw_bits=self.step)

    def to_dict(self):
        """The configuration as JSON-ready fields (what ``engine.json`` records)."""
        return {"rates": self.rates.as_dict(), "seed": self.seed, "mode": self.mode,
                "rate_bits": self.rate_bits}

    @classmethod
    def from_dict(cls, data):
        """The configuration :meth:`to_dict` wrote; refused with one line if malformed."""
        if not isinstance(data, dict) or set(data) != {"rates", "seed", "mode", "rate_bits"}:
            raise NmflowError(f"an error injection must be an object with rates, seed, mode and "
                              f"rate_bits, not {data!r:.80}")
        rates = data["rates"]
        if not isinstance(rates, dict) or not set(rates) <= set(ERROR_TYPES):
            raise NmflowError(f"error injection rates must be an object with type1, type2 and "
                              f"type3, not {rates!r:.80}")
        return cls(ErrorRates(**rates), seed=data["seed"], mode=data["mode"],
                   rate_bits=data["rate_bits"])

    def states(self, lanes):
        """The lanes' start states, uint64 ``[lanes]``."""
        return np.array([lane_state(self.seed, p) for p in range(lanes)], dtype=np.uint64)


class InjectedRead(ReadFunction):
    """Golden twin of :class:`nmflow.rtl.injector.PCSAErrorRead`: the ideal PCSA read with the
    injector's errors, bit for bit.

    Parameters
    ----------
    injection : :class:`ErrorInjection`
    lanes : int
        Lanes of the memory image (each lane has its own source).

    In ``"per_read"`` mode the object is stateful, as the hardware is: it must see the reads in
    the engine's order, every row of the memory once per inference (the golden reference does
    that: :attr:`per_inference` is set). :meth:`restart` starts again from the seed, as the
    hardware does after reset or a new configuration.
    """

    def __init__(self, injection, lanes):
        if not isinstance(injection, ErrorInjection):
            raise NmflowError(f"injection must be an ErrorInjection, not "
                              f"{type(injection).__name__}")
        self.injection = injection
        self.lanes = lanes
        self.per_inference = injection.mode == "per_read"
        self.per_read = True                # every read draws (a static one, anew each
        self.restart()                      # inference from the seed)

    def restart(self):
        self._state = self.injection.states(self.lanes)

    def draws(self, rows):
        """Advance the sources over ``rows`` row reads; return ``(u, sign)``, uint64 and bool
        ``[rows, lanes]``."""
        inj = self.injection
        lfsr = inj.lfsr
        u = np.empty((rows, self.lanes), dtype=np.uint64)
        sign = np.empty((rows, self.lanes), dtype=bool)
        s = self._state
        mask = np.uint64(inj.one - 1)
        bit = np.uint64(inj.rate_bits)
        for r in range(rows):
            u[r] = s & mask
            sign[r] = (s >> bit) & np.uint64(1)
            s = lfsr.step(s, lfsr.draw_steps)
        self._state = s
        return u, sign

    def decide(self, ideal, u, sign):
        """The weights read, from the ideal read and the draws (the injector's decision)."""
        t1, t12, t3 = (np.uint64(t) for t in self.injection.thresholds())
        return decide(ideal, u, sign, t1, t12, t3)

    def read_rows(self, codes, addr, last_row):
        """Read rows of pair codes (uint8 ``[n, lanes]``) in the given order, as the hardware
        does: ``addr`` holds their addresses and ``last_row`` is the memory's last row, after
        whose read the ``"static"`` mode restarts the sources."""
        codes = np.asarray(codes, dtype=np.uint8)
        if codes.ndim != 2 or codes.shape[1] != self.lanes:
            raise NmflowError(f"codes must have shape [rows, {self.lanes}], "
                              f"not {list(codes.shape)}")
        addr = np.asarray(addr, dtype=np.int64)
        if addr.shape != codes.shape[:1]:
            raise NmflowError(f"addr must have shape [{len(codes)}], not {list(addr.shape)}")
        u = np.empty(codes.shape, dtype=np.uint64)
        sign = np.empty(codes.shape, dtype=bool)
        begin = 0
        ends = np.flatnonzero(addr == last_row) + 1 if self.injection.mode == "static" else []
        for end in [*ends, len(codes)]:
            if end > begin:
                u[begin:end], sign[begin:end] = self.draws(end - begin)
            if end < len(codes) or (len(ends) and end == ends[-1]):
                self.restart()
            begin = end
        return self.decide(pcsa_read(codes), u, sign)

    def __call__(self, codes, addr):
        codes = np.asarray(codes, dtype=np.uint8)
        addr = np.asarray(addr)
        if len(addr) and (addr[0] != 0 or (np.diff(addr) != 1).any()):
            raise NmflowError("the injector's twin must read the memory in address order from "
                              "row 0, as the engine does")
        return self.read_rows(codes, addr, len(codes) - 1)
