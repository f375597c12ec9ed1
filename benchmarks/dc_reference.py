"""The reference DC, re-typed, against ddbench's DC at the issue's budget, on the same draws.

Fashion-MNIST, IPC 1, real init, 50 iterations, no DSA. For each draw both methods start from the
same real images (ddbench's ``real-init`` draw of that seed), and every synthetic set — those
initial images too, as the random-real row — is trained with the reference's evaluation
(``dc_eval_schedule.train_reference``: ConvNet-3, 301 epochs, lr 0.01 → 0.001 after epoch 151, SGD
momentum 0.9, weight decay 5e-4, no augmentation) for each evaluation seed and tested on the full
test split. The distillation is the only thing that differs between the rows.

The reference loop (VICO-UoE/DatasetCondensation, ``main.py`` with ``--method DC``, re-typed from
its description, not copied): per iteration a fresh ConvNet; per class the gradients of every
parameter on 256 random real images (detached) and on the class's synthetic image (with graph),
``match_loss`` 'ours' summed over classes; SGD on the images (lr 0.1, momentum 0.5). At IPC 1 the
outer loop has one step and the network is never trained (the loop breaks before it).

    python benchmarks/dc_reference.py --draws 0,1,2,3,4,5,6,7 --seeds 3 --device cuda
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch
from dc_eval_schedule import accuracy, train_reference
from ddbench_plugins.matchers.dc import layer_distance
from tabulate import tabulate
from torch import Tensor

from ddbench import registry
from ddbench.engine.seeding import generator, seed_everything
from ddbench.interfaces import MatchContext, RealData

BATCH_REAL, IMAGE_LR, IMAGE_MOMENTUM = 256, 0.1, 0.5


def initial_images(data: RealData, draw: int) -> Tensor:
    """One real image per class: the draw ddbench's engine makes for a spec with seed ``draw``."""
    gen = generator(draw, "real-init")
    return torch.cat([data.sample_class(c, 1, gen) for c in range(data.num_classes)])


def reference_iteration(context: MatchContext, syn: Tensor, opt: torch.optim.Optimizer, gen: torch.Generator) -> float:
    """One reference DC iteration at IPC 1 (one image per class in ``syn``); returns its loss."""
    data, device = context.data, context.device
    net = context.build_network("convnet").train()
    params = list(net.parameters())
    criterion = torch.nn.CrossEntropyLoss()
    loss = torch.zeros((), device=device)
    for c in range(data.num_classes):
        img_real = data.sample_class(c, BATCH_REAL, gen).to(device)
        lab_real = torch.full((BATCH_REAL,), c, device=device)
        gw_real = [g.detach().clone() for g in torch.autograd.grad(criterion(net(img_real), lab_real), params)]
        gw_syn = torch.autograd.grad(criterion(net(syn[c : c + 1]), lab_real[:1]), params, create_graph=True)
        loss = loss + sum(layer_distance(r, s) for r, s in zip(gw_real, gw_syn))
    opt.zero_grad()
    loss.backward()
    opt.step()
    return float(loss.detach())


def reference_distill(data: RealData, draw: int, iterations: int, device: torch.device) -> tuple[Tensor, float]:
    """The reference DC from ``draw``'s initial images; returns (synthetic images, s/it)."""
    seed_everything(draw)
    gen = generator(draw, "reference-real-batches")
    syn = initial_images(data, draw).to(device).requires_grad_(True)
    opt = torch.optim.SGD([syn], lr=IMAGE_LR, momentum=IMAGE_MOMENTUM)
    context = MatchContext(data=data, ipc=1, device=device, dsa=None)
    start = time.perf_counter()
    for _ in range(iterations):
        reference_iteration(context, syn, opt, gen)
    return syn.detach(), (time.perf_counter() - start) / iterations


def ddbench_distill(
    data: RealData, draw: int, iterations: int, device: torch.device, options: dict[str, object], out: Path
) -> tuple[Tensor, float]:
    """ddbench's DC (pixel prior, no DSA, ``options``) for a spec with seed ``draw``; returns (images, s/it)."""
    from ddbench.engine.distill import Distiller
    from ddbench.engine.spec import RunSpec

    spec = RunSpec(dataset="fashion-mnist", prior="pixel", matcher="dc", ipc=1, iterations=iterations, dsa=False,
                   matcher_options=options, seed=draw)  # fmt: skip
    result = Distiller(
        spec, data, out / spec.run_id, device=device, dsa=None, progress=False, checkpoint_every=10**9
    ).run(resume=False)
    return result.synthetic.images.to(device), result.seconds_per_iteration or float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--draws", default="0,1,2", help="spec seeds: draws of the initial images and of the distillation"
    )
    parser.add_argument("--seeds", type=int, default=3, help="evaluation seeds per synthetic set")
    parser.add_argument("--iterations", type=int, default=50)
    parser.add_argument("--precisions", default="fp32", help="ddbench DC real-side precision(s)")
    parser.add_argument(
        "--dc-compile", default="auto", choices=["auto", "true", "false"], help="ddbench DC's compile option"
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=Path("bench-out/dc-reference"))
    parser.add_argument("--train-per-class", type=int, default=None, help="a training slice (smoke checks only)")
    parser.add_argument("--test-size", type=int, default=None, help="a test slice (smoke checks only)")
    args = parser.parse_args()
    device = torch.device(args.device)
    data = registry.create("dataset", "fashion-mnist").load().subset(args.train_per_class, args.test_size)
    test_x, test_y = data.normalise(data.test_images).to(device), data.test_labels.to(device)
    labels = torch.arange(data.num_classes, device=device)
    rows: dict[str, dict[str, list[float]]] = {}

    def score(label: str, images: Tensor, spi: float | None) -> None:
        row = rows.setdefault(label, {"acc": [], "draw_means": [], "spi": []})
        accs = [accuracy(train_reference(images, labels, seed), test_x, test_y) for seed in range(args.seeds)]
        row["acc"] += accs
        row["draw_means"].append(statistics.mean(accs))
        if spi is not None:
            row["spi"].append(spi)
        print(f"{label} draw {len(row['draw_means']) - 1}: {statistics.mean(accs):.2f}", file=sys.stderr, flush=True)

    for draw in [int(d) for d in args.draws.split(",")]:
        score("random real (the initial images)", initial_images(data, draw).to(device), None)
        score("reference DC, re-typed (fp32)", *reference_distill(data, draw, args.iterations, device))
        for precision in [p for p in args.precisions.split(",") if p]:
            options = {
                "real_precision": precision,
                "compile": args.dc_compile if args.dc_compile == "auto" else args.dc_compile == "true",
            }
            score(
                f"ddbench DC ({precision} real side)",
                *ddbench_distill(data, draw, args.iterations, device, options, args.out),
            )
    table = [[label, f"{statistics.mean(r['acc']):.2f} ± {statistics.pstdev(r['acc']):.2f}",
              f"{len(r['draw_means'])} × {args.seeds}", " / ".join(f"{m:.1f}" for m in r["draw_means"]),
              f"{statistics.median(r['spi']):.3f}" if r["spi"] else "—"] for label, r in rows.items()]  # fmt: skip
    headers = [
        f"Fashion-MNIST IPC 1, {args.iterations} it",
        "accuracy %",
        "draws × eval seeds",
        "mean per draw",
        "s/it (median over draws)",
    ]
    print(tabulate(table, headers=headers, tablefmt="github"))
    print(
        f"\ncommand: python {' '.join(shlex.quote(a) for a in sys.argv)}  (torch threads: {torch.get_num_threads()}, device: {device})"
    )


if __name__ == "__main__":
    main()
