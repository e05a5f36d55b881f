"""A statistical model of the 2T2R RRAM ternary memory and its precharge sense amplifier (PCSA).

Thesis, chapter 4: a ternary weight is a pair of HfO2 RRAM devices on the bit line (BL) and the
bit line bar (BLb): LRS/HRS means +1, HRS/LRS means -1, HRS/HRS means 0. One PCSA read of 50 ns
tells the three apart: the latch resolves in time only if one branch discharges fast (an LRS),
and Q (+1 if high) says which one. This module gives, in vectorized NumPy with explicit
``numpy.random.Generator`` seeds,

* :data:`CONDITIONS`, the resistance distributions of the programmed states per programming
  condition and per line (BL, BLb), including the two conditions of Fig. 4.7;
* a PCSA model from (R_BL, R_BLb, supply, temperature) to a convergence time and an outcome
  (+1, -1, or 0 if not converged within the sense window), at the corners of Fig. 4.6
  (:data:`CORNERS`);
* a Monte Carlo of programming + reading giving the error rates of Table 4.2 as
  :class:`~nmflow.golden.readerrors.ErrorRates` (:func:`monte_carlo`, :func:`chip_rates`), and
  the regime map of Fig. 4.5 (:func:`regime_map`, :func:`frontier`).

Resistance distributions
------------------------
Each programmed state is log-normal: ``ln R ~ Normal(ln median, sigma)``. LRS: the SET stops when
the filament carries the compliance current (200 uA), so ``R_LRS ~ V_hold / I_cc`` times a factor
set by the filament's random radius; the product of many small independent factors is
log-normal, and tight (Fig. 4.7: "the LRS features a tight distribution"). HRS: the RESET leaves
a gap of random length ``g`` in the filament and the read current tunnels through it, so
``R_HRS ~ R_0 exp(g / lambda)`` with ``g`` about normal: a log-normal, broad (Fig. 4.7: "the HRS
shows a broad statistical distribution", higher for stronger programming). A read adds a bounded
read-to-read fluctuation of the resistance (random telegraph noise; bounded because a trap is
either filled or empty): ``R_read = R exp(eps)``, ``eps ~ Normal(0, read_sigma)`` clipped to
``+-read_clip``. It is what makes the frontier of Fig. 4.5 stochastic (the thesis notes the
SPICE Monte Carlo with process variations gives a sharp frontier, so transistors are not the
cause).

PCSA model
----------
Both outputs are precharged to ``V_DD``; when SEN rises each branch discharges through its RRAM
and the series transistors, an RC discharge::

    V_i(t) = V_DD exp(-t / tau_i),      tau_i = C (R_i + R_T)                      (1)

The latch trips when the faster node falls below ``V_DD - V_th``, where the opposite PMOS turns
on::

    t_trip = tau_min ln(V_DD / (V_DD - V_th))                                     (2)

At that instant the differential is ``dV = V_BLb(t_trip) - V_BL(t_trip)`` (positive when the BL
branch is faster: Q high, +1). The latch then regenerates from ``x = dV + n``, where ``n ~
Normal(0, sigma_n)`` is the latch's input-referred offset and noise, with a floor ``v_floor``
(thermal kT/C noise kicks a latch off its metastable point)::

    t_conv = t_trip + tau_L max(0, ln(V_DD / max(|x|, v_floor)))                   (3)
    outcome = sign(x) if t_conv <= window else 0                                   (4)

The corner sets ``V_DD`` and the temperature ``T``; the transistors follow
``V_th = V_th0 - kappa (T - 27 C)``, mobility ``mu ~ (T / 300.15 K)^-1.5``, and both the series
resistance ``R_T`` and the latch time constant ``tau_L`` scale as ``1 / (mu (V_DD - V_th))``.
A higher supply lowers the trip factor ``ln(V_DD / (V_DD - V_th))`` and ``R_T``: the frontier
moves to higher resistances (fast corner) or lower (slow corner), mostly through the voltage, as
in Fig. 4.6: +-0.1 V moves the typical 45 kOhm frontier by about +-15 %, +-30 C by about +-6 %
(the lower threshold and the lower mobility of a hot transistor partly cancel). The rules of
Fig. 4.5 hold exactly, not only in probability: with both read resistances above
``100 kOhm / exp(read_clip)`` no corner trips within 50 ns, and a device below
``10 kOhm exp(read_clip)`` trips early enough that even the longest regeneration (from
``v_floor``) ends within 50 ns.

Given the read resistances, (3)-(4) give the outcome probabilities over ``n`` in closed form
(:func:`outcome_probabilities`): the read converges iff ``max(|x|, v_floor) >= v_req``, with
``v_req = V_DD exp(-(window - t_trip) / tau_L)``. Type 2 and 3 rates come from sampled reads
(:func:`monte_carlo`: counts over ``samples`` pairs, with a binomial interval). Type 1 is far
below what sampling can see (~1e-7); :func:`type1_rate` computes it by importance sampling of the
programmed resistances (exponential tilting toward the overlap of the LRS and HRS distributions,
the dominant failure point), averaging the closed-form flip probability; the naive count over
the sampled reads and its 95 % upper bound are reported beside it.

CALIBRATION
-----------
See :data:`CALIBRATION` (also written into ``pcsa.json`` by ``nmflow pcsa``). In short: the
transistor and latch parameters are assumed, typical of a 130 nm thick-oxide process at low
overdrive (V_th0 = 0.6 V is from the thesis); the node capacitance ``C`` is fitted so the typical
50 ns frontier, against an HRS of 1 MOhm, lies at 45 kOhm (Fig. 4.4: converged only when R_BL is
"significantly lower than 100 kOhm"; Fig. 4.5: frontier within 10-100 kOhm); the LRS medians and
spreads and the HRS spread are assumed (Fig. 4.7's numbers are not in the text we have), the
HRS spread being bounded by the type 1 target (a broader HRS overlaps the LRS too often); the HRS
median of each programming condition is fitted to the type 3 rate of Table 4.2 (6.5 % at 100 us,
18.5 % at 1 us), typical corner, 50 ns window (:func:`fit_hrs_median` redoes the fit).
"""

