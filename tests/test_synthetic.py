"""Synthetic sets round-trip through safetensors + JSON and render a PNG grid."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from ddbench.errors import CorruptFileError, DataNotFoundError
from ddbench.synthetic import GRID_FILE, TENSORS_FILE, SyntheticSet, load_synthetic_dataset


def _set(n_classes=3, ipc=2, channels=1, res=8) -> SyntheticSet:
    torch.manual_seed(0)
    return SyntheticSet(
        images=torch.randn(n_classes * ipc, channels, res, res),
        labels=torch.arange(n_classes).repeat_interleave(ipc),
        latents={"param.images": torch.randn(n_classes * ipc, channels, res, res)},
        metadata={"mean": [0.5] * channels, "std": [0.25] * channels, "matcher": {"lr": 0.01}},
    )


def test_round_trip(tmp_path):
    original = _set()
    original.save(tmp_path)
    loaded = SyntheticSet.load(tmp_path)
    assert torch.equal(loaded.images, original.images)
    assert torch.equal(loaded.labels, original.labels)
    assert torch.equal(loaded.latents["param.images"], original.latents["param.images"])
    assert loaded.metadata["matcher"] == {"lr": 0.01}
    dataset = load_synthetic_dataset(tmp_path)
    image, label = dataset[3]
    assert image.shape == (1, 8, 8) and int(label) == 1


def test_grid_has_one_row_per_class_and_is_upscaled(tmp_path):
    _set(n_classes=3, ipc=2, channels=3, res=8).save(tmp_path)
    grid = Image.open(tmp_path / GRID_FILE)
    # 8-px images upscaled ×8 to 64 px, 2 per row, 3 rows, padding 2
    assert grid.size == (2 * 64 + 3 * 2, 3 * 64 + 4 * 2)


def test_missing_and_corrupt_sets_give_clear_errors(tmp_path):
    with pytest.raises(DataNotFoundError, match="ddbench run"):
        SyntheticSet.load(tmp_path)
    _set().save(tmp_path)
    (tmp_path / TENSORS_FILE).write_bytes(b"garbage")
    with pytest.raises(CorruptFileError, match="--force"):
        SyntheticSet.load(tmp_path)


def test_nan_images_are_refused():
    with pytest.raises(ValueError, match="NaN"):
        SyntheticSet(torch.full((1, 1, 2, 2), float("nan")), torch.zeros(1, dtype=torch.long), {}, {})
