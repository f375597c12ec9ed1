"""Sweeps: many RunSpecs through an executor, skipping what the store has, with sweep-level progress.

`plan_sweep` looks every spec up in the results store: a run whose distillation is done and whose
every evaluator × seed is scored is skipped; an interrupted one resumes from its checkpoint; a failed
one is retried. `run_sweep` hands the rest to an executor (`ddbench.running.executor`) and prints one line per
event — done / running / failed with an ETA from the cost estimate, corrected by the runs finished so
far. A run held by another sweep (its lock is taken) is waited for, then skipped if that sweep
finished it.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from rich.console import Console

from ddbench import registry
from ddbench.engine.distill import CHECKPOINT_FILE
from ddbench.engine.spec import RunEnv, RunSpec
from ddbench.errors import DDBenchError
from ddbench.interfaces import IdentityContext, Matcher, Preparation
from ddbench.results.store import ResultsStore
from ddbench.running.executor import Executor, SweepTask, TaskResult
from ddbench.running.run_state import StoreSnapshot
from ddbench.util.fileio import FileLock

# ------------------------------------------------------------------------------------ cost model
#
# One-core CPU seconds at 28 px (one thread of a quiet machine; benchmarks/README.md, "Cost
# hints"), from what each plugin declares: a matcher's seconds per iteration with raw pixels
# (`Matcher.seconds_per_iteration`, scaled by its `cost_option`), times the prior's `cost_factor`,
# plus the prior's `seconds_per_generation`; an evaluator's `seconds_per_image`; a matcher's shared
# `preparation` (MTT's expert trajectories). Other resolutions scale with the pixel count. A rough
# guide, not a measurement.

#: per iteration for a matcher that declares no cost
DEFAULT_SECONDS_PER_ITERATION = 5.0
#: an evaluator that declares no cost: seconds per training image per epoch, per test image
DEFAULT_SECONDS_PER_IMAGE = (0.005, 0.002)
#: training images per class and classes when the spec does not slice the data (Fashion-MNIST sizes)
DEFAULT_TRAIN_PER_CLASS, DEFAULT_TEST_SIZE, DEFAULT_CLASSES = 6000, 10000, 10


def _pixel_scale(spec: RunSpec) -> float:
    return ((spec.res or 28) / 28) ** 2


def _plugin_class(family: str, name: str) -> type | None:
    """The plugin's class for its cost hints; None for one that is not installed (default costs)."""
    try:
        return registry.get_plugin_class(family, name)
    except DDBenchError:
        return None


def _between(pair: tuple[float, float], ipc: int) -> float:
    """A figure given at IPC 1 and IPC 10, linear through them (never below the IPC-1 figure)."""
    ipc1, ipc10 = pair
    return max(ipc1, ipc1 + (ipc10 - ipc1) * (ipc - 1) / 9)


def estimate_distill_seconds(spec: RunSpec) -> float:
    """Rough 1-core CPU seconds of a spec's distillation (see the cost model above)."""
    matcher = _plugin_class("matcher", spec.matcher)
    if matcher is not None and not matcher.distils:
        return 0.0
    declared = getattr(matcher, "seconds_per_iteration", None) or (DEFAULT_SECONDS_PER_ITERATION,) * 2
    per_iteration = _between(declared, spec.ipc)
    option = getattr(matcher, "cost_option", None)
    options = spec.plugin_options("matcher")
    if option is not None and options.get(option[0]) is not None:
        name, default, share = option
        per_iteration *= (1 - share) + share * float(options[name]) / default
    prior = _plugin_class("prior", spec.prior)
    per_iteration *= _between(getattr(prior, "cost_factor", (1.0, 1.0)), spec.ipc)
    per_iteration += _between(getattr(prior, "seconds_per_generation", (0.0, 0.0)), spec.ipc)
    return per_iteration * spec.iterations * _pixel_scale(spec)


def estimate_eval_seconds(spec: RunSpec) -> float:
    """Rough 1-core CPU seconds of training and testing every evaluator × seed of a spec."""
    from ddbench.engine.protocols import get_protocol

    try:
        epochs = spec.eval_epochs or int(getattr(get_protocol(spec.protocol), "epochs", 1000))
    except Exception:  # noqa: BLE001 - an unknown protocol fails later, with its own message
        epochs = 1000
    images = spec.ipc * DEFAULT_CLASSES
    test = spec.test_size or DEFAULT_TEST_SIZE
    per_seed = 0.0
    for name in spec.evaluators:
        train, per_test = (
            getattr(_plugin_class("evaluator", name), "seconds_per_image", None) or DEFAULT_SECONDS_PER_IMAGE
        )
        per_seed += train * images * epochs + per_test * test
    return per_seed * len(spec.eval_seeds) * _pixel_scale(spec)


