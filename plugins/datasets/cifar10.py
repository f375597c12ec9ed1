"""CIFAR-10 (Krizhevsky, 2009) from torchvision's on-disk format, ``cifar-10-batches-py/``."""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ddbench.interfaces import DatasetPlugin, RealData
from ddbench.util.fingerprint import files_digest

from . import _common as common

BATCH_DIR = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
META = "batches.meta"
FILES = (*TRAIN_BATCHES, TEST_BATCH, META)
SIZE = 32
NUM_CLASSES = 10


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only: a data file must not be able to run code."""

    _ALLOWED = {
        (module, name)
        for module in ("numpy.core.multiarray", "numpy._core.multiarray")
        for name in ("_reconstruct", "scalar")
    } | {("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}; a CIFAR batch holds only arrays and lists")


def read_pickle(path: Path) -> dict[str, Any]:
    """A CIFAR batch dictionary, with keys as str whatever Python pickled it (the originals are Python 2)."""
    try:
        with open(path, "rb") as handle:
            content = _ArrayUnpickler(handle, encoding="latin1").load()
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError, AttributeError) as err:
        raise common.CorruptDataError(
            f"{path} is not a readable CIFAR-10 batch ({type(err).__name__}: {err}); extract "
            f"cifar-10-python.tar.gz again or pass --download"
        ) from err
    if not isinstance(content, dict):
        raise common.CorruptDataError(f"{path} holds a {type(content).__name__}, expected a CIFAR-10 batch dictionary")
    return {key.decode("latin1") if isinstance(key, bytes) else key: value for key, value in content.items()}


def read_batches(directory: Path, names: tuple[str, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 (N, 3, 32, 32) images and int64 labels from the given batch files, concatenated."""
    images, labels = [], []
    for name in names:
        path = directory / name
        batch = read_pickle(path)
        data, batch_labels = batch.get("data"), batch.get("labels")
        if (
            not isinstance(data, np.ndarray)
            or data.dtype != np.uint8
            or data.ndim != 2
            or data.shape[1] != 3 * SIZE * SIZE
        ):
            found = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
            raise common.CorruptDataError(
                f"{path}: expected 'data' as uint8 (N, {3 * SIZE * SIZE}) but found {found}; this is not CIFAR-10"
            )
        try:
            batch_labels = np.asarray(batch_labels, dtype=np.int64).reshape(-1)
        except (TypeError, ValueError):
            batch_labels = np.zeros(0, dtype=np.int64)
        if batch_labels.shape != (len(data),):
            raise common.CorruptDataError(
                f"{path}: expected {len(data)} 'labels' (one per image) but found {len(batch_labels)}; "
                f"extract cifar-10-python.tar.gz again"
            )
        if len(batch_labels) and (batch_labels.min() < 0 or batch_labels.max() >= NUM_CLASSES):
            raise common.CorruptDataError(
                f"{path}: labels must lie in 0-{NUM_CLASSES - 1} but range over "
                f"{batch_labels.min()}..{batch_labels.max()}; this is not CIFAR-10"
            )
        # Each row is the red plane, then green, then blue, each 32x32 row-major.
        images.append(torch.from_numpy(data.reshape(-1, 3, SIZE, SIZE).copy()))
        labels.append(torch.from_numpy(batch_labels))
    return torch.cat(images), torch.cat(labels)


def read_class_names(directory: Path) -> list[str]:
    names = read_pickle(directory / META).get("label_names")
    if not isinstance(names, list) or len(names) != NUM_CLASSES:
        raise common.CorruptDataError(
            f"{directory / META}: expected {NUM_CLASSES} 'label_names' but found {names!r}; extract the archive again"
        )
    return [str(name) for name in names]


def _batch_dir(directory: Path) -> Path:
    """``directory/cifar-10-batches-py``, or ``directory`` itself when it already is that folder."""
    nested = directory / BATCH_DIR
    return nested if nested.is_dir() or directory.name != BATCH_DIR else directory


def _problem(directory: Path) -> str | None:
    batches = _batch_dir(directory)
    reason = common.missing_files(batches, FILES)
    if reason is None:
        return None
    return reason if batches == directory else f"{BATCH_DIR}/ {reason}"


class CIFAR10(DatasetPlugin):
    """CIFAR-10: 50 000 train / 10 000 test colour 32x32 images of 10 classes."""

    name = "cifar10"
    description = "CIFAR-10, 10 classes, 32x32 RGB (50k train / 10k test), torchvision's cifar-10-batches-py"
    display_order = 1
    resolutions = (SIZE,)
    version = 1

    def fingerprint(self, root: str | None = None, res: int | None = None) -> str:
        """The batch files' bytes (digests cached: cheap on every run)."""
        directory = Path(self.locate(root))
        return files_digest([directory / name for name in FILES], directory)

    def places(self, root: str | os.PathLike[str] | None = None) -> list[common.Place]:
        return common.search_places(root, "cifar10", common.data_home_place("cifar10"), common.data_home_place())

    def locate(self, root: str | os.PathLike[str] | None = None) -> str:
        directory = common.locate_first(
            self.name,
            self.places(root),
            _problem,
            how_to_get=[
                f"pass --download to fetch it with torchvision into {common.data_home() / 'cifar10'}",
                "or extract cifar-10-python.tar.gz (https://www.cs.toronto.edu/~kriz/cifar.html) and pass the "
                f"directory holding {BATCH_DIR}/ with --data-root (or set $DDBENCH_DATA)",
            ],
        )
        return str(_batch_dir(directory))

    def load(self, root: str | None = None, res: int | None = None, download: bool = False) -> RealData:
        self.resolution_for(res)
        try:
            directory = Path(self.locate(root))
        except common.DataNotFoundError:
            if not download:
                raise
            from torchvision.datasets import CIFAR10 as TorchvisionCIFAR10

            TorchvisionCIFAR10(root=str(common.data_home() / "cifar10"), train=True, download=True)
            directory = Path(self.locate(root))
        train_images, train_labels = read_batches(directory, TRAIN_BATCHES)
        test_images, test_labels = read_batches(directory, (TEST_BATCH,))
        mean, std = common.channel_stats(train_images)
        return RealData(
            name=self.name,
            train_images=train_images,
            train_labels=train_labels,
            test_images=test_images,
            test_labels=test_labels,
            class_names=read_class_names(directory),
            mean=mean,
            std=std,
        )
