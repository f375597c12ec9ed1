"""The interface LD3M samples through (`LatentDiffusionBackend`) and the directory format every
backend writes: ``ld3m_backend.json`` names its kind. backends.py (LDM) and dit.py (DiT) implement it;
neither imports the other for it.
"""

from __future__ import annotations

import abc
from pathlib import Path
from typing import ClassVar

import torch
from diffusers import DDIMScheduler
from torch import Tensor, nn

from ddbench.errors import InvalidOptionError

BACKEND_FILE = "ld3m_backend.json"
# Never reach a hub; and load the weights into built modules (diffusers' low-memory path needs
# `accelerate`, which ddbench does not depend on, and warns on every load without it).
LOAD_OPTIONS = {"local_files_only": True, "low_cpu_mem_usage": False}
FORMAT_VERSION = 1


class LatentDiffusionBackend(nn.Module, abc.ABC):
    """The interface LD3M samples through. Images are in [−1, 1]; latents are model-scaled."""

    kind: ClassVar[str] = ""
    scheduler: DDIMScheduler

    @property
    @abc.abstractmethod
    def image_channels(self) -> int: ...

    @property
    @abc.abstractmethod
    def latent_channels(self) -> int: ...

    @property
    @abc.abstractmethod
    def downsample_factor(self) -> int:
        """Image pixels per latent pixel along each side."""

    @property
    @abc.abstractmethod
    def native_latent_size(self) -> int:
        """Latent side length the denoiser was trained at."""

    @property
    @abc.abstractmethod
    def num_classes(self) -> int:
        """Real classes (the unconditional class is extra)."""

    @abc.abstractmethod
    def encode(self, images: Tensor) -> Tensor:
        """Images in [−1, 1] → latents Z (before any quantisation)."""

    @abc.abstractmethod
    def decode(self, latents: Tensor) -> Tensor:
        """Latents → images in [−1, 1]."""

    def quantize(self, latents: Tensor) -> Tensor:
        """The autoencoder's quantisation of latents (identity for continuous autoencoders)."""
        return latents

    @abc.abstractmethod
    def class_embedding(self, labels: Tensor) -> Tensor:
        """Conditioning c for model class ids ``labels`` (the initial value of LD3M's learnable c)."""

    @abc.abstractmethod
    def unconditional_embedding(self, n: int) -> Tensor:
        """Conditioning of the unconditional class, repeated ``n`` times (fixed, for guidance)."""

    @abc.abstractmethod
    def denoise(self, z_t: Tensor, t: Tensor, condition: Tensor) -> Tensor:
        """Predicted noise ε̂(z_t, t, c); ``t`` is an int64 tensor of model timesteps (B,)."""

    def denoise_pair(self, z_t: Tensor, t: Tensor, uncond: Tensor, cond: Tensor) -> tuple[Tensor, Tensor]:
        """(ε̂(z_t, t, uncond), ε̂(z_t, t, cond)), classifier-free guidance's two halves; here one
        `denoise` call on the doubled batch (a backend may share what both halves compute)."""
        eps = self.denoise(torch.cat([z_t, z_t]), torch.cat([t, t]), torch.cat([uncond, cond]))
        eps_u, eps_c = eps.chunk(2)
        return eps_u, eps_c

    @abc.abstractmethod
    def save_pretrained(self, directory: str | Path) -> None: ...

    def with_random_denoiser(self, seed: int) -> LatentDiffusionBackend:
        """This backend with its denoiser and class conditioning re-initialised at random (``seed``)
        and its autoencoder kept: the paper's Table 3 "random" generator."""
        raise InvalidOptionError(
            f"The {self.kind} backend cannot re-initialise its denoiser; use an LDM (tiny or cin256)"
        )

    def freeze(self) -> LatentDiffusionBackend:
        """Evaluation mode, no parameter gradients: LD3M never trains the generator."""
        self.eval()
        self.requires_grad_(False)
        return self
