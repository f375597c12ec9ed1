"""MTT's expert-training cost hint: seconds per real training image per epoch (`EXPERT_SECONDS_PER_IMAGE_EPOCH`).

Trains experts exactly as a run's ``build_experts`` does (`ExpertBuffer.build`: ConvNet-3, batch
256, DSA, SGD at lr 0.01) on the first ``--train-per-class`` Fashion-MNIST images of each class, in
a temporary directory, at each thread count in turn, and divides the wall time by experts × epochs
× images. Run it on a quiet machine: the hint is one thread's figure (`ddbench/interfaces.py`).

    python benchmarks/expert_cost.py --experts 1 --epochs 2 --train-per-class 1000 --threads 1,2
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch
from ddbench_plugins.matchers.mtt.experts import ExpertBuffer, ExpertConfig
from ddbench_plugins.matchers.mtt.matcher import EXPERT_SECONDS_PER_IMAGE_EPOCH
from record import emit, table

from ddbench import registry
from ddbench.engine.allocator import tune_allocator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experts", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--train-per-class", type=int, default=1000)
    parser.add_argument("--threads", default="1", help="comma-separated torch thread counts, timed in turn")
    args = parser.parse_args()
    tune_allocator()  # as a run does
    data = registry.create("dataset", "fashion-mnist").load().subset(train_per_class=args.train_per_class)
    images = len(data.train_labels)
    rows = []
    for threads in (int(t) for t in args.threads.split(",")):
        torch.set_num_threads(threads)
        config = ExpertConfig.for_data(data, epochs=args.epochs)
        with tempfile.TemporaryDirectory() as root:
            start = time.perf_counter()
            ExpertBuffer.at(root, config).build(data, args.experts, device=torch.device("cpu"))
            seconds = time.perf_counter() - start
        per = seconds / (args.experts * args.epochs * images)
        rows.append([threads, args.experts, args.epochs, images, f"{seconds:.1f}", f"{per:.4f}"])
        print(f"{threads} thread(s): {seconds:.1f} s, {per:.4f} s per image-epoch", flush=True)
    note = (
        f"Fashion-MNIST, ConvNet-3 experts as `build_experts` trains them (batch 256, DSA, lr 0.01); "
        f"wall time including saving; the hint in ddbench is {EXPERT_SECONDS_PER_IMAGE_EPOCH} s (one thread)"
    )
    columns = ["torch threads", "experts", "epochs", "training images", "wall s", "s per image-epoch"]
    emit("expert_cost", [table(columns, rows, note=note)])


if __name__ == "__main__":
    main()
