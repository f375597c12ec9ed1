"""The stderr console every command prints its messages on."""

from __future__ import annotations

import sys

from rich.console import Console


def stderr_console() -> Console:
    """A rich console on stderr. Where stderr is not a terminal (a log file, a pipe, a SLURM job) rich
    assumes 80 columns and would break status lines and suggested commands mid-word; there lines are
    soft-wrapped (left whole, for the reader's own viewer to wrap)."""
    return Console(stderr=True, soft_wrap=not sys.stderr.isatty())
