"""Sweeps: many RunSpecs through an executor, skipping what the store has, with sweep-level progress.

`plan_sweep` looks every spec up in the results store: a run whose distillation is done and whose
every evaluator × seed is scored is skipped; an interrupted one resumes from its checkpoint; a failed
one is retried. `run_sweep` hands the rest to an executor (`ddbench.executor`) and prints one line per
event — done / running / failed with an ETA from the cost estimate, corrected by the runs finished so
far. A run held by another sweep (its lock is taken) is waited for, then skipped if that sweep
finished it.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Callable, Sequence

from rich.console import Console

from ddbench.distill import CHECKPOINT_FILE
from ddbench.executor import Executor, SweepTask, TaskResult
from ddbench.spec import RunEnv, RunSpec
from ddbench.store import ResultsStore

# ------------------------------------------------------------------------------------ cost model

#: Distillation seconds per iteration on ONE CPU core at 28 px (Fashion-MNIST), with each
#: matcher's default options, at IPC 1 and IPC 10 (other IPCs: linear through these two points).
#: Measured on the 2-core AMD EPYC development machine (torch 2.14.1, DM without torch.compile), one
#: thread per run: pixel + DM 5.8 / 6.8 s (1.84 / 2.45 s with batch_real 64 in the fmnist-cpu sweep,
#: two workers side by side), pixel + DC at IPC 1 19.5 s (eager; the compiled real side that DC
#: uses from batch_real 64 is ~20 % faster on two threads, not re-measured on one); MTT with
#: syn_steps 10 in that sweep 1.61 s (IPC 1) and 21.2 s (IPC 10: ten differentiable steps over
#: all 100 images), so 6.7 / 88 s at the default 50 steps; GLaD + DM 1.71 / 2.92 s at batch_real 64. DC at IPC 10 in that sweep, with
#: batch_real 32: pixel 326 / 289 s, GLaD 311 / 312 s (suite versions 2 / 3), LD3M 543 s; the entries
#: are those ÷ 0.3 (the batch_real factor below), which overstates the default batch_real 256, since
#: the 450 inner training steps of an IPC-10 iteration do not grow with it. LD3M's tiny LDM dominates
#: its iterations, so its rows are its own fmnist-cpu figures ÷ the option factor too: MTT 8.8 /
#: 40.4 s, DC at IPC 1 3.9 s. DM rows: the bf16 real side (2026-11-30) made pixel + DM 0.69 / 0.93
#: s/it on two threads, ×1.6 for one core; GLaD keeps its old ratio to pixel; LD3M + DM at IPC 10
#: takes 3.8× pixel + DM since the engine generates a set that fits one chunk in one pass
#: (benchmarks/profile_ld3m.py; 7.5× before); at IPC 1 2× is assumed, not measured. Other resolutions scale with the
#: pixel count. A rough guide.
SECONDS_PER_ITERATION: dict[tuple[str, str], tuple[float, float]] = {
    ("pixel", "dm"): (1.1, 1.5),
    ("pixel", "dc"): (19.5, 1085.0),
    ("pixel", "mtt"): (6.7, 88.0),
    ("glad", "dm"): (1.2, 1.7),
    ("glad", "dc"): (20.5, 1040.0),
    ("glad", "mtt"): (6.6, 90.0),
    ("ld3m", "dm"): (2.2, 5.7),
    ("ld3m", "dc"): (13.0, 1810.0),
    ("ld3m", "mtt"): (37.0, 168.0),
}
#: the option a matcher's cost grows with, its default, and the share of the cost that grows with it
#: (DM: 1.95 s at batch_real 64 vs 5.8 s at 256 → 0.88)
COST_OPTIONS: dict[str, tuple[str, float, float]] = {
    "dm": ("batch_real", 256, 0.88),
    "dc": ("batch_real", 256, 0.8),
    "mtt": ("syn_steps", 50, 0.95),
}
#: unknown (prior, matcher) pairs: this many seconds per iteration
DEFAULT_SECONDS_PER_ITERATION = 5.0
#: evaluation on 1 core at 28 px: seconds per training image per epoch (with DSA) and per test image
#: (ConvNet-3 measured: 0.0075 s per image-epoch at IPC 1, 46 s for the 10 000 test images)
EVAL_SECONDS_PER_IMAGE_EPOCH: dict[str, float] = {"convnet": 0.008, "alexnet": 0.008, "vgg11": 0.025, "resnet18": 0.04, "vit": 0.025}
EVAL_SECONDS_PER_TEST_IMAGE: dict[str, float] = {"convnet": 0.0046, "alexnet": 0.0046, "vgg11": 0.015, "resnet18": 0.025, "vit": 0.015}
#: MTT expert training: seconds per real training image per epoch (ConvNet-3, batch 256, DSA, 1 core, 28 px)
EXPERT_SECONDS_PER_IMAGE_EPOCH = 0.012
#: training images per class and classes when the spec does not slice the data (Fashion-MNIST sizes)
DEFAULT_TRAIN_PER_CLASS, DEFAULT_TEST_SIZE, DEFAULT_CLASSES = 6000, 10000, 10


def _pixel_scale(spec: RunSpec) -> float:
    return ((spec.res or 28) / 28) ** 2


def estimate_distill_seconds(spec: RunSpec) -> float:
    """Rough 1-core CPU seconds of a spec's distillation (see SECONDS_PER_ITERATION)."""
    if spec.matcher == "real":
        return 0.0
    ipc1, ipc10 = SECONDS_PER_ITERATION.get((spec.prior, spec.matcher), (DEFAULT_SECONDS_PER_ITERATION,) * 2)
    per_iteration = max(ipc1, ipc1 + (ipc10 - ipc1) * (spec.ipc - 1) / 9)
    option = COST_OPTIONS.get(spec.matcher)
    if option is not None and option[0] in spec.matcher_options:
        name, default, share = option
        per_iteration *= (1 - share) + share * float(spec.matcher_options[name]) / default
    return per_iteration * spec.iterations * _pixel_scale(spec)


