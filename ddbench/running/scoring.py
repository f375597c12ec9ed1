"""Score a synthetic set made anywhere: `ddbench evaluate` and `ddbench.evaluate_set`.

A set is brought to what evaluation needs (normalised float images at the dataset's resolution,
hard labels or soft-label probabilities), identified by the content hash of those images and
labels, and trained on by every evaluator × seed under a protocol with the same engine and store
as ``ddbench run``. In the store it is a run of its own with prior ``external`` and matcher
``external:<name>``; its provenance (source, format, hash, resize, range) is in the run's spec.

The run id hashes the content hash, the dataset (name, resolution, data fingerprint, test subset)
and the learned lr that came with the set; scores are keyed by evaluator, seed and protocol as
``ddbench run``'s are, so scoring the same set again trains nothing.

Soft labels (the set's own, or a teacher's with ``soft_labels="teacher"``) and the protocol keys
they are stored under are `ddbench.engine.soft_labels`'.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor

from ddbench import registry
from ddbench.engine.external import SOFT_LATENT, ExternalSet
from ddbench.engine.protocols import get_protocol
from ddbench.engine.soft_labels import SoftLabels, protocol_key, teacher_soft_labels
from ddbench.engine.spec import SPEC_VERSION, cache_dir_under
from ddbench.engine.synthetic import SyntheticSet
from ddbench.engine.teacher import teacher_labels
from ddbench.errors import DataNotFoundError, InvalidOptionError
from ddbench.interfaces import RealData
from ddbench.results.store import ResultsStore
from ddbench.running.record_score import evaluate_and_record_seeds

EXTERNAL = "external"  # the pseudo-prior (and matcher prefix) external sets are stored under
RANGES = ("auto", "normalized", "unit")
SOFT_LOSSES = ("ce", "kl", "argmax")
#: bump when preparation changes what a given file evaluates as (it is part of every external run id)
IDENTITY_VERSION = 1
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+#-]{0,79}$")

Say = Callable[[str], None]


@dataclasses.dataclass
class Settings:
    """How a set is scored: the same knobs as ``ddbench run``'s evaluation."""

    evaluators: tuple[str, ...] = ("convnet",)
    seeds: tuple[int, ...] = (0, 1, 2)
    protocol: str = "dc"
    eval_epochs: int | None = None
    range: str = "auto"
    soft_loss: str | None = None  # ce, kl or argmax; None: ce for soft labels
    temperature: float | None = None
    device: str = "cpu"
    #: ``"teacher"`` or ``"teacher:ARCH"``: train on a teacher's soft labels instead of the set's labels
    soft_labels: str | None = None
    teacher_epochs: int | None = None
    #: the teacher trains on the first N training images of each class (None: all of them)
    train_per_class: int | None = None
    #: train an evaluator's seeds as one batched model; None: on a GPU only (`ddbench.engine.evaluate.resolve_batched`)
    eval_batch: bool | None = None

    def __post_init__(self) -> None:
        self.evaluators, self.seeds = tuple(self.evaluators), tuple(int(s) for s in self.seeds)
        if not self.evaluators or not self.seeds:
            raise InvalidOptionError(
                f"Expected at least one evaluator and one seed but got {self.evaluators} and {self.seeds}"
            )
        if self.range not in RANGES:
            raise InvalidOptionError(f"Expected range one of {RANGES} but got '{self.range}'")
        if self.soft_loss is not None and self.soft_loss not in SOFT_LOSSES:
            raise InvalidOptionError(f"Expected soft-label loss one of {SOFT_LOSSES} but got '{self.soft_loss}'")
        if self.temperature is not None and self.soft_loss != "kl":
            raise InvalidOptionError("--temperature applies to --soft-loss kl only; add --soft-loss kl or leave it out")
        if self.soft_labels is None and self.teacher_epochs is not None:
            raise InvalidOptionError(
                "--teacher-epochs applies to --soft-labels teacher only; add --soft-labels teacher or leave it out"
            )
        get_protocol(self.protocol)  # an unknown protocol fails before any data loads
        _ = self.teacher  # a bad --soft-labels or --soft-loss argmax with a teacher fails here, before data loads

    @property
    def teacher(self) -> SoftLabels | None:
        """The teacher's soft labels ``--soft-labels teacher[:ARCH]`` asks for (None: the set's labels)."""
        if self.soft_labels is None:
            return None
        return teacher_soft_labels(
            self.soft_labels, self.soft_loss, self.temperature, self.teacher_epochs, self.train_per_class
        )


