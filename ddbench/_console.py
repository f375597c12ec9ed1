"""The stderr console every command prints its messages on, and its copy into a run's log."""

from __future__ import annotations

import sys
from typing import Any

from rich.console import Console
from rich.control import Control


def stderr_console() -> Console:
    """A rich console on stderr. Where stderr is not a terminal (a log file, a pipe, a SLURM job) rich
    assumes 80 columns and would break status lines and suggested commands mid-word; there lines are
    soft-wrapped (left whole, for the reader's own viewer to wrap)."""
    return Console(stderr=True, soft_wrap=not sys.stderr.isatty())


class LoggedConsole(Console):
    """A terminal console whose messages are also printed to a log console (a run's ``run.log``).

    Live displays (progress bars) draw on the terminal only; `ddbench.progress` writes their status
    lines to ``log`` instead. Used where a run executes in the user's own process."""

    def __init__(self, log: Console, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.log_copy = log

    def print(self, *objects: Any, **kwargs: Any) -> None:
        super().print(*objects, **kwargs)
        if not any(isinstance(o, Control) for o in objects):  # a live display's redraw, not a message
            self.log_copy.print(*objects, **kwargs)


def echoing_console(log: Console) -> LoggedConsole:
    """`stderr_console`'s settings, with every message also printed to ``log``."""
    return LoggedConsole(log, stderr=True, soft_wrap=not sys.stderr.isatty())
