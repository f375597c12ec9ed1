"""The reference DC, re-typed, against ddbench's DC at the issue's budget, on the same draws.

Fashion-MNIST, IPC 1 (``--ipc`` 10: the reference's 10 outer steps with 50 inner epochs), real
init, 50 iterations, no DSA (``--dsa``: ddbench's DSA on both). For each draw both methods start from the
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
    python benchmarks/dc_reference.py --ipc 10 --dsa --batch-real 32 --train-per-class 1000 --iterations 2 \
        --draws 0 --seeds 2 --precisions '' --variants 'bf16=real_precision:bf16,compile:true,inner_precision:bf16'

At IPC 10 the reference's inner loop is re-typed too (``reference_inner_loop``): between outer steps
the network trains ``inner`` epochs on a copy of the synthetic set, plain SGD (lr 0.01), DSA on each
batch where DSA is on.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from dc_eval_schedule import accuracy, train_reference
from ddbench_plugins.matchers.dc import layer_distance, loop_schedule
from record import emit, table
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset

from ddbench import registry
from ddbench.engine.dsa import DSA
from ddbench.engine.seeding import generator, seed_everything
from ddbench.interfaces import MatchContext, RealData

BATCH_REAL, BATCH_TRAIN, IMAGE_LR, IMAGE_MOMENTUM, NET_LR = 256, 256, 0.1, 0.5, 0.01


def initial_images(data: RealData, draw: int, ipc: int = 1) -> Tensor:
    """``ipc`` real images per class: the draw ddbench's engine makes for a spec with seed ``draw``."""
    gen = generator(draw, "real-init")
    return torch.cat([data.sample_class(c, ipc, gen) for c in range(data.num_classes)])


def parse_variants(text: str) -> dict[str, dict[str, Any]]:
    """``'label=key:value,key:value;label2'`` → {label: options}; values true/false/ints parsed."""
    variants: dict[str, dict[str, Any]] = {}
    for part in [p.strip() for p in text.split(";") if p.strip()]:
        label, _, spec = part.partition("=")
        options: dict[str, Any] = {}
        for item in [i for i in spec.split(",") if i]:
            key, _, value = item.partition(":")
            parsed: Any = {"true": True, "false": False}.get(value, value)
            if isinstance(parsed, str) and parsed.isdigit():
                parsed = int(parsed)
            options[key] = parsed
        variants[label] = options
    return variants


def reference_outer_step(
    net: torch.nn.Module,
    data: RealData,
    syn: Tensor,
    opt: torch.optim.Optimizer,
    gen: torch.Generator,
    batch_real: int = BATCH_REAL,
    dsa: DSA | None = None,
    times: dict[str, float] | None = None,
) -> float:
    """One outer step of the reference DC (``syn`` holds IPC images per class, class-major): per class
    the gradients of every parameter on ``batch_real`` real images (detached) and on the class's
    synthetic images (with graph), the same DSA draw on both; then SGD on the images. Adds each
    stage's seconds to ``times`` (``real``, ``synthetic``, ``backward``); returns the loss."""
    times = times if times is not None else {}
    device, classes = syn.device, data.num_classes
    ipc = len(syn) // classes
    params = list(net.parameters())
    criterion = torch.nn.CrossEntropyLoss()
    loss = torch.zeros((), device=device)
    for c in range(classes):
        start = time.perf_counter()
        img_real = data.sample_class(c, batch_real, gen).to(device)
        img_syn = syn[c * ipc : (c + 1) * ipc]
        if dsa is not None:
            seed = int(torch.randint(0, 2**31 - 1, ()).item())
            img_real, img_syn = dsa(img_real, seed), dsa(img_syn, seed)
        lab_real = torch.full((batch_real,), c, device=device)
        gw_real = [g.detach().clone() for g in torch.autograd.grad(criterion(net(img_real), lab_real), params)]
        middle = time.perf_counter()
        lab_syn = torch.full((ipc,), c, device=device)
        gw_syn = torch.autograd.grad(criterion(net(img_syn), lab_syn), params, create_graph=True)
        loss = loss + sum(layer_distance(r, s) for r, s in zip(gw_real, gw_syn))
        end = time.perf_counter()
        times["real"] = times.get("real", 0.0) + middle - start
        times["synthetic"] = times.get("synthetic", 0.0) + end - middle
    start = time.perf_counter()
    opt.zero_grad()
    loss.backward()
    opt.step()
    times["backward"] = times.get("backward", 0.0) + time.perf_counter() - start
    return float(loss.detach())


