"""What a suite's runs cost, as recorded in the store, next to the `--dry-run` estimate.

Per finished run: distillation s/it and minutes, evaluation (training + test) minutes, and the
1-core estimate of `ddbench.running.sweep`; then the totals over the suite's runs. `--all` also lists the
store's other finished runs (earlier suite versions, ad hoc runs), marked as outside the suite.

    python benchmarks/suite_cost.py --suite fmnist-cpu --out ddbench-out/fmnist-cpu
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd
from record import emit, table

from ddbench.engine.spec import RunEnv, RunSpec
from ddbench.results.store import ResultsStore
from ddbench.running.identity import resolve_specs
from ddbench.running.suites import load_suite
from ddbench.running.sweep import format_duration, plan_sweep


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", required=True)
    parser.add_argument("--out", type=Path, required=True, help="the sweep's output directory (its results.sqlite)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--all", action="store_true", help="also list finished runs that are not in the suite")
    parser.add_argument("--data-root", default=None, help="the sweep's --data-root (part of its run ids)")
    args = parser.parse_args()

    env = RunEnv(out=args.out, data_root=args.data_root)
    specs = resolve_specs(load_suite(args.suite).specs(validate=False), env)  # the ids the sweep stored
    estimates = {p.spec.run_id: p.estimate_seconds for p in plan_sweep(specs, env, None)}
    with ResultsStore(args.out / "results.sqlite") as store:
        runs = store.runs_frame()
        scores = store.scores_frame()
    runs = runs[runs.status == "done"]
    eval_seconds = scores.groupby("run_id")[["train_seconds", "eval_seconds"]].sum().sum(axis=1)
    rows, measured, estimated = [], 0.0, 0.0
    for run in runs.itertuples():
        in_suite = run.run_id in estimates
        if not (in_suite or args.all):
            continue
        spec = RunSpec.from_dict(json.loads(run.spec_json))
        distill = run.distill_seconds or 0.0
        evaluation = float(eval_seconds.get(run.run_id, 0.0))
        if in_suite:
            measured += distill + evaluation
            estimated += estimates[run.run_id]
        rows.append([
            run.run_id[:8], spec.prior, spec.matcher, spec.ipc, spec.iterations,
            f"{run.seconds_per_iteration:.1f}" if pd.notna(run.seconds_per_iteration) else "—",
            f"{distill / 60:.1f}", f"{evaluation / 60:.1f}",
            format_duration(estimates[run.run_id]) if in_suite else "not in suite",
        ])  # fmt: skip
    headers = ["run", "prior", "matcher", "ipc", "iterations", "s/it", "distill min", "eval min", "estimate"]
    done = sum(run_id in estimates for run_id in runs.run_id)
    note = (f"{done}/{len(estimates)} suite runs finished: {format_duration(measured)} recorded (the runs' own "
            f"wall time, each with its worker's threads; about {format_duration(measured / args.workers)} on "
            f"{args.workers} workers); 1-core estimate for the same runs {format_duration(estimated)}")  # fmt: skip
    emit(
        f"suite_cost-{Path(args.suite).stem}",
        [table(headers, rows, note=note)],
        measured_s=measured,
        estimated_s=estimated,
    )


if __name__ == "__main__":
    main()
