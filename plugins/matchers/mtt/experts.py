"""The MTT expert buffer: networks trained on real data, one trajectory of parameters per expert.

Layout under a cache root (``<out>/cache/experts`` by default, as `ddbench run` uses)::

    <dataset>-<res>px-<model>-n<train size>-<config hash>-e<epochs>/
        config.json                  the ExpertConfig (what the directory name hashes)
        expert_0000.safetensors      one tensor per parameter, shape (epochs + 1, *param.shape):
        expert_0001.safetensors      row e = the parameters after epoch e (row 0 = initialisation)

Every file is written to a temporary name and renamed into place, so a killed run leaves only
complete experts (and a stray ``.tmp`` that the next run deletes); building again skips the finished
experts and restarts the unfinished one. Expert ``i`` is seeded from ``(seed, i)``, so a resumed
buffer is identical to one built in a single go.

Experts follow the MTT protocol: SGD lr 0.01, no momentum, no weight decay, batch 256, DSA on
every batch, constant learning rate.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

from ddbench import registry
from ddbench.engine.protocols import EvalProtocol
from ddbench.engine.seeding import derive_seed, seed_everything
from ddbench.engine.spec import cache_dir_under
from ddbench.errors import CorruptFileError, InvalidOptionError
from ddbench.interfaces import RealData
from ddbench.util.fileio import FileLock, write_atomic, write_json_atomic

FORMAT = "ddbench-expert-trajectory"
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
_EXPERT_RE = re.compile(r"^expert_(\d{4,})\.safetensors$")


@dataclasses.dataclass(frozen=True)
class ExpertConfig:
    """What defines a buffer: the data, the architecture and how the experts were trained."""

    dataset: str
    resolution: int
    train_size: int  # number of real training images (a subset gives another buffer)
    model: str = "convnet"
    epochs: int = 50
    lr: float = 0.01
    batch_size: int = 256
    momentum: float = 0.0
    weight_decay: float = 0.0
    dsa: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise InvalidOptionError(
                f"Expected epochs ≥ 1, batch_size ≥ 1 and lr > 0 but got {self.epochs}, {self.batch_size}, {self.lr}"
            )

    @classmethod
    def for_data(cls, data: RealData, **kwargs: Any) -> ExpertConfig:
        return cls(dataset=data.name, resolution=data.resolution, train_size=len(data.train_labels), **kwargs)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def training_protocol(self) -> EvalProtocol:
        """How each expert is trained: SGD at a constant learning rate (the MTT reference's)."""
        return EvalProtocol(
            name="mtt-expert",
            epochs=self.epochs,
            batch_size=self.batch_size,
            lr=self.lr,
            momentum=self.momentum,
            weight_decay=self.weight_decay,
            schedule="constant",
            dsa=self.dsa,
        )

    def family_hash(self) -> str:
        """Hash of everything but ``epochs``: a longer buffer of the same family serves shorter needs."""
        fields = {k: v for k, v in self.to_dict().items() if k != "epochs"}
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:10]

    def family_prefix(self) -> str:
        return f"{self.dataset}-{self.resolution}px-{self.model}-n{self.train_size}-{self.family_hash()}"

    def directory_name(self) -> str:
        return f"{self.family_prefix()}-e{self.epochs}"


def experts_command(
    config: ExpertConfig, num_experts: int, out: str | Path | None = None, train_per_class: int | None = None
) -> str:
    """The `ddbench experts` command line that builds this buffer (quoted in error messages)."""
    parts = [
        "ddbench experts",
        f"--dataset {config.dataset}",
        f"--res {config.resolution}",
        f"--model {config.model}",
        f"--num-experts {num_experts}",
        f"--epochs {config.epochs}",
    ]
    defaults = ExpertConfig(dataset="", resolution=1, train_size=1)
    for key, flag in (
        ("lr", "--lr"),
        ("batch_size", "--batch-size"),
        ("momentum", "--momentum"),
        ("weight_decay", "--weight-decay"),
        ("seed", "--seed"),
    ):
        if getattr(config, key) != getattr(defaults, key):
            parts.append(f"{flag} {getattr(config, key)}")
    if not config.dsa:
        parts.append("--no-dsa")
    if train_per_class is not None:
        parts.append(f"--train-per-class {train_per_class}")
    if out is not None:
        parts.append(f"--out {out}")
    return " ".join(parts)


# ------------------------------------------------------------------------------- one trajectory


