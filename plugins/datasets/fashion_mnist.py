"""Fashion-MNIST (Xiao et al., 2017) from its four idx ``.gz`` files: the CPU default dataset."""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import torch

from ddbench.interfaces import DatasetPlugin, RealData
from ddbench.util.fingerprint import files_digest

from . import _common as common

#: Debian's ``dataset-fashion-mnist`` package installs the files here
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")

TRAIN_IMAGES = "train-images-idx3-ubyte.gz"
TRAIN_LABELS = "train-labels-idx1-ubyte.gz"
TEST_IMAGES = "t10k-images-idx3-ubyte.gz"
TEST_LABELS = "t10k-labels-idx1-ubyte.gz"
FILES = (TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS)

CLASS_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
SIZE = 28

#: idx type code for unsigned bytes, the only element type Fashion-MNIST uses
_UBYTE = 0x08


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """An idx file of unsigned bytes with ``ndim`` dimensions, validated against its header."""
    try:
        with gzip.open(path, "rb") as handle:
            raw = bytearray(handle.read())
    except (OSError, EOFError, zlib.error) as err:
        raise common.CorruptDataError(
            f"{path} is not a complete gzip file ({err}); download it again or restore it from the package"
        ) from err
    expected_magic = (_UBYTE << 8) | ndim
    header = 4 + 4 * ndim
    magic = int.from_bytes(raw[:4], "big") if len(raw) >= 4 else None
    if magic != expected_magic or len(raw) < header:
        found = f"0x{magic:08x}" if magic is not None else f"only {len(raw)} bytes"
        raise common.CorruptDataError(
            f"{path} is not an idx file of {ndim}-D unsigned bytes: expected magic number 0x{expected_magic:08x} "
            f"but found {found}; the file is corrupt or not what its name says, download it again"
        )
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    if len(raw) - header != math.prod(dims):
        raise common.CorruptDataError(
            f"{path} is truncated or padded: its header promises shape {dims} ({math.prod(dims)} bytes) but it "
            f"holds {len(raw) - header} bytes of data; download it again"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def read_split(directory: Path, images_name: str, labels_name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 (N, 1, 28, 28) images and int64 labels of one split, cross-checked."""
    images = read_idx(directory / images_name, 3)
    labels = read_idx(directory / labels_name, 1)
    if images.shape[1:] != (SIZE, SIZE):
        raise common.CorruptDataError(
            f"{directory / images_name} holds {images.shape[1]}x{images.shape[2]} images, expected {SIZE}x{SIZE}; "
            f"this is not Fashion-MNIST"
        )
    if len(images) != len(labels):
        raise common.CorruptDataError(
            f"{directory / images_name} has {len(images)} images but {directory / labels_name} has {len(labels)} "
            f"labels; the two files come from different downloads, fetch both again"
        )
    if len(labels) and int(labels.max()) >= len(CLASS_NAMES):
        raise common.CorruptDataError(
            f"{directory / labels_name} contains label {int(labels.max())}, but Fashion-MNIST has "
            f"{len(CLASS_NAMES)} classes (0-{len(CLASS_NAMES) - 1}); download it again"
        )
    return torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64))


def download_files(directory: Path) -> None:
    """Fetch the four files (checksummed) with torchvision's downloader into ``directory``."""
    from torchvision.datasets import FashionMNIST as TorchvisionFashionMNIST
    from torchvision.datasets.utils import download_url

    directory.mkdir(parents=True, exist_ok=True)
    for filename, md5 in TorchvisionFashionMNIST.resources:
        if (directory / filename).is_file():
            continue
        errors = []
        for mirror in TorchvisionFashionMNIST.mirrors:
            try:
                download_url(mirror + filename, str(directory), filename=filename, md5=md5)
                break
            except Exception as err:  # noqa: BLE001 - try the next mirror, report all failures below
                errors.append(f"{mirror}: {err}")
        else:
            raise common.DataNotFoundError(
                f"Could not download {filename} into {directory}: {'; '.join(errors)}. "
                f"Install Debian's dataset-fashion-mnist package instead, or copy the files there by hand"
            )


class FashionMNIST(DatasetPlugin):
    """Fashion-MNIST: 60 000 train / 10 000 test grayscale 28x28 images of 10 clothing classes."""

    name = "fashion-mnist"
    description = "Fashion-MNIST, 10 classes, 28x28 grayscale (60k train / 10k test); the CPU default"
    display_order = 0
    resolutions = (SIZE,)
    version = 1

    def fingerprint(self, root: str | None = None, res: int | None = None) -> str:
        """The four idx files' bytes (digests cached: cheap on every run)."""
        directory = Path(self.locate(root))
        return files_digest([directory / name for name in FILES], directory)

    def places(self, root: str | os.PathLike[str] | None = None) -> list[common.Place]:
        return common.search_places(
            root,
            "fashion-mnist",
            common.data_home_place("fashion-mnist"),
            common.Place(DEBIAN_DIR, "Debian package dataset-fashion-mnist"),
        )

    def locate(self, root: str | os.PathLike[str] | None = None) -> str:
        path = common.locate_first(
            self.name,
            self.places(root),
            lambda directory: common.missing_files(directory, FILES),
            how_to_get=[
                "sudo apt-get install dataset-fashion-mnist (installs them under /usr/share/datasets/fashion-mnist)",
                f"or put the four idx .gz files ({', '.join(FILES)}) in a directory and pass it with --data-root",
                f"or pass --download to fetch them into {common.data_home() / 'fashion-mnist'}",
            ],
        )
        return str(path)

    def load(self, root: str | None = None, res: int | None = None, download: bool = False) -> RealData:
        self.resolution_for(res)
        try:
            directory = Path(self.locate(root))
        except common.DataNotFoundError:
            if not download:
                raise
            download_files(common.data_home() / "fashion-mnist")
            directory = Path(self.locate(root))
        train_images, train_labels = read_split(directory, TRAIN_IMAGES, TRAIN_LABELS)
        test_images, test_labels = read_split(directory, TEST_IMAGES, TEST_LABELS)
        mean, std = common.channel_stats(train_images)
        return RealData(
            name=self.name,
            train_images=train_images,
            train_labels=train_labels,
            test_images=test_images,
            test_labels=test_labels,
            class_names=list(CLASS_NAMES),
            mean=mean,
            std=std,
        )