def estimate_eval_seconds(spec: RunSpec) -> float:
    """Rough 1-core CPU seconds of training and testing every evaluator × seed of a spec."""
    from ddbench.protocols import get_protocol

    try:
        epochs = spec.eval_epochs or int(getattr(get_protocol(spec.protocol), "epochs", 1000))
    except Exception:  # noqa: BLE001 - an unknown protocol fails later, with its own message
        epochs = 1000
    images = spec.ipc * DEFAULT_CLASSES
    test = spec.test_size or DEFAULT_TEST_SIZE
    per_seed = sum(
        EVAL_SECONDS_PER_IMAGE_EPOCH.get(e, 0.005) * images * epochs + EVAL_SECONDS_PER_TEST_IMAGE.get(e, 0.002) * test
        for e in spec.evaluators
    )
    return per_seed * len(spec.eval_seeds) * _pixel_scale(spec)


def estimate_expert_seconds(spec: RunSpec) -> float:
    """Rough 1-core CPU seconds of building an MTT spec's expert trajectories (0 unless build_experts)."""
    if spec.matcher != "mtt" or not spec.matcher_options.get("build_experts"):
        return 0.0
    from ddbench_plugins.matchers.mtt import default_hyperparameters

    defaults = default_hyperparameters(spec.res or 28, spec.ipc)
    opts = spec.matcher_options
    epochs = opts.get("expert_train_epochs") or (
        (opts.get("max_start_epoch") or defaults["max_start_epoch"]) + (opts.get("expert_epochs") or defaults["expert_epochs"])
    )
    images = (spec.train_per_class or DEFAULT_TRAIN_PER_CLASS) * DEFAULT_CLASSES
    return opts.get("num_experts", 10) * epochs * images * EXPERT_SECONDS_PER_IMAGE_EPOCH * _pixel_scale(spec)