def reference_inner_loop(
    net: torch.nn.Module,
    net_opt: torch.optim.Optimizer,
    syn: Tensor,
    labels: Tensor,
    epochs: int,
    batch_train: int = BATCH_TRAIN,
    dsa: DSA | None = None,
) -> None:
    """The reference's inner loop: ``epochs`` epochs of the network on a copy of the synthetic set
    (a shuffling DataLoader, DSA on each batch with a fresh draw), plain SGD, fp32, eager."""
    dataset = TensorDataset(copy.deepcopy(syn.detach()), copy.deepcopy(labels.detach()))
    loader = DataLoader(dataset, batch_size=batch_train, shuffle=True, num_workers=0)
    criterion = torch.nn.CrossEntropyLoss()
    for _ in range(epochs):
        for img, lab in loader:
            if dsa is not None:
                img = dsa(img, int(torch.randint(0, 2**31 - 1, ()).item()))
            loss = criterion(net(img), lab)
            net_opt.zero_grad()
            loss.backward()
            net_opt.step()


def reference_iteration(
    context: MatchContext,
    syn: Tensor,
    opt: torch.optim.Optimizer,
    gen: torch.Generator,
    batch_real: int = BATCH_REAL,
    times: dict[str, float] | None = None,
) -> float:
    """One reference DC iteration at ``context.ipc`` (``syn`` class-major) with the reference's
    (outer, inner) loops: a fresh ConvNet, ``outer`` image steps, the inner loop between them (not
    after the last: the loop breaks before it). Returns the last loss; stage seconds go to ``times``
    (``inner`` for the inner loops)."""
    times = times if times is not None else {}
    outer, inner = loop_schedule(context.ipc)
    net = context.build_network("convnet").train()
    net_opt = torch.optim.SGD(net.parameters(), lr=NET_LR)
    labels = torch.arange(context.data.num_classes, device=syn.device).repeat_interleave(context.ipc)
    loss = float("nan")
    for step in range(outer):
        loss = reference_outer_step(net, context.data, syn, opt, gen, batch_real, context.dsa, times)
        if step == outer - 1:
            break
        start = time.perf_counter()
        reference_inner_loop(net, net_opt, syn, labels, inner, dsa=context.dsa)
        times["inner"] = times.get("inner", 0.0) + time.perf_counter() - start
    return loss


def reference_distill(
    data: RealData,
    draw: int,
    iterations: int,
    device: torch.device,
    ipc: int = 1,
    batch_real: int = BATCH_REAL,
    dsa: DSA | None = None,
) -> tuple[Tensor, float]:
    """The reference DC from ``draw``'s initial images; returns (synthetic images, s/it)."""
    seed_everything(draw)
    gen = generator(draw, "reference-real-batches")
    syn = initial_images(data, draw, ipc).to(device).requires_grad_(True)
    opt = torch.optim.SGD([syn], lr=IMAGE_LR, momentum=IMAGE_MOMENTUM)
    context = MatchContext(data=data, ipc=ipc, device=device, dsa=dsa)
    start = time.perf_counter()
    for _ in range(iterations):
        reference_iteration(context, syn, opt, gen, batch_real)
    return syn.detach(), (time.perf_counter() - start) / iterations


def ddbench_distill(
    data: RealData,
    draw: int,
    iterations: int,
    device: torch.device,
    options: dict[str, object],
    out: Path,
    ipc: int = 1,
    dsa: bool = False,
) -> tuple[Tensor, float]:
    """ddbench's DC (pixel prior, ``options``) for a spec with seed ``draw``; returns (images, s/it)."""
    from ddbench.engine.distill import Distiller
    from ddbench.engine.spec import RunSpec

    spec = RunSpec(dataset="fashion-mnist", prior="pixel", matcher="dc", ipc=ipc, iterations=iterations, dsa=dsa,
                   matcher_options=options, seed=draw)  # fmt: skip
    result = Distiller(
        spec, data, out / spec.run_id, device=device, dsa=DSA() if dsa else None, progress=False, checkpoint_every=10**9
    ).run(resume=False)
    return result.synthetic.images.to(device), result.seconds_per_iteration or float("nan")


