"""The LDM's group norms, inside a graph torch.compile makes for a CPU, as per-channel sums.

For a group norm on channels-last activations, inductor's CPU code reduces each group over its few
channels (4 or 8 of a 16-lane vector) and the position, and its backward's last loop reads each
group's statistics by ``channel // group_size``, an index it does not vectorise, so it runs one
element at a time. `ChannelSumGroupNorm` computes the same normalisation from sums per channel
(a reduction over positions, vectorised across channels), turns them into group moments and back
into per-channel scale and shift with two small products with the channels' group membership,
and applies them per channel: every large loop, forward and backward, then indexes only
(sample, channel). The values are the group norm's up to rounding (the variance is E[x²] − E[x]²
in float32); benchmarks/README.md, "Group norms as per-channel sums", has the speed.

Everywhere else — eager, on GPUs — the module is torch's GroupNorm as it was.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def group_membership(channels: int, groups: int, device: torch.device) -> Tensor:
    """(channels, groups) float matrix: 1 where the channel belongs to the group (contiguous groups)."""
    group_of_channel = torch.arange(channels, device=device) // (channels // groups)
    return (group_of_channel[:, None] == torch.arange(groups, device=device)[None, :]).float()


def channel_sum_group_norm(x: Tensor, groups: int, weight: Tensor | None, bias: Tensor | None, eps: float) -> Tensor:
    """``F.group_norm(x, groups, weight, bias, eps)`` from per-channel sums, in float32; x's dtype out."""
    n, c = x.shape[:2]
    positions = tuple(range(2, x.ndim))
    broadcast = (n, c) + (1,) * len(positions)
    membership = group_membership(c, groups, x.device)
    with torch.autocast(x.device.type, enabled=False):
        values = x.float()
        sums = torch.cat([values.sum(dim=positions), values.square().sum(dim=positions)])  # (2n, c)
        # the products keep per-channel factors materialised as (n, c): the large loops never
        # index a group by channel // group_size
        moments = (sums @ membership) / (x[0].numel() // groups)  # (2n, g): E[x], E[x²]
        mean, mean_square = moments.chunk(2)
        rstd = torch.rsqrt((mean_square - mean.square()).clamp_min(0) + eps)
        scale, centre = (torch.cat([rstd, mean * rstd]) @ membership.t()).chunk(2)  # (n, c) each
        if weight is not None:
            scale, centre = scale * weight.float(), centre * weight.float()
        shift = -centre if bias is None else bias.float() - centre
        normalised = values * scale.view(broadcast) + shift.view(broadcast)
    return normalised.to(x.dtype)


class ChannelSumGroupNorm(nn.GroupNorm):
    """`nn.GroupNorm` that, while torch.compile traces it for a CPU, is `channel_sum_group_norm`."""

    def forward(self, input: Tensor) -> Tensor:
        if torch.compiler.is_compiling() and input.device.type == "cpu" and input.ndim >= 3:
            return channel_sum_group_norm(input, self.num_groups, self.weight, self.bias, self.eps)
        return super().forward(input)


def use_channel_sum_group_norm(model: nn.Module) -> None:
    """Turn every `nn.GroupNorm` of ``model`` into a `ChannelSumGroupNorm` (same parameters and state dict)."""
    for module in model.modules():
        if type(module) is nn.GroupNorm:
            module.__class__ = ChannelSumGroupNorm
