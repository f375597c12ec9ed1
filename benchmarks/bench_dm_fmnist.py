"""Issue-2 benchmark: pixel + DM against random real images on Fashion-MNIST.

Runs the same specs `ddbench run` would (same engine, same store), at the budget of the reference
figures: 200 DM iterations, real init, DSA, 256 real images per class, 300 evaluation epochs (DC
protocol with DSA), ≥ 3 evaluation seeds. Prints mean ± std accuracy, seconds per iteration and
peak memory per setting, as Markdown, plus the command that produced it.

    python benchmarks/bench_dm_fmnist.py --out bench-out/dm --seeds 5
    python benchmarks/bench_dm_fmnist.py --precisions fp32,bf16   # compare variants side by side
    python benchmarks/bench_dm_fmnist.py --ipcs 1 --distill-seeds 0,1,2,3   # several draws of the real images
    python benchmarks/bench_dm_fmnist.py --speed-only 30 --precisions fp32,bf16   # median s/it only
    python benchmarks/bench_dm_fmnist.py --speed-only 15 --real-chunks auto,32   # real-embedding chunk size
    python benchmarks/bench_dm_fmnist.py --speed-only 10 --reference   # + the reference loop, same machine
    python benchmarks/bench_dm_fmnist.py --speed-only 10 --calibrate   # + s/it scaled to the issue's machine

The accuracy table's s/it is the whole run's wall time per iteration (torch.compile's one-off
compilation included); ``--speed-only N`` times N iterations per setting, interleaving the settings
round by round, and reports the median iteration (compilation excluded) and peak RSS.

``--calibrate`` times the issue's calibration — the fp32 embedding of 10 × 256 Fashion-MNIST-sized
images through a fresh ConvNet-3, which the issue measured at 2.3 s on its machine — before and after
the DM settings, and adds each setting's s/it scaled by 2.3 s / (this machine's median): what it
would take on the issue's machine if both scale alike (this CPU's speed drifts, so quote it as such).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from bench_convnet_embed import calibration_seconds, machine_factor
from record import emit, table
from spec_runs import draw_cells

from ddbench import registry
from ddbench.engine.distill import Distiller
from ddbench.engine.dsa import DSA
from ddbench.engine.memory import PeakMemory, format_bytes
from ddbench.engine.spec import RunEnv, RunSpec
from ddbench.results.store import ResultsStore


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench-out/dm-fmnist"))
    parser.add_argument("--ipcs", default="1,10")
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--eval-epochs", type=int, default=300)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--precisions", default="bf16", help="DM real-embedding precision(s) to compare: fp32,bf16")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument(
        "--distill-seeds",
        default="0",
        help="spec seeds, i.e. draws of the real images (random real, real init): '0,1,2'",
    )
    parser.add_argument("--speed-only", type=int, default=0, metavar="N", help="only time N iterations per setting")
    parser.add_argument(
        "--real-chunks", default="auto", help="--speed-only: DM real_chunk value(s) to compare, e.g. auto,32,256"
    )
    parser.add_argument(
        "--reference",
        action="store_true",
        help="--speed-only: also time the reference DM loop re-typed (same machine baseline)",
    )
    parser.add_argument(
        "--calibrate",
        action="store_true",
        help="--speed-only: also scale s/it to the issue's machine (its fp32 embed: 2.3 s)",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    ipcs = [int(i) for i in args.ipcs.split(",")]
    if args.speed_only:
        speed_table(args, ipcs)
        return
    env = RunEnv(out=args.out, progress=sys.stderr.isatty())
    common = dict(dataset="fashion-mnist", prior="pixel", iterations=args.iterations, eval_epochs=args.eval_epochs,
                  eval_seeds=tuple(range(args.seeds)), protocol="dc")  # fmt: skip
    draws = [int(d) for d in args.distill_seeds.split(",")]
    # (IPC, label, draw → spec): `seed` picks the real images (random real, real init) and the
    # distillation's randomness; the evaluation seeds train each result several times
    methods = []
    for ipc in ipcs:
        methods.append((ipc, "random real", lambda d, ipc=ipc: RunSpec(matcher="real", ipc=ipc, seed=d, **common)))
        for precision in args.precisions.split(","):
            options = {"real_precision": precision}
            methods.append((ipc, f"pixel + DM ({precision})",
                            lambda d, ipc=ipc, o=options: RunSpec(matcher="dm", ipc=ipc, matcher_options=o, seed=d, **common)))  # fmt: skip

    rows = []
    with ResultsStore(args.out / "results.sqlite") as store:
        for ipc, label, make_spec in methods:
            rows.append([ipc, label, *draw_cells(make_spec, draws, env, store, threads=args.threads)])
    headers = ["IPC", "method", "accuracy %", "draws × eval seeds", "mean per draw", "s/it (median)", "peak RSS"]
    emit("bench_dm_fmnist", [table(headers, rows, note=f"torch threads: {torch.get_num_threads()}")])


def speed_table(args: argparse.Namespace, ipcs: list[int]) -> None:
    """--speed-only: the reference loop (--reference) and DM's settings, each a median s/it, in one table."""
    chunks = [None if c == "auto" else int(c) for c in args.real_chunks.split(",")]
    calibrations = [calibration_seconds()] if args.calibrate else []
    rows = reference_speed(ipcs, args.speed_only) if args.reference else []
    rows += speed_only(ipcs, args.precisions.split(","), args.speed_only, chunks)
    headers = ["IPC", "setting", "real chunk", "median s/it", "peak RSS"]
    if args.calibrate:
        calibrations.append(calibration_seconds())
        factor = machine_factor(calibrations)
        headers.append("s/it scaled to the issue's machine")
        rows = [row + [f"{row[3] / factor:.3f}"] for row in rows]
    rows = [row[:3] + [f"{row[3]:.3f}"] + row[4:] for row in rows]
    note = f"median of {args.speed_only} iterations after the first; torch threads: {torch.get_num_threads()}"
    if args.calibrate:
        note += f"; calibration {' / '.join(f'{c:.2f}' for c in calibrations)} s here, 2.3 s on the issue's machine"
    emit("bench_dm_fmnist-speed", [table(headers, rows, note=note)])


