"""Between a generator's images and the dataset's: [−1, 1] ↔ dataset-standardised, grey ↔ RGB, size.

GLaD and LD3M both decode to [−1, 1] at their model's channels and size; the engine and matchers
see images standardised with the dataset's own mean/std at its channels and resolution (the
reference code's mismatched statistics are a defect, not a feature).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ddbench.errors import InvalidOptionError
from ddbench.interfaces import RealData


def match_channels(x: Tensor, channels: int) -> Tensor:
    """Grey ↔ RGB: repeat a single channel, or average three."""
    if x.shape[1] == channels:
        return x
    if x.shape[1] == 1:
        return x.expand(-1, channels, -1, -1)
    if channels == 1:
        return x.mean(dim=1, keepdim=True)
    raise InvalidOptionError(f"Cannot convert {x.shape[1]}-channel images to {channels} channels")


def resize(x: Tensor, side: int) -> Tensor:
    if x.shape[-1] == side and x.shape[-2] == side:
        return x
    return F.interpolate(x, size=(side, side), mode="bilinear", antialias=True, align_corners=False)


class DataImageSpace:
    """A dataset's channels, resolution and statistics on a device, with the conversions to and from [−1, 1]."""

    def __init__(self, data: RealData, device: torch.device) -> None:
        self.channels, self.resolution = data.channels, data.resolution
        self.mean = torch.tensor(data.mean, device=device).view(1, -1, 1, 1)
        self.std = torch.tensor(data.std, device=device).view(1, -1, 1, 1)

    def from_generator(self, images: Tensor) -> Tensor:
        """Generator output in [−1, 1] → standardised images at the data's channels and resolution.

        Not clamped to [0, 1] (the reference code clamps), so gradients reach pixels out of range.
        """
        x = resize(match_channels(images, self.channels), self.resolution)
        return ((x + 1) / 2 - self.mean) / self.std

    def to_generator(self, images: Tensor, channels: int, side: int) -> Tensor:
        """Standardised images → [−1, 1] at a model's channels and side (e.g. an encoder's input)."""
        x = (images * self.std + self.mean) * 2 - 1
        return resize(match_channels(x, channels), side)
