"""Seconds per distillation iteration of each prior under each matcher, side by side on this machine,
and what a prior adds to an iteration over raw pixels: the figures behind the plugins' cost hints
(`Matcher.seconds_per_iteration`, `Prior.cost_factor`, `Prior.seconds_per_generation`) that
`ddbench run` uses for its time estimate.

Each setting distils its default spec (Fashion-MNIST, the plugins' default options) for
``--iterations`` iterations through `Distiller`, with no evaluation; settings run interleaved
(``--rounds`` times in turn) so that a noisy machine affects them alike; the figure is the median
over rounds of each round's median s/it after the first (warm-up) iteration. With several
``--threads`` counts every setting runs at each of them in every round, and the table adds each
prior's speed-up from the first count to the last: the factor `ddbench.running.sweep` divides a
lone run's one-core estimate by (``TWO_THREAD_SPEEDUP``).

    python benchmarks/iteration_cost.py --priors pixel,ld3m --matchers dm --ipcs 1,10 --iterations 6
    python benchmarks/iteration_cost.py --priors pixel,glad,ld3m --ipcs 1,10 --threads 1,2 --rounds 2

``--matcher-opt`` and ``--train-per-class`` change what a matcher needs before its first iteration
and not what an iteration does, e.g. MTT with a one-expert buffer built on the spot:
``--matchers mtt --matcher-opt build_experts=true --matcher-opt num_experts=1 --matcher-opt
max_start_epoch=1 --matcher-opt expert_train_epochs=3 --matcher-opt lr_lr=0 --train-per-class 100``
(``lr_lr=0`` keeps the learnable learning rate where it starts: such a short buffer can drive it
below zero).
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
from ddbench.running.grid import parse_key_values
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
    parser.add_argument(
        "--threads", default=None, help="torch thread counts, e.g. 1 or 1,2 (default: torch's); the cost hints are at 1"
    )
    parser.add_argument("--matcher-opt", action="append", default=[], help="matcher option KEY=VALUE")
    parser.add_argument("--train-per-class", type=int, default=None, help="training images per class (default: all)")
    args = parser.parse_args()
    matcher_options = parse_key_values(args.matcher_opt, "--matcher-opt")
    threads = [int(n) for n in args.threads.split(",")] if args.threads else [torch.get_num_threads()]
    env = RunEnv()
    specs = [
        RunSpec(
            prior=prior,
            matcher=matcher,
            ipc=int(ipc),
            iterations=args.iterations,
            matcher_options=dict(matcher_options),
            train_per_class=args.train_per_class,
        )
        for matcher in args.matchers.split(",")
        for ipc in args.ipcs.split(",")
        for prior in args.priors.split(",")
    ]
    specs = resolve_specs(specs, env)
    data_cache = DataCache(env)
    rounds: dict[tuple[str, int], list[float]] = {(spec.run_id, n): [] for spec in specs for n in threads}
    for _ in range(args.rounds):
        for spec in specs:
            for n in threads:
                torch.set_num_threads(n)
                rounds[spec.run_id, n].append(seconds_per_iteration(spec, data_cache))
    median = {key: statistics.median(times) for key, times in rounds.items()}
    first, last = threads[0], threads[-1]
    rows = []
    for spec in specs:
        own = median[spec.run_id, first]
        pixel = next(
            (
                median[s.run_id, first]
                for s in specs
                if (s.prior, s.matcher, s.ipc) == ("pixel", spec.matcher, spec.ipc)
            ),
            None,
        )
        rows.append([
            spec.prior, spec.matcher, str(spec.ipc), *(f"{median[spec.run_id, n]:.2f}" for n in threads),
            "—" if pixel is None else f"{own / pixel:.2f}",
            "—" if pixel is None else f"{own - pixel:.2f}",
            *([f"{own / median[spec.run_id, last]:.2f}"] if len(threads) > 1 else []),
        ])  # fmt: skip
    counts = ", ".join(str(n) for n in threads)
    options = "default options"
    if matcher_options or args.train_per_class:
        given = [f"{key}={value}" for key, value in matcher_options.items()]
        per_class = [f"{args.train_per_class} training images per class"] if args.train_per_class else []
        options = "default options but " + ", ".join(given + per_class)
    note = (
        f"Fashion-MNIST, {options}, {counts} torch thread(s); median over {args.rounds} round(s) of the "
        f"median of iterations 2..{args.iterations}"
        + (f"; × pixel and over pixel at {first} thread(s)" if len(threads) > 1 else "")
    )
    per_count = [f"s/it ({n} thread{'s' if n > 1 else ''})" for n in threads] if len(threads) > 1 else ["s/it"]
    speedup = [f"speed-up {first} → {last} threads"] if len(threads) > 1 else []
    columns = ["prior", "matcher", "ipc", *per_count, "× pixel", "s/it over pixel", *speedup]
    emit("iteration_cost", [table(columns, rows, note=note)])


if __name__ == "__main__":
    main()