class ExpertTrajectory:
    """One stored expert; reads only the epochs asked for (safetensors slices)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            with safe_open(str(self.path), framework="pt") as fh:
                meta = fh.metadata() or {}
                self.names: list[str] = list(fh.keys())
                first = fh.get_slice(self.names[0]) if self.names else None
                rows = first.get_shape()[0] if first is not None else 0
        except (SafetensorError, OSError, ValueError) as err:
            raise CorruptFileError(
                f"Cannot read expert trajectory {self.path} ({err}); delete it and build the buffer again."
            ) from err
        if meta.get("format") != FORMAT:
            raise CorruptFileError(
                f"{self.path} is not a ddbench expert trajectory (format {meta.get('format')!r}); delete it."
            )
        self.metadata: dict[str, Any] = json.loads(meta.get("info", "{}"))
        self.names = json.loads(meta.get("param_names", "[]")) or self.names  # the network's order
        self.num_epochs = rows - 1

    def params_at(self, epoch: int, device: torch.device | str = "cpu") -> dict[str, Tensor]:
        """The parameters after ``epoch`` (0 = initialisation), by parameter name."""
        if not 0 <= epoch <= self.num_epochs:
            raise IndexError(f"Expert {self.path.name} has epochs 0..{self.num_epochs}, not {epoch}")
        with safe_open(str(self.path), framework="pt", device="cpu") as fh:
            return {name: fh.get_slice(name)[epoch].to(device) for name in self.names}


def save_trajectory(path: str | Path, snapshots: list[dict[str, Tensor]], info: dict[str, Any]) -> None:
    """Write one expert's snapshots (one dict per epoch, 0 = init) atomically."""
    names = list(snapshots[0])
    tensors = {name: torch.stack([s[name] for s in snapshots]).contiguous() for name in names}
    metadata = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "param_names": json.dumps(names),
        "info": json.dumps(info, sort_keys=True),
    }
    write_atomic(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


# ------------------------------------------------------------------------------------- buffer


class ExpertBuffer:
    """A directory of expert trajectories for one ExpertConfig."""

    def __init__(self, directory: str | Path, config: ExpertConfig) -> None:
        self.directory = Path(directory)
        self.config = config

    @classmethod
    def at(cls, root: str | Path, config: ExpertConfig) -> ExpertBuffer:
        return cls(Path(root) / config.directory_name(), config)

    @classmethod
    def find(cls, root: str | Path, config: ExpertConfig, num_experts: int) -> ExpertBuffer | None:
        """The buffer of ``config``'s family with at least ``config.epochs`` epochs and ``num_experts``
        finished experts (the shortest such), or None."""
        root = Path(root)
        if not root.is_dir():
            return None
        candidates = []
        for directory in root.glob(f"{config.family_prefix()}-e*"):
            try:
                stored = ExpertConfig(**json.loads((directory / CONFIG_FILE).read_text()))
            except (OSError, ValueError, TypeError):
                continue
            if stored.family_hash() != config.family_hash() or stored.epochs < config.epochs:
                continue
            buffer = cls(directory, stored)
            if len(buffer.expert_paths()) >= num_experts:
                candidates.append(buffer)
        return min(candidates, key=lambda b: b.config.epochs, default=None)

    def expert_path(self, index: int) -> Path:
        return self.directory / f"expert_{index:04d}.safetensors"

    def expert_paths(self) -> list[Path]:
        """The finished experts, in index order."""
        if not self.directory.is_dir():
            return []
        return sorted(p for p in self.directory.iterdir() if _EXPERT_RE.match(p.name))

    def __len__(self) -> int:
        return len(self.expert_paths())

    def trajectories(self, limit: int | None = None) -> list[ExpertTrajectory]:
        paths = self.expert_paths()[:limit]
        trajectories = [ExpertTrajectory(p) for p in paths]
        short = [t.path.name for t in trajectories if t.num_epochs < self.config.epochs]
        if short:
            raise CorruptFileError(
                f"Experts {short} in {self.directory} hold fewer than {self.config.epochs} epochs; delete them and build again."
            )
        return trajectories

    def _prepare(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        config_path = self.directory / CONFIG_FILE
        if config_path.exists():
            stored = json.loads(config_path.read_text())
            if stored != self.config.to_dict():
                raise CorruptFileError(f"{config_path} describes another buffer ({stored}); delete {self.directory}.")
        else:
            write_json_atomic(config_path, self.config.to_dict())
        # leftovers of a killed run: temporary files never renamed into place
        for stray in self.directory.glob(".expert_*.tmp"):
            stray.unlink(missing_ok=True)

    def build(
        self,
        data: RealData,
        num_experts: int,
        device: torch.device | str = "cpu",
        progress: Any = None,
        on_expert_done: Callable[[int, Path, float], None] | None = None,
    ) -> ExpertBuffer:
        """Train the experts missing from ``0..num_experts-1``; finished ones are kept (resume).

        ``progress`` is handed to the training loop; ``on_expert_done(index, path, seconds)`` is
        called after each expert is safely on disk.
        """
        if num_experts < 1:
            raise InvalidOptionError(f"Expected num_experts ≥ 1 but got {num_experts}")
        self._check_data(data)
        # one builder at a time (parallel sweep workers share the buffer): a second one waits, then
        # finds the experts on disk; the lock also keeps _prepare from deleting a builder's .tmp files
        with FileLock(self.directory.parent / f".{self.directory.name}.lock") as lock:
            lock.acquire(blocking=True)
            self._prepare()
            for index in range(num_experts):
                path = self.expert_path(index)
                if path.exists():
                    continue
                start = time.perf_counter()
                snapshots, accuracy = train_expert(self.config, data, index, device, progress=progress)
                info = {
                    "config": self.config.to_dict(),
                    "index": index,
                    "seconds": time.perf_counter() - start,
                    "train_accuracy": accuracy,
                }
                save_trajectory(path, snapshots, info)
                if on_expert_done is not None:
                    on_expert_done(index, path, info["seconds"])
        return self

    def _check_data(self, data: RealData) -> None:
        seen = (data.name, data.resolution, len(data.train_labels))
        wanted = (self.config.dataset, self.config.resolution, self.config.train_size)
        if seen != wanted:
            raise InvalidOptionError(f"The buffer is for (dataset, res, train size) {wanted} but the data is {seen}")


# ----------------------------------------------------------------------------------- training


def build_model(model: str, data: RealData) -> nn.Module:
    evaluator = registry.create("evaluator", model)
    evaluator.check_input(data.channels, data.resolution)
    return evaluator.build(data.channels, data.num_classes, data.resolution)


def snapshot(model: nn.Module) -> dict[str, Tensor]:
    return {name: p.detach().to("cpu", copy=True) for name, p in model.named_parameters()}


def train_expert(
    config: ExpertConfig,
    data: RealData,
    index: int,
    device: torch.device | str = "cpu",
    progress: Any = None,
) -> tuple[list[dict[str, Tensor]], float | None]:
    """Train expert ``index`` and return its parameters at every epoch (0 = init) and its final
    training accuracy when the training loop reports one."""
    from ddbench.engine.training import train_classifier

    seed_everything(derive_seed(config.seed, "expert-init", index))
    model = build_model(config.model, data).to(device)
    snapshots = [snapshot(model)]

    def on_epoch_end(epoch: int, mean_loss: float) -> None:
        snapshots.append(snapshot(model))

    stats = train_classifier(
        model,
        data.train_images,  # uint8, normalised per batch: no float copy of the whole training set
        data.train_labels,
        config.training_protocol(),
        seed=derive_seed(config.seed, "expert-train", index),
        device=device,
        progress=progress,
        on_epoch_end=on_epoch_end,
        normalise=data.normalise,
        description=f"expert {index}",
    )
    if len(snapshots) != config.epochs + 1:
        raise RuntimeError(
            f"train_classifier called on_epoch_end {len(snapshots) - 1} times for {config.epochs} epochs"
        )
    return snapshots, (stats.accuracies[-1] if stats.accuracies else None)


def default_root(cache_dir: str | Path | None) -> Path:
    """Where buffers live: ``<cache_dir>/experts`` (the run's cache), else ``ddbench-out/cache/experts``."""
    return Path(cache_dir or cache_dir_under("ddbench-out")) / "experts"


def balanced_per_class(data: RealData) -> int | None:
    """Images per class when every class has the same count (what `--train-per-class` reproduces)."""
    counts = {len(data.class_indices(c)) for c in range(data.num_classes)}
    return counts.pop() if len(counts) == 1 else None


def missing_buffer_message(config: ExpertConfig, num_experts: int, root: Path, data: RealData) -> str:
    out_hint = str(root.parent.parent) if root.name == "experts" and root.parent.name == "cache" else None
    command = experts_command(config, num_experts, out_hint, balanced_per_class(data))
    if out_hint is None:
        command += f" --expert-dir {root}"
    return (
        f"No expert buffer with {num_experts} experts of ≥ {config.epochs} epochs for {config.dataset} "
        f"({config.resolution} px, {config.train_size} training images, {config.model}) under {root}. Build it with\n"
        f"  {command}\n"
        "or pass --algo-opt build_experts=true to build it as part of the run."
    )


__all__ = [
    "ExpertConfig",
    "ExpertTrajectory",
    "ExpertBuffer",
    "save_trajectory",
    "train_expert",
    "experts_command",
    "default_root",
    "missing_buffer_message",
    "balanced_per_class",
]