import math
from dataclasses import dataclass, replace

import numpy as np

from .. import limits
from ..errors import NmflowError, check_choice, check_int, check_number
from .readerrors import ErrorRates

__all__ = ["printed_rates", "LogNormal", "ProgrammingCondition", "Corner", "PCSAParameters", "PCSA",
           "CONDITIONS", "CORNERS", "CALIBRATION", "TARGETS", "WINDOW",
           "sample_pairs", "read_noise", "discharge", "convergence_time", "pcsa_read",
           "outcome_probabilities", "frontier", "regime_map", "monte_carlo", "type1_rate",
           "MonteCarloResult", "chip_rates", "fit_hrs_median", "normal_cdf"]

#: The sense window of the thesis, in seconds.
WINDOW = 50e-9


# -- checks on user input ------------------------------------------------------------------------

def _check_resistances(name, values):
    """``values`` as a float64 array of positive finite resistances, or one line naming the first
    bad value."""
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise NmflowError(f"{name} must be positive finite resistances in ohms, "
                          f"not {values!r}") from None
    bad = ~(np.isfinite(array) & (array > 0))
    if bad.any():
        first = array[bad].flat[0] if array.ndim else float(array)
        raise NmflowError(f"{name} must be positive finite resistances in ohms, "
                          f"not {float(first)!r}")
    return array


def _check_window(window):
    return check_number("window", window, high=limits.PCSA_WINDOW_NS * 1e-9, above=0,
                        unit="seconds")


def _named(kind, value, cls, table):
    """``value`` if it is a ``cls``, else the entry of ``table`` it names (refused with one line
    if it names none)."""
    if isinstance(value, cls):
        return value
    if not isinstance(value, str):
        raise NmflowError(f"{kind} must be one of {', '.join(table)}, not {value!r}")
    return table[check_choice(kind, value, tuple(table))]


def _corner(corner):
    return _named("corner", corner, Corner, CORNERS)


def _condition(condition):
    return _named("condition", condition, ProgrammingCondition, CONDITIONS)


def _rng(seed):
    return np.random.default_rng(check_int("seed", seed, 0, limits.SEED))


# -- the normal distribution, vectorized, accurate in the tails --------------------------------

_ERFC = np.frompyfunc(math.erfc, 1, 1)


def _erfc(x):
    """Complementary error function, vectorized over :func:`math.erfc` (full double precision,
    also in the far tails where type 1 lives; about 0.25 s per million values)."""
    x = np.asarray(x, dtype=np.float64)
    return _ERFC(x).astype(np.float64) if x.ndim else np.float64(math.erfc(float(x)))


def normal_cdf(x):
    """Standard normal CDF, vectorized (``+-inf`` allowed)."""
    return 0.5 * _erfc(-np.asarray(x, dtype=np.float64) / math.sqrt(2.0))


# -- resistance distributions --------------------------------------------------------------------

