"""Does the reference DC's evaluation schedule explain the accuracy gap? One stored synthetic set,
trained N times (seeds interleaved) with ddbench's ``dc-noaug`` schedule (300 epochs, lr ×0.1 from
epoch 150) and with the reference's (301 epochs, lr ×0.1 after epoch 151 with a fresh optimiser),
both ConvNet-3, SGD momentum 0.9, weight decay 5e-4, no augmentation, full Fashion-MNIST test split.

    python benchmarks/dc_eval_schedule.py RUN_DIR --seeds 8
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch
import torch.nn.functional as F
from ddbench_plugins.evaluators.convnet import ConvNet
from record import emit, table
from torch import Tensor, nn

from ddbench import registry
from ddbench.engine.synthetic import load_synthetic_dataset

LR, MOMENTUM, WEIGHT_DECAY = 0.01, 0.9, 5e-4


def _optimizer(net: nn.Module, lr: float) -> torch.optim.Optimizer:
    return torch.optim.SGD(net.parameters(), lr=lr, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)


def _step(net: nn.Module, opt: torch.optim.Optimizer, x: Tensor, y: Tensor) -> None:
    net.train()  # ≤ 256 synthetic images: one batch per epoch in both loops
    loss = F.cross_entropy(net(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()


def train_ddbench(x: Tensor, y: Tensor, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    net = ConvNet(x.shape[1], 10, x.shape[-1]).to(x.device)
    opt = _optimizer(net, LR)
    for epoch in range(300):
        for group in opt.param_groups:
            group["lr"] = LR * 0.1 if epoch >= 150 else LR
        _step(net, opt, x, y)
    return net


def train_reference(x: Tensor, y: Tensor, seed: int, epochs: int = 301) -> nn.Module:
    """The reference's schedule; ``epochs`` other than 301 (a shorter check) decays at the same share."""
    torch.manual_seed(seed)
    net = ConvNet(x.shape[1], 10, x.shape[-1]).to(x.device)
    opt, lr = _optimizer(net, LR), LR
    for epoch in range(epochs):
        _step(net, opt, x, y)
        if epoch == epochs // 2 + 1:
            lr *= 0.1
            opt = _optimizer(net, lr)
    return net


def accuracy(net: nn.Module, images: Tensor, labels: Tensor) -> float:
    net.eval()
    with torch.no_grad():
        correct = sum(
            int((net(images[i : i + 1000]).argmax(1) == labels[i : i + 1000]).sum())
            for i in range(0, len(labels), 1000)
        )
    return 100.0 * correct / len(labels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="a run directory holding synthetic.safetensors")
    parser.add_argument("--seeds", type=int, default=8)
    args = parser.parse_args()
    x, y = load_synthetic_dataset(args.run_dir).tensors
    data = registry.create("dataset", "fashion-mnist").load()
    test_x, test_y = data.normalise(data.test_images), data.test_labels
    results: dict[str, list[float]] = {"ddbench dc-noaug": [], "reference schedule": []}
    for seed in range(args.seeds):
        results["ddbench dc-noaug"].append(accuracy(train_ddbench(x, y, seed), test_x, test_y))
        results["reference schedule"].append(accuracy(train_reference(x, y, seed), test_x, test_y))
    rows = [[name, f"{statistics.mean(accs):.2f} ± {statistics.pstdev(accs):.2f}", str(len(accs)),
             " ".join(f"{a:.1f}" for a in accs)] for name, accs in results.items()]  # fmt: skip
    columns = ["evaluation schedule (ConvNet-3, no augmentation)", "accuracy %", "seeds", "per seed"]
    note = f"synthetic set: {args.run_dir}; torch threads: {torch.get_num_threads()}"
    emit("dc_eval_schedule", [table(columns, rows, note=note)], accuracies=results)


if __name__ == "__main__":
    main()
