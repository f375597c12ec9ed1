"""`ddbench evaluate PATH`: score a synthetic set made by another tool (or exported from ddbench).

Imports only click at module level: `ddbench --help` stays free of torch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ddbench.cli._completion import plugin_names
from ddbench.util._console import stderr_console
from ddbench.util.click_options import data_and_device_options, eval_batch_option

if TYPE_CHECKING:  # annotations only: importing them at run time would import torch
    from ddbench.engine.external import ExternalSet
    from ddbench.interfaces import RealData
    from ddbench.running.scoring import PreparedSet, Settings

console = stderr_console()


@click.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.option(
    "--dataset",
    default=None,
    shell_complete=plugin_names("dataset"),
    help="The dataset the set was distilled from (its test split scores it). [default: what a ddbench run directory says]",
)
@click.option(
    "--name", default=None, help="The label on the leaderboard (external:NAME). [default: the file or folder name]"
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
    "--seeds", type=click.IntRange(min=1), default=3, show_default=True, help="Number of evaluation seeds (0..N-1)."
)
@click.option("--protocol", default="dc", show_default=True, help="Evaluation protocol: dc, dc-noaug or glad.")
@click.option(
    "--eval-epochs", type=click.IntRange(min=1), default=None, help="Override the protocol's training epochs."
)
@click.option(
    "--range",
    "range_",
    type=click.Choice(["auto", "normalized", "unit"]),
    default="auto",
    show_default=True,
    help="Image values: normalised with the dataset's mean/std, or in [0, 1]; auto detects and prints it.",
)
@click.option(
    "--experiment",
    type=click.IntRange(min=0),
    default=None,
    help="DC/DSA/DM res_*.pt: score experiment K only. [default: each, as NAME#K]",
)
@click.option(
    "--soft-labels",
    "soft_labels",
    metavar="teacher[:ARCH]",
    default=None,
    help="Train on the soft labels of a teacher (an evaluator, default convnet) trained on the real training split and cached in --out; marked in the protocol, e.g. dc[soft=ce,teacher=convnet:2ep].",
)
@click.option(
    "--teacher-epochs",
    type=click.IntRange(min=1),
    default=None,
    help="Epochs the teacher trains on the real training split (the protocol's optimiser). [default: 2]",
)
@click.option(
    "--soft-loss",
    type=click.Choice(["ce", "kl", "argmax"]),
    default=None,
    help="Soft labels (the set's N×K, or a teacher's): soft cross-entropy (default), KL at --temperature, or (the set's) argmax as hard labels. Marked in the protocol, e.g. dc[soft=kl,T=4].",
)
@click.option(
    "--temperature",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Temperature of --soft-loss kl. [default: 4]",
)
@click.option("--res", type=int, default=None, help="Dataset resolution (ImageNet subsets: 128 or 256).")
@click.option(
    "--test-size",
    type=click.IntRange(min=1),
    default=None,
    help="Score on the first N test images only (as --budget smoke runs do).",
)
@click.option(
    "--train-per-class",
    type=click.IntRange(min=1),
    default=None,
    help="The teacher trains on the first N training images of each class only (as --budget smoke runs do).",
)
@click.option(
    "--export",
    "export_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Write the set as a class-per-folder PNG tree to this directory instead of scoring it.",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("ddbench-out"),
    show_default=True,
    help="Output directory (results.sqlite, runs/).",
)
@data_and_device_options
@eval_batch_option
def evaluate(path: Path, **opts: Any) -> None:
    """Score a synthetic set made elsewhere with ddbench's evaluators, seeds and store.

    PATH is a class-per-folder image tree, a .safetensors/.pt file with images and labels, a
    DC/DSA/DM res_*.pt, an MTT images_*.pt (+ labels_*.pt) or directory, or a ddbench run directory.
    Scoring the same images again reuses the stored scores.

    \b
    Examples:
      ddbench evaluate res_DM_FashionMNIST_ConvNet_10ipc.pt --dataset fashion-mnist --name dm-official
      ddbench evaluate mtt_logged_files/ --dataset cifar10 --name mtt-official --evaluators convnet,unseen
      ddbench evaluate pngs/ --dataset fashion-mnist --name mine --seeds 5
      ddbench evaluate pngs/ --dataset fashion-mnist --name mine --soft-labels teacher --soft-loss kl
      ddbench evaluate ddbench-out/runs/fashion-mnist/pixel-dm-ipc1-… --export pngs/
    """
    from ddbench.engine.external import export_class_folders, read_external
    from ddbench.results.store import ResultsStore, store_path
    from ddbench.running.grid import check_names
    from ddbench.running.scoring import check_name, data_fingerprint, default_name, load_data, prepare, score_prepared
    from ddbench.util.progress import make_progress

    settings = _settings(opts)
    name = check_name(opts["name"]) if opts["name"] else default_name(path)
    dataset = opts["dataset"] or _dataset_of(path)
    check_names("dataset", [dataset])
    data = load_data(
        dataset, opts["data_root"], opts["res"], opts["download"], opts["test_size"], opts["train_per_class"]
    )
    sets = read_external(path, data.class_names, data.channels, data.resolution, opts["experiment"])
    say = lambda text: console.print(text, highlight=False, markup=False)  # noqa: E731 - keys like dc[epochs=50] are not markup
    if opts["export_dir"] is not None:
        return _export(sets, data, settings, opts["export_dir"], export_class_folders, prepare, say)
    fingerprint = data_fingerprint(dataset, opts["data_root"], opts["res"])
    ready = _prepare_all(sets, name, opts["experiment"] is not None, dataset, data, settings, say)
    with ResultsStore(store_path(opts["out"])) as store, make_progress(opts["progress"], console) as bar:
        for label, found, prepared in ready:
            frame = score_prepared(
                prepared, data, label, settings, lr=found.lr, store=store, out=opts["out"], fingerprint=fingerprint,
                res=opts["res"], test_size=opts["test_size"], progress=bar, say=say,
            )  # fmt: skip
            reused = int(frame["reused"].sum())
            mean = 100 * frame["accuracy"].mean()
            say(f"{label}: {mean:.2f} % mean over {len(frame)} score(s) ({frame['protocol'].iloc[0]}), run {frame['run_id'].iloc[0]}"
                + (f"; {reused} reused from the store" if reused else ""))  # fmt: skip
    say(f"`ddbench leaderboard --out {opts['out']}` shows it beside ddbench's runs.")


def _settings(opts: Mapping[str, Any]) -> Settings:
    """The scoring settings the command's options ask for; a bad device or evaluator fails here."""
    from ddbench.running.grid import check_names, expand_evaluators, split_values
    from ddbench.running.pipeline import resolve_device
    from ddbench.running.scoring import Settings

    device = str(resolve_device(opts["device"]))  # auto → cuda or cpu; a typo fails before data loads
    evaluators = tuple(expand_evaluators(split_values(opts["evaluators"])))
    check_names("evaluator", evaluators)
    return Settings(
        evaluators=evaluators,
        seeds=tuple(range(opts["seeds"])),
        protocol=opts["protocol"],
        eval_epochs=opts["eval_epochs"],
        range=opts["range_"],
        soft_loss=opts["soft_loss"],
        temperature=opts["temperature"],
        device=device,
        soft_labels=opts["soft_labels"],
        teacher_epochs=opts["teacher_epochs"],
        train_per_class=opts["train_per_class"],
        eval_batch=opts["eval_batch"],
    )


