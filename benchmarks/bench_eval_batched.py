"""Evaluating several seeds at once: sequential against batched (`ddbench.engine.evaluate.evaluate_seeds`).

For each evaluator and IPC, a "synthetic" set of random real Fashion-MNIST training images (IPC per
class, drawn with a fixed generator) is evaluated with the DC protocol for N seeds twice: seed after
seed (``batched=False``, today's path) and as one batched model (``batched=True``). The two variants
alternate in one process (sequential first for even cells, batched first for odd ones), so a noisy
machine slows both alike. Per variant it prints the wall time, the training and test seconds the
engine records, and every seed's accuracy; ``--repeats`` re-times each cell and reports medians.
It also gives the sequential variant's training seconds per image and epoch and its test seconds
per image: at ``--threads 1`` on a quiet machine, the figures behind an evaluator's cost hint
(`Evaluator.seconds_per_image`).

The full protocol (300 epochs here, over the 10 000 test images) is too slow for a shared two-core
machine, so ``--epochs`` and ``--test-size`` shrink it; the table also gives each variant's time
extrapolated to the full budget (``--full-epochs`` × the measured training seconds per epoch plus
10 000 × the measured test seconds per image). The figures go to ``--out`` as JSON with the command,
commit and machine (`record.write_record`).

    python benchmarks/bench_eval_batched.py --evaluators convnet --ipcs 1,10 --seeds 5 --epochs 20 --test-size 2000
    python benchmarks/bench_eval_batched.py --evaluators alexnet,vgg11,resnet18,vit --epochs 5 --test-size 500
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from record import emit, table

EVALUATORS = ("convnet", "alexnet", "vgg11", "resnet18", "vit")
VARIANTS = ("sequential", "batched")
FULL_TEST_IMAGES = 10_000


def synthetic_set(data: Any, ipc: int, seed: int = 0) -> tuple[Any, Any]:
    """``ipc`` random training images per class (normalised) and their labels."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    images = torch.cat([data.sample_class(label, ipc, generator) for label in range(data.num_classes)])
    labels = torch.arange(data.num_classes).repeat_interleave(ipc)
    return images, labels


def time_variant(
    images: Any, labels: Any, data: Any, evaluator: str, seeds: list[int], epochs: int, batched: bool
) -> dict[str, Any]:
    from ddbench.engine.evaluate import evaluate_seeds

    start, cpu_start = time.perf_counter(), time.process_time()
    results = evaluate_seeds(images, labels, data, evaluator, "dc", seeds, device="cpu", epochs=epochs, batched=batched)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    return {
        "wall_s": wall,
        "cpu_s": cpu,  # all threads of this process: the work, less sensitive to other processes than wall time
        "train_s": sum(r.train_seconds for r in results),
        "test_s": sum(r.eval_seconds for r in results),
        "accuracies": [r.accuracy for r in results],
        "batched": all(r.batched for r in results),
        "load_after": os.getloadavg()[0],
    }


def extrapolate(record: dict[str, Any], epochs: int, test_size: int, full_epochs: int) -> float:
    """Seconds at ``full_epochs`` over the whole test split, from the measured per-epoch and per-image rates."""
    return record["train_s"] / epochs * full_epochs + record["test_s"] / test_size * FULL_TEST_IMAGES


COLUMNS = [
    "evaluator", "IPC", "sequential wall / CPU s", "batched wall / CPU s", "batched / sequential: wall, CPU, full",
    "full budget, sequential → batched", "accuracy % per seed, sequential / batched",
    "sequential s per image-epoch / per test image",
]  # fmt: skip


