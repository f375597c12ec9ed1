"""A prior that learns each synthetic image at a reduced resolution and upsamples it bilinearly.

Fewer parameters per image act as a smoothness prior (the idea behind IDC's factorised images).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ddbench.errors import InvalidOptionError
from ddbench.interfaces import LatentState, Prior


class LowResPixelPrior(Prior):
    name = "lowres"
    description = "Pixels learnt at 1/factor resolution and upsampled bilinearly."
    base_lrs = {"small": 0.1}  # × the matcher's lr_scale (DM: 1.0)

    def __init__(self, factor: int = 2) -> None:
        if factor < 1:
            raise InvalidOptionError(f"Expected factor ≥ 1 but got {factor}")
        self.factor = factor
        self.size = 0

    def init_state(self, real_images: Tensor, labels: Tensor, generator: torch.Generator) -> LatentState:
        self.size = real_images.shape[-1]
        small = F.interpolate(real_images, scale_factor=1 / self.factor, mode="area")
        return LatentState(params={"small": small.detach().clone().requires_grad_(True)})

    def generate(self, state: LatentState, indices: Tensor) -> Tensor:
        small = state.params["small"][indices]
        return F.interpolate(small, size=(self.size, self.size), mode="bilinear", align_corners=False)
