"""Shared by the benchmarks that compare `ddbench run` specs: run them the way `ddbench run` does
(`ddbench.running.sweep.run_sweep` through the ``local`` executor, so `ddbench.running.executor.execute_task` claims,
logs and records each run) and read their rows back from the store.

Each spec runs in a fresh process of its own by default, so its peak RSS is its own (the CPU has no
allocator statistics, and the local executor's worker processes serve many runs); specs the store
already holds are skipped, as `ddbench run` skips them."""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import statistics
from collections.abc import Callable, Iterable
from typing import Any

import pandas as pd

from ddbench.engine.memory import format_bytes
from ddbench.engine.spec import RunEnv, RunSpec
from ddbench.results.store import ResultsStore
from ddbench.running.identity import resolve_spec, resolve_specs


def _sweep(specs: list[RunSpec], env: RunEnv, threads: int | None) -> dict[str, str]:
    """`ddbench run`'s path for ``specs`` in this process; returns the failed runs' errors."""
    from rich.console import Console

    from ddbench import registry
    from ddbench.running.sweep import run_sweep

    if threads:
        import torch

        torch.set_num_threads(threads)
    executor = registry.create("executor", "local", workers=1, threads=threads)
    return run_sweep(specs, env, executor, Console(stderr=True)).failed


def run_specs(
    specs: Iterable[RunSpec], env: RunEnv, threads: int | None = None, fresh_process: bool = True
) -> list[RunSpec]:
    """Run each spec the store lacks through the local executor, each in a spawned process of its
    own (``fresh_process``) or all in this one, with ``threads`` torch threads (default: this
    process's); returns the resolved specs (their store ids). Raises if a run failed (its error is in
    the store and its run log)."""
    import torch

    threads = threads or torch.get_num_threads()
    resolved = list({s.run_id: s for s in resolve_specs(specs, env)}.values())
    failed: dict[str, str] = {}
    if not fresh_process:
        failed = _sweep(resolved, env, threads)
    else:
        spawn = multiprocessing.get_context("spawn")
        for spec in resolved:
            with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=spawn) as pool:
                failed.update(pool.submit(_sweep, [spec], env, threads).result())
    if failed:
        raise RuntimeError(f"{len(failed)} run(s) failed: {failed}")
    return resolved


def run_in_fresh_processes(specs: Iterable[RunSpec], env: RunEnv, threads: int | None = None) -> None:
    """Distil and evaluate each spec (the store skips finished ones) in a process of its own."""
    run_specs(specs, env, threads)


def _scores(store: ResultsStore, spec: RunSpec) -> pd.Series:
    scores = store.scores_frame()
    return scores[(scores.run_id == spec.run_id) & (scores.protocol == spec.protocol_key())]["accuracy"] * 100


def result_cells(store: ResultsStore, spec: RunSpec, env: RunEnv) -> list[Any]:
    """accuracy % (mean ± std over seeds), number of seeds, s/it, peak memory of one spec (run in ``env``)."""
    spec = resolve_spec(spec, env)  # the id it was stored under
    run = store.get_run(spec.run_id) or {}
    acc = _scores(store, spec)
    spi = run.get("seconds_per_iteration")
    return [
        f"{acc.mean():.1f} ± {acc.std(ddof=0):.1f}" if len(acc) else "—", len(acc),
        f"{spi:.3f}" if spi else "—", format_bytes(run.get("distill_peak_memory_bytes")),
    ]  # fmt: skip


RESULT_HEADERS = ["accuracy %", "seeds", "s/it", "peak memory"]


def draw_cells(
    make_spec: Callable[[int], RunSpec],
    draws: list[int],
    env: RunEnv,
    store: ResultsStore,
    cache: Any = None,
    threads: int | None = None,
) -> list[str]:
    """Runs (or reuses) one spec per draw — its seed picks the real images and the distillation's
    randomness —, each in a fresh process, and returns the table cells: accuracy mean ± std over
    draws × evaluation seeds, "draws × seeds", the mean per draw, the median s/it and the largest
    peak memory. ``cache`` is unused (each run loads its data in its own process); ``threads``
    sets each process's torch threads."""
    by_draw = [resolve_spec(make_spec(draw), env) for draw in draws]
    run_specs(by_draw, env, threads)
    accs, spis, peaks = [], [], []
    for spec in by_draw:
        run = store.get_run(spec.run_id) or {}
        accs.append(_scores(store, spec))
        spis.append(run.get("seconds_per_iteration"))
        peaks.append(run.get("distill_peak_memory_bytes"))
    acc = pd.concat(accs)
    spi = statistics.median([v for v in spis if v]) if any(spis) else None
    return [f"{acc.mean():.1f} ± {acc.std(ddof=0):.1f}", f"{len(draws)} × {len(accs[0])}", " / ".join(f"{a.mean():.1f}" for a in accs),
            f"{spi:.3f}" if spi else "—", format_bytes(max(v for v in peaks if v)) if spi else "—"]  # fmt: skip
