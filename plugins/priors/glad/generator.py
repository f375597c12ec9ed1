"""The style-generator interface GLaD distils through: a mapping network and a splittable synthesis.

A generator maps ``(z, class)`` to W+ codes ``(N, num_ws, w_dim)``; its synthesis network is a chain
of ``num_layers`` layers that can be cut after any layer ``k`` (0 ≤ k ≤ num_layers):

    features(ws, k)            runs the input and the first k layers → the feature map F_k
    from_features(F_k, ws, k)  runs layers k … num_layers − 1 on it  → the image in [−1, 1]

so that ``from_features(features(ws, k), ws, k)`` is the full synthesis for every ``k`` (GLaD's
"to_f" / "from_f" modes). Implementations: `TinyStyleGenerator` (written here, any resolution the
tests need) and `StyleGANXLGenerator` (an official StyleGAN-XL ``G_ema``).
"""

from __future__ import annotations

import abc

import torch
from torch import Tensor, nn

from ddbench.errors import InvalidOptionError


class StyleGenerator(nn.Module, abc.ABC):
    """A class-conditional style generator with a synthesis network that splits at any layer."""

    z_dim: int
    w_dim: int
    num_ws: int
    num_layers: int  # synthesis layers a split may fall between (features(ws, k) for k ≤ num_layers)
    num_classes: int  # 0 for an unconditional generator
    img_channels: int
    img_resolution: int

    @abc.abstractmethod
    def mapping(self, z: Tensor, labels: Tensor, truncation: float = 1.0) -> Tensor:
        """W+ codes ``(N, num_ws, w_dim)`` for latents ``z (N, z_dim)`` and class ids ``labels (N,)``.

        ``truncation`` ψ pulls each w toward the (class) average w: w_avg + ψ·(w − w_avg).
        """

    @abc.abstractmethod
    def features(self, ws: Tensor, layer: int) -> Tensor:
        """The synthesis state after the input and the first ``layer`` layers."""

    @abc.abstractmethod
    def from_features(self, features: Tensor, ws: Tensor, layer: int) -> Tensor:
        """Images in [−1, 1] (N, img_channels, R, R) from the state after ``layer`` layers."""

    def synthesis(self, ws: Tensor) -> Tensor:
        """The whole synthesis network: images in [−1, 1]."""
        return self.from_features(self.features(ws, 0), ws, 0)

    def check_layer(self, layer: int) -> int:
        if not 0 <= layer <= self.num_layers:
            raise InvalidOptionError(
                f"Expected layer in [0, {self.num_layers}] for this generator ({self.num_layers} synthesis "
                f"layers) but got {layer}; use -1 to learn W+ only"
            )
        return layer

    def check_ws(self, ws: Tensor) -> None:
        if ws.dim() != 3 or ws.shape[1] != self.num_ws or ws.shape[2] != self.w_dim:
            raise InvalidOptionError(
                f"Expected W+ codes of shape (N, {self.num_ws}, {self.w_dim}) but got {tuple(ws.shape)}"
            )

    @torch.no_grad()
    def mean_w(self, labels: Tensor, samples: int, generator: torch.Generator) -> Tensor:
        """The average W+ of each label over ``samples`` draws of z (GLaD's ``avg_w`` init)."""
        device = next(self.parameters()).device
        means: dict[int, Tensor] = {}
        for label in labels.unique().tolist():
            z = torch.randn(samples, self.z_dim, generator=generator).to(device)
            cls = torch.full((samples,), int(label), dtype=torch.long, device=device)
            means[int(label)] = torch.cat(
                [self.mapping(part_z, part_c) for part_z, part_c in zip(z.split(256), cls.split(256))]
            ).mean(0)
        return torch.stack([means[int(label)] for label in labels.tolist()])