@dataclasses.dataclass
class PreparedSet:
    """A set ready for `evaluate_synthetic`, with what was done to it."""

    images: Tensor  # float, normalised with the dataset's mean/std, (N, C, res, res)
    labels: Tensor  # int64 (N,), or float (N, K) probabilities
    soft: SoftLabels | None
    content_hash: str
    provenance: dict[str, Any]

    @property
    def ipc(self) -> int:
        hard = self.labels.argmax(1) if self.labels.dim() == 2 else self.labels
        return int(torch.bincount(hard).max())


# ---------------------------------------------------------------------------- preparation


def _prepare_images(found: ExternalSet, data: RealData, wanted: str, say: Say) -> tuple[Tensor, dict[str, Any]]:
    images = found.images.detach().cpu()
    if images.dim() == 3 and data.channels == 1:
        images = images[:, None]  # (N, H, W) grayscale
    expected_c = data.channels
    if images.dim() != 4 or images.shape[1] != expected_c:
        raise InvalidOptionError(
            f"Expected images (N, {expected_c}, H, W) for '{data.name}' ({expected_c} channel(s)) but {found.source} "
            f"holds {tuple(images.shape)}; convert them to {expected_c} channel(s)"
        )
    record: dict[str, Any] = {"resize": found.resize} if found.resize else {}
    if images.dtype == torch.uint8:
        if wanted == "normalized":
            raise InvalidOptionError(
                f"{found.source} holds uint8 images (0–255), which cannot be normalised; leave out --range"
            )
        images, used = images.float() / 255, "unit"
        say("range: uint8 images (0–255) read as [0, 1]")
    else:
        images = images.float()
        if not torch.isfinite(images).all():
            raise InvalidOptionError(f"The images in {found.source} contain NaN or inf values; fix the set")
        low, high = float(images.min()), float(images.max())
        if found.range is not None:
            if wanted != "auto" and wanted != found.range:
                raise InvalidOptionError(f"A '{found.format}' set is always {found.range}; leave out --range {wanted}")
            used = found.range
        elif wanted != "auto":
            used = wanted
            say(f"range: {used} as given (values {low:.2f}…{high:.2f})")
        else:
            used = "unit" if low >= 0 and high <= 1 else "normalized"
            other = "normalized" if used == "unit" else "unit"
            say(f"range: detected {'[0, 1]' if used == 'unit' else f'normalised with {data.name} mean/std'} "
                f"(values {low:.2f}…{high:.2f}); pass --range {other} if that is wrong")  # fmt: skip
    record["range"] = used
    size = tuple(images.shape[-2:])
    if size != (data.resolution, data.resolution):
        images = F.interpolate(
            images, size=(data.resolution, data.resolution), mode="bilinear", antialias=True, align_corners=False
        )
        record["resize"] = f"{size[1]}×{size[0]} → {data.resolution}×{data.resolution} (bilinear, antialiased)"
        say(f"resized {record['resize']}")
    if used == "unit":
        mean = torch.tensor(data.mean).view(1, -1, 1, 1)
        std = torch.tensor(data.std).view(1, -1, 1, 1)
        images = (images.clamp(0, 1) - mean) / std
    return images.contiguous(), record


