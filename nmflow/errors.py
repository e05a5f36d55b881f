"""The one error type a user of nmflow sees.

Every check on user input (a model file, a configuration, a dataset, a board, a tool) raises
:class:`NmflowError` with one line that names the parameter, the rule and the bad value. The
command line prints it as ``nmflow: error: <message>`` and exits with status 2, never a traceback.
"""


class NmflowError(Exception):
    """A clear, one-line refusal of bad input or of an impossible configuration."""


def check_choice(name, value, choices):
    """Return ``value`` if it is one of ``choices``; else raise :class:`NmflowError` naming the
    parameter, the choices and the value (``rounding must be one of a, b, not 'c'``)."""
    if value not in choices:
        raise NmflowError(f"{name} must be one of {', '.join(choices)}, not {value!r}")
    return value
