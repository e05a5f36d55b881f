"""The command line's one view of a step's progress: a rich bar per task, on standard error,
gone when the step ends (the protocol is :mod:`nmflow.flow.progress`)."""

import contextlib

__all__ = ["bars"]


@contextlib.contextmanager
def bars(console=None, *, quiet=False):
    """Yield a ``progress(task, done, total, note)`` callable that draws one bar per task (none
    when ``quiet`` or when standard error is not a terminal: a log gets no bars)."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    console = console or Console(highlight=False, stderr=True)
    tasks = {}
    with Progress(TextColumn("{task.description}"), BarColumn(),
                  TextColumn("{task.completed}/{task.total}"), TextColumn("{task.fields[note]}"),
                  TimeElapsedColumn(), console=console, transient=True,
                  disable=quiet or not console.is_terminal) as view:

        def progress(task, done, total=None, note=""):
            if task not in tasks:
                tasks[task] = view.add_task(task, total=total, note=note)
            view.update(tasks[task], completed=done, total=total, note=note)

        yield progress