@dataclass(frozen=True)
class LogNormal:
    """A log-normal resistance distribution: ``ln R ~ Normal(ln median, sigma)``.

    Parameters
    ----------
    median : float
        Median resistance, ohms.
    sigma : float
        Standard deviation of ``ln R`` (0 gives a fixed resistance).
    """
    median: float
    sigma: float

    def __post_init__(self):
        object.__setattr__(self, "median", check_number("median", self.median, above=0, unit="ohms"))
        object.__setattr__(self, "sigma", check_number("sigma", self.sigma, 0, unit="ln ohms"))

    @property
    def mu(self):
        """Mean of ``ln R``."""
        return math.log(self.median)

    def sample(self, rng, size):
        return self.median * np.exp(self.sigma * rng.standard_normal(size))

    def cdf(self, r):
        """``P(R <= r)``."""
        r = _check_resistances("r", r)
        if self.sigma == 0:
            return (r >= self.median).astype(np.float64)
        return normal_cdf((np.log(r) - self.mu) / self.sigma)

    def quantile(self, p):
        """The resistance below which a fraction ``p`` lies (``0 < p < 1``)."""
        p = check_number("p", p)
        if not 0 < p < 1:
            raise NmflowError(f"p must be in (0, 1), not {p!r}")
        lo, hi = -40.0, 40.0                      # bisection on the standard normal quantile
        for _ in range(200):
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if float(normal_cdf(mid)) < p else (lo, mid)
        return self.median * math.exp(self.sigma * 0.5 * (lo + hi))

    def scaled(self, factor):
        return replace(self, median=self.median * factor)

    def as_dict(self):
        return {"median_ohm": self.median, "sigma_ln": self.sigma}


@dataclass(frozen=True)
class ProgrammingCondition:
    """The programmed resistance distributions of one programming condition.

    Parameters
    ----------
    name : str
    pulse : float
        SET and RESET pulse width, seconds.
    set_compliance : float
        SET compliance current, amperes.
    reset_voltage : float
        RESET voltage, volts.
    lrs_bl, lrs_blb, hrs_bl, hrs_blb : :class:`LogNormal`
        LRS and HRS distributions of the devices on the bit line and on the bit line bar.
    """
    name: str
    pulse: float
    set_compliance: float
    reset_voltage: float
    lrs_bl: LogNormal
    lrs_blb: LogNormal
    hrs_bl: LogNormal
    hrs_blb: LogNormal

    def distribution(self, state, line):
        """The distribution of ``state`` (``"lrs"``/``"hrs"``) on ``line`` (``"bl"``/``"blb"``)."""
        check_choice("state", state, ("lrs", "hrs"))
        check_choice("line", line, ("bl", "blb"))
        return getattr(self, f"{state}_{line}")

    def with_hrs_scale(self, factor):
        """The same condition with both HRS medians multiplied by ``factor``."""
        return replace(self, hrs_bl=self.hrs_bl.scaled(factor), hrs_blb=self.hrs_blb.scaled(factor))

    def as_dict(self):
        return {"pulse_s": self.pulse, "set_compliance_a": self.set_compliance,
                "reset_voltage_v": self.reset_voltage,
                **{f"{s}_{l}": self.distribution(s, l).as_dict()
                   for s in ("lrs", "hrs") for l in ("bl", "blb")}}


#: Assumed (not fitted): LRS set by the 200 uA compliance, R ~ 0.8 V / 200 uA, tight; the BLb
#: devices sit slightly higher (longer access path), as Fig. 4.7 separates the two lines.
_LRS_BL = LogNormal(4.0e3, 0.15)
_LRS_BLB = LogNormal(4.4e3, 0.15)
#: Assumed HRS spread (ln R), bounded above by the type 1 target; BLb HRS median / BL median.
_HRS_SIGMA = 0.6
_HRS_BLB_RATIO = 0.85
#: Fitted by :func:`fit_hrs_median` to Table 4.2's type 3 rates (typical corner, 50 ns): the HRS
#: median of the BL devices per condition.
_HRS_MEDIAN = {"100us": 146_000.0, "1us": 103_800.0}


def _condition_from(name, pulse, hrs_median):
    return ProgrammingCondition(
        name=name, pulse=pulse, set_compliance=200e-6, reset_voltage=2.5,
        lrs_bl=_LRS_BL, lrs_blb=_LRS_BLB,
        hrs_bl=LogNormal(hrs_median, _HRS_SIGMA),
        hrs_blb=LogNormal(hrs_median * _HRS_BLB_RATIO, _HRS_SIGMA))


