"""The baseline every table compares against: randomly selected real images, not distilled."""

from __future__ import annotations

import torch
from torch import Tensor

from ddbench.interfaces import Matcher, RealSampler


class RandomReal(Matcher):
    name = "real"
    description = "No distillation: keep the prior's initialisation (random real images for `pixel`)."
    version = 1
    distils = False
    display_order = 3

    def loss(self, images: Tensor, labels: Tensor, real: RealSampler) -> Tensor:
        return torch.zeros((), device=images.device)
