"""``local``: N worker processes on this machine, one run each at a time."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from ddbench.engine.hardware import CONCURRENT_RUNS_ENV
from ddbench.errors import InvalidOptionError
from ddbench.running.executor import Executor, SweepTask, TaskResult, die_with_parent, execute_task


def _init_worker(threads: int, parent_pid: int, workers: int) -> None:
    # a worker never outlives the sweep that started it (a killed parent left ~1 GB orphans computing)
    die_with_parent(parent_pid)
    # runs that size themselves by the free memory share it with the other workers
    os.environ[CONCURRENT_RUNS_ENV] = str(workers)
    # each worker gets its share of the cores; N workers × all cores would thrash
    import torch

    torch.set_num_threads(threads)
    os.environ["OMP_NUM_THREADS"] = str(threads)


@contextlib.contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    """This process computes with ``threads`` torch threads inside (None: as it is). Sharing a
    core with another job, a second thread that waits for the CPU stalls every parallel op."""
    if threads is None:
        yield
        return
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    """In the main thread: SIGTERM raises SystemExit, so the pool's workers are stopped, not orphaned."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _stop_workers(pool: ProcessPoolExecutor) -> None:
    """Terminate the pool's worker processes now (their runs resume from checkpoints next time)."""
    processes = list((getattr(pool, "_processes", None) or {}).values())
    for process in processes:
        if process.is_alive():
            process.terminate()
    for process in processes:
        process.join(timeout=5)
        if process.is_alive():
            process.kill()
    pool.shutdown(wait=False, cancel_futures=True)


class LocalExecutor(Executor):
    """Runs a sweep on this machine.

    Options:
        workers: runs at once. 1 runs them one after another in this process (data is loaded
            once; each run's progress shows on the terminal as well as in its log); more start that
            many worker processes (spawned, so CUDA and threads are clean).
        threads: torch threads per worker process (with one worker: of this process, for the
            sweep); default the CPU cores divided by ``workers``.
    """

    name = "local"
    description = "N worker processes on this machine, one run each, a log file per run."

    def __init__(self, workers: int = 1, threads: int | None = None) -> None:
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise InvalidOptionError(f"Expected local workers ≥ 1 but got {workers!r}")
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise InvalidOptionError(f"Expected local threads ≥ 1 (or unset) but got {threads!r}")
        self.workers = workers
        self.threads_given = threads is not None
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        self.threads = threads or max(1, cores // workers)

    def describe(self) -> str:
        if self.workers == 1:
            return "local, 1 worker (this process)" + (f" × {self.threads} thread(s)" if self.threads_given else "")
        return f"local, {self.workers} worker processes × {self.threads} thread(s)"

    def run(
        self,
        tasks: Sequence[SweepTask],
        on_start: Callable[[SweepTask], None],
        on_done: Callable[[SweepTask, TaskResult], None],
    ) -> None:
        if self.workers == 1:
            with _torch_threads(self.threads if self.threads_given else None):
                for task in tasks:
                    on_start(task)
                    on_done(task, execute_task(task, echo=True))  # this process: the run shows on the terminal
            return
        queue = list(tasks)
        while queue:
            queue = self._run_pool(queue, on_start, on_done)

    def _run_pool(
        self,
        queue: list[SweepTask],
        on_start: Callable[[SweepTask], None],
        on_done: Callable[[SweepTask, TaskResult], None],
    ) -> list[SweepTask]:
        """Run tasks with at most ``workers`` in flight; returns the tasks left when a worker died."""
        context = multiprocessing.get_context("spawn")
        pool = ProcessPoolExecutor(
            self.workers,
            mp_context=context,
            initializer=_init_worker,
            initargs=(self.threads, os.getpid(), self.workers),
        )
        try:
            with _sigterm_raises():
                left = self._drain(pool, queue, on_start, on_done)
        except BaseException:
            # interrupted (SIGTERM, Ctrl-C, an error in a callback): no worker may keep computing
            _stop_workers(pool)
            raise
        pool.shutdown(wait=True)
        return left

    def _drain(
        self,
        pool: ProcessPoolExecutor,
        queue: list[SweepTask],
        on_start: Callable[[SweepTask], None],
        on_done: Callable[[SweepTask, TaskResult], None],
    ) -> list[SweepTask]:
        """Submit and collect until the queue is empty; returns the tasks left when a worker died."""
        in_flight: dict[Future[TaskResult], SweepTask] = {}
        while queue or in_flight:
            while queue and len(in_flight) < self.workers:
                task = queue.pop(0)
                on_start(task)
                in_flight[pool.submit(execute_task, task)] = task
            finished, _ = wait(in_flight, return_when=FIRST_COMPLETED)
            for future in finished:
                task = in_flight.pop(future)
                try:
                    result = future.result()
                except BrokenProcessPool:
                    # a worker was killed (out of memory, a signal): its runs failed, the rest go on in a new pool
                    broken = [task] + list(in_flight.values())
                    for lost in broken:
                        on_done(
                            lost,
                            TaskResult(
                                lost.run_spec.run_id,
                                "failed",
                                error="the worker process died (killed, or out of memory?); see its log",
                            ),
                        )
                    return queue
                except Exception as err:  # noqa: BLE001 - e.g. a task that cannot be pickled
                    result = TaskResult(task.run_spec.run_id, "failed", error=f"{type(err).__name__}: {err}")
                on_done(task, result)
        return []
