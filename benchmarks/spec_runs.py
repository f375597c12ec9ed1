"""Shared by the benchmarks that compare `ddbench run` specs: run each spec in a fresh process (so
its peak RSS is its own; the CPU has no allocator statistics) and read its row back from the store."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import multiprocessing
import statistics
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from ddbench.identity import resolve_spec, resolve_specs
from ddbench.memory import format_bytes
from ddbench.spec import RunEnv, RunSpec
from ddbench.store import ResultsStore, store_path


def _distil_and_evaluate(spec_dict: dict[str, Any], env_dict: dict[str, Any], threads: int | None) -> None:
    """One spec in this (fresh) process: distil, evaluate, record in the store."""
    import torch

    from ddbench.pipeline import DataCache, run_spec

    if threads:
        torch.set_num_threads(threads)
    env = RunEnv(**{**env_dict, "out": Path(env_dict["out"])})
    with ResultsStore(store_path(env.out)) as store:
        run_spec(RunSpec.from_dict(spec_dict), env, store, DataCache(env))


def run_in_fresh_processes(specs: Iterable[RunSpec], env: RunEnv, threads: int | None = None) -> None:
    """Distil and evaluate each spec (the store skips finished ones) in a process of its own."""
    env_dict = {**dataclasses.asdict(env), "out": str(env.out)}
    spawn = multiprocessing.get_context("spawn")
    for spec in {s.run_id: s for s in resolve_specs(specs, env)}.values():
        with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=spawn) as pool:
            pool.submit(_distil_and_evaluate, spec.to_dict(), env_dict, threads).result()


def result_cells(store: ResultsStore, spec: RunSpec, env: RunEnv) -> list[Any]:
    """accuracy % (mean ± std over seeds), number of seeds, s/it, peak memory of one spec (run in ``env``)."""
    spec = resolve_spec(spec, env)  # the id it was stored under
    run = store.get_run(spec.run_id) or {}
    scores = store.scores_frame()
    acc = scores[(scores.run_id == spec.run_id) & (scores.protocol == spec.protocol_key())]["accuracy"] * 100
    spi = run.get("seconds_per_iteration")
    return [
        f"{acc.mean():.1f} ± {acc.std(ddof=0):.1f}" if len(acc) else "—", len(acc),
        f"{spi:.3f}" if spi else "—", format_bytes(run.get("distill_peak_memory_bytes")),
    ]  # fmt: skip


RESULT_HEADERS = ["accuracy %", "seeds", "s/it", "peak memory"]


def draw_cells(
    make_spec: Callable[[int], RunSpec], draws: list[int], env: RunEnv, store: ResultsStore, cache: Any
) -> list[str]:
    """Runs (or reuses) one spec per draw — its seed picks the real images and the distillation's
    randomness — and returns the table cells: accuracy mean ± std over draws × evaluation seeds,
    "draws × seeds", the mean per draw, the median s/it and the largest peak memory."""
    from ddbench.pipeline import run_spec

    accs, spis, peaks = [], [], []
    for draw in draws:
        spec = resolve_spec(make_spec(draw), env)  # the id run_spec stores it under
        run_spec(spec, env, store, cache)
        run = store.get_run(spec.run_id)
        scores = store.scores_frame()
        accs.append(scores[(scores.run_id == spec.run_id) & (scores.protocol == spec.protocol_key())]["accuracy"] * 100)
        spis.append(run.get("seconds_per_iteration"))
        peaks.append(run.get("distill_peak_memory_bytes"))
    acc = pd.concat(accs)
    spi = statistics.median([v for v in spis if v]) if any(spis) else None
    return [f"{acc.mean():.1f} ± {acc.std(ddof=0):.1f}", f"{len(draws)} × {len(accs[0])}", " / ".join(f"{a.mean():.1f}" for a in accs),
            f"{spi:.3f}" if spi else "—", format_bytes(max(v for v in peaks if v)) if spi else "—"]  # fmt: skip
