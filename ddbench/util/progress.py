"""One progress-bar style for every long loop (distillation, evaluation, expert training)."""

from __future__ import annotations

import contextlib
import datetime
import time
from collections.abc import Callable, Iterator
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TextColumn, TimeElapsedColumn
from rich.text import Text

from ddbench.util._console import stderr_console

#: ``None``/``False``: silent; ``True``: an own progress bar; or a bar from `make_progress` to add a task to
ProgressArg = Any

# Where output is not a terminal (a log file, a SLURM job) a live bar draws nothing until the end,
# so a plain status line is printed instead, at most this often per task.
LOG_EVERY_S = 60.0
# rich estimates speed from the updates of the last N seconds (30 by default); a DC iteration at IPC 10
# can take ten minutes, so the window is an hour, or the bar would never show a rate or an ETA.
SPEED_WINDOW_S = 3600.0


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
        _LossColumn(),
        TextColumn("[progress.data.speed]{task.fields[rate]}"),
        TimeElapsedColumn(),
        _EtaColumn(),
        console=console or stderr_console(),
        transient=False,
        speed_estimate_period=SPEED_WINDOW_S,
    )
    with progress:
        yield _RateTracking(progress)


@contextlib.contextmanager
def progress_task(progress: ProgressArg, description: str, total: int, **fields: Any) -> Iterator[tuple[Any, Any]]:
    """``(bar, task)`` for one loop: a task on the caller's bar, or on a bar of its own (``True``) or none."""
    if progress is None or isinstance(progress, bool):
        with make_progress(bool(progress)) as bar:
            yield bar, bar.add_task(description, total=total, **fields)
    else:
        yield progress, progress.add_task(description, total=total, **fields)


class _RateTracking:
    """Adds an ``it/s`` field computed by rich's own speed estimate, and status lines in logs."""

    def __init__(
        self, progress: Progress, log_every_s: float = LOG_EVERY_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.progress = progress
        self.log_every_s = log_every_s
        self.clock = clock
        self._logged_at: dict[int, float] = {}

    def add_task(self, description: str, **fields: Any) -> int:
        return self.progress.add_task(description, rate="", **fields)

    def update(self, task: int, **fields: Any) -> None:
        self.progress.update(task, **fields)
        state = next(t for t in self.progress.tasks if t.id == task)
        if state.speed:
            self.progress.update(task, rate=f"{state.speed:.2f} it/s")
        console = self.progress.console
        # a live bar on a terminal; status lines where output is a file, or to a terminal's log copy (run.log)
        log = getattr(console, "log_copy", None) or (console if not console.is_terminal else None)
        if log is not None:
            now = self.clock()
            if state.finished or now - self._logged_at.get(task, -1e9) >= self.log_every_s:
                self._logged_at[task] = now
                log.print(_status_line(state), highlight=False, markup=False, soft_wrap=True)

    def advance(self, task: int, amount: float = 1) -> None:
        self.update(task, advance=amount)


def _loss_text(task: Task) -> str:
    """``loss 0.0123``, or ``loss —`` before the first loss is known."""
    loss = task.fields.get("loss")
    return "loss —" if loss is None else f"loss {loss:.4g}"


class _LossColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        return Text(_loss_text(task))


class _EtaColumn(ProgressColumn):
    """``ETA 0:00:53`` from `eta_seconds`, so the live bar and the log lines agree."""

    def render(self, task: Task) -> Text:
        return Text(f"ETA {_clock(eta_seconds(task))}", style="progress.remaining")


def _clock(seconds: float | None) -> str:
    return "?" if seconds is None else str(datetime.timedelta(seconds=round(seconds)))


def _status_line(task: Task) -> str:
    """``distill 120/200 loss 0.0123 1.52 it/s elapsed 0:01:19 ETA 0:00:53``"""
    total = "?" if task.total is None else f"{task.total:g}"
    parts = [
        task.description,
        f"{task.completed:g}/{total}",
        _loss_text(task),
        task.fields.get("rate", ""),
        f"elapsed {_clock(task.elapsed)}",
        f"ETA {_clock(eta_seconds(task))}",
    ]
    return " ".join(part for part in parts if part)


def eta_seconds(task: Task) -> float | None:
    """rich's estimate, else (one step done, no speed yet) the average time per step so far."""
    if task.time_remaining is not None:
        return task.time_remaining
    if task.total is None or not task.completed or not task.elapsed:
        return None
    return task.elapsed / task.completed * (task.total - task.completed)
