"""One progress mechanism for every step.

A step that takes long reports through ``progress(task, done, total, note)``: ``task`` names what
is being counted (``"train TNN digits"``, ``"sim"``, ``"points"``), ``done`` of ``total`` units
(``None`` while not known), and a short ``note``. ``progress`` may be ``None``: the step then
reports nothing. The command line shows it as one bar per task (:func:`nmflow.scripts.progress.
bars`); a notebook can pass ``print`` or its own widget.
"""

__all__ = ["report"]


def report(progress, task, done, total=None, note=""):
    """Call ``progress(task, done, total, note)`` if there is one."""
    if progress is not None:
        progress(task, done, total, note)