def estimate_preparation(spec: RunSpec, cache_dir: Path | None = None) -> Preparation | None:
    """The shared work a spec's matcher does before distilling (`Matcher.preparation`), its cost
    scaled to the spec's resolution and keyed by the data it is done on; None when there is none
    or ``cache_dir`` (the runs' cache) already holds it."""
    cls = _plugin_class("matcher", spec.matcher)
    if cls is None or cls.preparation is Matcher.preparation:
        return None  # building it would only say "none"
    matcher = registry.create("matcher", spec.matcher, **spec.plugin_options("matcher"))
    context = IdentityContext(dataset=spec.dataset, resolution=spec.res or 28, ipc=spec.ipc, device=torch.device("cpu"))
    train_images = (spec.train_per_class or DEFAULT_TRAIN_PER_CLASS) * DEFAULT_CLASSES
    prepared = matcher.preparation(context, train_images, cache_dir)
    if prepared is None:
        return None
    key = f"{spec.dataset}:{spec.res}:{spec.train_per_class}:{spec.matcher}:{prepared.key}"
    return Preparation(key, prepared.one_core_seconds * _pixel_scale(spec))


def preparation_seconds(specs: Sequence[RunSpec], cache_dir: Path | None = None) -> list[float]:
    """Each spec's share of the shared preparations: the first spec that needs one pays for it."""
    prepared: set[str] = set()
    shares = []
    for spec in specs:
        preparation = estimate_preparation(spec, cache_dir)
        if preparation is None or preparation.key in prepared:
            shares.append(0.0)
        else:
            prepared.add(preparation.key)
            shares.append(preparation.one_core_seconds)
    return shares


# ---------------------------------------------------------------------------------------- plan


@dataclasses.dataclass
class PlannedRun:
    spec: RunSpec
    #: "done" (skipped), "new", "resume" (has a checkpoint), "retry" (failed before), "evaluate" (distilled, scores missing)
    state: str
    estimate_seconds: float
    missing_scores: int


def plan_sweep(specs: Sequence[RunSpec], env: RunEnv, store: ResultsStore | None) -> list[PlannedRun]:
    """What a sweep would do with each spec, and its estimated 1-core cost."""
    snapshot = StoreSnapshot.read(store)
    planned = []
    for spec, preparation in zip(specs, preparation_seconds(specs, env.cache_dir), strict=True):
        stored = snapshot.state(spec)  # "already done?" (ddbench.running.run_state)
        wanted = len(spec.evaluators) * len(spec.eval_seeds)
        missing = len(stored.missing)
        run_status = stored.status
        distill = estimate_distill_seconds(spec) + preparation
        evaluate = estimate_eval_seconds(spec) * (missing / max(1, wanted))
        if env.force:
            state, cost, missing = "new", distill + estimate_eval_seconds(spec), wanted
        elif stored.complete:
            state, cost = "done", 0.0
        elif stored.distilled:
            state, cost = "evaluate", evaluate
        elif env.resume and (env.run_dir(spec) / CHECKPOINT_FILE).exists():
            state, cost = "resume", distill + evaluate  # the checkpoint's progress is not counted: an upper bound
        else:
            state, cost = ("retry" if run_status == "failed" else "new"), distill + evaluate
        planned.append(PlannedRun(spec=spec, state=state, estimate_seconds=cost, missing_scores=missing))
    return planned


#: two torch threads on a 2-vCPU machine finish one run's work this much faster than one
#: (benchmarks/iteration_cost.py --threads 1,2); two one-thread runs at once each keep their
#: one-thread speed (two copies of it at once)
TWO_THREAD_SPEEDUP = 1.8


def run_speedup(workers: int, cores: int | None = None) -> float:
    """How much faster than the one-core cost model one run goes here: a lone worker's run has the
    machine's cores; runs of several workers share them, one thread each."""
    cores = cores or os.cpu_count() or 1
    return TWO_THREAD_SPEEDUP if workers <= 1 and cores >= 2 else 1.0


def runs_at_once(workers: int, cores: int | None = None) -> int:
    """How many runs make progress at once: ``workers`` of them, but no more than the cores (more
    workers than cores share them)."""
    return max(1, min(workers, cores or os.cpu_count() or 1))