#: Programming conditions by name: Fig. 4.7(a) (100 us pulses) and Fig. 4.7(b) (1 us pulses), both
#: with 200 uA SET compliance and a 2.5 V RESET.
CONDITIONS = {
    "100us": _condition_from("100us", 100e-6, _HRS_MEDIAN["100us"]),
    "1us": _condition_from("1us", 1e-6, _HRS_MEDIAN["1us"]),
}

#: Table 4.2: measured error rates (type 1 and 2 are upper limits).
TARGETS = {
    "100us": {"type1_below": 1e-6, "type2_below": 0.01, "type3": 0.065},
    "1us": {"type1_below": 1e-6, "type2_below": 0.01, "type3": 0.185},
}


def printed_rates(condition):
    """Table 4.2's rates for ``condition`` as the thesis printed them, the upper limits of types 1
    and 2 taken as rates: ``{"type1": ..., "type2": ..., "type3": ...}``."""
    target = TARGETS[condition]
    return {"type1": target["type1_below"], "type2": target["type2_below"],
            "type3": target["type3"]}


def sample_pairs(condition, weights, *, seed=None, rng=None):
    """Program ternary ``weights`` into device pairs; return ``(r_bl, r_blb)`` in ohms.

    +1 is LRS on BL and HRS on BLb, -1 the opposite, 0 is HRS on both. Each device is drawn
    independently from its line's distribution. Give ``seed`` (an integer >= 0) or ``rng`` (a
    ``numpy.random.Generator``).
    """
    condition = _condition(condition)
    w = np.asarray(weights)
    if w.size and not np.isin(w, (-1, 0, 1)).all():
        raise NmflowError("weights must be ternary (-1, 0 or +1) to program device pairs")
    rng = _rng(seed if seed is not None else 0) if rng is None else rng
    lrs_bl = condition.lrs_bl.sample(rng, w.shape)
    hrs_bl = condition.hrs_bl.sample(rng, w.shape)
    lrs_blb = condition.lrs_blb.sample(rng, w.shape)
    hrs_blb = condition.hrs_blb.sample(rng, w.shape)
    r_bl = np.where(w == 1, lrs_bl, hrs_bl)
    r_blb = np.where(w == -1, lrs_blb, hrs_blb)
    return r_bl, r_blb


# -- the sense amplifier ------------------------------------------------------------------------

@dataclass(frozen=True)
class Corner:
    """A supply and temperature corner of the PCSA (Fig. 4.6).

    Parameters
    ----------
    name : str
    vdd : float
        Supply voltage, volts.
    temperature : float
        Degrees Celsius.
    """
    name: str
    vdd: float
    temperature: float

    def __post_init__(self):
        check_number("vdd", self.vdd, above=0, unit="volts")
        check_number("temperature", self.temperature, rule="a finite number (degrees Celsius)")


#: Fig. 4.6: slow transistors (1.1 V, 0 C), the experiments (1.2 V, 27 C), fast (1.3 V, 60 C).
CORNERS = {
    "slow": Corner("slow", 1.1, 0.0),
    "typical": Corner("typical", 1.2, 27.0),
    "fast": Corner("fast", 1.3, 60.0),
}


@dataclass(frozen=True)
class PCSAParameters:
    """Parameters of the PCSA model (equations in the module docstring); values at 1.2 V, 27 C.

    Parameters
    ----------
    c_node : float
        Output node capacitance, farads (fitted: typical 50 ns frontier at 45 kOhm).
    r_transistor : float
        Series resistance of the sense and enable transistors, ohms.
    vth0 : float
        Threshold voltage at 27 C, volts (thesis: about 0.6 V).
    vth_tempco : float
        dV_th/dT, volts per kelvin (V_th falls as T rises).
    mobility_exponent : float
        ``mu ~ T^-mobility_exponent``.
    tau_latch : float
        Latch regeneration time constant, seconds.
    sigma_offset : float
        Latch input-referred offset and noise (one sigma), volts.
    v_floor : float
        Smallest effective starting imbalance of the regeneration (kT/C noise), volts.
    read_sigma : float
        Read-to-read fluctuation of ``ln R`` (one sigma).
    read_clip : float
        Bound of that fluctuation (``|eps| <= read_clip``).
    """
    c_node: float = 1.4e-12
    r_transistor: float = 5e3
    vth0: float = 0.6
    vth_tempco: float = 1e-3
    mobility_exponent: float = 1.5
    tau_latch: float = 2e-9
    sigma_offset: float = 5e-3
    v_floor: float = 2e-4
    read_sigma: float = 0.1
    read_clip: float = 0.3

    def __post_init__(self):
        for name in ("c_node", "r_transistor", "vth0", "tau_latch", "sigma_offset", "v_floor"):
            check_number(name, getattr(self, name), above=0, unit="SI units")
        for name in ("vth_tempco", "mobility_exponent", "read_sigma", "read_clip"):
            check_number(name, getattr(self, name), 0, unit="SI units")

    def at(self, corner):
        """``(vdd, r_transistor, trip_factor, tau_latch)`` at ``corner``."""
        corner = _corner(corner)
        vth = self.vth0 - self.vth_tempco * (corner.temperature - 27.0)
        if not 0 < vth < corner.vdd:
            raise NmflowError(f"corner {corner.name!r}: the threshold voltage {vth:.3f} V must lie "
                              f"between 0 and the supply {corner.vdd} V")
        mobility = ((corner.temperature + 273.15) / 300.15) ** -self.mobility_exponent
        slowdown = (1.2 - self.vth0) / (corner.vdd - vth) / mobility   # 1 at 1.2 V, 27 C
        trip = math.log(corner.vdd / (corner.vdd - vth))
        return corner.vdd, self.r_transistor * slowdown, trip, self.tau_latch * slowdown

    def as_dict(self):
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


