"""Benchmark the five evaluators: training speed and peak memory, and accuracy on random real images.

``speed``: time per training epoch and peak memory of each evaluator on an IPC-10 synthetic set
(10 classes × 10 random images) at 28 px (1 channel, Fashion-MNIST; DC protocol) and 128 px
(3 channels, ImageNet subsets; GLaD protocol), with the protocol's batch size and DSA, through
the same `ddbench.engine.training.train_classifier` loop evaluation uses. Each (evaluator, resolution)
runs in a fresh process, so the CPU figure (peak process RSS, `ddbench.engine.memory.PeakMemory`) is its
own; "+ over start" subtracts the RSS just before training (interpreter, torch, the built network).

``accuracy``: the cross-architecture table on Fashion-MNIST with random real images at IPC 10:
the same spec `ddbench run --dataset fashion-mnist --prior pixel --algo real --ipc 10
--evaluators convnet,alexnet,vgg11,resnet18,vit --seeds 3 --eval-epochs 300` runs, stored in
``OUT/results.sqlite``; prints mean ± std over seeds per evaluator.

    python benchmarks/bench_evaluators.py speed --epochs 3
    python benchmarks/bench_evaluators.py accuracy --seeds 3 --eval-epochs 300 --out bench-out/evaluators
    python benchmarks/bench_evaluators.py accuracy --seeds 1 --eval-epochs 2 --test-size 500   # smoke
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from record import emit, table

EVALUATORS = ("convnet", "alexnet", "vgg11", "resnet18", "vit")
#: resolution → (channels, protocol): Fashion-MNIST under DC, ImageNet subsets under GLaD
SETTINGS: dict[int, tuple[int, str]] = {28: (1, "dc"), 128: (3, "glad")}
CLASSES, IPC = 10, 10


# ----------------------------------------------------------------------------------------- speed


def _sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_one(evaluator: str, resolution: int, epochs: int, device_name: str, threads: int | None) -> dict[str, Any]:
    """Train ``evaluator`` for 1 warm-up + ``epochs`` timed epochs; runs in its own process."""
    import torch

    from ddbench import registry
    from ddbench.engine.memory import PeakMemory, current_rss_bytes
    from ddbench.engine.protocols import get_protocol
    from ddbench.engine.training import train_classifier

    if threads:
        torch.set_num_threads(threads)
    device = torch.device(device_name)
    channels, protocol_name = SETTINGS[resolution]
    protocol = get_protocol(protocol_name)
    plugin = registry.create("evaluator", evaluator)
    plugin.check_input(channels, resolution)
    lr = plugin.protocol_lrs.get(protocol.name, protocol.lr)

    gen = torch.Generator().manual_seed(0)
    images = torch.randn(CLASSES * IPC, channels, resolution, resolution, generator=gen)
    labels = torch.arange(CLASSES).repeat_interleave(IPC)
    torch.manual_seed(0)
    model = plugin.build(channels, CLASSES, resolution).to(device)
    params = sum(p.numel() for p in model.parameters())

    ends: list[float] = []

    def on_epoch_end(_epoch: int, _loss: float) -> None:
        _sync(device)
        ends.append(time.perf_counter())

    start_rss = current_rss_bytes() if device.type == "cpu" else 0
    with PeakMemory(device) as mem:
        _sync(device)
        start = time.perf_counter()
        stats = train_classifier(
            model, images, labels, protocol.with_overrides(epochs=epochs + 1, lr=lr),
            seed=0, device=device, on_epoch_end=on_epoch_end,
        )  # fmt: skip
    epoch_times = [b - a for a, b in zip([start, *ends[:-1]], ends)]
    timed = epoch_times[1:]  # the first epoch pays for allocator warm-up and lazy init
    return {
        "evaluator": evaluator,
        "res": resolution,
        "channels": channels,
        "protocol": protocol.name,
        "params": params,
        "warmup_epoch_s": epoch_times[0],
        "epoch_s_median": statistics.median(timed),
        "epoch_s_min": min(timed),
        "peak_bytes": int(mem.peak_bytes),
        "peak_over_start_bytes": int(mem.peak_bytes - start_rss) if device.type == "cpu" else int(mem.peak_bytes),
        "final_loss": stats.losses[-1],
    }


def run_speed(args: argparse.Namespace) -> None:
    import torch

    from ddbench.engine.memory import format_bytes

    resolutions = [int(r) for r in args.resolutions.split(",")]
    unknown = sorted(set(resolutions) - set(SETTINGS))
    if unknown:
        raise SystemExit(f"--resolutions accepts {sorted(SETTINGS)}; got {unknown}")
    context = multiprocessing.get_context("spawn")  # a fresh process per measurement: its own peak RSS
    rows, records = [], []
    for resolution in resolutions:
        for evaluator in args.evaluators.split(","):
            with context.Pool(1, maxtasksperchild=1) as pool:
                record = pool.apply(time_one, (evaluator, resolution, args.epochs, args.device, args.threads))
            records.append(record)
            rows.append([
                evaluator, f"{resolution} px × {record['channels']}", record["protocol"], f"{record['params'] / 1e6:.2f} M",
                f"{record['epoch_s_median']:.3f}", f"{record['warmup_epoch_s']:.3f}",
                format_bytes(record["peak_bytes"]), format_bytes(record["peak_over_start_bytes"]),
            ])  # fmt: skip
            print(f"  {evaluator} {resolution} px: {record['epoch_s_median']:.3f} s/epoch", file=sys.stderr)
    device = torch.device(args.device)
    threads = args.threads or torch.get_num_threads()
    where = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"CPU, {threads} thread(s), load {os.getloadavg()[0]:.1f}"
    )
    memory = "peak allocated (CUDA)" if device.type == "cuda" else "peak RSS"
    headers = [
        "evaluator",
        "input",
        "protocol",
        "params",
        "s / epoch (median)",
        "warm-up epoch s",
        memory,
        "+ over start",
    ]
    note = (
        f"IPC-{IPC} synthetic set ({CLASSES} classes × {IPC}), {args.epochs} timed epochs after 1 warm-up, on {where}"
    )
    emit("bench_evaluators-speed", [table(headers, rows, note=note)], measurements=records)


# -------------------------------------------------------------------------------------- accuracy


def run_accuracy(args: argparse.Namespace) -> None:
    from spec_runs import run_specs

    from ddbench.engine.spec import RunEnv, RunSpec
    from ddbench.results.store import ResultsStore, store_path

    spec = RunSpec(
        dataset="fashion-mnist", prior="pixel", matcher="real", ipc=10,
        evaluators=tuple(args.evaluators.split(",")), eval_seeds=tuple(range(args.seeds)),
        protocol=args.protocol, eval_epochs=args.eval_epochs, test_size=args.test_size,
    )  # fmt: skip
    env = RunEnv(out=args.out, device=args.device, progress=sys.stderr.isatty())
    (spec,) = run_specs([spec], env, args.threads, fresh_process=False)
    with ResultsStore(store_path(args.out)) as store:
        scores = store.scores_frame()
    scores = scores[(scores.run_id == spec.run_id) & (scores.protocol == spec.protocol_key())]
    rows = []
    for evaluator in spec.evaluators:
        mine = scores[scores.evaluator == evaluator]
        acc = mine["accuracy"] * 100
        rows.append([
            evaluator, len(mine), f"{acc.mean():.2f} ± {acc.std(ddof=0):.2f}",
            f"{mine['train_seconds'].mean():.1f}",
        ])  # fmt: skip
    test = f"first {args.test_size} test images" if args.test_size else "the full test split"
    note = f"Fashion-MNIST, random real images, IPC 10, protocol {spec.protocol_key()}, {test}"
    headers = ["evaluator", "seeds", "accuracy % (mean ± std)", "train s / seed"]
    emit("bench_evaluators-accuracy", [table(headers, rows, note=note)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    speed = sub.add_parser("speed", help="time per training epoch and peak memory at 28 and 128 px")
    speed.add_argument("--epochs", type=int, default=3, help="timed epochs (after one warm-up epoch)")
    speed.add_argument("--resolutions", default="28,128")
    accuracy = sub.add_parser("accuracy", help="accuracy on random real Fashion-MNIST images at IPC 10")
    accuracy.add_argument("--seeds", type=int, default=3)
    accuracy.add_argument("--eval-epochs", type=int, default=300)
    accuracy.add_argument("--protocol", default="dc")
    accuracy.add_argument("--test-size", type=int, default=None, help="first N test images only (smoke runs)")
    accuracy.add_argument("--out", type=Path, default=Path("bench-out/evaluators"))
    for command in (speed, accuracy):
        command.add_argument("--evaluators", default=",".join(EVALUATORS))
        command.add_argument("--device", default="cpu")
        command.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    args = parser.parse_args()
    if args.command == "speed":
        run_speed(args)
    else:
        run_accuracy(args)


if __name__ == "__main__":
    main()
