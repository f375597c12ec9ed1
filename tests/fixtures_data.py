"""Tiny on-disk datasets in every format the dataset plugins read, written from scratch (never downloaded).

Each helper returns what it wrote, so a test can compare the loaded tensors with the source values.
"""

from __future__ import annotations

import gzip
import pickle
import random
import struct
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

FASHION_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


def write_idx_gz(path: Path, array: np.ndarray) -> Path:
    """An idx file of unsigned bytes: magic 0x0000080<ndim>, big-endian dims, raw data; gzipped."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = struct.pack(">I", 0x0800 | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.tobytes())
    return path


def make_fashion_mnist(directory: Path, n_train: int = 30, n_test: int = 10, seed: int = 0) -> dict[str, np.ndarray]:
    """The four Fashion-MNIST idx .gz files with random 28x28 images; every class appears in train."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n in (("train", n_train), ("test", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        rng.shuffle(labels)
        write_idx_gz(directory / FASHION_FILES[split][0], images)
        write_idx_gz(directory / FASHION_FILES[split][1], labels)
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = images, labels
    return arrays


CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def make_cifar10(directory: Path, per_batch: int = 10, n_test: int = 10, seed: int = 0) -> dict[str, np.ndarray]:
    """``directory/cifar-10-batches-py`` in torchvision's layout (pickled dicts of uint8 rows R|G|B)."""
    rng = np.random.default_rng(seed)
    batches = directory / "cifar-10-batches-py"
    batches.mkdir(parents=True, exist_ok=True)
    rows, labels = [], []
    for name, n in [(f"data_batch_{i}", per_batch) for i in range(1, 6)] + [("test_batch", n_test)]:
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        batch_labels = [int(x) for x in rng.permutation(np.arange(n) % 10)]
        with open(batches / name, "wb") as handle:
            pickle.dump(
                {
                    "batch_label": name,
                    "data": data,
                    "labels": batch_labels,
                    "filenames": [f"{i}.png" for i in range(n)],
                },
                handle,
            )
        rows.append(data)
        labels.append(np.array(batch_labels))
    with open(batches / "batches.meta", "wb") as handle:
        pickle.dump({"label_names": CIFAR_CLASSES, "num_cases_per_batch": per_batch, "num_vis": 3072}, handle)
    return {
        "train_rows": np.concatenate(rows[:5]),
        "train_labels": np.concatenate(labels[:5]),
        "test_rows": rows[5],
        "test_labels": labels[5],
    }


def label_colour(label: int) -> tuple[int, int, int]:
    """A flat RGB colour per label, far enough apart to survive JPEG compression."""
    return (20 + 22 * label, 220 - 18 * label, 60 + 12 * (label % 5))


def make_imagenet(
    root: Path,
    wnids: Sequence[str],
    n_train: int = 2,
    n_val: int = 1,
    extra_wnids: Sequence[str] = (),
    size: tuple[int, int] = (40, 30),
    seed: int = 0,
) -> None:
    """``root/train/<wnid>/*.JPEG`` and ``root/val/<wnid>/*.JPEG``; images of ``wnids[i]`` are flat
    ``label_colour(i)``. Folders are created in shuffled order, with distractor classes."""
    order = list(enumerate(wnids)) + [(len(wnids) + k, w) for k, w in enumerate(extra_wnids)]
    random.Random(seed).shuffle(order)
    for split, n in (("train", n_train), ("val", n_val)):
        for label, wnid in order:
            folder = root / split / wnid
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.new("RGB", size, label_colour(label)).save(folder / f"{wnid}_{split}_{i}.JPEG", quality=95)


def make_image_folder(
    root: Path,
    classes: Sequence[str],
    per_class: int,
    mode: str = "RGB",
    size: tuple[int, int] = (20, 12),
    suffix: str = ".png",
) -> dict[str, list[Path]]:
    """``root/<class>/<i><suffix>`` with flat images coloured by the class's sorted position."""
    written: dict[str, list[Path]] = {}
    for label, name in enumerate(sorted(classes)):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        colour = label_colour(label)
        fill = colour[0] if mode == "L" else colour
        written[name] = []
        for i in range(per_class):
            path = folder / f"{i:03d}{suffix}"
            Image.new(mode, size, fill).save(path)
            written[name].append(path)
    return written
