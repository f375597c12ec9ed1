"""The LDM's attention processor gives diffusers' values and takes its shortcuts."""

from __future__ import annotations

import pytest
import torch
from ddbench_plugins.priors.ld3m import attention
from ddbench_plugins.priors.ld3m.attention import LDMAttention
from ddbench_plugins.priors.ld3m.backends import build_tiny
from diffusers.models.attention_processor import Attention, AttnProcessor, AttnProcessor2_0


def _eps_and_grads(unet: torch.nn.Module, autocast: bool = False) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(6, 3, 8, 8, generator=gen).requires_grad_(True)
    c = torch.randn(6, 1, 64, generator=gen).requires_grad_(True)
    t = torch.tensor([1, 101, 201, 501, 801, 901])
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        eps = unet(z, t, encoder_hidden_states=c).sample.float()
    (eps * torch.linspace(-1, 1, eps.numel()).view_as(eps)).sum().backward()
    return eps.detach(), z.grad, c.grad


def test_the_backend_uses_it_and_it_matches_diffusers_fused_attention() -> None:
    unet = build_tiny(1, 10, seed=3).unet
    assert all(isinstance(p, LDMAttention) for p in unet.attn_processors.values())
    ours = _eps_and_grads(unet)
    unet.set_attn_processor(AttnProcessor2_0())
    theirs = _eps_and_grads(unet)
    for mine, reference in zip(ours, theirs, strict=True):
        torch.testing.assert_close(mine, reference, rtol=1e-5, atol=1e-5)


def test_cross_attention_on_one_key_skips_the_attention_product(monkeypatch: pytest.MonkeyPatch) -> None:
    unet = build_tiny(1, 10, seed=3).unet
    shapes: list[tuple[int, ...]] = []
    fused = torch.nn.functional.scaled_dot_product_attention

    def counting(query: torch.Tensor, key: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        shapes.append(tuple(key.shape))
        return fused(query, key, *args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", counting)
    _eps_and_grads(unet)
    # only self-attention reaches the product: its keys are the 4 × 4 positions, never one class token
    assert shapes and all(shape[2] == 16 for shape in shapes)
    transformers = sum(1 for name in unet.attn_processors if name.endswith("attn1.processor"))
    assert len(shapes) == transformers


def test_bf16_on_a_cpu_takes_the_plain_path_and_stays_close_to_diffusers(monkeypatch: pytest.MonkeyPatch) -> None:
    unet = build_tiny(1, 10, seed=3).unet
    used: list[str] = []
    plain_call = AttnProcessor.__call__

    def recording(self: AttnProcessor, *args: object, **kwargs: object) -> torch.Tensor:
        used.append("plain")
        return plain_call(self, *args, **kwargs)

    monkeypatch.setattr(attention.AttnProcessor, "__call__", recording)
    ours = _eps_and_grads(unet, autocast=True)
    assert used, "bf16 self-attention on a CPU should use the plain product"
    unet.set_attn_processor(AttnProcessor2_0())
    theirs = _eps_and_grads(unet, autocast=True)
    for mine, reference in zip(ours, theirs, strict=True):
        scale = float(reference.abs().max())
        assert float((mine - reference).abs().max()) <= 0.05 * scale  # bf16 rounding, not another function


def test_the_autoencoder_attention_uses_it_and_stays_close_to_diffusers_in_bf16() -> None:
    vqvae = build_tiny(1, 10, seed=3).vqvae
    layers = [m for m in vqvae.modules() if isinstance(m, Attention)]
    assert layers and all(isinstance(m.processor, LDMAttention) for m in layers)
    outputs = []
    for processor in (None, AttnProcessor2_0()):
        if processor is not None:
            for layer in layers:
                layer.set_processor(processor)
        latents = torch.randn(4, 3, 6, 6, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            images = vqvae.decode(latents, force_not_quantize=True).sample.float()
        (images * torch.linspace(-1, 1, images.numel()).view_as(images)).sum().backward()
        outputs.append((images.detach(), latents.grad))
    for mine, reference in zip(*outputs, strict=True):
        scale = float(reference.abs().max())
        assert float((mine - reference).abs().max()) <= 0.05 * scale  # bf16 rounding, not another function
