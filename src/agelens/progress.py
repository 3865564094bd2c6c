"""Progress a person can follow: a bar on a terminal, plain lines in a log file.

Under ``nohup agelens train ... > log`` a bar draws nothing, and a log that stays empty for
minutes looks like a hung job. So where standard error is not a terminal, progress is
printed as ``what: done/total (seconds)`` lines every few seconds.
"""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.progress import Progress, ProgressColumn, TaskID


class LinesProgress(Progress):
    """Done/total as a plain line every :attr:`EVERY_S` seconds, and when a task that took
    that long ends; a short job prints nothing."""

    EVERY_S = 5.0

    def __init__(self, *columns: str | ProgressColumn, **options: Any) -> None:
        super().__init__(*columns, **{**options, "disable": True})
        self._last_line = time.monotonic()
        self._printed = False

    def advance(self, task_id: TaskID, advance: float = 1) -> None:
        super().advance(task_id, advance)
        finished = self._tasks[task_id].finished and self._printed
        if time.monotonic() - self._last_line >= self.EVERY_S or finished:
            self._line(task_id)

    def _line(self, task_id: TaskID) -> None:
        found = self._tasks[task_id]
        total = "" if found.total is None else f"/{found.total:.0f}"
        self.console.print(
            f"{found.description}: {found.completed:.0f}{total} ({found.elapsed or 0.0:.0f} s)",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        self._last_line = time.monotonic()
        self._printed = True


def task_progress(
    *columns: str | ProgressColumn, console: Console | None = None, enabled: bool = True
) -> Progress:
    """A bar where ``console`` (standard error by default) is a terminal, else plain lines;
    nothing when not ``enabled``."""
    console = console or Console(stderr=True)
    if not enabled:
        return Progress(*columns, console=console, disable=True)
    kind = Progress if console.is_terminal else LinesProgress
    return kind(*columns, console=console, transient=True)
