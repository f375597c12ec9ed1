"""The line `ddbench run` prints before it starts: what will run, how long it should take here, and
the command for a shorter budget — so a newcomer who typed three options knows what they started."""

from __future__ import annotations

import dataclasses
import os
import shlex
from collections.abc import Sequence
from pathlib import Path

from ddbench.engine.spec import BUDGETS, RunSpec
from ddbench.running.grid import budget_options
from ddbench.running.sweep import (
    PlannedRun,
    estimate_distill_seconds,
    estimate_eval_seconds,
    format_duration,
    preparation_seconds,
    wall_seconds,
)

#: the next shorter budget preset to suggest
SHORTER_BUDGET = {None: "demo", "paper": "demo", "demo": "smoke"}


def one_core_seconds(spec: RunSpec) -> float:
    """One run's cost-model estimate, in seconds of one core."""
    return estimate_distill_seconds(spec) + estimate_eval_seconds(spec)


def spec_seconds(spec: RunSpec) -> float:
    """One run's estimated wall seconds on this machine, alone (`wall_seconds`)."""
    return wall_seconds(one_core_seconds(spec))


def with_budget(spec: RunSpec, budget: str, current: str | None = None) -> RunSpec:
    """``spec`` as the budget preset would have made it: the preset's values replace the spec's, and
    its plugin options (`Plugin.budget_options`) those the ``current`` preset gave; another run, so
    not yet resolved (its identity is left out)."""
    options = {}
    for family, name, typed in (
        ("prior", spec.prior, spec.prior_options),
        ("matcher", spec.matcher, spec.matcher_options),
    ):
        given = budget_options(family, name, current)
        own = {k: v for k, v in typed.items() if k not in given or given[k] != v}
        options[f"{family}_options"] = {**budget_options(family, name, budget), **own}
    return dataclasses.replace(spec, **BUDGETS[budget], **options, identity=None)


def _distils(matcher: str) -> bool:
    """Whether the matcher runs iterations (`Matcher.distils`; an unknown one is assumed to)."""
    from ddbench import registry
    from ddbench.errors import DDBenchError

    try:
        return bool(registry.get_plugin_class("matcher", matcher).distils)
    except DDBenchError:
        return True


def describe(spec: RunSpec, prior_label: str) -> str:
    """What one spec runs, in a few words."""
    evaluators = ",".join(spec.evaluators)
    epochs = f", {spec.eval_epochs} epochs" if spec.eval_epochs else ""
    distil = (
        f"{spec.iterations} iterations" if _distils(spec.matcher) else "no distillation (the prior's initial images)"
    )
    return (
        f"{spec.dataset} · {prior_label} + {spec.matcher} · IPC {spec.ipc} · {distil} · "
        f"{evaluators} × {len(spec.eval_seeds)} seeds ({spec.protocol} protocol{epochs})"
    )


def shorter_command(argv: Sequence[str], budget: str) -> str:
    """The user's command with ``--budget`` replaced by (or extended with) ``budget``."""
    args = list(argv)
    for i, arg in enumerate(args):
        if arg == "--budget" and i + 1 < len(args):
            args[i + 1] = budget
            break
        if arg.startswith("--budget="):
            args[i] = f"--budget={budget}"
            break
    else:
        args += ["--budget", budget]
    return shlex.join(["ddbench", *args])


def preview_lines(
    planned: Sequence[PlannedRun],
    labels: Sequence[str],
    argv: Sequence[str],
    budget: str | None,
    workers: int = 1,
    cache_dir: Path | None = None,
) -> list[str]:
    """One line per run (at most 3 listed), then the estimate of what is left and a shorter command.

    ``planned`` is `plan_sweep`'s view of the runs (what the store already has costs nothing);
    ``labels`` are their prior labels (e.g. ``ld3m[generator=trained]``); ``budget`` is the preset
    the user gave (None: the protocol's own figures); ``workers`` runs go at once; ``cache_dir`` is
    the runs' cache, where shared preparations (MTT's experts) already done cost nothing."""
    specs = [p.spec for p in planned]
    todo = [(p, label) for p, label in zip(planned, labels) if p.state != "done"]
    done = len(planned) - len(todo)
    workers = max(1, min(workers, len(todo) or 1))
    total = wall_seconds(sum(p.estimate_seconds for p, _ in todo), workers)
    at_once = f", {workers} workers" if workers > 1 else ""
    if not todo:
        estimate = "already in the store: nothing to run"
    else:
        rest = " for the rest" if done else ""
        estimate = f"estimated {format_duration(total)}{rest} on this machine ({os.cpu_count()} cores{at_once})"
        shorter = SHORTER_BUDGET.get(budget)
        if shorter is not None:
            # runs of another budget are other runs: none of them is in the store yet
            short_specs = [with_budget(s, shorter, budget) for s in specs]
            short_seconds = sum(map(one_core_seconds, short_specs)) + sum(preparation_seconds(short_specs, cache_dir))
            short_total = wall_seconds(short_seconds, workers)
            if short_total < total:
                estimate += f"; shorter: {shorter_command(argv, shorter)} (≈ {format_duration(short_total)})"
    if len(planned) == 1:
        what = describe(specs[0], labels[0])
        return [f"will run {what}; {estimate}" if todo else f"nothing to run: {what} is already in the store"]
    lines = [f"will run {describe(p.spec, label)}" for p, label in todo[:3]]
    if len(todo) > 3:
        lines.append(f"… and {len(todo) - 3} more run(s) (`--dry-run` lists them)")
    in_store = f" ({done} already in the store)" if done and todo else ""
    return lines + [f"{len(specs)} runs{in_store}, {estimate}"]


__all__ = ["preview_lines", "spec_seconds", "shorter_command"]