#: The model's parameters (see :data:`CALIBRATION`).
PCSA = PCSAParameters()


def read_noise(rng, shape, pcsa=PCSA):
    """Read-to-read factors ``exp(eps)``, ``eps ~ Normal(0, read_sigma)`` clipped to
    ``+-read_clip``."""
    eps = np.clip(pcsa.read_sigma * rng.standard_normal(shape), -pcsa.read_clip, pcsa.read_clip)
    return np.exp(eps)


def discharge(r_bl, r_blb, *, corner="typical", pcsa=PCSA):
    """``(t_trip, dv)``: when the faster branch trips the latch (2), and the differential
    ``V_BLb - V_BL`` at that instant (positive: BL faster, Q high, +1), for read resistances."""
    r_bl = _check_resistances("r_bl", r_bl)
    r_blb = _check_resistances("r_blb", r_blb)
    vdd, r_t, trip, _ = pcsa.at(corner)
    tau_bl = pcsa.c_node * (r_bl + r_t)
    tau_blb = pcsa.c_node * (r_blb + r_t)
    t_trip = np.minimum(tau_bl, tau_blb) * trip
    dv = vdd * (np.exp(-t_trip / tau_blb) - np.exp(-t_trip / tau_bl))
    return t_trip, dv


def _regeneration(x, vdd, tau_l, pcsa):
    start = np.maximum(np.abs(x), pcsa.v_floor)
    return tau_l * np.maximum(0.0, np.log(vdd / start))


def convergence_time(r_bl, r_blb, *, corner="typical", offset=0.0, pcsa=PCSA):
    """Time for the latch to resolve (3), seconds, for read resistances and a latch noise sample
    ``offset`` (volts; 0: the noiseless time)."""
    offset = check_number("offset", offset, rule="a finite number (volts)")
    vdd, _, _, tau_l = pcsa.at(corner)
    t_trip, dv = discharge(r_bl, r_blb, corner=corner, pcsa=pcsa)
    return t_trip + _regeneration(dv + offset, vdd, tau_l, pcsa)


def pcsa_read(r_bl, r_blb, *, corner="typical", window=WINDOW, seed=None, rng=None,
              noisy_devices=True, pcsa=PCSA):
    """One read of each pair of programmed resistances: ``(outcome, t_conv)``.

    ``outcome`` is int8: +1 (Q high), -1 (Q low), 0 (not converged within ``window`` seconds);
    ``t_conv`` the convergence time in seconds (it may exceed the window). The read draws the
    devices' read fluctuation (unless ``noisy_devices`` is false) and the latch noise.
    """
    window = _check_window(window)
    r_bl = _check_resistances("r_bl", r_bl)
    r_blb = _check_resistances("r_blb", r_blb)
    r_bl, r_blb = np.broadcast_arrays(r_bl, r_blb)
    rng = _rng(seed if seed is not None else 0) if rng is None else rng
    if noisy_devices:
        r_bl = r_bl * read_noise(rng, r_bl.shape, pcsa)
        r_blb = r_blb * read_noise(rng, r_blb.shape, pcsa)
    vdd, _, _, tau_l = pcsa.at(corner)
    t_trip, dv = discharge(r_bl, r_blb, corner=corner, pcsa=pcsa)
    x = dv + pcsa.sigma_offset * rng.standard_normal(dv.shape)
    t_conv = t_trip + _regeneration(x, vdd, tau_l, pcsa)
    outcome = np.where(t_conv <= window, np.where(x >= 0, 1, -1), 0).astype(np.int8)
    return outcome, t_conv