def wall_seconds(one_core_seconds: float, workers: int = 1, cores: int | None = None) -> float:
    """The cost model's one-core seconds as wall seconds on this machine with ``workers`` runs at once
    (the same conversion for the preview line, ``--dry-run`` and the sweep's ETA)."""
    return one_core_seconds / run_speedup(workers, cores) / runs_at_once(workers, cores)


def format_duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def print_plan(planned: Sequence[PlannedRun], console: Console, workers: int = 1) -> None:
    """`--dry-run`: one line per run with its state and estimated cost, and the sweep's total."""
    from rich.table import Table

    table = Table(title=f"{len(planned)} run(s)", show_lines=False)
    for column in (
        "#",
        "run id",
        "dataset",
        "prior",
        "matcher",
        "ipc",
        "iterations",
        "evaluators × seeds",
        "state",
        "est. 1-core",
    ):
        table.add_column(column)
    for i, run in enumerate(planned, 1):
        s = run.spec
        table.add_row(
            str(i), s.run_id, s.dataset, s.prior, s.matcher, str(s.ipc), str(s.iterations),
            f"{len(s.evaluators)} × {len(s.eval_seeds)}", run.state, format_duration(run.estimate_seconds),
        )  # fmt: skip
    console.print(table)
    for run in planned:
        for missing in _missing_model_files(run.spec):
            console.print(
                f"[yellow]{run.spec.label} {run.spec.run_id}: {missing} is not on this machine; "
                "a run here fails at set-up",
                highlight=False,
                soft_wrap=True,
            )
    todo = [r for r in planned if r.state != "done"]
    total = sum(r.estimate_seconds for r in todo)
    console.print(
        f"{len(todo)} to run, {len(planned) - len(todo)} already done; estimated {format_duration(total)} on one CPU core, "
        f"about {format_duration(wall_seconds(total, min(workers, len(todo) or 1)))} with {workers} worker(s) "
        "(a rough CPU guide from the plugins' declared costs; GPUs are much faster)",
        soft_wrap=True,
    )


def _missing_model_files(spec: RunSpec) -> list[str]:
    """The model-file options of a resolved spec whose path was not found when it was planned
    (`ddbench.running.identity` keys them ``missing:PATH``), as ``prior model_dir=PATH``."""
    found = []
    for family in ("prior", "matcher"):
        record = (spec.identity or {}).get(family) or {}
        for option, key in (record.get("key") or {}).items():
            if isinstance(key, str) and key.startswith("missing:"):
                found.append(f"{family} {record.get('name')} {option}={key.removeprefix('missing:')}")
    return found


# ----------------------------------------------------------------------------------- progress


class SweepProgress:
    """Counts done / running / failed and prints one line per event, with an ETA."""

    def __init__(self, planned: Sequence[PlannedRun], workers: int, console: Console) -> None:
        self.console = console
        self.workers = max(1, workers)
        self.estimates = {p.spec.run_id: p.estimate_seconds for p in planned}
        self.total = len(planned)
        self.done = 0
        self.failed: dict[str, str] = {}
        self.running: dict[str, float] = {}
        self._ended: set[str] = set()
        self._actual = 0.0
        self._estimated_done = 0.0

    def _eta(self) -> float:
        remaining = sum(self.estimates[r] for r in self.estimates if r not in self.running and r not in self._ended)
        remaining += sum(max(0.0, self.estimates[r] - (time.monotonic() - t)) for r, t in self.running.items())
        # correct the model by what the finished runs took (wall time against 1-core estimate)
        if self._estimated_done > 0 and self._actual > 0:
            return remaining * (self._actual / self._estimated_done) / runs_at_once(self.workers)
        return wall_seconds(remaining, self.workers)

    def line(self) -> str:
        return (
            f"sweep: {self.done}/{self.total} done · {len(self.running)} running · {len(self.failed)} failed"
            f" · ETA {format_duration(self._eta())}"
        )

    def start(self, task: SweepTask) -> None:
        spec = task.run_spec
        self.running[spec.run_id] = time.monotonic()
        self.console.print(f"[dim]▶ {spec.label} {spec.run_id}  log: {task.log_path}", soft_wrap=True)
        self.console.print(self.line(), soft_wrap=True)

    def finish(self, task: SweepTask, result: TaskResult) -> None:
        run_id = result.run_id
        self.running.pop(run_id, None)
        if result.state == "busy":
            self.console.print(
                f"[yellow]… {task.run_spec.label} {run_id} is {result.error}; waiting for it", soft_wrap=True
            )
            return
        self._ended.add(run_id)
        if result.state == "done":
            self.done += 1
            self._actual += result.seconds
            self._estimated_done += self.estimates.get(run_id, 0.0)
            self.console.print(
                f"[green]✓[/] {task.run_spec.label} {run_id} ({format_duration(result.seconds)})", soft_wrap=True
            )
        else:
            self.failed[run_id] = result.error or "unknown error"
            self.console.print(
                f"[red]✗[/] {task.run_spec.label} {run_id}: {result.error}  (log: {task.log_path})", soft_wrap=True
            )
        self.console.print(self.line(), soft_wrap=True)

    def skip(self, run_id: str) -> None:
        """A run found done (by another sweep) while waiting for it."""
        self._ended.add(run_id)
        self.done += 1


