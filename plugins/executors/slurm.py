"""``slurm``: one SLURM job array per sweep through submitit; every job writes to the shared store.

``cluster="local"`` runs the same job machinery (pickled tasks, job folders, separate processes)
on this machine, which is how the tests exercise it; ``cluster="debug"`` runs jobs in this process.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ddbench.errors import InvalidOptionError
from ddbench.running.executor import Executor, SweepTask, TaskResult, execute_task

CLUSTERS = ("slurm", "local", "debug")


def run_in_job(task: SweepTask) -> TaskResult:
    """A job's entry point: use the CPUs SLURM gave the job, then run the task."""
    cpus = os.environ.get("SLURM_CPUS_PER_TASK")
    if cpus and cpus.isdigit():
        import torch

        torch.set_num_threads(int(cpus))
    return execute_task(task)


def _minutes(value: int | str) -> int:
    """``90``, ``"90"``, ``"1:30:00"`` or ``"2-00:00:00"`` → minutes."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    text = str(value)
    match = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text)
    if not match:
        raise InvalidOptionError(f"Expected slurm time as minutes or [D-]HH:MM[:SS] but got {value!r}")
    days, first, second, third = match.groups()
    if second is None:  # plain minutes
        minutes = int(first)
    else:
        minutes = int(first) * 60 + int(second) + (1 if third and int(third) else 0)
    return minutes + int(days or 0) * 24 * 60


class SlurmExecutor(Executor):
    """Submits a sweep as a SLURM job array (needs ``pip install ddbench[slurm]``).

    Options (``--exec-opt KEY=VALUE``):
        partition, account, qos, constraint: passed to sbatch.
        gpus_per_node, cpus_per_task, mem_gb: resources of each job.
        time: wall-time limit per job, minutes or [D-]HH:MM[:SS].
        workers: at most this many jobs of the array at once (``--workers``).
        setup: shell lines run before each job (e.g. ``["module load cuda"]``).
        folder: where submitit keeps job scripts and logs; default ``<out>/slurm``.
        cluster: ``slurm``, or ``local`` / ``debug`` to run the same machinery without SLURM.
        poll_seconds: how often job states are polled.
    """

    name = "slurm"
    description = "SLURM job arrays through submitit; jobs write to the shared results store."

    def __init__(
        self,
        partition: str | None = None,
        gpus_per_node: int | None = None,
        cpus_per_task: int | None = None,
        mem_gb: float | None = None,
        time: int | str | None = None,
        workers: int | None = None,
        account: str | None = None,
        qos: str | None = None,
        constraint: str | None = None,
        setup: list[str] | None = None,
        folder: str | None = None,
        cluster: str = "slurm",
        poll_seconds: float = 10.0,
    ) -> None:
        if cluster not in CLUSTERS:
            raise InvalidOptionError(f"Expected slurm cluster to be one of {list(CLUSTERS)} but got {cluster!r}")
        for key, value in (("gpus_per_node", gpus_per_node), ("cpus_per_task", cpus_per_task), ("workers", workers)):
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < (0 if key == "gpus_per_node" else 1)
            ):
                raise InvalidOptionError(
                    f"Expected slurm {key} as a whole number ≥ {0 if key == 'gpus_per_node' else 1} but got {value!r}"
                )
        if setup is not None and (not isinstance(setup, list) or not all(isinstance(s, str) for s in setup)):
            raise InvalidOptionError(f"Expected slurm setup as a list of shell lines (JSON) but got {setup!r}")
        self.cluster = cluster
        self.folder = folder
        self.poll_seconds = float(poll_seconds)
        self.workers = workers
        params: dict[str, Any] = {"name": "ddbench"}
        if time is not None:
            params["timeout_min"] = _minutes(time)
        for key, value in (("gpus_per_node", gpus_per_node), ("cpus_per_task", cpus_per_task), ("mem_gb", mem_gb)):
            if value is not None:
                params[key] = value
        for key, value in (
            ("partition", partition),
            ("account", account),
            ("qos", qos),
            ("constraint", constraint),
            ("setup", setup),
        ):
            if value is not None:
                params[f"slurm_{key}"] = value
        if workers is not None:
            params["slurm_array_parallelism"] = workers
        self.params = params

    def describe(self) -> str:
        shown = ", ".join(f"{k}={v}" for k, v in self.params.items() if k != "name")
        return f"slurm ({self.cluster}{', ' + shown if shown else ''})"

    def _submitit(self, folder: Path) -> Any:
        try:
            import submitit
        except ImportError:
            raise InvalidOptionError(
                "--executor slurm needs submitit: pip install 'ddbench[slurm]' (or pip install submitit)"
            ) from None
        executor = submitit.AutoExecutor(folder=str(folder), cluster=self.cluster)
        params = dict(self.params)
        if self.cluster != "slurm":
            # the local and debug executors know the generic resources only; the SLURM ones do not apply
            params = {k: v for k, v in params.items() if not k.startswith("slurm_") and k != "gpus_per_node"}
        executor.update_parameters(**params)
        return executor

    def run(
        self,
        tasks: Sequence[SweepTask],
        on_start: Callable[[SweepTask], None],
        on_done: Callable[[SweepTask, TaskResult], None],
    ) -> None:
        if not tasks:
            return
        folder = Path(self.folder) if self.folder else tasks[0].env.out / "slurm" / "%j"
        jobs = self._submitit(folder).map_array(run_in_job, list(tasks))
        started: set[int] = set()
        pending = dict(enumerate(jobs))
        while pending:
            for index, job in list(pending.items()):
                task = tasks[index]
                if index not in started and (
                    job.done() or job.state in ("RUNNING", "COMPLETING", "COMPLETED", "FINISHED", "DONE")
                ):
                    started.add(index)
                    on_start(task)
                if job.done():
                    del pending[index]
                    try:
                        result = job.result()
                    except Exception as err:  # noqa: BLE001 - the job died (time limit, node failure, OOM kill)
                        message = str(err).strip().splitlines()
                        result = TaskResult(
                            task.run_spec.run_id,
                            "failed",
                            error=f"job {job.job_id} failed: {message[-1] if message else type(err).__name__}",
                        )
                    on_done(task, result)
            if pending:
                time.sleep(self.poll_seconds)
