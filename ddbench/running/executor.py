"""Executors run a sweep's runs; `execute_task` is what every executor calls, in whatever process.

An executor is a plugin of the ``ddbench.executors`` family (built in: ``local``, ``slurm``). It
receives picklable `SweepTask`s and reports, through two callbacks, when a task starts and how it
ended. The work of one task is always `execute_task`: claim the run (a lock file in its run
directory), run it with `ddbench.running.pipeline.run_spec` writing into the shared results store, log to
the run's own log file, and turn any error into a ``failed`` result instead of stopping the sweep.
"""

from __future__ import annotations

import abc
import contextlib
import ctypes
import dataclasses
import logging
import os
import shutil
import signal
import socket
import sys
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any, ClassVar

from rich.console import Console

from ddbench.engine.spec import RunEnv, RunSpec
from ddbench.util._console import echoing_console
from ddbench.util.fileio import FileLock

LOCK_DIR = "locks"  # under the output directory: outside run dirs, which --force deletes
LOG_FILE = "run.log"
TASK_STATES = ("done", "failed", "busy")


@dataclasses.dataclass(frozen=True)
class SweepTask:
    """One run of a sweep, as plain picklable data (it crosses process and machine boundaries)."""

    spec: dict[str, Any]
    env: RunEnv
    index: int = 0

    @property
    def run_spec(self) -> RunSpec:
        return RunSpec.from_dict(self.spec)

    @property
    def run_dir(self) -> Path:
        return self.env.run_dir(self.run_spec)

    @property
    def log_path(self) -> Path:
        return self.run_dir / LOG_FILE

    @property
    def lock_path(self) -> Path:
        return self.env.out / LOCK_DIR / f"{self.run_spec.run_id}.lock"


@dataclasses.dataclass(frozen=True)
class TaskResult:
    """How a task ended: ``done``, ``failed`` (with the error) or ``busy`` (another process holds the run)."""

    run_id: str
    state: str
    error: str | None = None
    seconds: float = 0.0


#: per process: (data root, download) → DataCache, so a long-lived worker loads each dataset once
_DATA_CACHES: dict[tuple[str | None, bool], Any] = {}


@contextlib.contextmanager
def run_log_capture(log_file: IO[str], terminal: bool = False) -> Iterator[None]:
    """While a run executes, every logger's warnings (ddbench's, any plugin's of any distribution,
    a library's) and Python ``warnings`` go to the run's log; with ``terminal`` (the run is in the
    user's own process) also to stderr, unless logging is configured there already."""
    root = logging.getLogger()
    handlers: list[logging.Handler] = [logging.StreamHandler(log_file)]
    handlers[0].setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    if terminal and not root.handlers:  # what Python's last-resort handler would have shown
        handlers.append(logging.StreamHandler(sys.stderr))
        handlers[1].setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    warnings_log = logging.getLogger("py.warnings")

    def show(
        message: Any, category: type, filename: str, lineno: int, file: Any = None, line: str | None = None
    ) -> None:
        warnings_log.warning("%s", warnings.formatwarning(message, category, filename, lineno, line).rstrip())

    for handler in handlers:
        root.addHandler(handler)
    try:
        with warnings.catch_warnings():  # restores the previous warnings.showwarning on exit
            warnings.showwarning = show
            yield
    finally:
        for handler in handlers:
            root.removeHandler(handler)


