"""One progress-bar style for every long loop (distillation, evaluation, expert training)."""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class _NullProgress:
    """Same calls as rich's Progress, doing nothing (for --no-progress, tests and workers)."""

    def add_task(self, *args: Any, **kwargs: Any) -> int:
        return 0

    def update(self, *args: Any, **kwargs: Any) -> None:
        pass

    def advance(self, *args: Any, **kwargs: Any) -> None:
        pass


@contextlib.contextmanager
def make_progress(enabled: bool = True, console: Console | None = None) -> Iterator[Any]:
    """A rich progress bar with loss, iterations per second and ETA; a no-op when disabled."""
    if not enabled:
        yield _NullProgress()
        return
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.4g}"),
        TextColumn("[progress.data.speed]{task.fields[rate]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console or Console(stderr=True),
        transient=False,
    )
    with progress:
        yield _RateTracking(progress)


class _RateTracking:
    """Adds an ``it/s`` field computed by rich's own speed estimate."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress

    def add_task(self, description: str, **fields: Any) -> int:
        fields.setdefault("loss", float("nan"))
        return self.progress.add_task(description, rate="", **fields)

    def update(self, task: int, **fields: Any) -> None:
        self.progress.update(task, **fields)
        speed = next(t.speed for t in self.progress.tasks if t.id == task)
        if speed:
            self.progress.update(task, rate=f"{speed:.2f} it/s")

    def advance(self, task: int, amount: float = 1) -> None:
        self.update(task, advance=amount)
