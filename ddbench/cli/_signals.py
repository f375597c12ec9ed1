"""SIGTERM handled as Ctrl-C: `timeout`, `kill` and a cluster's pre-emption get the same clean stop."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from typing import Any

#: the exit status of a process ended by SIGTERM (128 + 15), as shells and schedulers expect
SIGTERM_EXIT_CODE = 128 + signal.SIGTERM


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived: raised in the main thread so a run unwinds exactly as on Ctrl-C (locks
    released, checkpoint kept, the run marked interrupted), then the CLI exits with status 143."""


@contextlib.contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """Within the block, SIGTERM raises `Terminated` in this process's main thread.

    Only the first SIGTERM raises; a second one ends the process at once (the default action), so a
    stuck clean-up never makes a process unkillable. A forked child that inherited the handler dies
    by the default action too; sweep workers are spawned and keep their own handling
    (`ddbench.running.executor.die_with_parent`).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    owner = os.getpid()

    def handler(signum: int, frame: Any) -> None:
        signal.signal(signum, signal.SIG_DFL)
        if os.getpid() != owner:
            os.kill(os.getpid(), signum)
            return
        raise Terminated("SIGTERM")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
