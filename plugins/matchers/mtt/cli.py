"""`ddbench experts`: train and store the MTT expert buffer (registered under ``ddbench.commands``)."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console

from ddbench.util.click_options import data_and_device_options


@click.command()
@click.option("--dataset", required=True, help="Dataset name (e.g. fashion-mnist, cifar10, imagenette).")
@click.option(
    "--model",
    default="convnet",
    show_default=True,
    help="Evaluator architecture the experts use (match the MTT matcher's net).",
)
@click.option(
    "--num-experts",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="Experts to have in the buffer; finished ones are kept.",
)
@click.option(
    "--epochs",
    type=click.IntRange(min=1),
    default=50,
    show_default=True,
    help="Training epochs per expert (must reach max_start_epoch + expert_epochs).",
)
@click.option(
    "--lr",
    type=click.FloatRange(min=0, min_open=True),
    default=0.01,
    show_default=True,
    help="Expert SGD learning rate (MTT's lr_teacher).",
)
@click.option("--batch-size", type=click.IntRange(min=1), default=256, show_default=True)
@click.option("--momentum", type=click.FloatRange(0, 1, max_open=True), default=0.0, show_default=True)
@click.option("--weight-decay", type=click.FloatRange(min=0), default=0.0, show_default=True)
@click.option(
    "--dsa/--no-dsa", default=True, show_default=True, help="Differentiable siamese augmentation on every batch."
)
@click.option("--seed", type=int, default=0, show_default=True, help="Expert i is seeded from (seed, i).")
@click.option("--res", type=int, default=None, help="Image resolution (ImageNet subsets: 128 or 256).")
@click.option(
    "--train-per-class",
    type=click.IntRange(min=1),
    default=None,
    help="Use only the first N training images of each class (as `ddbench run --budget smoke` does).",
)
@data_and_device_options
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("ddbench-out"),
    show_default=True,
    help="Output directory of `ddbench run`; buffers go to OUT/cache/experts.",
)
@click.option(
    "--expert-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Buffer root instead of OUT/cache/experts.",
)
def experts(
    dataset: str,
    model: str,
    num_experts: int,
    epochs: int,
    lr: float,
    batch_size: int,
    momentum: float,
    weight_decay: float,
    dsa: bool,
    seed: int,
    res: int | None,
    train_per_class: int | None,
    data_root: str | None,
    download: bool,
    out: Path,
    expert_dir: Path | None,
    device: str,
    progress: bool,
) -> None:
    """Train MTT expert trajectories on real data and store them (resumable).

    \b
    Example:
      ddbench experts --dataset fashion-mnist --model convnet --num-experts 10 --epochs 5
    """
    # torch-heavy imports here, not at module level: `ddbench --help` and completion import this module
    from ddbench_plugins.matchers.mtt.experts import ExpertBuffer, ExpertConfig, default_root

    from ddbench import registry
    from ddbench.engine.spec import cache_dir_under
    from ddbench.running.pipeline import resolve_device
    from ddbench.util.progress import make_progress

    console = Console(stderr=True)
    data = registry.create("dataset", dataset).load(root=data_root, res=res, download=download)
    if train_per_class:
        data = data.subset(train_per_class)
    config = ExpertConfig.for_data(
        data, model=model, epochs=epochs, lr=lr, batch_size=batch_size, momentum=momentum,
        weight_decay=weight_decay, dsa=dsa, seed=seed,
    )  # fmt: skip
    root = expert_dir or default_root(cache_dir_under(out))
    buffer = ExpertBuffer.at(root, config)
    done = len(buffer)
    if done:
        console.print(f"{done} finished expert(s) in {buffer.directory}; training the rest.")
    with make_progress(progress) as bar:
        task = bar.add_task(f"experts {dataset} {model}", total=num_experts, completed=min(done, num_experts))

        def finished(index: int, path: Path, seconds: float) -> None:
            bar.update(task, advance=1, loss=float("nan"))
            console.print(f"expert {index} → {path.name} ({seconds:.1f} s)", highlight=False)

        buffer.build(data, num_experts, device=resolve_device(device), on_expert_done=finished)
    click.echo(str(buffer.directory))
