"""Synthetic sets round-trip through safetensors + JSON and render a PNG grid."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from ddbench.engine.image_grid import class_names_for, grid_image
from ddbench.engine.synthetic import GRID_FILE, TENSORS_FILE, SyntheticSet, load_synthetic_dataset
from ddbench.errors import CorruptFileError, DataNotFoundError


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


def _coloured(n_classes: int, ipc: int, res: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat images whose colour encodes (class, index): red = class, green = index within the class."""
    labels = torch.arange(n_classes).repeat_interleave(ipc)
    index = torch.arange(ipc).repeat(n_classes)
    colours = torch.stack([(labels + 1) / 20, (index + 1) / 60, torch.full_like(labels, 0.5, dtype=torch.float)], dim=1)
    return colours.view(-1, 3, 1, 1).expand(-1, 3, res, res).clone(), labels


def _tile_boxes(grid: Image.Image, n_classes: int, ipc: int) -> dict[tuple[int, int], tuple[int, int, int, int]]:
    """(class, index) → the bounding box (x0, y0, x1, y1) of the pixels of that image's colour."""
    pixels = np.asarray(grid.convert("RGB")).astype(int)
    boxes = {}
    for c in range(n_classes):
        for i in range(ipc):
            colour = [round((c + 1) / 20 * 255), round((i + 1) / 60 * 255), round(0.5 * 255)]
            ys, xs = np.nonzero((np.abs(pixels - colour) <= 1).all(axis=2))
            assert len(xs), f"image {i} of class {c} is not in the grid"
            boxes[(c, i)] = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
    return boxes


def test_grid_at_ipc_1_is_one_row_of_classes_under_their_names():
    images, labels = _coloured(n_classes=10, ipc=1)
    grid = grid_image(images, labels, [f"c{i}" for i in range(10)])
    boxes = _tile_boxes(grid, 10, 1)
    tops = {box[1] for box in boxes.values()}
    assert len(tops) == 1, "every class in the same row"
    lefts = [boxes[(c, 0)][0] for c in range(10)]
    assert lefts == sorted(lefts) and len(set(lefts)) == 10, "classes left to right in order"
    assert all(box[2] - box[0] == 64 for box in boxes.values()), "8-px images enlarged ×8"
    assert grid.width > 10 * 64 and grid.height < 2 * 64, "a strip, not a column"
    # the names are drawn above the images: dark text pixels over each image, none below
    pixels = np.asarray(grid.convert("L"))
    top = tops.pop()
    for c in range(10):
        x0, _, x1, _ = boxes[(c, 0)]
        assert (pixels[:top, x0:x1] < 128).any(), f"no caption above class {c}"


def test_grid_at_ipc_10_has_a_row_per_class_with_its_name_at_the_left():
    images, labels = _coloured(n_classes=3, ipc=10)
    grid = grid_image(images, labels, ["T-shirt/top", "Trouser", "Ankle boot"])
    boxes = _tile_boxes(grid, 3, 10)
    for c in range(3):
        assert len({boxes[(c, i)][1] for i in range(10)}) == 1, f"class {c} in one row"
        lefts = [boxes[(c, i)][0] for i in range(10)]
        assert lefts == sorted(lefts) and len(set(lefts)) == 10
    assert boxes[(0, 0)][1] < boxes[(1, 0)][1] < boxes[(2, 0)][1], "classes top to bottom"
    first_image_x = boxes[(0, 0)][0]
    pixels = np.asarray(grid.convert("L"))
    for c in range(3):
        _, y0, _, y1 = boxes[(c, 0)]
        assert (pixels[y0:y1, :first_image_x] < 128).any(), f"no name left of class {c}"
    # the label column is as wide as the longest name
    longer = grid_image(images, labels, ["T-shirt/top", "Trouser", "A much longer class name"])
    assert longer.width > grid.width and longer.height == grid.height


def test_saved_grid_shows_the_class_names_from_the_metadata(tmp_path):
    named = _set(n_classes=3, ipc=2, channels=3)
    named.metadata["class_names"] = ["cat", "dog", "bird"]
    named.save(tmp_path / "a")
    named.metadata["class_names"] = ["a much longer name", "dog", "bird"]
    named.save(tmp_path / "b")
    first, second = Image.open(tmp_path / "a" / GRID_FILE), Image.open(tmp_path / "b" / GRID_FILE)
    assert second.width > first.width and second.height == first.height
    assert class_names_for([0, 2, 5], ["x", "y", "z"]) == ["x", "z", "class 5"]


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