def execute_task(task: SweepTask, echo: bool = False) -> TaskResult:
    """Run one task to completion in this process; never raises for a failed run (its error is returned
    and recorded in the store), so one bad run never stops the sweep.

    The run's messages, progress and warnings go to its ``run.log``; with ``echo`` (an executor
    running tasks in the user's own process) they also show on the terminal, progress as live bars
    when ``--progress`` is on."""
    from ddbench.results.store import ResultsStore, store_path
    from ddbench.running.pipeline import DataCache, run_spec

    spec = task.run_spec
    lock = FileLock(task.lock_path)
    if not lock.acquire():
        return TaskResult(spec.run_id, "busy", error=f"running in {lock.owner()}")
    t0 = time.perf_counter()
    # progress always goes to the run's log file (status lines every LOG_EVERY_S), never to a
    # worker's stderr; on the user's terminal (echo) it follows their --progress/--no-progress
    env = dataclasses.replace(task.env, progress=True)
    try:
        if env.force:
            # clear the run here, before its log file opens (run_spec's --force would delete the open log)
            with ResultsStore(store_path(env.out)) as store:
                store.delete_run(spec.run_id)
            shutil.rmtree(task.run_dir, ignore_errors=True)
            env = dataclasses.replace(env, force=False)
        task.run_dir.mkdir(parents=True, exist_ok=True)
        with open(task.log_path, "a", encoding="utf-8", buffering=1) as log_file, run_log_capture(log_file, echo):
            # the run's own log: the pipeline's messages and every warning (e.g. a corrupt checkpoint)
            log_console = Console(file=log_file, width=120, force_terminal=False, no_color=True, soft_wrap=True)
            console = echoing_console(log_console, live=task.env.progress) if echo else log_console
            log_console.print(
                f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} {spec.label} {spec.run_id} on {socket.gethostname()} pid {os.getpid()}"
            )
            cache_key = (env.data_root, env.download)
            data_cache = _DATA_CACHES.get(cache_key)
            if data_cache is None:
                data_cache = _DATA_CACHES[cache_key] = DataCache(env)
            with ResultsStore(store_path(env.out)) as store:
                try:
                    run_spec(spec, env, store, data_cache, console)
                except Exception as err:  # noqa: BLE001 - recorded with the run, reported by the sweep
                    error = f"{type(err).__name__}: {err}"
                    log_console.print(traceback.format_exc())
                    _record_failure(store, spec, env, error)
                    return TaskResult(spec.run_id, "failed", error=error, seconds=time.perf_counter() - t0)
            log_console.print(f"=== done in {time.perf_counter() - t0:.1f} s")
        return TaskResult(spec.run_id, "done", seconds=time.perf_counter() - t0)
    finally:
        lock.release()


def _record_failure(store: Any, spec: RunSpec, env: RunEnv, error: str) -> None:
    """The run's row says ``failed`` with its error (run_spec does this for distillation errors;
    evaluation and data errors come here)."""
    row = store.get_run(spec.run_id)
    if row is None:
        store.start_run(spec.run_id, spec.to_dict(), str(env.run_dir(spec)))
    elif row.get("status") == "failed":
        return
    store.fail_run(spec.run_id, error)


PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
#: how often a worker's watchdog checks that its parent is alive
WATCHDOG_SECONDS = 1.0


def die_with_parent(parent_pid: int, poll_seconds: float = WATCHDOG_SECONDS) -> None:
    """End this worker process when the sweep process ``parent_pid`` ends, however it ends.

    On Linux the kernel sends SIGTERM at the parent's death (``prctl(PR_SET_PDEATHSIG)``); a daemon
    thread that watches ``os.getppid()`` covers other platforms and a parent that died before the
    prctl call. A killed worker loses nothing: its claim is an flock the kernel releases, and its run
    resumes from the last checkpoint when the sweep is run again.
    """
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        except (OSError, AttributeError):  # no libc symbol: the watchdog alone
            pass
    if os.getppid() != parent_pid:
        os._exit(1)  # the parent is already gone

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(poll_seconds)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(2 * poll_seconds)
        os._exit(1)  # a SIGTERM handler that did not exit

    threading.Thread(target=watch, name="ddbench-parent-watchdog", daemon=True).start()


class Executor(abc.ABC):
    """Runs tasks somewhere; its options are its ``__init__`` keyword arguments (like every plugin)."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""

    @abc.abstractmethod
    def run(
        self,
        tasks: Sequence[SweepTask],
        on_start: Callable[[SweepTask], None],
        on_done: Callable[[SweepTask, TaskResult], None],
    ) -> None:
        """Run every task (each through `execute_task`), calling ``on_start`` when one begins and
        ``on_done`` when it ends; return when all have ended. An executor-level failure of a task
        (a killed job) is reported as a ``failed`` TaskResult, not raised."""

    def describe(self) -> str:
        """One line for the sweep header, e.g. ``local, 2 workers``."""
        return self.name


__all__ = ["Executor", "SweepTask", "TaskResult", "execute_task", "die_with_parent", "LOG_FILE", "LOCK_DIR"]
