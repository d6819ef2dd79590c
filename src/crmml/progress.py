"""Progress for the command line: a rich progress display on a terminal, plain lines in a job log.

Library functions take a plain callback (``progress(step)`` or ``progress(done, total)``); the CLI
builds one here. On a terminal (standard error a TTY and ``CI`` not set) the display is a transient
rich progress bar, so the output that stays is clean. Otherwise, when standard output is not a
terminal (a job log, CI, ``| tee``), every step is one line on standard output with the time elapsed
since the command started, e.g. ``[   12.3 s] fit the churn and value models``, so a long
``crmml train`` shows where it is.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

__all__ = ["Progress", "progress_display"]


class Progress:
    """Callbacks for the library: :meth:`step` names the running step, :meth:`advance` counts parts.

    Parameters
    ----------
    display : rich.progress.Progress, optional
        Draw on this display.
    lines : text stream, optional
        Without a display: write one line per step (and per part done) here, with the elapsed time.
    clock : callable
        Seconds, monotonic (``time.monotonic``); the elapsed time counts from construction.
    """

    def __init__(self, display=None, lines: TextIO | None = None, clock=time.monotonic):
        self._display = display
        self._task = None
        self._lines = lines
        self._clock = clock
        self._start = clock()

    def step(self, description: str) -> None:
        if self._lines is not None:
            self._line(description)
        if self._display is None:
            return
        if self._task is None:
            self._task = self._display.add_task(description, total=None)
        else:
            self._display.update(self._task, description=description, total=None, completed=0)

    def advance(self, done: int, total: int) -> None:
        if self._lines is not None:
            self._line(f"scored part {done} of {total}")
        if self._display is None:
            return
        if self._task is None:
            self._task = self._display.add_task("scoring", total=total)
        self._display.update(self._task, total=total, completed=done)

    def _line(self, text: str) -> None:
        print(f"[{self._clock() - self._start:9.1f} s] {text}", file=self._lines, flush=True)


def _wanted() -> bool:
    return sys.stderr.isatty() and not os.environ.get("CI")


@contextmanager
def progress_display(enabled: bool | None = None) -> Iterator[Progress]:
    """A :class:`Progress` for a command.

    ``enabled=None`` (default) chooses: a rich display on standard error on a terminal (not in CI),
    else plain lines on standard output when it is not a terminal, else nothing. ``True`` forces
    the display, ``False`` turns everything off.
    """
    wanted = _wanted() if enabled is None else enabled
    if not wanted:
        plain = enabled is None and not sys.stdout.isatty()
        yield Progress(lines=sys.stdout if plain else None)
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, SpinnerColumn, TextColumn, TimeElapsedColumn
    from rich.progress import Progress as RichProgress

    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    with RichProgress(*columns, console=Console(stderr=True), transient=True) as display:
        yield Progress(display)
