"""The picture of a synthetic set (``grid.png``): classes labelled, laid out for its IPC.

* IPC 1: one row of classes, each image under its class name (rows of at most `MAX_COLUMNS`
  classes when a dataset has more);
* IPC ≥ 2: one row per class, its name at the left, its images to the right.

Small images are enlarged by an integer factor (nearest neighbour, pixels kept sharp) so that a
28-px set is viewable by itself; the HTML report embeds this same picture, scaled down.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

from ddbench.util.fileio import write_atomic

#: images smaller than this are enlarged by an integer factor to at least this size
MIN_CELL = 64
#: classes per row of an IPC-1 grid
MAX_COLUMNS = 10
#: space between images, and around the grid
GAP = 2
MARGIN = 6
BACKGROUND = (255, 255, 255)
TEXT = (29, 29, 31)
#: label height relative to an image's size, with a floor that stays readable
FONT_SCALE = 0.24
MIN_FONT = 12

Font = ImageFont.ImageFont | ImageFont.FreeTypeFont


def _font(size: int) -> Font:
    try:
        return ImageFont.load_default(size=size)  # Pillow's bundled scalable font (needs FreeType)
    except (TypeError, OSError, ImportError):  # Pillow < 10.1 or no FreeType: the small bitmap font
        return ImageFont.load_default()


def _text_width(font: Font, text: str) -> int:
    left, _, right, _ = font.getbbox(text)
    return math.ceil(right - left)


def _wrap(font: Font, text: str, width: int) -> list[str]:
    """``text`` in lines no wider than ``width`` where it can break (spaces, after ``/`` or ``-``)."""
    words = [w for w in re.split(r"(?<=[ /-])", text) if w]
    lines: list[str] = []
    for word in words:
        if lines and _text_width(font, (lines[-1] + word).strip()) <= width:
            lines[-1] += word
        else:
            lines.append(word)
    return [line.strip() for line in lines] or [""]


def class_names_for(labels: Sequence[int], class_names: Sequence[str] | None) -> list[str]:
    """The name of each class index in ``labels`` (``class 3`` where no name is known)."""
    names = list(class_names or [])
    return [names[c] if 0 <= c < len(names) else f"class {c}" for c in sorted(set(labels))]


@dataclasses.dataclass(frozen=True)
class _Cells:
    """The enlarged images of one set and how its labels are drawn."""

    tiles: list[Image.Image]
    by_class: dict[int, list[int]]  # class → indices of its images, in order
    names: dict[int, str]
    font: Font
    line_height: int

    @property
    def width(self) -> int:
        return self.tiles[0].width

    @property
    def height(self) -> int:
        return self.tiles[0].height


def grid_image(
    images_01: Tensor, labels: Tensor, class_names: Sequence[str] | None = None, min_cell: int = MIN_CELL
) -> Image.Image:
    """The labelled grid of images ``(N, C, H, W)`` in [0, 1] with class ``labels`` (see the module docstring)."""
    if len(labels) == 0:
        raise ValueError("Expected at least one image to draw a grid")
    label_list = [int(v) for v in labels.tolist()]
    classes = sorted(set(label_list))
    array = (images_01.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    factor = max(1, -(-min_cell // max(array.shape[-2:])))
    tiles = [_tile(image, factor) for image in array]
    font = _font(max(MIN_FONT, round(FONT_SCALE * min(tiles[0].size))))
    ascent, descent = font.getmetrics() if isinstance(font, ImageFont.FreeTypeFont) else (11, 2)
    cells = _Cells(
        tiles=tiles,
        by_class={c: [i for i, v in enumerate(label_list) if v == c] for c in classes},
        names=dict(zip(classes, class_names_for(label_list, class_names))),
        font=font,
        line_height=ascent + descent,
    )
    if max(len(v) for v in cells.by_class.values()) == 1:
        return _one_row_of_classes(cells)
    return _classes_by_images(cells)


def _tile(image_chw: np.ndarray, factor: int) -> Image.Image:
    hwc = np.ascontiguousarray(np.transpose(image_chw, (1, 2, 0)))
    tile = Image.fromarray(hwc[:, :, 0], mode="L") if hwc.shape[2] == 1 else Image.fromarray(hwc[:, :, :3], mode="RGB")
    tile = tile.convert("RGB")
    return tile.resize((tile.width * factor, tile.height * factor), Image.Resampling.NEAREST) if factor > 1 else tile


def _one_row_of_classes(cells: _Cells) -> Image.Image:
    classes = list(cells.by_class)
    # a column is as wide as its image, or as its longest word up to two images wide
    longest_word = max(_text_width(cells.font, word) for c in classes for word in cells.names[c].split() or [""])
    column_w = max(cells.width, min(2 * cells.width, longest_word))
    captions = {c: _wrap(cells.font, cells.names[c], column_w) for c in classes}
    columns = min(MAX_COLUMNS, len(classes))
    rows = [classes[i : i + columns] for i in range(0, len(classes), columns)]
    caption_h = max(len(v) for v in captions.values()) * cells.line_height + GAP
    row_h = caption_h + cells.height + 2 * GAP
    canvas = Image.new(
        "RGB", (2 * MARGIN + columns * (column_w + GAP) - GAP, 2 * MARGIN + len(rows) * row_h - 2 * GAP), BACKGROUND
    )
    draw = ImageDraw.Draw(canvas)
    for r, row in enumerate(rows):
        top = MARGIN + r * row_h
        for k, c in enumerate(row):
            left = MARGIN + k * (column_w + GAP)
            for j, line in enumerate(captions[c]):
                x = left + (column_w - _text_width(cells.font, line)) // 2
                draw.text((x, top + j * cells.line_height), line, fill=TEXT, font=cells.font)
            canvas.paste(cells.tiles[cells.by_class[c][0]], (left + (column_w - cells.width) // 2, top + caption_h))
    return canvas


def _classes_by_images(cells: _Cells) -> Image.Image:
    ipc = max(len(v) for v in cells.by_class.values())
    label_w = max(_text_width(cells.font, name) for name in cells.names.values()) + MARGIN
    size = (
        2 * MARGIN + label_w + ipc * (cells.width + GAP) - GAP,
        2 * MARGIN + len(cells.by_class) * (cells.height + GAP) - GAP,
    )
    canvas = Image.new("RGB", size, BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    for r, (c, indices) in enumerate(cells.by_class.items()):
        top = MARGIN + r * (cells.height + GAP)
        name = cells.names[c]
        x = MARGIN + label_w - MARGIN - _text_width(cells.font, name)  # right-aligned next to the images
        draw.text((x, top + (cells.height - cells.line_height) // 2), name, fill=TEXT, font=cells.font)
        for k, i in enumerate(indices):
            canvas.paste(cells.tiles[i], (MARGIN + label_w + k * (cells.width + GAP), top))
    return canvas


def save_grid(
    images_01: Tensor,
    labels: Tensor,
    path: str | Path,
    class_names: Sequence[str] | None = None,
    min_cell: int = MIN_CELL,
) -> None:
    """Write `grid_image` as a PNG (atomically)."""
    image = grid_image(images_01, labels, class_names, min_cell)
    write_atomic(Path(path), lambda tmp: image.save(tmp, format="PNG", optimize=True))


__all__ = ["grid_image", "save_grid", "class_names_for", "MIN_CELL", "MAX_COLUMNS"]