# --------------------------------------------------------------------------------------- sweep


def _held_elsewhere(task: SweepTask) -> bool:
    """Whether another process holds ``task``'s run lock (probed here, released at once)."""
    lock = FileLock(task.lock_path)
    if not lock.acquire():
        return True
    lock.release()
    return False


def _wait_for_a_release(tasks: Sequence[SweepTask], poll_seconds: float, sleep: Callable[[float], None]) -> None:
    """Sleep until at least one of ``tasks``' runs is no longer held by another process. The locks
    are probed in this process, so that no worker is started only to find a run still busy."""
    sleep(poll_seconds)
    while all(_held_elsewhere(t) for t in tasks):
        sleep(poll_seconds)


@dataclasses.dataclass
class SweepSummary:
    planned: list[PlannedRun]
    done: list[str]
    failed: dict[str, str]
    skipped: list[str]


def run_sweep(
    specs: Sequence[RunSpec],
    env: RunEnv,
    executor: Executor,
    console: Console,
    workers: int = 1,
    busy_poll_seconds: float = 5.0,
    sleep: Callable[[float], None] = time.sleep,
) -> SweepSummary:
    """Run every spec the store lacks through ``executor``; failed runs are reported, never raised."""
    from ddbench.results.store import store_path
    from ddbench.running.identity import resolve_specs

    specs = resolve_specs(specs, env)  # a no-op for specs `ddbench run` resolved
    env.out.mkdir(parents=True, exist_ok=True)
    with ResultsStore(store_path(env.out)) as store:
        planned = plan_sweep(specs, env, store)
    skipped = [p.spec.run_id for p in planned if p.state == "done"]
    todo = [p for p in planned if p.state != "done"]
    console.print(
        f"{len(planned)} run(s) → {env.out}: {len(skipped)} already in the store, {len(todo)} to run "
        f"({', '.join(f'{n} {s}' for s, n in _count_states(todo).items()) or 'nothing'}) on {executor.describe()}",
        soft_wrap=True,
    )
    progress = SweepProgress(todo, workers, console)
    done: list[str] = []
    pending = [SweepTask(spec=p.spec.to_dict(), env=env, index=i) for i, p in enumerate(todo)]
    while pending:
        busy: list[SweepTask] = []

        def on_done(task: SweepTask, result: TaskResult) -> None:
            progress.finish(task, result)
            if result.state == "busy":
                busy.append(task)  # noqa: B023 - on_done is used only in this pass of the loop
            elif result.state == "done":
                done.append(result.run_id)

        executor.run(pending, progress.start, on_done)
        if not busy:
            break
        # another sweep holds these runs: wait, then skip what it finished and retry the rest
        _wait_for_a_release(busy, busy_poll_seconds, sleep)
        with ResultsStore(store_path(env.out)) as store:
            replanned = plan_sweep([t.run_spec for t in busy], dataclasses.replace(env, force=False), store)
        pending = []
        for task, plan in zip(busy, replanned):
            if plan.state == "done":
                progress.skip(plan.spec.run_id)
                skipped.append(plan.spec.run_id)
                console.print(
                    f"[dim]{plan.spec.label} {plan.spec.run_id} was finished by another sweep", soft_wrap=True
                )
            else:
                pending.append(task)
    console.print(progress.line(), soft_wrap=True)
    return SweepSummary(planned=planned, done=done, failed=dict(progress.failed), skipped=skipped)


def _count_states(planned: Sequence[PlannedRun]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for p in planned:
        counts[p.state] = counts.get(p.state, 0) + 1
    return counts


__all__ = [
    "PlannedRun", "SweepSummary", "SweepProgress", "plan_sweep", "print_plan", "run_sweep",
    "estimate_distill_seconds", "estimate_eval_seconds", "estimate_preparation", "format_duration",
    "preparation_seconds",
]  # fmt: skip