def outcome_probabilities(r_bl, r_blb, *, corner="typical", window=WINDOW, pcsa=PCSA):
    """``(p_plus, p_minus, p_zero)`` of one read of the given read resistances, exact over the
    latch noise ``n`` (closed form of (3)-(4))."""
    window = _check_window(window)
    vdd, _, _, tau_l = pcsa.at(corner)
    t_trip, dv = discharge(r_bl, r_blb, corner=corner, pcsa=pcsa)
    with np.errstate(over="ignore"):
        v_req = np.where(t_trip < window, vdd * np.exp(-(window - t_trip) / tau_l), np.inf)
    v_eff = np.where(pcsa.v_floor >= v_req, 0.0, v_req)
    s = pcsa.sigma_offset
    p_plus = np.where(np.isinf(v_eff), 0.0, normal_cdf((dv - v_eff) / s))
    p_minus = np.where(np.isinf(v_eff), 0.0, normal_cdf((-dv - v_eff) / s))
    p_zero = np.clip(1.0 - p_plus - p_minus, 0.0, 1.0)
    return p_plus, p_minus, p_zero


def frontier(corner="typical", *, window=WINDOW, r_other=1e6, pcsa=PCSA):
    """The largest resistance of one device for which a noiseless read (no read fluctuation, no
    latch noise) converges within ``window`` while the other device is ``r_other`` ohms."""
    window = _check_window(window)
    r_other = float(_check_resistances("r_other", r_other))

    def converges(r):
        return float(convergence_time(r, r_other, corner=corner, pcsa=pcsa)) <= window

    lo, hi = math.log(1e-3), math.log(r_other)
    if not converges(math.exp(lo)):
        return 0.0
    if converges(math.exp(hi)):
        return r_other
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if converges(math.exp(mid)) else (lo, mid)
    return math.exp(lo)


def regime_map(r_values, *, corner="typical", window=WINDOW, seed=0, pcsa=PCSA):
    """The regime map of Fig. 4.5 on the grid ``r_values`` x ``r_values`` (ohms).

    Returns a dict of arrays indexed ``[i_blb, j_bl]``: ``outcome`` (one sampled read per point,
    with device and latch noise), ``t_conv`` (noiseless convergence time, seconds) and
    ``p_converge`` (probability of convergence over the latch noise, without device noise).
    """
    r = _check_resistances("r_values", r_values).ravel()
    r_bl, r_blb = np.meshgrid(r, r)
    outcome, _ = pcsa_read(r_bl, r_blb, corner=corner, window=window, seed=seed, pcsa=pcsa)
    _, _, p_zero = outcome_probabilities(r_bl, r_blb, corner=corner, window=window, pcsa=pcsa)
    return {"r_bl": r_bl, "r_blb": r_blb, "outcome": outcome,
            "t_conv": convergence_time(r_bl, r_blb, corner=corner, pcsa=pcsa),
            "p_converge": 1.0 - p_zero}


# -- Monte Carlo of programming and reading ------------------------------------------------------

def _upper_bound_95(events, trials):
    """One-sided 95 % upper bound of a binomial rate: exact for 0 events (``1 - 0.05^(1/N)``),
    Wilson score bound otherwise."""
    if events == 0:
        return 1.0 - 0.05 ** (1.0 / trials)
    z, p = 1.6449, events / trials
    centre = p + z * z / (2 * trials)
    spread = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials))
    return min(1.0, (centre + spread) / (1 + z * z / trials))