def reference_speed(ipcs: list[int], iterations: int) -> list[list[object]]:
    """The reference implementation's DM iteration (VICO-UoE/DatasetCondensation, main_DM.py), re-typed
    as a same-machine baseline: a fresh ConvNet each iteration, per class 256 real images and the
    class's synthetic images through `embed` in fp32 with the same DSA draw, real outputs detached,
    Σ_c ‖mean_real − mean_syn‖², SGD (momentum 0.5) on the images. Median s/it after one warm-up."""
    from ddbench.interfaces import MatchContext

    data = registry.create("dataset", "fashion-mnist").load()
    context = MatchContext(data=data, ipc=1, device=torch.device("cpu"), dsa=None)
    dsa, gen = DSA(), torch.Generator().manual_seed(0)
    rows = []
    for ipc in ipcs:
        syn = torch.cat([data.sample_class(c, ipc, gen) for c in range(10)]).requires_grad_(True)
        opt = torch.optim.SGD([syn], lr=1.0, momentum=0.5)
        times = []
        with PeakMemory() as mem:
            for it in range(iterations + 1):
                start = time.perf_counter()
                net = context.build_network("convnet").train()
                for p in net.parameters():
                    p.requires_grad_(False)
                loss = torch.tensor(0.0)
                for c in range(10):
                    seed = int(torch.randint(0, 2**31 - 1, (), generator=gen))
                    real = dsa(data.sample_class(c, 256, gen), seed)
                    out_real = net.embed(real).detach()
                    out_syn = net.embed(dsa(syn[c * ipc : (c + 1) * ipc], seed))
                    loss = loss + ((out_real.mean(0) - out_syn.mean(0)) ** 2).sum()
                opt.zero_grad()
                loss.backward()
                opt.step()
                if it:
                    times.append(time.perf_counter() - start)
        rows.append(
            [ipc, "reference DM loop (re-typed, fp32)", "—", statistics.median(times), format_bytes(mem.peak_bytes)]
        )
        print(rows[-1], flush=True)
    return rows


def speed_only(ipcs: list[int], precisions: list[str], iterations: int, chunks: list[int | None]) -> list[list[object]]:
    """Rows (IPC, setting, real chunk, median s/it, peak RSS) of DM per (IPC, precision, real chunk),
    from one run of N + 1 iterations each. The first iteration (torch.compile's compilation) is
    excluded; peak RSS covers the whole run."""
    data = registry.create("dataset", "fashion-mnist").load()
    rows: list[list[object]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for ipc in ipcs:
            for precision in precisions:
                for chunk in chunks:
                    options = {"real_precision": precision, **({"real_chunk": chunk} if chunk else {})}
                    spec = RunSpec(matcher="dm", ipc=ipc, iterations=iterations + 1, matcher_options=options)
                    stamps: list[float] = []
                    distiller = Distiller(
                        spec, data, Path(tmp) / f"{ipc}-{precision}-{chunk}", dsa=DSA(), progress=False
                    )
                    with PeakMemory() as mem:
                        distiller.run(
                            resume=False,
                            on_iteration=lambda it, loss, stamps=stamps: stamps.append(time.perf_counter()),
                        )
                    per_iteration = [b - a for a, b in zip(stamps, stamps[1:])]
                    rows.append(
                        [
                            ipc,
                            f"pixel + DM ({precision} real side)",
                            chunk or "auto",
                            statistics.median(per_iteration),
                            format_bytes(mem.peak_bytes),
                        ]
                    )
                    print(rows[-1], flush=True)
    return rows


if __name__ == "__main__":
    main()
