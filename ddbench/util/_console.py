"""The stderr console every command prints its messages on, and its copy into a run's log."""

from __future__ import annotations

import os
import sys
from typing import Any

from rich.console import Console
from rich.control import Control

#: the width of tables on a stderr that is not a terminal (they shrink to their content)
LOG_WIDTH = 250


def stderr_console() -> Console:
    """A rich console on stderr. Where stderr is not a terminal (a log file, a pipe, a SLURM job) rich
    assumes 80 columns and would break status lines and suggested commands mid-word, and cut run ids
    in tables; there lines are soft-wrapped (left whole, for the reader's own viewer to wrap) and
    tables may be `LOG_WIDTH` wide (``COLUMNS`` still wins)."""
    terminal = sys.stderr.isatty()
    width = None if terminal or os.environ.get("COLUMNS") else LOG_WIDTH
    return Console(stderr=True, soft_wrap=not terminal, width=width)


class LoggedConsole(Console):
    """A terminal console whose messages are also printed to a log console (a run's ``run.log``).

    Live displays (progress bars) draw on the terminal only, and only with ``live``; `ddbench.util.progress`
    writes their status lines to ``log_copy`` instead. Used where a run executes in the user's process."""

    def __init__(self, log: Console, live: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.log_copy = log
        self.live = live

    def print(self, *objects: Any, **kwargs: Any) -> None:
        if any(isinstance(o, Control) for o in objects):  # a live display's redraw, not a message
            if self.live:
                super().print(*objects, **kwargs)
            return
        super().print(*objects, **kwargs)
        self.log_copy.print(*objects, **kwargs)


def echoing_console(log: Console, live: bool = True) -> LoggedConsole:
    """`stderr_console`'s settings, with every message also printed to ``log``; progress bars show
    on the terminal only with ``live`` (``--progress``)."""
    return LoggedConsole(log, live=live, stderr=True, soft_wrap=not sys.stderr.isatty())