def _prepare_labels(found: ExternalSet, n: int, data: RealData, soft_loss: str | None, say: Say) -> tuple[Tensor, bool]:
    """Hard labels (int64, N) or soft probabilities (float, N × K); whether they are soft."""
    labels = found.labels.detach().cpu()
    k = data.num_classes
    if labels.dim() == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.shape[0] != n:
        raise InvalidOptionError(
            f"Expected one label per image but {found.source} has {n} images and {labels.shape[0]} labels"
        )
    if labels.dim() == 1:
        if labels.is_floating_point():
            if not torch.equal(labels, labels.round()):
                raise InvalidOptionError(
                    f"Expected whole-number class ids in {found.source} but found fractional labels; soft labels are an (N, {k}) tensor"
                )
            labels = labels.long()
        labels = labels.long()
        if n and not 0 <= int(labels.min()) <= int(labels.max()) < k:
            raise InvalidOptionError(
                f"Expected labels in 0..{k - 1} ('{data.name}' has {k} classes) but {found.source} has "
                f"{int(labels.min())}..{int(labels.max())}; pass the dataset the set was distilled from"
            )
        return labels, False
    if labels.dim() != 2 or labels.shape[1] != k:
        raise InvalidOptionError(
            f"Expected labels (N,) or soft labels (N, {k}) for '{data.name}' ({k} classes) but {found.source} has {tuple(labels.shape)}"
        )
    labels = labels.float()
    if not torch.isfinite(labels).all():
        raise InvalidOptionError(f"The soft labels in {found.source} contain NaN or inf values; fix the set")
    one_hot = bool(((labels == 0) | (labels == 1)).all() and (labels.sum(1) == 1).all())
    if one_hot:
        say("labels: one-hot rows, read as hard labels")
        return labels.argmax(1), False
    if not ((labels >= 0).all() and torch.allclose(labels.sum(1), torch.ones(n), atol=1e-3)):
        labels = labels.softmax(1)
        say("soft labels: rows are not probabilities, read as logits (softmax applied)")
    if soft_loss == "argmax":
        say("soft labels: trained on their argmax (hard labels), as --soft-loss argmax asks")
        return labels.argmax(1), False
    return labels, True


def content_hash(images: Tensor, labels: Tensor) -> str:
    """sha256 of the prepared images and labels (shapes, dtypes and bytes)."""
    digest = hashlib.sha256()
    for tensor in (images, labels):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{tuple(tensor.shape)}|{tensor.dtype}|".encode())
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()


def prepare(found: ExternalSet, data: RealData, settings: Settings, say: Say = lambda _: None) -> PreparedSet:
    """``found`` as normalised images at ``data``'s resolution and checked labels, with its hash."""
    images, record = _prepare_images(found, data, settings.range, say)
    teacher = settings.teacher  # with a teacher, --soft-loss names its loss, not the set's
    labels, is_soft = _prepare_labels(found, len(images), data, None if teacher else settings.soft_loss, say)
    soft = None
    if teacher is not None:
        replaced = "the set's soft labels are replaced by " if is_soft else "trained on "
        say(f"{replaced}{teacher.describe()} (protocol marked {teacher.key})")
    elif is_soft:
        loss = settings.soft_loss if settings.soft_loss in ("ce", "kl") else "ce"
        soft = SoftLabels(
            loss, settings.temperature if settings.temperature is not None else (4.0 if loss == "kl" else 1.0)
        )
        say(
            f"soft labels: trained with {'soft cross-entropy' if loss == 'ce' else f'KL divergence at T={soft.temperature:g}'} (protocol marked {soft.key})"
        )
    elif settings.soft_loss in ("ce", "kl"):
        raise InvalidOptionError(
            f"--soft-loss {settings.soft_loss} needs soft labels (an (N, {data.num_classes}) tensor) but {found.source} has hard labels; leave it out"
        )
    digest = content_hash(images, labels)
    provenance = {
        "source": found.source,
        "format": found.format,
        "content_sha256": digest,
        **record,
        **({"experiment": found.experiment} if found.experiment is not None else {}),
        **({"lr": found.lr} if found.lr is not None else {}),
        **({"notes": found.notes} if found.notes else {}),
    }
    return PreparedSet(images, labels, soft, digest, provenance)


# ---------------------------------------------------------------------------- data and identity


def load_data(
    dataset: str,
    data_root: str | None = None,
    res: int | None = None,
    download: bool = False,
    test_size: int | None = None,
    train_per_class: int | None = None,
) -> RealData:
    """The dataset an external set is scored on (its test split, first ``test_size`` images; a
    teacher trains on its training split, the first ``train_per_class`` images of each class)."""
    data = registry.create("dataset", dataset).load(root=data_root, res=res, download=download)
    return data.subset(train_per_class, test_size) if test_size or train_per_class else data


