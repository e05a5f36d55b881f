"""The one error type a user of nmflow sees, and the checks that raise it.

The error policy
----------------
* Every check of a value that comes from a user or a configuration (a parameter of a component,
  a step or a golden model, a model file, a dataset, a board, a tool, a frame on a link) raises
  :class:`NmflowError` with one line that names the parameter, the rule and the bad value:
  ``lanes must be a power of two from 1 to 256, not 3``. Component constructors (gateware
  included) check their parameters when they are built, before any elaboration, and raise it
  too. :class:`NmflowError` is a :class:`ValueError`, so code that catches a bad value as a
  ``ValueError`` keeps working.
* A parameter of the wrong kind of object where nmflow expects one of its own types (a model, a
  plan, a configuration) is a programming error and raises :class:`TypeError`.
* The command line (``nmflow.scripts.cli.main``) turns :class:`NmflowError` into
  ``nmflow: error: <message>`` and exit status 2, never a traceback; any other exception is a bug
  in nmflow and is not caught.

The checks below are the ones every layer uses, so that a rule reads the same wherever it is
broken. Each returns the value, converted (``int`` or ``float``), when it passes.
"""

import math
from numbers import Integral, Real

__all__ = ["NmflowError", "check_choice", "check_int", "check_number", "int_rule", "number_rule"]


class NmflowError(ValueError):
    """A clear, one-line refusal of bad input or of an impossible configuration."""


def check_choice(name, value, choices):
    """Return ``value`` if it is one of ``choices``; else raise :class:`NmflowError` naming the
    parameter, the choices and the value (``rounding must be one of a, b, not 'c'``)."""
    if value not in choices:
        raise NmflowError(f"{name} must be one of {', '.join(choices)}, not {value!r}")
    return value


def int_rule(low, high):
    """The phrase after "must be" of :func:`check_int`'s refusal."""
    if low is not None and high is not None:
        return f"an integer from {low} to {high}"
    if low == 1:
        return "a positive integer"
    if low == 0:
        return "a non-negative integer"
    if low is not None:
        return f"an integer >= {low}"
    if high is not None:
        return f"an integer <= {high}"
    return "an integer"


def check_int(name, value, low=None, high=None, *, rule=None):
    """``int(value)`` if ``value`` is an integer (Python or NumPy, not a ``bool``) from ``low``
    to ``high`` (either bound may be ``None``); else :class:`NmflowError`: ``name must be an
    integer from low to high, not value`` (``rule`` replaces the phrase after "must be")."""
    ok = isinstance(value, Integral) and not isinstance(value, bool) \
        and (low is None or value >= low) and (high is None or value <= high)
    if not ok:
        raise NmflowError(f"{name} must be {rule or int_rule(low, high)}, not {value!r}")
    return int(value)


def number_rule(low, high, above, unit):
    """The phrase after "must be" of :func:`check_number`'s refusal."""
    if above is not None and high is not None:
        rule = f"a finite number above {above:g} and at most {high:g}"
    elif above is not None:
        rule = "a positive finite number" if above == 0 else f"a finite number above {above:g}"
    elif low is not None and high is not None:
        rule = f"a finite number from {low:g} to {high:g}"
    elif low is not None:
        rule = "a non-negative finite number" if low == 0 else f"a finite number >= {low:g}"
    elif high is not None:
        rule = f"a finite number <= {high:g}"
    else:
        rule = "a finite number"
    return f"{rule} ({unit})" if unit else rule


def check_number(name, value, low=None, high=None, *, above=None, unit=None, rule=None):
    """``float(value)`` if ``value`` is a finite real number (not a ``bool``), at least ``low``,
    at most ``high`` and strictly above ``above`` (each may be ``None``); else
    :class:`NmflowError` naming the rule (``unit``, if given, follows it in parentheses)."""
    ok = isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value) \
        and (low is None or value >= low) and (high is None or value <= high) \
        and (above is None or value > above)
    if not ok:
        raise NmflowError(f"{name} must be {rule or number_rule(low, high, above, unit)}, "
                          f"not {value!r}")
    return float(value)
