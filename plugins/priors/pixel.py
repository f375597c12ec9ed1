"""The pixel prior: the synthetic images themselves are the learnable tensor (DC/DM/MTT)."""

from __future__ import annotations

import torch
from torch import Tensor

from ddbench.errors import InvalidOptionError
from ddbench.interfaces import LatentState, Prior


class PixelPrior(Prior):
    name = "pixel"
    description = "Raw pixels: the synthetic images are optimised directly."
    #: init="real" starts from the real images themselves; "noise" from none
    starts_from_real = {"init": "real"}
    version = 1
    display_order = 0
    # protocols.md: DC 0.1, DM 1 (IPC ≤ 50), MTT lr_img 1000 (CIFAR-10 IPC 1) = 0.1 × each matcher's lr_scale
    base_lrs = {"images": 0.1}

    def __init__(self, init: str = "real") -> None:
        if init not in ("real", "noise"):
            raise InvalidOptionError(f"Expected pixel init 'real' or 'noise' but got '{init}'")
        self.init = init

    def init_state(self, real_images: Tensor, labels: Tensor, generator: torch.Generator) -> LatentState:
        if self.init == "real":
            images = real_images.detach().clone()
        else:  # standard normal in normalised space, as DC's `init=noise`
            images = torch.randn(real_images.shape, generator=generator).to(real_images.device)
        return LatentState(params={"images": images.requires_grad_(True)})

    def generate(self, state: LatentState, indices: Tensor) -> Tensor:
        return state.params["images"][indices.to(state.params["images"].device)]