def data_fingerprint(dataset: str, data_root: str | None, res: int | None) -> str | None:
    try:
        return registry.create("dataset", dataset).fingerprint(data_root, res)
    except (DataNotFoundError, NotImplementedError):
        return None


def external_run_id(
    prepared: PreparedSet, data: RealData, fingerprint: str | None, test_size: int | None, lr: float | None
) -> str:
    payload = {
        "v": SPEC_VERSION,
        "external": IDENTITY_VERSION,
        "content": prepared.content_hash,
        "dataset": data.name,
        "resolution": data.resolution,
        "fingerprint": fingerprint,
        "test_size": test_size,
        "lr": lr,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise InvalidOptionError(
            f"Expected --name of letters, digits and . _ + # - (at most 80, e.g. mtt-official) but got {name!r}"
        )
    return name


def default_name(path: str | Path) -> str:
    """A name from the path: its file stem or folder name, made safe."""
    stem = Path(path).stem if Path(path).suffix in (".pt", ".pth", ".safetensors") else Path(path).name
    return re.sub(r"[^A-Za-z0-9._+-]+", "-", stem).strip("-.")[:80] or EXTERNAL


# ---------------------------------------------------------------------------- scoring


def _spec_record(
    name: str, prepared: PreparedSet, data: RealData, settings: Settings, res: int | None, test_size: int | None
) -> dict[str, Any]:
    """What the store keeps as the run's spec: the fields readers expect, and the provenance."""
    return {
        "dataset": data.name,
        "prior": EXTERNAL,
        "matcher": f"{EXTERNAL}:{name}",
        "ipc": prepared.ipc,
        "res": res,
        "evaluators": list(settings.evaluators),
        "eval_seeds": list(settings.seeds),
        "protocol": settings.protocol,
        "eval_epochs": settings.eval_epochs,
        "report": "final",
        "test_size": test_size,
        "external": {"name": name, **prepared.provenance},
        "spec_version": SPEC_VERSION,
    }


def _save_run_dir(run_dir: Path, prepared: PreparedSet, data: RealData, spec: dict[str, Any], lr: float | None) -> None:
    hard = prepared.labels.argmax(1) if prepared.soft else prepared.labels
    SyntheticSet(
        images=prepared.images,
        labels=hard,
        latents={SOFT_LATENT: prepared.labels} if prepared.soft else {},
        metadata={
            "spec": spec,
            "dataset": data.name,
            "class_names": data.class_names,
            "mean": list(data.mean),
            "std": list(data.std),
            "channels": data.channels,
            "resolution": data.resolution,
            "matcher": {"lr": lr} if lr is not None else {},
            "external": spec["external"],
        },
    ).save(run_dir)


def score_prepared(
    prepared: PreparedSet,
    data: RealData,
    name: str,
    settings: Settings,
    *,
    lr: float | None = None,
    store: ResultsStore | None = None,
    out: Path | None = None,
    fingerprint: str | None = None,
    res: int | None = None,
    test_size: int | None = None,
    progress: Any = None,
    say: Say = lambda _: None,
) -> pd.DataFrame:
    """Train every evaluator × seed on ``prepared`` (skipping those ``store`` already has) and
    return one row per score: name, run_id, dataset, evaluator, seed, protocol, accuracy, reused."""
    check_name(name)
    soft = settings.teacher or prepared.soft
    key = protocol_key(settings.protocol, settings.eval_epochs, soft)
    run_id = external_run_id(prepared, data, fingerprint, test_size, lr)
    spec = _spec_record(name, prepared, data, settings, res, test_size)
    stored: dict[tuple[str, int], float] = {}
    if store is not None:
        _record_run(store, out, name, run_id, spec, prepared, data, lr, say)
        scores = store.scores_frame()
        mine = scores[(scores["run_id"] == run_id) & (scores["protocol"] == key)]
        stored = {(r.evaluator, int(r.seed)): float(r.accuracy) for r in mine.itertuples()}
    protocol = get_protocol(settings.protocol)
    labels: Tensor | None = None  # the teacher's labels are made only when something is trained
    rows = []
    for evaluator in settings.evaluators:
        for seed in settings.seeds:
            if (evaluator, seed) in stored:
                rows.append((evaluator, seed, stored[(evaluator, seed)], True))
                say(f"  {evaluator} seed {seed}: {100 * stored[(evaluator, seed)]:.2f} % (stored)")
        missing = [seed for seed in settings.seeds if (evaluator, seed) not in stored]
        if not missing:
            continue
        if labels is None:
            labels = prepared.labels if settings.teacher is None else teacher_labels(
                prepared.images, data, settings.teacher.teacher, settings.protocol,  # type: ignore[arg-type]
                cache_dir=None if store is None else cache_dir_under(out or store.path.parent),
                fingerprint=fingerprint, device=settings.device, progress=progress, say=say,
            )  # fmt: skip
        results = evaluate_and_record_seeds(
            prepared.images, labels, data, evaluator, protocol, missing, key=key, device=settings.device,
            epochs=settings.eval_epochs, lr=lr, soft=soft, store=store, run_id=run_id, progress=progress,
            batched=settings.eval_batch,
        )  # fmt: skip
        for result in results:
            rows.append((evaluator, result.seed, result.accuracy, False))
            say(f"  {evaluator} seed {result.seed}: {100 * result.accuracy:.2f} %")
    rows.sort(key=lambda row: (settings.evaluators.index(row[0]), settings.seeds.index(row[1])))
    return _scores_frame(rows, name, run_id, data.name, key)


def _record_run(
    store: ResultsStore,
    out: Path | None,
    name: str,
    run_id: str,
    spec: dict[str, Any],
    prepared: PreparedSet,
    data: RealData,
    lr: float | None,
    say: Say,
) -> None:
    """Store the set as a finished run (with a run dir) unless a finished run of it is stored."""
    existing = store.get_run(run_id)
    if existing is None or existing.get("status") != "done":
        run_dir = (out or store.path.parent) / "runs" / data.name / f"{EXTERNAL}-{name.replace('#', '-')}-{run_id}"
        store.start_run(run_id, spec, str(run_dir))
        _save_run_dir(run_dir, prepared, data, spec, lr)
        store.finish_run(run_id, 0.0, None, None)
    elif existing.get("matcher") != spec["matcher"]:
        say(f"this set is already stored as '{existing['matcher']}' (run {run_id}); its scores are shared")


_SCORE_COLUMNS = ["name", "run_id", "dataset", "evaluator", "seed", "protocol", "accuracy", "reused"]


def _scores_frame(
    rows: Sequence[tuple[str, int, float, bool]], name: str, run_id: str, dataset: str, key: str
) -> pd.DataFrame:
    """One row per (evaluator, seed, accuracy, reused) of ``rows``, with the set's name and run."""
    return pd.DataFrame(
        [
            {
                "name": name,
                "run_id": run_id,
                "dataset": dataset,
                "evaluator": e,
                "seed": s,
                "protocol": key,
                "accuracy": a,
                "reused": r,
            }
            for e, s, a, r in rows
        ],
        columns=_SCORE_COLUMNS,
    )


def evaluate_set(
    images: Tensor,
    labels: Tensor,
    *,
    dataset: str = "fashion-mnist",
    evaluators: Sequence[str] = ("convnet",),
    seeds: int | Sequence[int] = 3,
    protocol: str = "dc",
    eval_epochs: int | None = None,
    out: str | Path | None = None,
    name: str = "python",
    range: str = "auto",
    lr: float | None = None,
    soft_loss: str | None = None,
    temperature: float | None = None,
    soft_labels: str | None = None,
    teacher_epochs: int | None = None,
    train_per_class: int | None = None,
    data_root: str | None = None,
    res: int | None = None,
    test_size: int | None = None,
    device: str = "cpu",
    eval_batch: bool | None = None,
    verbose: bool = True,
) -> pd.DataFrame:
    """Score a synthetic set held in memory, as ``ddbench evaluate`` scores one on disk.

    ``images``: (N, C, H, W), uint8, in [0, 1] or normalised with the dataset's mean/std
    (``range`` says which; ``"auto"`` detects it); other sizes are resized to the dataset's
    resolution. ``labels``: class ids (N,) or soft labels (N, K), trained on with ``soft_loss``
    ``"ce"`` (default), ``"kl"`` (at ``temperature``, default 4) or ``"argmax"``. ``seeds``: a
    count (0..N-1) or the seeds. ``lr``: a learned evaluation lr (MTT) instead of the protocol's.
    ``soft_labels="teacher"`` (or ``"teacher:ARCH"``) trains on the soft labels of a teacher trained
    ``teacher_epochs`` epochs on the real training split (its first ``train_per_class`` images per
    class where given), with ``soft_loss`` ``"ce"`` or ``"kl"``; it is cached in ``out``. With ``out``, the run and its scores go into ``out/results.sqlite`` (and appear on
    ``ddbench leaderboard --out OUT`` as ``external:<name>``); a set scored before is not trained on
    again. ``eval_batch``: train an evaluator's seeds as one batched model (None: on a GPU only).
    Returns one row per evaluator × seed: name, run_id, dataset, evaluator, seed, protocol,
    accuracy (a fraction), reused.

    Example (a notebook; ``images`` in [0, 1])::

        import ddbench
        frame = ddbench.evaluate_set(images, labels, dataset="fashion-mnist", seeds=3, out="ddbench-out", name="mine")
        frame.groupby("evaluator").accuracy.agg(["mean", "std"])
    """
    from ddbench.running.pipeline import resolve_device

    settings = Settings(
        evaluators=tuple(evaluators), seeds=tuple(range_(seeds)) if isinstance(seeds, int) else tuple(seeds),
        protocol=protocol, eval_epochs=eval_epochs, range=range, soft_loss=soft_loss, temperature=temperature,
        device=str(resolve_device(device)), soft_labels=soft_labels, teacher_epochs=teacher_epochs,
        train_per_class=train_per_class, eval_batch=eval_batch,
    )  # fmt: skip
    check_name(name)
    say = _stderr_say() if verbose else (lambda _: None)
    data = load_data(dataset, data_root, res, test_size=test_size, train_per_class=train_per_class)
    found = ExternalSet(torch.as_tensor(images), torch.as_tensor(labels), "tensors", "<in memory>", lr=lr)
    prepared = prepare(found, data, settings, say)
    return _score(out, dataset, data_root, prepared, data, name, settings, lr, res, test_size, say)


def _stderr_say() -> Say:
    """Progress lines on stderr, as plain text."""
    from ddbench.util._console import stderr_console

    console = stderr_console()
    return lambda text: console.print(text, highlight=False, markup=False)


def _score(
    out: str | Path | None,
    dataset: str,
    data_root: str | None,
    prepared: PreparedSet,
    data: RealData,
    name: str,
    settings: Settings,
    lr: float | None,
    res: int | None,
    test_size: int | None,
    say: Say,
) -> pd.DataFrame:
    """`score_prepared`, with ``out/results.sqlite`` as the store when ``out`` is given (``dataset``
    and ``data_root`` fingerprint the data there)."""
    from ddbench.results.store import store_path

    if out is None:
        return score_prepared(prepared, data, name, settings, lr=lr, say=say, res=res, test_size=test_size)
    fingerprint = data_fingerprint(dataset, data_root, res)
    with ResultsStore(store_path(out)) as store:
        return score_prepared(
            prepared, data, name, settings, lr=lr, store=store, out=Path(out),
            fingerprint=fingerprint, res=res, test_size=test_size, say=say,
        )  # fmt: skip


range_ = range  # `range` is a parameter name of evaluate_set (the CLI's --range)

__all__ = [
    "evaluate_set",
    "prepare",
    "score_prepared",
    "Settings",
    "SoftLabels",
    "protocol_key",
    "content_hash",
    "load_data",
    "EXTERNAL",
]