def _prepare_all(
    sets: Sequence[ExternalSet],
    name: str,
    experiment_asked: bool,
    dataset: str,
    data: RealData,
    settings: Settings,
    say: Callable[[str], None],
) -> list[tuple[str, ExternalSet, PreparedSet]]:
    """Every set read, labelled (``name#experiment`` where there are several) and prepared for scoring."""
    from ddbench.running.scoring import prepare

    several = len(sets) > 1 or experiment_asked
    labelled = [
        (f"{name}#{found.experiment}" if found.experiment is not None and several else name, found) for found in sets
    ]
    # every set is read and checked before any is trained on: a bad experiment fails first, not last
    ready = []
    for label, found in labelled:
        say(f"{label}: {found.format} set from {found.source}" + "".join(f"; {note}" for note in found.notes))
        if found.dataset and found.dataset != dataset:
            say(f"note: the set says it was distilled from '{found.dataset}', scored here on '{dataset}'")
        ready.append((label, found, prepare(found, data, settings, say)))
    return ready


def _dataset_of(path: Path) -> str:
    """The dataset a ddbench run directory names; others need --dataset."""
    from ddbench.engine.synthetic import METADATA_FILE
    from ddbench.errors import InvalidOptionError

    meta = path / METADATA_FILE
    if path.is_dir() and meta.is_file():
        import json

        try:
            named = json.loads(meta.read_text()).get("dataset")
        except (OSError, ValueError, AttributeError):
            named = None
        if isinstance(named, str) and named:
            return named
    raise InvalidOptionError(
        f"Pass --dataset NAME, the dataset {path} was distilled from (e.g. --dataset fashion-mnist)"
    )


def _export(sets: list[Any], data: Any, settings: Any, directory: Path, export: Any, prepare: Any, say: Any) -> None:
    if len(sets) > 1:
        raise click.UsageError(f"The file holds {len(sets)} experiments; pick one with --experiment K to export it")
    prepared = prepare(sets[0], data, settings, say)
    images_01 = data.denormalise(prepared.images)
    export(images_01, prepared.labels, data.class_names, directory)
    say(
        f"wrote {len(images_01)} PNG(s) in {len(set(prepared.labels.tolist() if prepared.labels.dim() == 1 else prepared.labels.argmax(1).tolist()))} class folder(s) under {directory}"
    )