def type1_rate(condition, *, samples=200_000, seed=0, corner="typical", window=WINDOW, pcsa=PCSA):
    """Type 1 rate (sign flip of a +-1 weight) by importance sampling: ``(rate, standard_error)``.

    The LRS and HRS standard normals of each pair are drawn from a normal shifted to the dominant
    point of ``ln R_HRS <= ln R_LRS`` (the closest point of that half-space in standard units),
    the read fluctuation from its own law, and each pair is weighted by the likelihood ratio times
    its exact flip probability (:func:`outcome_probabilities`). +1 and -1 weights count half each.
    """
    condition = _condition(condition)
    samples = check_int("samples", samples, *limits.PCSA_SAMPLES)
    rng = _rng(seed)
    estimates = []
    for lrs, hrs, lrs_on_bl in ((condition.lrs_bl, condition.hrs_blb, True),
                                (condition.lrs_blb, condition.hrs_bl, False)):
        d = hrs.mu - lrs.mu
        s2 = lrs.sigma ** 2 + hrs.sigma ** 2
        shift_l = d * lrs.sigma / s2 if s2 else 0.0           # standard units
        shift_h = -d * hrs.sigma / s2 if s2 else 0.0
        z_l = rng.standard_normal(samples) + shift_l
        z_h = rng.standard_normal(samples) + shift_h
        weight = np.exp(-shift_l * z_l - shift_h * z_h + 0.5 * (shift_l ** 2 + shift_h ** 2))
        r_l = lrs.median * np.exp(lrs.sigma * z_l) * read_noise(rng, samples, pcsa)
        r_h = hrs.median * np.exp(hrs.sigma * z_h) * read_noise(rng, samples, pcsa)
        if lrs_on_bl:
            _, p_wrong, _ = outcome_probabilities(r_l, r_h, corner=corner, window=window,
                                                  pcsa=pcsa)
        else:
            p_wrong, _, _ = outcome_probabilities(r_h, r_l, corner=corner, window=window,
                                                  pcsa=pcsa)
        estimates.append(weight * p_wrong)
    values = 0.5 * (estimates[0] + estimates[1])
    return float(values.mean()), float(values.std(ddof=1) / math.sqrt(samples))


@dataclass(frozen=True)
class MonteCarloResult:
    """Error rates of one programming condition at one corner.

    ``rates`` holds type 2 and 3 as sampled fractions and type 1 from :func:`type1_rate`;
    ``counts`` the sampled events (``type1``, ``type2`` over ``samples`` +-1 reads, ``type3``
    over ``samples`` zero reads); ``type1_upper_95`` the 95 % upper bound of the sampled type 1
    count alone.
    """
    condition: str
    corner: str
    window: float
    samples: int
    seed: int
    rates: ErrorRates
    counts: dict
    type1_stderr: float
    type1_upper_95: float

    def as_dict(self):
        n = self.samples
        return {**self.rates.as_dict(),
                "type1_method": "importance sampling of the programmed resistances, exact over "
                                "the latch noise",
                "type1_stderr": self.type1_stderr,
                "type1_sampled": self.counts["type1"] / n,
                "type1_sampled_upper_95": self.type1_upper_95,
                "type2_stderr": math.sqrt(self.rates.type2 * (1 - self.rates.type2) / n),
                "type2_upper_95": _upper_bound_95(self.counts["type2"], n),
                "type3_stderr": math.sqrt(self.rates.type3 * (1 - self.rates.type3) / n),
                "counts": dict(self.counts), "reads_nonzero": n, "reads_zero": n}


def monte_carlo(condition, *, samples=200_000, seed=0, corner="typical", window=WINDOW,
                pcsa=PCSA):
    """Program and read ``samples`` +-1 weights (half each) and ``samples`` zeros; count the
    errors. Type 1 comes from :func:`type1_rate` (same sample count), the sampled type 1 count is
    kept beside it."""
    condition = _condition(condition)
    samples = check_int("samples", samples, *limits.PCSA_SAMPLES)
    seed = check_int("seed", seed, 0, limits.SEED)
    corner_name = _corner(corner).name
    window = _check_window(window)
    rng = np.random.default_rng(seed)
    signs = np.where(np.arange(samples) % 2 == 0, 1, -1).astype(np.int8)
    r_bl, r_blb = sample_pairs(condition, signs, rng=rng)
    read, _ = pcsa_read(r_bl, r_blb, corner=corner, window=window, rng=rng, pcsa=pcsa)
    flips = int(np.count_nonzero(read == -signs))
    drops = int(np.count_nonzero(read == 0))
    zeros = np.zeros(samples, dtype=np.int8)
    r_bl, r_blb = sample_pairs(condition, zeros, rng=rng)
    read, _ = pcsa_read(r_bl, r_blb, corner=corner, window=window, rng=rng, pcsa=pcsa)
    appears = int(np.count_nonzero(read != 0))
    type1, type1_se = type1_rate(condition, samples=samples,
                                 seed=seed + 1 if seed < limits.SEED else 0, corner=corner,
                                 window=window, pcsa=pcsa)
    return MonteCarloResult(
        condition=condition.name, corner=corner_name, window=window, samples=samples, seed=seed,
        rates=ErrorRates(type1, drops / samples, appears / samples),
        counts={"type1": flips, "type2": drops, "type3": appears},
        type1_stderr=type1_se, type1_upper_95=_upper_bound_95(flips, samples))


