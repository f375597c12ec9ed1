"""The LDM's group norms as per-channel sums give torch's values, and only where they are compiled for a CPU."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from compiled_swaps import assert_swapped_only_while_compiling, forward_backward
from ddbench_plugins.priors.ld3m import group_norm as group_norm_module
from ddbench_plugins.priors.ld3m.backends import build_tiny
from ddbench_plugins.priors.ld3m.group_norm import (
    ChannelSumGroupNorm,
    channel_sum_group_norm,
    group_membership,
    use_channel_sum_group_norm,
)
from torch import nn


def _activations(shape: tuple[int, ...], channels_last: bool) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    # an offset per channel, as activations have: E[x²] − E[x]² must survive it
    offsets = torch.linspace(-3, 3, shape[1]).view(1, -1, *[1] * (len(shape) - 2))
    x = torch.randn(shape, generator=generator) * 2 + offsets
    return x.to(memory_format=torch.channels_last) if channels_last else x


def test_group_membership_assigns_contiguous_channels() -> None:
    membership = group_membership(6, 3, torch.device("cpu"))
    assert membership.tolist() == [[1, 0, 0], [1, 0, 0], [0, 1, 0], [0, 1, 0], [0, 0, 1], [0, 0, 1]]


@pytest.mark.parametrize("shape", [(3, 8, 5, 4), (2, 6, 7)])
@pytest.mark.parametrize("affine", [True, False])
def test_values_and_gradients_match_torch(shape: tuple[int, ...], affine: bool) -> None:
    groups = 2
    weight = torch.linspace(0.5, 1.5, shape[1]).requires_grad_(True) if affine else None
    bias = torch.linspace(-1, 1, shape[1]).requires_grad_(True) if affine else None
    x = _activations(shape, channels_last=len(shape) == 4)

    def with_groups(norm):
        return lambda inputs, w, b: norm(inputs, groups, w, b, 1e-5)

    expected = forward_backward(with_groups(F.group_norm), x, weight, bias)
    got = forward_backward(with_groups(channel_sum_group_norm), x, weight, bias)
    for ours, theirs in zip(got, expected, strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)


def test_bfloat16_input_keeps_its_dtype_and_torch_values_under_autocast() -> None:
    x = _activations((4, 16, 6, 6), channels_last=True).bfloat16()
    weight, bias = torch.rand(16), torch.rand(16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected = F.group_norm(x, 4, weight, bias, 1e-6)
        got = channel_sum_group_norm(x, 4, weight, bias, 1e-6)
    assert got.dtype == expected.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), expected.float(), rtol=2e-2, atol=2e-2)


def test_the_module_uses_the_sums_only_while_compiling(monkeypatch) -> None:
    torch.manual_seed(0)
    norm = nn.GroupNorm(2, 8)
    use_channel_sum_group_norm(norm)
    assert type(norm) is ChannelSumGroupNorm
    x = _activations((2, 8, 3, 3), channels_last=True)
    assert_swapped_only_while_compiling(
        monkeypatch,
        group_norm_module,
        "channel_sum_group_norm",
        norm,
        x,
        F.group_norm(x, 2, norm.weight, norm.bias, norm.eps),
        rtol=1e-4,
        atol=1e-5,
    )


def test_every_group_norm_of_the_ldm_is_replaced() -> None:
    backend = build_tiny(1, 10)
    for model in (backend.unet, backend.vqvae):
        norms = [m for m in model.modules() if isinstance(m, nn.GroupNorm)]
        assert norms and all(type(m) is ChannelSumGroupNorm for m in norms)
