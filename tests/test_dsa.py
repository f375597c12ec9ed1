"""DSA: siamese (same seed → same op and per-sample parameters), seedable, differentiable, shape-preserving."""

from __future__ import annotations

import pytest
import torch

from ddbench.engine.dsa import BLOCK, DSA
from ddbench.errors import InvalidOptionError

OPS = ["color", "crop", "cutout", "flip", "scale", "rotate"]


def _images(n: int, channels: int = 3, res: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, channels, res, res, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("op", OPS)
def test_same_seed_same_output_and_prefix_shares_parameters(op):
    dsa = DSA(strategy=op)
    real = _images(BLOCK + 44)  # spans two parameter blocks
    syn = real[:10].clone()
    for seed in (0, 1, 12345):
        out = dsa(real, seed)
        assert torch.equal(out, dsa(real, seed))
        assert torch.equal(dsa(syn, seed), out[:10])


def test_full_strategy_prefix_matches_for_every_seed():
    dsa = DSA()
    real = _images(BLOCK)
    syn = real[:10].clone()
    chosen = set()
    for seed in range(40):
        chosen.add(dsa.choose_op(seed))
        assert torch.equal(dsa(syn, seed), dsa(real, seed)[:10])
    assert chosen == set(OPS)  # one op group per call, all of them reachable


def test_parameters_depend_only_on_seed_and_index():
    dsa = DSA()
    assert torch.equal(dsa.uniforms(10, 3), dsa.uniforms(600, 3)[:10])
    assert torch.equal(dsa.uniforms(600, 3)[BLOCK : BLOCK + 5], dsa.uniforms(BLOCK + 5, 3)[BLOCK:])
    assert not torch.equal(dsa.uniforms(10, 3), dsa.uniforms(10, 4))


@pytest.mark.parametrize("op", OPS)
def test_different_seeds_give_different_augmentations(op):
    dsa = DSA(strategy=op)
    x = _images(16)
    outs = [dsa(x, seed) for seed in range(4)]
    assert all(not torch.equal(outs[0], other) for other in outs[1:])


def test_never_touches_the_global_rng():
    torch.manual_seed(0)
    state = torch.get_rng_state()
    x = _images(8)
    for seed in range(12):
        DSA()(x, seed)
    assert torch.equal(state, torch.get_rng_state())


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("channels", [1, 3])
def test_shape_dtype_preserved_and_gradients_flow(op, channels):
    x = _images(6, channels=channels, res=12).requires_grad_(True)
    out = DSA(strategy=op)(x, seed=3)
    assert out.shape == x.shape and out.dtype == x.dtype
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(1))
    (out * weights).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


@pytest.mark.parametrize("op", ["color", "scale", "rotate"])
def test_gradients_match_finite_differences(op):
    dsa = DSA(strategy=op)
    x = _images(2, channels=3, res=6).double().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: dsa(t, 5), (x,), eps=1e-6, atol=1e-4)


def test_saturation_is_identity_on_one_channel():
    x = _images(5, channels=1)
    with_sat = DSA(strategy="color", saturation=2.0)(x, 9)
    without = DSA(strategy="color", saturation=0.0)(x, 9)
    # on one channel saturation must not act at all (a factor 0 would otherwise zero the image)
    assert torch.equal(with_sat, without)


def test_flip_probability_extremes():
    x = _images(8)
    assert torch.equal(DSA(strategy="flip", flip_p=1.0)(x, 0), x.flip(3))
    assert torch.equal(DSA(strategy="flip", flip_p=0.0)(x, 0), x)


def test_identity_warps_keep_the_image():
    x = _images(4)
    assert torch.allclose(DSA(strategy="scale", scale=1.0)(x, 0), x, atol=1e-5)
    assert torch.allclose(DSA(strategy="rotate", rotate=0.0)(x, 0), x, atol=1e-5)


def test_crop_is_an_integer_translation_with_zero_fill():
    x = _images(32, channels=1, res=16) + 10.0  # no natural zeros
    out = DSA(strategy="crop")(x, 0)
    shift = int(16 * 0.125 + 0.5)
    for img, src in zip(out[:, 0], x[:, 0]):
        found = [
            (dy, dx)
            for dy in range(-shift, shift + 1)
            for dx in range(-shift, shift + 1)
            if torch.equal(img, _shifted(src, dy, dx))
        ]
        assert len(found) == 1


def _shifted(img: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """img translated so that out[r, c] = img[r + dy, c + dx], zero outside."""
    h, w = img.shape
    out = torch.zeros_like(img)
    rows = slice(max(0, -dy), min(h, h - dy))
    cols = slice(max(0, -dx), min(w, w - dx))
    out[rows, cols] = img[max(0, dy) : min(h, h + dy), max(0, dx) : min(w, w + dx)]
    return out


def test_cutout_zeroes_one_square_of_at_most_half_the_side():
    x = torch.ones(64, 1, 16, 16)
    out = DSA(strategy="cutout")(x, 2)
    zeros = (out == 0).sum(dim=(1, 2, 3))
    assert (zeros > 0).all() and (zeros <= 64).all()  # 8×8 square, clipped at the border
    assert (zeros == 64).any()  # fully inside for some samples


def test_batchwise_gives_every_sample_the_same_parameters():
    x = _images(1).expand(12, -1, -1, -1).contiguous()
    for seed in range(6):
        out = DSA(batchwise=True)(x, seed)
        assert torch.equal(out, out[:1].expand_as(out))


def test_invalid_options_name_the_fix():
    with pytest.raises(InvalidOptionError, match="color_crop"):
        DSA(strategy="color_blur")
    with pytest.raises(InvalidOptionError, match="flip_p"):
        DSA(flip_p=1.5)
    with pytest.raises(InvalidOptionError, match="normalise"):
        DSA()(torch.zeros(2, 1, 8, 8, dtype=torch.uint8), 0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("op", OPS)
def test_cuda_matches_cpu(op):
    x = _images(300, res=16)
    dsa = DSA(strategy=op)
    assert torch.allclose(dsa(x.cuda(), 11).cpu(), dsa(x, 11), atol=1e-5)
