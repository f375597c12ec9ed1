"""Shared fixtures: tiny in-memory datasets and the real Fashion-MNIST when Debian's package is present."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from ddbench.interfaces import RealData
from ddbench.testing import tiny_data as contract_tiny_data

FMNIST_DIR = Path("/usr/share/datasets/fashion-mnist")

# Two cores shared by everything: keep each test process from oversubscribing them.
torch.set_num_threads(min(2, os.cpu_count() or 1))


def make_tiny_data(
    num_classes: int = 3, per_class: int = 12, channels: int = 1, res: int = 16, seed: int = 0
) -> RealData:
    """Random uint8 images with a class-dependent brightness, so classes are learnable."""
    return contract_tiny_data(
        num_classes, per_class, channels, res, seed, test_per_class=max(2, per_class // 3), name="tiny"
    )


@pytest.fixture
def tiny_data() -> RealData:
    return make_tiny_data()


def _require_fmnist() -> None:
    if not (FMNIST_DIR / "train-images-idx3-ubyte.gz").exists():
        pytest.skip("Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")


@pytest.fixture
def fmnist_available() -> bool:
    _require_fmnist()
    return True


@pytest.fixture(scope="session")
def fmnist_slice(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real Fashion-MNIST slice in idx format: the first 12 training images of each class, 40 test images.

    End-to-end tests point ``--data-root`` here: the real data and reader, at a size that keeps CI fast.
    """
    _require_fmnist()
    import numpy as np
    from ddbench_plugins.datasets.fashion_mnist import read_split
    from fixtures_data import write_idx_gz

    out = tmp_path_factory.mktemp("fmnist")
    for images_name, labels_name, test in (
        ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", False),
        ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz", True),
    ):
        images, labels = (np.asarray(a) for a in read_split(FMNIST_DIR, images_name, labels_name))
        idx = np.arange(40) if test else np.concatenate([np.nonzero(labels == c)[0][:12] for c in range(10)])
        write_idx_gz(out / images_name, images[idx].reshape(-1, 28, 28))
        write_idx_gz(out / labels_name, labels[idx])
    return out
