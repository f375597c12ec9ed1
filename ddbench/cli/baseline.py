"""`ddbench baseline`: the full-data baseline of a dataset × evaluators × protocol, into the store.

Imports only click at module level: `ddbench --help` stays free of torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ddbench.cli._completion import plugin_names
from ddbench.engine.soft_labels import DEFAULT_TEACHER_EPOCHS
from ddbench.util._console import stderr_console
from ddbench.util.click_options import data_and_device_options

console = stderr_console()


@click.command()
@click.option(
    "--dataset",
    default="fashion-mnist",
    show_default=True,
    shell_complete=plugin_names("dataset"),
    help="The dataset whose training split is trained on.",
)
@click.option(
    "--evaluators",
    "evaluators",
    multiple=True,
    default=("convnet",),
    show_default=True,
    shell_complete=plugin_names("evaluator", "unseen"),
    help="Evaluator names; 'unseen' = alexnet,vgg11,resnet18,vit.",
)
@click.option(
    "--seeds",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Number of seeds (0..N-1); each trains on the whole training split.",
)
@click.option(
    "--protocol",
    default="dc",
    show_default=True,
    help="The protocol whose optimiser, batch size, schedule and augmentation train it.",
)
@click.option(
    "--epochs",
    type=click.IntRange(min=1),
    default=DEFAULT_TEACHER_EPOCHS,
    show_default=True,
    help="Epochs on the training split, recorded with the score (dc[epochs=2]); the default teacher's, so its seed-0 network is that teacher.",
)
@click.option("--res", type=int, default=None, help="Dataset resolution (ImageNet subsets: 128 or 256).")
@click.option(
    "--test-size",
    type=click.IntRange(min=1),
    default=None,
    help="Score on the first N test images only (to match --budget smoke runs).",
)
@click.option(
    "--train-per-class",
    type=click.IntRange(min=1),
    default=None,
    help="Train on the first N training images of each class only (stated on the leaderboard).",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("ddbench-out"),
    show_default=True,
    help="Output directory (results.sqlite; the networks in cache/full-data/).",
)
@data_and_device_options
def baseline(**opts: Any) -> None:
    """Train each evaluator on the whole real training split and store its test accuracy.

    The full-data reference of `ddbench leaderboard --reference` (the gap to full data, DD-Ranking's
    HLR). Each dataset × evaluator × protocol × epochs × seed is trained once: the networks are
    cached in OUT/cache/full-data/ (a seed-0 network is also the soft-label teacher of the same
    settings) and stored scores are reused.

    \b
    Examples:
      ddbench baseline --dataset fashion-mnist --evaluators convnet
      ddbench baseline --dataset fashion-mnist --evaluators convnet --train-per-class 500 --test-size 2000 --epochs 1
    """
    from ddbench.engine.protocols import get_protocol
    from ddbench.results.store import FULL_DATA, ResultsStore, store_path
    from ddbench.running.full_baseline import run_full_data_baseline
    from ddbench.running.grid import check_names, expand_evaluators, split_values
    from ddbench.running.pipeline import resolve_device
    from ddbench.running.scoring import data_fingerprint, load_data
    from ddbench.util.progress import make_progress

    device = str(resolve_device(opts["device"]))
    evaluators = tuple(expand_evaluators(split_values(opts["evaluators"])))
    check_names("evaluator", evaluators)
    check_names("dataset", [opts["dataset"]])
    get_protocol(opts["protocol"])
    data = load_data(
        opts["dataset"], opts["data_root"], opts["res"], opts["download"], opts["test_size"], opts["train_per_class"]
    )
    fingerprint = data_fingerprint(opts["dataset"], opts["data_root"], opts["res"])
    say = lambda text: console.print(text, highlight=False, markup=False)  # noqa: E731 - keys like dc[epochs=2] are not markup
    say(f"full-data baseline: {data.name}, {len(data.train_labels)} training images, {opts['epochs']} epoch(s) of {opts['protocol']}, "
        f"{len(data.test_labels)} test images")  # fmt: skip
    with ResultsStore(store_path(opts["out"])) as store, make_progress(opts["progress"], console) as bar:
        frame = run_full_data_baseline(
            data, store, opts["out"], evaluators=evaluators, seeds=tuple(range(opts["seeds"])), protocol=opts["protocol"],
            epochs=opts["epochs"], fingerprint=fingerprint, res=opts["res"], test_size=opts["test_size"],
            train_per_class=opts["train_per_class"], device=device, progress=bar, say=say,
        )  # fmt: skip
    for evaluator, part in frame.groupby("evaluator", sort=False):
        say(f"{evaluator}: {100 * part['accuracy'].mean():.2f} % mean over {len(part)} seed(s) ({part['protocol'].iloc[0]}), "
            f"run {part['run_id'].iloc[0]} ({FULL_DATA})")  # fmt: skip
    say(f"`ddbench leaderboard --out {opts['out']} --reference` uses it as the full-data reference.")
