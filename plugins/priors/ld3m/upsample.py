"""The LDM's nearest-neighbour ×2 upsampling, with the same values and a cheaper backward.

diffusers' `Upsample2D` (nearest ×2, then a 3 × 3 convolution) makes its input contiguous at a
batch of 64 or more and calls ``F.interpolate``. In a graph compiled by torch.compile on a CPU, that
copy leaves the channels-last layout the convolutions run in, and the interpolation's backward
becomes a scatter-add (``index_put`` with accumulation). `NearestUpsample2D` repeats every pixel
with ``expand`` and ``reshape`` in the input's own layout, and in channels-last in a graph
compiled for a CPU (`NearestUpsample2D.channels_last_when_compiled`): each output is a copy of the
same input value as before, and the backward sums each 2 × 2 block (benchmarks/README.md, "Nearest
upsampling without a scatter").
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers.models.upsampling import Upsample2D
from torch import Tensor, nn


def repeat_pixels(images: Tensor, channels_last: bool | None = None) -> Tensor:
    """(N, C, H, W) → (N, C, 2H, 2W), every pixel repeated 2 × 2 (nearest ×2).

    The copy is made channels-last if ``channels_last``; by default where the input is, so eager
    calls keep their layout."""
    n, c, h, w = images.shape
    if channels_last is None:
        channels_last = images.is_contiguous(memory_format=torch.channels_last) and not images.is_contiguous()
    if channels_last:
        pixels_last = images.permute(0, 2, 3, 1)[:, :, None, :, None, :].expand(n, h, 2, w, 2, c)
        return pixels_last.reshape(n, 2 * h, 2 * w, c).permute(0, 3, 1, 2)
    return images[:, :, :, None, :, None].expand(n, c, h, 2, w, 2).reshape(n, c, 2 * h, 2 * w)


def _covered(module: Upsample2D) -> bool:
    """Nearest ×2 then the convolution named ``conv``: the configuration every LDM here uses."""
    return (
        module.norm is None
        and not module.use_conv_transpose
        and module.interpolate
        and module.use_conv
        and module.name == "conv"
    )


class NearestUpsample2D(Upsample2D):
    """`Upsample2D` whose ×2 nearest repetition is `repeat_pixels` (module docstring)."""

    #: in a graph compiled for a CPU, repeat into channels-last whatever layout the input was traced
    #: in: diffusers' transformers hand on NCHW tensors (``.contiguous()``), which inductor then keeps
    #: channels-last, and the NCHW repetition's innermost dimension of 2 runs one element at a time
    channels_last_when_compiled = True

    def forward(self, hidden_states: Tensor, output_size: int | None = None, *args: Any, **kwargs: Any) -> Tensor:
        if output_size is not None or args or kwargs:
            return super().forward(hidden_states, output_size, *args, **kwargs)  # odd sizes: diffusers' path
        compiled_for_cpu = torch.compiler.is_compiling() and hidden_states.device.type == "cpu"
        channels_last = True if compiled_for_cpu and self.channels_last_when_compiled else None
        return self.conv(repeat_pixels(hidden_states, channels_last))


def use_nearest_upsample(model: nn.Module) -> None:
    """Turn every covered `Upsample2D` of ``model`` into a `NearestUpsample2D` (same weights, same state dict)."""
    for module in model.modules():
        if type(module) is Upsample2D and _covered(module):
            module.__class__ = NearestUpsample2D
