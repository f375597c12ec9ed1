"""The LDM's nearest ×2 upsampling gives diffusers' values in either memory layout."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from ddbench_plugins.priors.ld3m.backends import build_tiny
from ddbench_plugins.priors.ld3m.upsample import NearestUpsample2D, repeat_pixels, use_nearest_upsample
from diffusers import UNet2DConditionModel, VQModel
from diffusers.models.upsampling import Upsample2D


def _images(channels_last: bool) -> torch.Tensor:
    images = torch.randn(3, 5, 4, 6, generator=torch.Generator().manual_seed(0))
    return images.to(memory_format=torch.channels_last) if channels_last else images


def test_repeat_pixels_is_nearest_interpolation_and_keeps_the_layout() -> None:
    for channels_last in (False, True):
        images = _images(channels_last)
        out = repeat_pixels(images)
        assert torch.equal(out, F.interpolate(images, scale_factor=2.0, mode="nearest"))
        assert out.is_contiguous(memory_format=torch.channels_last) == channels_last


def test_the_module_matches_diffusers_forward_and_backward() -> None:
    torch.manual_seed(0)
    theirs = Upsample2D(5, use_conv=True)
    ours = Upsample2D(5, use_conv=True)
    ours.load_state_dict(theirs.state_dict())
    use_nearest_upsample(ours)
    assert type(ours) is NearestUpsample2D
    for channels_last in (False, True):
        grads = []
        for module in (theirs, ours):
            images = _images(channels_last).requires_grad_(True)
            out = module(images)
            (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
            grads.append((out.detach(), images.grad))
        torch.testing.assert_close(grads[1][0], grads[0][0], rtol=0, atol=1e-6)
        torch.testing.assert_close(grads[1][1], grads[0][1], rtol=1e-5, atol=1e-6)
    # an explicit output size (odd latent sizes) takes diffusers' own path
    assert ours(_images(False), output_size=(9, 13)).shape[-2:] == (9, 13)


def test_the_tiny_ldm_upsamples_with_it_and_keeps_its_state_dict() -> None:
    reference = build_tiny(1, 10, seed=3)
    for model in (reference.unet, reference.vqvae):
        upsamplers = [m for m in model.modules() if isinstance(m, Upsample2D)]
        assert upsamplers and all(type(m) is NearestUpsample2D for m in upsamplers)
    # a plain diffusers model of the same configs has the same parameter names: a shipped model loads
    plain = {
        "unet": UNet2DConditionModel.from_config(reference.unet.config),
        "vqvae": VQModel.from_config(reference.vqvae.config),
    }
    for name, model in plain.items():
        assert set(getattr(reference, name).state_dict()) == set(model.state_dict())


def test_compiled_for_a_cpu_it_repeats_an_nchw_input_into_channels_last() -> None:
    torch.manual_seed(0)
    module = Upsample2D(5, use_conv=True)
    use_nearest_upsample(module)
    images = _images(channels_last=False)
    assert repeat_pixels(images, channels_last=True).is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(repeat_pixels(images, channels_last=True), repeat_pixels(images), rtol=0, atol=0)
    compiled = torch.compile(module)(images)
    torch.testing.assert_close(compiled, module(images), rtol=1e-5, atol=1e-5)
