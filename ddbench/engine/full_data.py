"""Networks trained on the real training split, cached: soft-label teachers and the full-data baseline.

One evaluator architecture trained ``epochs`` epochs with an evaluation protocol's optimiser, batch
size, schedule and augmentation (the protocol's epochs are replaced: full data on a CPU is
expensive, so the number is a stated setting), seed fixed. The weights are cached under
``<out>/cache/full-data/`` as safetensors, keyed by the dataset's identity (its file fingerprint, or
a digest of the training images where there is none, with the number of training images), the
architecture, protocol, epochs and seed; the key is also in the file, so a file that does not
match, or cannot be read, is trained again (with a line saying so) and replaced atomically.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ddbench import registry
from ddbench.engine.protocols import get_protocol
from ddbench.engine.training import test_accuracy, train_classifier
from ddbench.interfaces import RealData
from ddbench.util.fileio import FileLock, safe_name, write_atomic
from ddbench.util.progress import ProgressArg

CACHE_DIR = "full-data"
#: bump when training on full data changes what a given key produces
TRAINING_VERSION = 1
_METADATA_KEY = "ddbench.engine.full_data"

Say = Callable[[str], None]


def data_identity(data: RealData, fingerprint: str | None) -> str:
    """What the training split is: the dataset's file fingerprint, else a digest of its images and labels."""
    if fingerprint:
        return fingerprint
    digest = hashlib.sha256()
    for tensor in (data.train_images, data.train_labels):
        digest.update(f"{tuple(tensor.shape)}|{tensor.dtype}|".encode())
        digest.update(tensor.contiguous().numpy().tobytes())
    return f"content:{digest.hexdigest()[:32]}"


@dataclasses.dataclass(frozen=True)
class FullDataKey:
    """Everything that decides the trained network."""

    dataset: str
    resolution: int
    data: str  # `data_identity`
    n_train: int
    evaluator: str
    protocol: str
    epochs: int
    seed: int

    @classmethod
    def of(
        cls, data: RealData, fingerprint: str | None, evaluator: str, protocol: str, epochs: int, seed: int
    ) -> FullDataKey:
        return cls(
            data.name,
            data.resolution,
            data_identity(data, fingerprint),
            len(data.train_labels),
            evaluator,
            protocol,
            int(epochs),
            int(seed),
        )

    def as_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "version": TRAINING_VERSION}

    @property
    def file_name(self) -> str:
        digest = hashlib.sha256(json.dumps(self.as_dict(), sort_keys=True).encode()).hexdigest()[:16]
        return f"{safe_name(self.dataset)}-{safe_name(self.evaluator)}-{safe_name(self.protocol)}-e{self.epochs}-s{self.seed}-{digest}.safetensors"


def cache_path(cache_dir: str | Path, key: FullDataKey) -> Path:
    return Path(cache_dir) / CACHE_DIR / key.file_name


def _build(key: FullDataKey, data: RealData) -> tuple[nn.Module, Any]:
    plugin = registry.create("evaluator", key.evaluator)
    plugin.check_input(data.channels, data.resolution)
    torch.manual_seed(key.seed)  # the initialisation is reproducible per seed
    return plugin.build(data.channels, data.num_classes, data.resolution), plugin


def train_on_real(
    data: RealData, key: FullDataKey, device: torch.device | str = "cpu", progress: ProgressArg = None
) -> nn.Module:
    """``key.evaluator`` trained on ``data``'s whole training split as ``key`` says (no cache)."""
    model, plugin = _build(key, data)
    proto = get_protocol(key.protocol)
    train_classifier(
        model,
        data.train_images,
        data.train_labels,
        proto.with_overrides(epochs=key.epochs, lr=float(plugin.protocol_lrs.get(proto.name, proto.lr))),
        seed=key.seed,
        device=device,
        progress=progress,
        normalise=data.normalise,
        description=f"full data {key.evaluator} seed {key.seed}",
    )
    return model.eval()


def _load(path: Path, key: FullDataKey, data: RealData, say: Say) -> nn.Module | None:
    if not path.exists():
        return None
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            stored = json.loads((handle.metadata() or {}).get(_METADATA_KEY, "null"))
            if stored != key.as_dict():
                raise ValueError(f"it holds {stored}, not {key.as_dict()}")
            state = {name: handle.get_tensor(name) for name in handle.keys()}
        model, _ = _build(key, data)
        model.load_state_dict(state, strict=True)
    except Exception as err:  # noqa: BLE001 - any unreadable cache is trained again, never trusted
        say(f"the cached network {path} is unusable ({type(err).__name__}: {err}); training it again")
        return None
    return model.eval()


def _save(path: Path, key: FullDataKey, model: nn.Module) -> None:
    from safetensors.torch import save_file

    state = {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}
    write_atomic(path, lambda tmp: save_file(state, str(tmp), metadata={_METADATA_KEY: json.dumps(key.as_dict())}))


def full_data_model(
    data: RealData,
    key: FullDataKey,
    cache_dir: str | Path | None,
    device: torch.device | str = "cpu",
    progress: ProgressArg = None,
    say: Say = lambda _: None,
) -> nn.Module:
    """The network ``key`` describes, from the cache when it is there, else trained and cached
    (``cache_dir`` None: trained and not kept). Processes that want the same network queue on a
    lock, so it is trained once."""
    if cache_dir is None:
        say(f"training {key.evaluator} on {key.n_train} real training images, {key.epochs} epoch(s) (not cached)")
        return train_on_real(data, key, device, progress)
    path = cache_path(cache_dir, key)
    model = _load(path, key, data, say)
    if model is not None:
        return model
    lock = FileLock(path.with_name(path.name + ".lock"))
    lock.acquire(blocking=True)
    with lock:
        model = _load(path, key, data, lambda _: None)  # another process may have trained it meanwhile
        if model is not None:
            return model
        say(
            f"training {key.evaluator} on {key.n_train} real training images, {key.epochs} epoch(s), seed {key.seed} → {path}"
        )
        model = train_on_real(data, key, device, progress)
        _save(path, key, model)
    return model


def real_test_accuracy(model: nn.Module, data: RealData, device: torch.device | str = "cpu") -> float:
    return test_accuracy(model, data.test_images, data.test_labels, data.normalise, device=device)


__all__ = [
    "FullDataKey",
    "data_identity",
    "full_data_model",
    "train_on_real",
    "cache_path",
    "real_test_accuracy",
    "CACHE_DIR",
]
