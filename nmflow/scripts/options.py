"""argparse types for the command line's numbers, each with its bound (:mod:`nmflow.limits`).

A type refuses a value with the wording of :mod:`nmflow.errors` (``must be an integer from 1 to
10000, not '0'``); the parser turns it into ``nmflow: error: train: --epochs must be ...``.
:func:`ranged` adds the bound to an option's help, so ``--help`` states every bound.
"""

import argparse
import math

from .. import limits
from ..errors import int_rule, number_rule

__all__ = ["integer", "number", "widths", "clock", "jobs", "ranged", "HIDDEN", "SEED", "VECTORS",
           "LANES", "CLOCK", "CLOCK_HELP", "SIM_JOBS", "BATCH", "batch", "many_jobs"]


class integer:
    """An integer from ``low`` to ``high``; ``rule`` replaces the phrase after "must be"."""

    def __init__(self, low, high, *, rule=None):
        self.low, self.high = low, high
        self.rule = rule or int_rule(low, high)

    def bound(self):
        return f"{self.low:,} to {self.high:,}".replace(",", "_")

    def __call__(self, text):
        try:
            value = int(text)
        except (TypeError, ValueError):
            value = None
        if value is None or value < self.low or value > self.high:
            raise argparse.ArgumentTypeError(f"must be {self.rule}, not {text!r}")
        return value

    def __repr__(self):
        return "integer"


class number:
    """A finite real number, at least ``low``, at most ``high``, above ``above``."""

    def __init__(self, low=None, high=None, *, above=None, unit=None):
        self.low, self.high, self.above = low, high, above
        self.rule = number_rule(low, high, above, unit)

    def bound(self):
        low = f"above {self.above:g}" if self.above is not None else (
            f"{self.low:g}" if self.low is not None else "")
        high = f"{self.high:g}" if self.high is not None else ""
        if self.above is not None:
            return f"{low}, at most {high}" if high else low
        return f"{low} to {high}" if low and high else (low or f"at most {high}")

    def __call__(self, text):
        try:
            value = float(text)
        except (TypeError, ValueError):
            value = math.nan
        if not math.isfinite(value) or (self.low is not None and value < self.low) \
                or (self.high is not None and value > self.high) \
                or (self.above is not None and value <= self.above):
            raise argparse.ArgumentTypeError(f"must be {self.rule}, not {text!r}")
        return value

    def __repr__(self):
        return "number"


class widths:
    """Comma-separated layer widths, such as ``128,128``: from 1 to ``layers`` of them, each from
    1 to ``width``."""

    def __init__(self, width, layers, example="128,128"):
        self.width, self.layers, self.example = width, layers, example

    def bound(self):
        return f"1 to {self.layers} layers of 1 to {self.width:_} neurons"

    def __call__(self, text):
        try:
            sizes = tuple(int(part) for part in str(text).split(","))
        except ValueError:
            sizes = ()
        if not 1 <= len(sizes) <= self.layers or any(not 1 <= n <= self.width for n in sizes):
            raise argparse.ArgumentTypeError(
                f"must be 1 to {self.layers} comma-separated integers from 1 to {self.width} "
                f"such as {self.example}, not {text!r}")
        return sizes

    def __repr__(self):
        return "widths"


class clock:
    """A run clock: ``auto``, ``board`` or a frequency in MHz from ``low`` to ``high``."""

    def __init__(self, low, high):
        self.mhz = number(low, high, unit="MHz")

    def bound(self):
        return f"auto, board or {self.mhz.bound()} MHz"

    def __call__(self, text):
        if text in ("auto", "board"):
            return text
        try:
            return self.mhz(text)
        except argparse.ArgumentTypeError:
            raise argparse.ArgumentTypeError(f"must be auto, board or a number of MHz from "
                                             f"{self.mhz.low:g} to {self.mhz.high:g}, "
                                             f"not {text!r}") from None

    def __repr__(self):
        return "clock"


class batch:
    """A board's batch memory: ``auto`` or a number of vectors from 0 (none) to ``high``."""

    def __init__(self, high):
        self.count = integer(0, high)

    def bound(self):
        return f"auto or {self.count.bound()}"

    def __call__(self, text):
        if text == "auto":
            return text
        try:
            return self.count(text)
        except argparse.ArgumentTypeError:
            raise argparse.ArgumentTypeError(f"must be auto or an integer from 0 to "
                                             f"{self.count.high}, not {text!r}") from None

    def __repr__(self):
        return "batch"


class jobs:
    """Processes to run side by side: ``auto`` (the usable cores, at most ``high``) or an
    integer from 1 to ``high``."""

    def __init__(self, high):
        self.count = integer(1, high)

    def bound(self):
        return f"auto or {self.count.bound()}"

    def __call__(self, text):
        if text == "auto":
            return min(limits.usable_cores(), self.count.high)
        try:
            return self.count(text)
        except argparse.ArgumentTypeError:
            raise argparse.ArgumentTypeError(f"must be auto or an integer from 1 to "
                                             f"{self.count.high}, not {text!r}") from None

    def __repr__(self):
        return "jobs"


def ranged(p, option, kind, help, **kwargs):
    """``p.add_argument(option, type=kind, ...)`` with ``kind``'s bound added to ``help``
    (before its "(default: ...)" if it has one)."""
    bound = f"[{kind.bound()}]"
    head, paren, tail = help.rpartition(" (default:")
    help = f"{head} {bound}{paren}{tail}" if paren else f"{help} {bound}"
    return p.add_argument(option, type=kind, help=help, **kwargs)


#: The bounded types of the options several commands share.
HIDDEN = widths(limits.WIDTH, limits.LAYERS)
SEED = integer(0, limits.SEED)
VECTORS = integer(1, limits.VECTORS)
LANES = integer(1, limits.LANES)
PE = integer(1, limits.PE)
FIRST_BITS = integer(1, 8)
CLOCK = clock(1, limits.CLOCK_MHZ)
SIM_JOBS = jobs(limits.SIM_JOBS)
BATCH = batch(0xFFFF)
CLOCK_HELP = ("run clock: auto (a PLL clock the design meets with a 5 %% margin over nextpnr's "
              "Fmax, from the clock measured for its units down), board (the board's oscillator, "
              "no PLL) or MHz (the PLL's nearest output at or below) (default: auto)")


def many_jobs(p, what, resume, *, only_with=None, shared_files=False):
    """Add ``--cluster`` (run ``what`` on a Dask scheduler's workers) and ``--resume`` (help
    ``resume``) to the parser ``p``: the options of every step that fans out through
    :func:`nmflow.jobs.run_jobs`. ``only_with`` names the option they go with; with
    ``shared_files`` the workers must share RUN's file system."""
    prefix = f"with {only_with}: " if only_with else ""
    share = "they must share RUN's file system; " if shared_files else ""
    p.add_argument("--cluster", metavar="ADDRESS",
                   help=f"{prefix}run {what} on this Dask scheduler's workers (tcp://HOST:PORT; "
                   f"{share}default: $NMFLOW_CLUSTER, else this machine's cores)")
    p.add_argument("--resume", action="store_true", help=prefix + resume)
