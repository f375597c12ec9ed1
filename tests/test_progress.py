"""Progress output where stderr is a log file, not a terminal."""

from __future__ import annotations

import io
from types import SimpleNamespace

from rich.console import Console

from ddbench.util import progress


def test_logs_get_plain_status_lines_at_most_every_interval() -> None:
    log = io.StringIO()
    ticks = iter(float(t) for t in range(0, 1000, 10))  # 10 s between updates
    with progress.make_progress(True, console=Console(file=log, force_terminal=False)) as bar:
        bar.log_every_s, bar.clock = 25.0, lambda: next(ticks)
        task = bar.add_task("distill", total=8)
        for step in range(8):
            bar.update(task, advance=1, loss=1.0 / (step + 1))
    lines = [line for line in log.getvalue().splitlines() if line.startswith("distill ") and "━" not in line]
    # updates at 0, 10, …, 70 s: lines at 0, 30, 60 s and the last one (finished)
    assert [line.split()[1] for line in lines] == ["1/8", "4/8", "7/8", "8/8"]
    assert "loss 0.125" in lines[-1] and "ETA" in lines[-1]


def test_a_terminal_gets_only_the_live_bar() -> None:
    out = io.StringIO()
    with progress.make_progress(True, console=Console(file=out, force_terminal=True)) as bar:
        task = bar.add_task("distill", total=2)
        bar.update(task, advance=2, loss=0.5)
    assert "elapsed" not in out.getvalue()


def test_eta_falls_back_to_the_average_step_time_when_rich_has_no_speed() -> None:
    # one slow step done: rich has a single sample, hence no speed and no time_remaining
    slow = SimpleNamespace(time_remaining=None, total=10, completed=2, elapsed=600.0)
    assert progress.eta_seconds(slow) == 2400.0
    assert progress.eta_seconds(SimpleNamespace(time_remaining=None, total=10, completed=0, elapsed=5.0)) is None
    assert progress.eta_seconds(SimpleNamespace(time_remaining=7.0, total=10, completed=2, elapsed=600.0)) == 7.0


def test_status_line_before_the_first_loss_shows_a_dash_not_nan() -> None:
    log = io.StringIO()
    with progress.make_progress(True, console=Console(file=log, force_terminal=False)) as bar:
        task = bar.add_task("distill", total=4)
        bar.update(task)  # a first status line, before any loss
    line = next(line for line in log.getvalue().splitlines() if line.startswith("distill "))
    assert "loss —" in line and "nan" not in line