def cell_rows(cells: list[dict[str, Any]]) -> list[list[str]]:
    """One table row per (evaluator, IPC) cell: medians of both variants, their ratios, every seed's accuracy."""
    rows = []
    for cell in cells:
        seq, bat = cell["sequential"], cell["batched"]
        accuracies = [" ".join(f"{100 * a:.1f}" for a in v["accuracies"]) for v in (seq, bat)]
        rows.append([
            cell["evaluator"], str(cell["ipc"]),
            f"{seq['wall_s_median']:.1f} / {seq['cpu_s_median']:.1f}",
            f"{bat['wall_s_median']:.1f} / {bat['cpu_s_median']:.1f}" + ("" if bat["ran_batched"] else " (fell back)"),
            f"{cell['batched_over_sequential']:.2f}, {cell['cpu_batched_over_sequential']:.2f}, "
            f"{cell['full_budget_batched_over_sequential']:.2f}",
            f"{seq['full_budget_s_median']:.0f} s → {bat['full_budget_s_median']:.0f} s",
            accuracies[0] + (" / same" if accuracies[0] == accuracies[1] else f" / {accuracies[1]}"),
            f"{cell['seconds_per_image_epoch']:.4f} / {cell['seconds_per_test_image']:.5f}",
        ])  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--evaluators", default=",".join(EVALUATORS))
    parser.add_argument("--ipcs", default="1,10")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument(
        "--epochs",
        type=int,
        default=20,
        help="training epochs per seed (the DC protocol has 1000; fmnist-cpu uses 300)",
    )
    parser.add_argument("--full-epochs", type=int, default=300, help="the budget the extrapolated column is for")
    parser.add_argument("--test-size", type=int, default=2000, help="first N test images (the split has 10 000)")
    parser.add_argument("--repeats", type=int, default=1, help="timings per cell and variant (medians reported)")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="directory of the JSON record [default: $DDBENCH_BENCH_OUT or bench-out/benchmarks]",
    )
    args = parser.parse_args()

    import torch

    from ddbench import registry

    torch.set_num_threads(args.threads)
    data = registry.create("dataset", "fashion-mnist").load().subset(None, args.test_size)
    test_size = len(data.test_labels)
    seeds = list(range(args.seeds))
    started = time.perf_counter()
    cells: list[dict[str, Any]] = []
    for evaluator in args.evaluators.split(","):
        for ipc in (int(i) for i in args.ipcs.split(",")):
            images, labels = synthetic_set(data, ipc)
            timings: dict[str, list[dict[str, Any]]] = {variant: [] for variant in VARIANTS}
            for repeat in range(args.repeats):
                order = VARIANTS if (len(cells) + repeat) % 2 == 0 else VARIANTS[::-1]
                for variant in order:
                    record = time_variant(images, labels, data, evaluator, seeds, args.epochs, variant == "batched")
                    timings[variant].append(record)
                    print(f"  {evaluator} IPC {ipc} {variant}: {record['wall_s']:.1f} s wall, {record['cpu_s']:.1f} s CPU, "
                          f"load {record['load_after']:.1f}", file=sys.stderr)  # fmt: skip
            summary = {}
            for variant, records in timings.items():
                summary[variant] = {
                    "wall_s_median": statistics.median(r["wall_s"] for r in records),
                    "cpu_s_median": statistics.median(r["cpu_s"] for r in records),
                    "full_budget_s_median": statistics.median(
                        extrapolate(r, args.epochs, test_size, args.full_epochs) for r in records
                    ),
                    "accuracies": records[0]["accuracies"],  # every repeat trains the same seeds
                    "ran_batched": records[0]["batched"],
                    "runs": records,
                }
            ratio = summary["batched"]["wall_s_median"] / summary["sequential"]["wall_s_median"]
            cpu_ratio = summary["batched"]["cpu_s_median"] / summary["sequential"]["cpu_s_median"]
            full_ratio = summary["batched"]["full_budget_s_median"] / summary["sequential"]["full_budget_s_median"]
            sequential = timings["sequential"]
            per_image_epoch = statistics.median(r["train_s"] for r in sequential) / (
                len(seeds) * args.epochs * len(labels)
            )
            per_test_image = statistics.median(r["test_s"] for r in sequential) / (len(seeds) * test_size)
            cells.append({"evaluator": evaluator, "ipc": ipc, "batched_over_sequential": ratio, "cpu_batched_over_sequential": cpu_ratio,
                          "full_budget_batched_over_sequential": full_ratio, "seconds_per_image_epoch": per_image_epoch,
                          "seconds_per_test_image": per_test_image, **summary})  # fmt: skip
    total = time.perf_counter() - started
    note = (
        f"Fashion-MNIST, random real images, DC protocol at {args.epochs} epochs, first {test_size} test images, "
        f"{args.seeds} seeds, {torch.get_num_threads()} thread(s), load {os.getloadavg()[0]:.1f} at the end; "
        f"{total:.0f} s in all; full = extrapolated to {args.full_epochs} epochs and 10 000 test images"
    )
    if args.out is not None:
        os.environ["DDBENCH_BENCH_OUT"] = str(args.out)  # where write_record puts its file
    settings = {**{k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}, "test_images": test_size}
    emit(
        "bench_eval_batched",
        [table(COLUMNS, cell_rows(cells), note=note)],
        settings=settings,
        total_s=total,
        cells=cells,
    )


if __name__ == "__main__":
    main()