def _expert_key(spec: RunSpec) -> tuple[Any, ...]:
    opts = spec.matcher_options
    return (spec.dataset, spec.res, spec.train_per_class, opts.get("net", "convnet"), opts.get("num_experts"), opts.get("expert_train_epochs"))


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
    runs = store.runs_frame() if store is not None else None
    status = dict(zip(runs["run_id"], runs["status"])) if runs is not None and not runs.empty else {}
    scored: set[tuple[str, str, int, str]] = set()
    if store is not None:
        scores = store.scores_frame()
        scored = set(zip(scores["run_id"], scores["evaluator"], scores["seed"].astype(int), scores["protocol"])) if not scores.empty else set()
    experts_seen: set[tuple[Any, ...]] = set()
    planned = []
    for spec in specs:
        wanted = [(spec.run_id, e, s, spec.protocol_key()) for e in spec.evaluators for s in spec.eval_seeds]
        missing = sum(key not in scored for key in wanted)
        run_status = status.get(spec.run_id)
        distill = estimate_distill_seconds(spec)
        if spec.matcher == "mtt" and _expert_key(spec) not in experts_seen:
            experts_seen.add(_expert_key(spec))
            distill += estimate_expert_seconds(spec)
        evaluate = estimate_eval_seconds(spec) * (missing / max(1, len(wanted)))
        if env.force:
            state, cost, missing = "new", distill + estimate_eval_seconds(spec), len(wanted)
        elif run_status == "done" and missing == 0:
            state, cost = "done", 0.0
        elif run_status == "done":
            state, cost = "evaluate", evaluate
        elif env.resume and (env.run_dir(spec) / CHECKPOINT_FILE).exists():
            state, cost = "resume", distill + evaluate  # the checkpoint's progress is not counted: an upper bound
        else:
            state, cost = ("retry" if run_status == "failed" else "new"), distill + evaluate
        planned.append(PlannedRun(spec=spec, state=state, estimate_seconds=cost, missing_scores=missing))
    return planned


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
    for column in ("#", "run id", "dataset", "prior", "matcher", "ipc", "iterations", "evaluators × seeds", "state", "est. 1-core"):
        table.add_column(column)
    for i, run in enumerate(planned, 1):
        s = run.spec
        table.add_row(
            str(i), s.run_id, s.dataset, s.prior, s.matcher, str(s.ipc), str(s.iterations),
            f"{len(s.evaluators)} × {len(s.eval_seeds)}", run.state, format_duration(run.estimate_seconds),
        )  # fmt: skip
    console.print(table)
    todo = [r for r in planned if r.state != "done"]
    total = sum(r.estimate_seconds for r in todo)
    console.print(
        f"{len(todo)} to run, {len(planned) - len(todo)} already done; estimated {format_duration(total)} on one CPU core, "
        f"about {format_duration(total / max(1, workers))} with {workers} worker(s) "
        "(a rough CPU guide from ddbench.sweep.SECONDS_PER_ITERATION; GPUs are much faster)",
        soft_wrap=True,
    )


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
        ratio = self._actual / self._estimated_done if self._estimated_done > 0 and self._actual > 0 else 1.0
        return remaining * ratio / self.workers

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
            self.console.print(f"[yellow]… {task.run_spec.label} {run_id} is {result.error}; waiting for it", soft_wrap=True)
            return
        self._ended.add(run_id)
        if result.state == "done":
            self.done += 1
            self._actual += result.seconds
            self._estimated_done += self.estimates.get(run_id, 0.0)
            self.console.print(f"[green]✓[/] {task.run_spec.label} {run_id} ({format_duration(result.seconds)})", soft_wrap=True)
        else:
            self.failed[run_id] = result.error or "unknown error"
            self.console.print(f"[red]✗[/] {task.run_spec.label} {run_id}: {result.error}  (log: {task.log_path})", soft_wrap=True)
        self.console.print(self.line(), soft_wrap=True)

    def skip(self, run_id: str) -> None:
        """A run found done (by another sweep) while waiting for it."""
        self._ended.add(run_id)
        self.done += 1


# --------------------------------------------------------------------------------------- sweep


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
    from ddbench.identity import resolve_specs
    from ddbench.store import store_path

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
                busy.append(task)
            elif result.state == "done":
                done.append(result.run_id)

        executor.run(pending, progress.start, on_done)
        if not busy:
            break
        # another sweep holds these runs: wait, then skip what it finished and retry the rest
        sleep(busy_poll_seconds)
        with ResultsStore(store_path(env.out)) as store:
            replanned = plan_sweep([t.run_spec for t in busy], dataclasses.replace(env, force=False), store)
        pending = []
        for task, plan in zip(busy, replanned):
            if plan.state == "done":
                progress.skip(plan.spec.run_id)
                skipped.append(plan.spec.run_id)
                console.print(f"[dim]{plan.spec.label} {plan.spec.run_id} was finished by another sweep", soft_wrap=True)
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
    "estimate_distill_seconds", "estimate_eval_seconds", "estimate_expert_seconds", "format_duration",
]  # fmt: skip