def accuracy_table(
    rows: dict[str, dict[str, list[float]]],
    seeds: int,
    ipc: int,
    iterations: int,
    batch_real: int,
    dsa: bool,
    eval_epochs: int,
    note: str | None = None,
) -> dict[str, Any]:
    """The figure table of ``rows`` ({label: {acc, draw_means, spi}}): accuracy mean ± std over
    draws × evaluation seeds, the mean per draw, and the median s/it over draws."""
    cells = [[label, f"{statistics.mean(r['acc']):.2f} ± {statistics.pstdev(r['acc']):.2f}",
              f"{len(r['draw_means'])} × {seeds}", " / ".join(f"{m:.1f}" for m in r["draw_means"]),
              f"{statistics.median(r['spi']):.3f}" if r["spi"] else "—"] for label, r in rows.items()]  # fmt: skip
    columns = [
        f"Fashion-MNIST IPC {ipc}, {iterations} it, batch_real {batch_real}, {'DSA' if dsa else 'no DSA'}",
        "accuracy %",
        "draws × eval seeds",
        "mean per draw",
        "s/it (median over draws)",
    ]
    schedule = f"evaluation: the reference's schedule, {eval_epochs} epochs"
    return table(columns, cells, note=f"{schedule}; {note}" if note else schedule)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--draws", default="0,1,2", help="spec seeds: draws of the initial images and of the distillation"
    )
    parser.add_argument("--seeds", type=int, default=3, help="evaluation seeds per synthetic set")
    parser.add_argument("--iterations", type=int, default=50)
    parser.add_argument("--ipc", type=int, default=1)
    parser.add_argument("--batch-real", type=int, default=BATCH_REAL, help="real images per class, both methods")
    parser.add_argument("--dsa", action="store_true", help="distil with DSA (ddbench's, on both)")
    parser.add_argument("--precisions", default="fp32", help="ddbench DC real-side precision(s)")
    parser.add_argument(
        "--dc-compile", default="auto", choices=["auto", "true", "false"], help="ddbench DC's compile option"
    )
    parser.add_argument("--variants", default="", help="more ddbench DC rows: 'label=key:value,key:value;label2=…'")
    parser.add_argument(
        "--skip", default="", help="rows to leave out: 'random', 'reference' (comma-separated; ddbench rows stay)"
    )
    parser.add_argument("--eval-epochs", type=int, default=301, help="the reference schedule's epochs")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=Path("bench-out/dc-reference"))
    parser.add_argument("--train-per-class", type=int, default=None, help="a training slice (the suite: 1000)")
    parser.add_argument("--test-size", type=int, default=None, help="a test slice (smoke checks only)")
    args = parser.parse_args()
    device = torch.device(args.device)
    data = registry.create("dataset", "fashion-mnist").load().subset(args.train_per_class, args.test_size)
    test_x, test_y = data.normalise(data.test_images).to(device), data.test_labels.to(device)
    labels = torch.arange(data.num_classes, device=device).repeat_interleave(args.ipc)
    rows: dict[str, dict[str, list[float]]] = {}

    def score(label: str, images: Tensor, spi: float | None) -> None:
        row = rows.setdefault(label, {"acc": [], "draw_means": [], "spi": []})
        accs = [
            accuracy(train_reference(images, labels, seed, args.eval_epochs), test_x, test_y)
            for seed in range(args.seeds)
        ]
        row["acc"] += accs
        row["draw_means"].append(statistics.mean(accs))
        if spi is not None:
            row["spi"].append(spi)
        print(
            f"{label} draw {len(row['draw_means']) - 1}: {statistics.mean(accs):.2f} ({spi} s/it)",
            file=sys.stderr,
            flush=True,
        )

    variants: dict[str, dict[str, Any]] = {}
    for precision in [p for p in args.precisions.split(",") if p]:
        variants[f"ddbench DC ({precision} real side)"] = {
            "real_precision": precision,
            "compile": args.dc_compile if args.dc_compile == "auto" else args.dc_compile == "true",
        }
    variants.update({f"ddbench DC ({label})": options for label, options in parse_variants(args.variants).items()})
    dsa = DSA() if args.dsa else None
    for draw in [int(d) for d in args.draws.split(",")]:
        if "random" not in args.skip:
            score("random real (the initial images)", initial_images(data, draw, args.ipc).to(device), None)
        if "reference" not in args.skip:
            score(
                "reference DC, re-typed (fp32)",
                *reference_distill(data, draw, args.iterations, device, args.ipc, args.batch_real, dsa),
            )
        for label, options in variants.items():
            options = {"batch_real": args.batch_real, **options}
            score(label, *ddbench_distill(data, draw, args.iterations, device, options, args.out, args.ipc, args.dsa))
    note = f"torch threads: {torch.get_num_threads()}, device: {device}"
    emit(
        f"dc_reference_ipc{args.ipc}",
        [
            accuracy_table(
                rows, args.seeds, args.ipc, args.iterations, args.batch_real, args.dsa, args.eval_epochs, note
            )
        ],
        rows=rows,
        eval_epochs=args.eval_epochs,
        variants=variants,
    )


if __name__ == "__main__":
    main()
