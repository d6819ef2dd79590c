"""Progress for the command line: a rich progress display on a terminal, nothing in CI or logs.

Library functions take a plain callback (``progress(step)`` or ``progress(done, total)``); the CLI
builds one here. The display is shown only when standard error is a terminal and ``CI`` is not set,
and it is transient: logs and captured output stay clean.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["Progress", "progress_display"]


class Progress:
    """Callbacks for the library: :meth:`step` names the running step, :meth:`advance` counts parts."""

    def __init__(self, display=None):
        self._display = display
        self._task = None

    def step(self, description: str) -> None:
        if self._display is None:
            return
        if self._task is None:
            self._task = self._display.add_task(description, total=None)
        else:
            self._display.update(self._task, description=description, total=None, completed=0)

    def advance(self, done: int, total: int) -> None:
        if self._display is None:
            return
        if self._task is None:
            self._task = self._display.add_task("scoring", total=total)
        self._display.update(self._task, total=total, completed=done)


def _wanted() -> bool:
    return sys.stderr.isatty() and not os.environ.get("CI")


@contextmanager
def progress_display(enabled: bool | None = None) -> Iterator[Progress]:
    """A :class:`Progress` that draws on standard error when ``enabled`` (default: on a terminal, not in CI)."""
    if not (_wanted() if enabled is None else enabled):
        yield Progress()
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, SpinnerColumn, TextColumn, TimeElapsedColumn
    from rich.progress import Progress as RichProgress

    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    with RichProgress(*columns, console=Console(stderr=True), transient=True) as display:
        yield Progress(display)