def chip_rates(*, samples=200_000, seed=0, corner="typical", window=WINDOW):
    """Monte-Carlo error rates of the chip per programming condition (``"100us"``, ``"1us"``, ...)
    at ``corner`` with a sense window of ``window`` seconds, as
    :class:`~nmflow.golden.readerrors.ErrorRates`."""
    samples = check_int("samples", samples, *limits.PCSA_SAMPLES)
    seed = check_int("seed", seed, 0, limits.SEED)
    _corner(corner)
    window = _check_window(window)
    return {name: monte_carlo(name, samples=samples, seed=seed, corner=corner,
                              window=window).rates for name in CONDITIONS}


# -- calibration ---------------------------------------------------------------------------------

def _type3_probability(condition, z, eps, corner, window, pcsa):
    """Mean exact type 3 probability over fixed standard normals ``z`` (4 rows: BL, BLb HRS) and
    read fluctuations ``eps`` (common random numbers: smooth and monotone in the HRS median)."""
    r_bl = condition.hrs_bl.median * np.exp(condition.hrs_bl.sigma * z[0]) * eps[0]
    r_blb = condition.hrs_blb.median * np.exp(condition.hrs_blb.sigma * z[1]) * eps[1]
    _, _, p_zero = outcome_probabilities(r_bl, r_blb, corner=corner, window=window, pcsa=pcsa)
    return float(1.0 - p_zero.mean())


def fit_hrs_median(condition, target, *, samples=400_000, seed=12345, corner="typical",
                   window=WINDOW, pcsa=PCSA):
    """The BL HRS median (ohms) that makes the type 3 rate of ``condition`` equal ``target``
    (the BLb median keeps its ratio to it), by bisection on the exact type 3 probability averaged
    over common random numbers."""
    condition = _condition(condition)
    target = check_number("target", target)
    if not 0 < target < 1:
        raise NmflowError(f"target must be in (0, 1), not {target!r}")
    rng = _rng(seed)
    samples = check_int("samples", samples, *limits.PCSA_SAMPLES)
    z = rng.standard_normal((2, samples))
    eps = read_noise(rng, (2, samples), pcsa)
    lo, hi = math.log(1e3), math.log(1e8)
    base = condition.hrs_bl.median
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        trial = condition.with_hrs_scale(math.exp(mid) / base)
        if _type3_probability(trial, z, eps, corner, window, pcsa) > target:
            lo = mid                             # too many zeros converge: raise the HRS
        else:
            hi = mid
    return math.exp(0.5 * (lo + hi))


#: How the model was calibrated: which parameters are assumed, which fitted, to what.
CALIBRATION = {
    "summary": "Transistor/latch parameters and LRS/HRS spreads assumed; node capacitance fitted "
               "to a 45 kOhm typical frontier (Fig. 4.4/4.5); HRS medians fitted to the type 3 "
               "rates of Table 4.2 at the typical corner, 50 ns window.",
    "fitted": {
        "pcsa.c_node": {"value_f": PCSA.c_node,
                        "to": "typical corner, 50 ns, noiseless: a device read against 1 MOhm "
                              "converges up to 45 kOhm (Fig. 4.4: converged only if R_BL is "
                              "significantly lower than 100 kOhm; Fig. 4.5/4.6: frontier within "
                              "10-100 kOhm, with room for the fast and slow corners and the read "
                              "fluctuation)"},
        "hrs_bl.median": {"value_ohm": dict(_HRS_MEDIAN),
                          "to": "type 3 rate of Table 4.2 (100us: 6.5 %, 1us: 18.5 %), typical "
                                "corner, 50 ns; fit_hrs_median, 400k pairs, exact over the latch "
                                "noise"},
    },
    "assumed": {
        "lrs": "log-normal, BL median 4.0 kOhm, BLb 4.4 kOhm, sigma_ln 0.15, both conditions "
               "(compliance-limited SET: ~0.8 V / 200 uA; tight, Fig. 4.7)",
        "hrs_sigma_ln": _HRS_SIGMA,
        "hrs_sigma_reason": "broad (Fig. 4.7) but at most ~0.65: a broader log-normal HRS, with "
                            "its median fitted to type 3, overlaps the LRS often enough to "
                            "break type 1 < 1e-6",
        "hrs_blb_over_bl_median": _HRS_BLB_RATIO,
        "pcsa": {k: v for k, v in PCSA.as_dict().items() if k != "c_node"},
        "source_note": "Fig. 4.7's resistance values are not in the text available; LRS medians "
                       "and all spreads are engineering assumptions, to be refitted to measured "
                       "distributions when available",
    },
    "checks_not_fitted": ["type 1 < 1e-6 and type 2 < 1 % (Table 4.2) are outcomes, not fits",
                          "frontier order fast > typical > slow (Fig. 4.6) follows from the "
                          "corner equations"],
}
