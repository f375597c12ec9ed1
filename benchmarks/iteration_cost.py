"""Seconds per distillation iteration of each prior under each matcher, side by side on this machine,
and what a prior adds to an iteration over raw pixels: the figures behind the plugins' cost hints
(`Matcher.seconds_per_iteration`, `Prior.cost_factor`, `Prior.seconds_per_generation`) that
`ddbench run` uses for its time estimate.

Each setting distils its default spec (Fashion-MNIST, the plugins' default options) for
``--iterations`` iterations through `Distiller`, with no evaluation; settings run interleaved
(``--rounds`` times in turn) so that a noisy machine affects them alike; the figure is the median
over rounds of each round's median s/it after the first (warm-up) iteration.

    python benchmarks/iteration_cost.py --priors pixel,ld3m --matchers dm --ipcs 1,10 --iterations 6
"""

from __future__ import annotations

import argparse
import statistics
import tempfile

import torch
from record import emit, table

from ddbench.engine.distill import Distiller
from ddbench.engine.metrics import read_metrics
from ddbench.engine.spec import RunEnv, RunSpec
from ddbench.running.identity import resolve_specs
from ddbench.running.pipeline import DataCache


def seconds_per_iteration(spec: RunSpec, data_cache: DataCache) -> float:
    """Median seconds of the iterations after the first, of one fresh distillation of ``spec`` (the
    per-iteration times the engine writes to ``metrics.jsonl``)."""
    with tempfile.TemporaryDirectory() as scratch:
        distiller = Distiller(spec, data_cache.get(spec), run_dir=scratch, device="cpu", progress=False)
        distiller.run(resume=False)
        times = [float(row["seconds"]) for row in read_metrics(scratch) if row.get("iteration", 0) > 0]
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--priors", default="pixel,ld3m")
    parser.add_argument("--matchers", default="dm")
    parser.add_argument("--ipcs", default="1,10")
    parser.add_argument("--iterations", type=int, default=6, help="per round; the first is a warm-up")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    env = RunEnv()
    specs = [
        RunSpec(prior=prior, matcher=matcher, ipc=int(ipc), iterations=args.iterations)
        for matcher in args.matchers.split(",")
        for ipc in args.ipcs.split(",")
        for prior in args.priors.split(",")
    ]
    specs = resolve_specs(specs, env)
    data_cache = DataCache(env)
    rounds: dict[str, list[float]] = {spec.run_id: [] for spec in specs}
    for _ in range(args.rounds):
        for spec in specs:
            rounds[spec.run_id].append(seconds_per_iteration(spec, data_cache))
    median = {spec.run_id: statistics.median(rounds[spec.run_id]) for spec in specs}
    rows = []
    for spec in specs:
        pixel = next(
            (median[s.run_id] for s in specs if (s.prior, s.matcher, s.ipc) == ("pixel", spec.matcher, spec.ipc)),
            None,
        )
        rows.append([
            spec.prior, spec.matcher, str(spec.ipc), f"{median[spec.run_id]:.2f}",
            "—" if pixel is None else f"{median[spec.run_id] / pixel:.2f}",
            "—" if pixel is None else f"{median[spec.run_id] - pixel:.2f}",
        ])  # fmt: skip
    note = (
        f"Fashion-MNIST, default options, {torch.get_num_threads()} torch thread(s); median over "
        f"{args.rounds} round(s) of the median of iterations 2..{args.iterations}"
    )
    columns = ["prior", "matcher", "ipc", "s/it", "× pixel", "s/it over pixel"]
    emit("iteration_cost", [table(columns, rows, note=note)])


if __name__ == "__main__":
    main()
