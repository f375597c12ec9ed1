"""Differentiable siamese augmentation (DSA; Zhao & Bilen, 2021).

One call applies ONE operation group, chosen at random, to a batch: ``color`` (brightness, then
saturation, then contrast), ``crop`` (pad-and-crop translation), ``cutout``, ``flip``, ``scale`` or
``rotate`` — the reference's single-op mode. Every op is differentiable in the images, so matching
losses can push gradients through it.

Siamese and seedable: all randomness comes from local generators seeded by the call's ``seed``
(never the global RNG). The op group depends only on ``seed``; sample ``i``'s parameters depend only
on ``(seed, i)``, because they are drawn in fixed blocks of 256 samples, block ``k`` from a generator
seeded with ``(seed, k)``. A real batch of 256 and a synthetic batch of 10 augmented with the same
seed therefore get the same op and the same parameters for their shared first 10 samples.

The reference (VICO-UoE/DatasetCondensation) instead gives every sample of a siamese call the
parameters of sample 0; ``batchwise=True`` reproduces that.

>>> import torch
>>> dsa = DSA()
>>> x = torch.randn(4, 3, 32, 32)
>>> bool(torch.equal(dsa(x, seed=7), dsa(x, seed=7)))
True
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ddbench.engine.seeding import derive_seed
from ddbench.errors import InvalidOptionError

DEFAULT_STRATEGY = "color_crop_cutout_flip_scale_rotate"
#: samples per parameter block; sample i's parameters come from block i // BLOCK
BLOCK = 256
#: uniform numbers drawn per sample: the most any op group needs (color: brightness, saturation, contrast)
_DRAWS = 3


class DSA:
    """Differentiable siamese augmentation: ``dsa(images, seed)`` → augmented images, same shape.

    Args:
        strategy: op groups joined by ``_``; one of them is applied per call.
        flip_p: probability of a horizontal flip.
        scale: scale factors are drawn uniformly in ``[1/scale, scale]`` per axis.
        rotate: rotation angle drawn uniformly in ``[-rotate, rotate]`` degrees.
        crop_pad: maximal translation as a fraction of the side (zero padding).
        cutout: side of the zeroed square as a fraction of the image side.
        brightness: additive shift drawn in ``[-brightness/2, brightness/2]``.
        saturation: per-sample factor drawn in ``[0, saturation]`` (no-op on one channel).
        contrast: per-sample factor drawn in ``[contrast, contrast + 1]``.
        batchwise: give every sample the parameters of sample 0 (the reference code's siamese mode).
    """

    def __init__(
        self,
        strategy: str = DEFAULT_STRATEGY,
        flip_p: float = 0.5,
        scale: float = 1.2,
        rotate: float = 15.0,
        crop_pad: float = 0.125,
        cutout: float = 0.5,
        brightness: float = 1.0,
        saturation: float = 2.0,
        contrast: float = 0.5,
        batchwise: bool = False,
    ) -> None:
        ops = [op for op in strategy.split("_") if op]
        unknown = [op for op in ops if op not in _OPS]
        if not ops or unknown:
            raise InvalidOptionError(
                f"Expected a DSA strategy of op groups joined by '_' from {sorted(_OPS)} "
                f"(e.g. '{DEFAULT_STRATEGY}') but got '{strategy}'"
            )
        if not 0.0 <= flip_p <= 1.0:
            raise InvalidOptionError(f"Expected flip_p in [0, 1] but got {flip_p}")
        if scale < 1.0:
            raise InvalidOptionError(f"Expected scale ≥ 1 (factors in [1/scale, scale]) but got {scale}")
        if not 0.0 <= crop_pad < 1.0 or not 0.0 < cutout <= 1.0:
            raise InvalidOptionError(
                f"Expected crop_pad in [0, 1) and cutout in (0, 1] but got {crop_pad} and {cutout}"
            )
        for key, value in (
            ("rotate", rotate),
            ("brightness", brightness),
            ("saturation", saturation),
            ("contrast", contrast),
        ):
            if value < 0:
                raise InvalidOptionError(f"Expected {key} ≥ 0 but got {value}")
        self.strategy = strategy
        self.ops = ops
        self.flip_p = flip_p
        self.scale = scale
        self.rotate = rotate
        self.crop_pad = crop_pad
        self.cutout = cutout
        self.brightness = brightness
        self.saturation = saturation
        self.contrast = contrast
        self.batchwise = batchwise

    def options(self) -> dict[str, Any]:
        """The constructor arguments, for recording in a spec."""
        return {
            "strategy": self.strategy,
            "flip_p": self.flip_p,
            "scale": self.scale,
            "rotate": self.rotate,
            "crop_pad": self.crop_pad,
            "cutout": self.cutout,
            "brightness": self.brightness,
            "saturation": self.saturation,
            "contrast": self.contrast,
            "batchwise": self.batchwise,
        }

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.options().items())
        return f"DSA({args})"

    # ------------------------------------------------------------------------------ randomness

    def choose_op(self, seed: int) -> str:
        """The op group a call with this seed applies."""
        g = torch.Generator().manual_seed(derive_seed("dsa-op", seed))
        return self.ops[int(torch.randint(len(self.ops), (1,), generator=g))]

    def uniforms(self, n: int, seed: int) -> Tensor:
        """``(n, 3)`` uniform draws in [0, 1); row i depends only on (seed, i)."""
        blocks = []
        for k in range(math.ceil(n / BLOCK)):
            g = torch.Generator().manual_seed(derive_seed("dsa-params", seed, k))
            blocks.append(torch.rand(BLOCK, _DRAWS, generator=g, dtype=torch.float64))
        u = torch.cat(blocks)[:n]
        if self.batchwise:
            u = u[:1].expand(n, _DRAWS)
        return u

    # ----------------------------------------------------------------------------------- call

    def __call__(self, images: Tensor, seed: int) -> Tensor:
        if images.dim() != 4:
            raise InvalidOptionError(f"Expected images (N, C, H, W) but got shape {tuple(images.shape)}")
        if not images.is_floating_point():
            raise InvalidOptionError(f"Expected float (normalised) images but got {images.dtype}; normalise them first")
        op = self.choose_op(seed)
        if images.shape[0] == 0:
            return images
        u = self.uniforms(images.shape[0], seed)
        return _OPS[op](self, images, u)

    # ------------------------------------------------------------------------------------ ops
    # each op takes images and the (N, 3) float64 uniforms; parameters are computed in float64 on
    # the CPU (bit-identical whatever the batch) and moved to the images' device and dtype.

    def _column(self, u: Tensor, j: int, x: Tensor) -> Tensor:
        return u[:, j].to(device=x.device, dtype=x.dtype).view(-1, 1, 1, 1)

    def _color(self, x: Tensor, u: Tensor) -> Tensor:
        x = x + (self._column(u, 0, x) - 0.5) * self.brightness
        if x.shape[1] > 1:  # saturation acts across channels; on grey images it is the identity
            mean = x.mean(dim=1, keepdim=True)
            x = (x - mean) * (self._column(u, 1, x) * self.saturation) + mean
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        return (x - mean) * (self._column(u, 2, x) + self.contrast) + mean

    def _crop(self, x: Tensor, u: Tensor) -> Tensor:
        # integer translation with zero fill, as the reference's pad-by-1-and-clamp gather
        n, _, h, w = x.shape
        shift_h, shift_w = int(h * self.crop_pad + 0.5), int(w * self.crop_pad + 0.5)
        th = _uniform_int(u[:, 0], -shift_h, shift_h).to(x.device)
        tw = _uniform_int(u[:, 1], -shift_w, shift_w).to(x.device)
        rows = (torch.arange(h, device=x.device) + th[:, None] + 1).clamp(0, h + 1)  # (N, H) in padded coords
        cols = (torch.arange(w, device=x.device) + tw[:, None] + 1).clamp(0, w + 1)  # (N, W)
        padded = F.pad(x, (1, 1, 1, 1))
        batch = torch.arange(n, device=x.device)[:, None, None]
        # advanced indices around a slice: the result is (N, H, W, C)
        return padded[batch, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)

    def _cutout(self, x: Tensor, u: Tensor) -> Tensor:
        _, _, h, w = x.shape
        size_h, size_w = int(h * self.cutout + 0.5), int(w * self.cutout + 0.5)
        # centre offsets as in the reference: randint(0, side + (1 - size % 2))
        oh = _uniform_int(u[:, 0], 0, h - size_h % 2).to(x.device)
        ow = _uniform_int(u[:, 1], 0, w - size_w % 2).to(x.device)
        top, left = oh - size_h // 2, ow - size_w // 2
        ar_h, ar_w = torch.arange(h, device=x.device), torch.arange(w, device=x.device)
        in_rows = (ar_h >= top[:, None]) & (ar_h < top[:, None] + size_h)  # (N, H)
        in_cols = (ar_w >= left[:, None]) & (ar_w < left[:, None] + size_w)  # (N, W)
        keep = ~(in_rows[:, :, None] & in_cols[:, None, :])
        return x * keep.unsqueeze(1).to(x.dtype)

    def _flip(self, x: Tensor, u: Tensor) -> Tensor:
        flip = (u[:, 0] < self.flip_p).to(x.device).view(-1, 1, 1, 1)
        return torch.where(flip, x.flip(3), x)

    def _scale(self, x: Tensor, u: Tensor) -> Tensor:
        lo = 1.0 / self.scale
        sx = u[:, 0] * (self.scale - lo) + lo
        sy = u[:, 1] * (self.scale - lo) + lo
        theta = torch.zeros(len(u), 2, 3, dtype=torch.float64)
        theta[:, 0, 0], theta[:, 1, 1] = sx, sy
        return _warp(x, theta)

    def _rotate(self, x: Tensor, u: Tensor) -> Tensor:
        angle = (u[:, 0] - 0.5) * 2 * math.radians(self.rotate)
        cos, sin = torch.cos(angle), torch.sin(angle)
        theta = torch.zeros(len(u), 2, 3, dtype=torch.float64)
        theta[:, 0, 0], theta[:, 0, 1] = cos, -sin
        theta[:, 1, 0], theta[:, 1, 1] = sin, cos
        return _warp(x, theta)


def _uniform_int(u: Tensor, low: int, high: int) -> Tensor:
    """Integers uniform in [low, high] from uniforms in [0, 1)."""
    return (low + torch.floor(u * (high - low + 1))).long().clamp(low, high)


def _warp(x: Tensor, theta: Tensor) -> Tensor:
    """Bilinear affine warp with zero padding (align_corners=True, as the reference)."""
    # grid_sample needs theta in the images' dtype; half-precision grids are imprecise, so warp in fp32
    work = x if x.dtype in (torch.float32, torch.float64) else x.float()
    grid = F.affine_grid(theta.to(device=x.device, dtype=work.dtype), list(work.shape), align_corners=True)
    return F.grid_sample(work, grid, mode="bilinear", padding_mode="zeros", align_corners=True).to(x.dtype)


_OPS: dict[str, Callable[[DSA, Tensor, Tensor], Tensor]] = {
    "color": DSA._color,
    "crop": DSA._crop,
    "cutout": DSA._cutout,
    "flip": DSA._flip,
    "scale": DSA._scale,
    "rotate": DSA._rotate,
}
