"""Issue-2 benchmark: pixel + DM against random real images on Fashion-MNIST.

Runs the same specs `ddbench run` would (same engine, same store), at the budget of the reference
figures: 200 DM iterations, real init, DSA, 256 real images per class, 300 evaluation epochs (DC
protocol with DSA), ≥ 3 evaluation seeds. Prints mean ± std accuracy, seconds per iteration and
peak memory per setting, as Markdown, plus the command that produced it.

    python benchmarks/bench_dm_fmnist.py --out bench-out/dm --seeds 5
    python benchmarks/bench_dm_fmnist.py --precisions fp32,bf16   # compare variants side by side
    python benchmarks/bench_dm_fmnist.py --speed-only 30 --precisions fp32,bf16   # median s/it only
    python benchmarks/bench_dm_fmnist.py --speed-only 15 --real-chunks auto,32   # real-embedding chunk size

The accuracy table's s/it is the whole run's wall time per iteration (torch.compile's one-off
compilation included); ``--speed-only N`` times N iterations per setting, interleaving the settings
round by round, and reports the median iteration (compilation excluded) and peak RSS.
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from tabulate import tabulate

from ddbench import registry
from ddbench.distill import Distiller
from ddbench.dsa import DSA
from ddbench.memory import PeakMemory, format_bytes
from ddbench.pipeline import DataCache, run_spec
from ddbench.spec import RunEnv, RunSpec
from ddbench.store import ResultsStore


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench-out/dm-fmnist"))
    parser.add_argument("--ipcs", default="1,10")
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--eval-epochs", type=int, default=300)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--precisions", default="bf16", help="DM real-embedding precision(s) to compare: fp32,bf16")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--speed-only", type=int, default=0, metavar="N", help="only time N iterations per setting")
    parser.add_argument("--real-chunks", default="auto", help="--speed-only: DM real_chunk value(s) to compare, e.g. auto,32,256")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    ipcs = [int(i) for i in args.ipcs.split(",")]
    if args.speed_only:
        chunks = [None if c == "auto" else int(c) for c in args.real_chunks.split(",")]
        speed_only(ipcs, args.precisions.split(","), args.speed_only, chunks)
        return
    env = RunEnv(out=args.out, progress=sys.stderr.isatty())
    common = dict(dataset="fashion-mnist", prior="pixel", iterations=args.iterations, eval_epochs=args.eval_epochs,
                  eval_seeds=tuple(range(args.seeds)), protocol="dc")  # fmt: skip
    specs = []
    for ipc in ipcs:
        specs.append(RunSpec(matcher="real", ipc=ipc, **common))
        for precision in args.precisions.split(","):
            specs.append(RunSpec(matcher="dm", ipc=ipc, matcher_options={"real_precision": precision}, **common))

    cache = DataCache(env)
    rows = []
    with ResultsStore(args.out / "results.sqlite") as store:
        for spec in specs:
            run_spec(spec, env, store, cache)
            run = store.get_run(spec.run_id)
            scores = store.scores_frame()
            acc = scores[(scores.run_id == spec.run_id) & (scores.protocol == spec.protocol_key())]["accuracy"] * 100
            label = "random real" if spec.matcher == "real" else f"pixel + DM ({spec.matcher_options['real_precision']})"
            spi = run.get("seconds_per_iteration")
            rows.append([
                spec.ipc, label, f"{acc.mean():.1f} ± {acc.std(ddof=0):.1f}", len(acc),
                f"{spi:.3f}" if spi else "—", format_bytes(run.get("distill_peak_memory_bytes")) if spi else "—",
            ])  # fmt: skip
    print(tabulate(rows, headers=["IPC", "method", "accuracy %", "seeds", "s/it", "peak RSS"], tablefmt="github"))
    print(f"\ncommand: python {' '.join(shlex.quote(a) for a in sys.argv)}  (torch threads: {torch.get_num_threads()})")


def speed_only(ipcs: list[int], precisions: list[str], iterations: int, chunks: list[int | None]) -> None:
    """Median seconds per DM iteration per (IPC, precision, real chunk), from one run of N + 1 iterations each.

    The first iteration (torch.compile's compilation) is excluded; peak RSS covers the whole run.
    """
    data = registry.create("dataset", "fashion-mnist").load()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for ipc in ipcs:
            for precision in precisions:
                for chunk in chunks:
                    options = {"real_precision": precision, **({"real_chunk": chunk} if chunk else {})}
                    spec = RunSpec(matcher="dm", ipc=ipc, iterations=iterations + 1, matcher_options=options)
                    stamps: list[float] = []
                    distiller = Distiller(spec, data, Path(tmp) / f"{ipc}-{precision}-{chunk}", dsa=DSA(), progress=False)
                    with PeakMemory() as mem:
                        distiller.run(resume=False, on_iteration=lambda it, loss: stamps.append(time.perf_counter()))
                    per_iteration = [b - a for a, b in zip(stamps, stamps[1:])]
                    rows.append([ipc, precision, chunk or "auto", f"{statistics.median(per_iteration):.3f}", format_bytes(mem.peak_bytes)])
                    print(rows[-1], flush=True)
    print(tabulate(rows, headers=["IPC", "DM real precision", "real chunk", "median s/it", "peak RSS"], tablefmt="github"))
    print(f"\ncommand: python {' '.join(shlex.quote(a) for a in sys.argv)}  (torch threads: {torch.get_num_threads()})")


if __name__ == "__main__":
    main()
