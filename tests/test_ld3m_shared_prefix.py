"""Guidance's two halves with the UNet's class-free start shared give the doubled batch's values."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from ddbench_plugins.priors.ld3m.attention import LDMAttention
from ddbench_plugins.priors.ld3m.backends import build_tiny
from ddbench_plugins.priors.ld3m.shared_prefix import denoise_pair, supports_shared_prefix
from diffusers import UNet2DConditionModel


def _unet(**overrides: Any) -> UNet2DConditionModel:
    config: dict[str, Any] = dict(
        sample_size=8,
        in_channels=3,
        out_channels=3,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        block_out_channels=(16, 32),
        layers_per_block=1,
        cross_attention_dim=12,
        attention_head_dim=2,
        norm_num_groups=8,
    )
    config.update(overrides)
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**config).eval().requires_grad_(False)
    unet.set_attn_processor(LDMAttention())
    return unet


def _inputs(n: int, side: int, width: int = 12) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(1)
    z = torch.randn(n, 3, side, side, generator=g).requires_grad_(True)
    t = torch.full((n,), 801)
    uncond = torch.randn(1, 1, width, generator=g).expand(n, 1, width)
    cond = torch.randn(n, 1, width, generator=g).requires_grad_(True)
    return z, t, uncond, cond


def _pair_and_grads(unet: UNet2DConditionModel, shared: bool, side: int) -> list[torch.Tensor]:
    z, t, uncond, cond = _inputs(3, side, unet.config.cross_attention_dim)
    if shared:
        eps_u, eps_c = denoise_pair(unet, z, t, uncond, cond)
    else:
        both = unet(torch.cat([z, z]), torch.cat([t, t]), encoder_hidden_states=torch.cat([uncond, cond])).sample
        eps_u, eps_c = both.chunk(2)
    guided = eps_u + 3.0 * (eps_c - eps_u)  # both halves reach z: guidance's weights are −2 and 3
    (guided * torch.linspace(-1, 1, guided.numel()).view_as(guided)).sum().backward()
    return [eps_u.detach(), eps_c.detach(), z.grad, cond.grad]


@pytest.mark.parametrize(
    ("overrides", "side"),
    [
        ({}, 8),  # the tiny LDM's layout: a class-free down block, then cross-attention
        ({}, 7),  # a latent side the upsamplers cannot halve evenly: explicit upsample sizes
        ({"layers_per_block": 2}, 8),  # the cross-attention block's second ResNet runs on both halves
        (  # cin256's layout in small: cross-attention from the second of three levels, no mid attention
            {
                "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
                "block_out_channels": (16, 24, 32),
            },
            8,
        ),
        (  # cross-attention in the first block: only the time embedding and conv_in are shared
            {
                "down_block_types": ("CrossAttnDownBlock2D", "DownBlock2D"),
                "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D"),
            },
            8,
        ),
    ],
)
def test_the_shared_prefix_gives_the_doubled_batch_values_and_gradients(overrides: dict[str, Any], side: int) -> None:
    unet = _unet(**overrides)
    assert supports_shared_prefix(unet)
    batched = _pair_and_grads(unet, shared=False, side=side)
    shared = _pair_and_grads(unet, shared=True, side=side)
    for ours, theirs in zip(shared, batched, strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    assert batched[2].abs().sum() > 0 and batched[3].abs().sum() > 0  # gradients do reach z and c


def test_unets_with_inputs_it_leaves_out_are_called_on_the_doubled_batch() -> None:
    assert not supports_shared_prefix(_unet(class_embed_type="timestep"))
    assert not supports_shared_prefix(_unet(time_cond_proj_dim=4))
    assert not supports_shared_prefix(_unet(center_input_sample=True))
    assert not supports_shared_prefix(
        _unet(down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"))
    )


def test_the_tiny_ldm_shares_its_prefix_and_its_random_denoiser_too() -> None:
    backend = build_tiny(1, 10, seed=2).freeze()
    assert backend.shares_prefix and backend.with_random_denoiser(5).shares_prefix
    z, t, _, _ = _inputs(4, 14)
    cond = backend.class_embedding(torch.arange(4))
    uncond = backend.unconditional_embedding(4)
    with torch.no_grad():
        shared = backend.denoise_pair(z, t, uncond, cond)
        backend.shares_prefix = False
        batched = backend.denoise_pair(z, t, uncond, cond)
    for ours, theirs in zip(shared, batched, strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


def test_the_first_self_attention_runs_once_for_both_halves_and_gives_the_same_values() -> None:
    unet = _unet()
    transformer = next(b for b in unet.down_blocks if getattr(b, "has_cross_attention", False)).attentions[0]
    rows: list[int] = []
    hook = transformer.transformer_blocks[0].attn1.register_forward_pre_hook(lambda _, args: rows.append(len(args[0])))
    z, t, uncond, cond = _inputs(3, 8, unet.config.cross_attention_dim)
    with torch.no_grad():
        through = denoise_pair(unet, z, t, uncond, cond)
        before = denoise_pair(unet, z, t, uncond, cond, through_self_attention=False)
    hook.remove()
    assert rows == [3, 6]  # one half, then (the prefix ending at the ResNet) both
    for ours, theirs in zip(through, before, strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
