"""The ``dit`` backend: a local diffusers DiT directory (e.g. DiT-XL/2-256) with LD3M's learnable c.

DiT conditions every transformer block (and its final layer) through AdaLayerNormZero on
``timestep embedding + label embedding``, where the label embedding is a row of a table. LD3M learns c
instead of picking a row: a forward hook on each block's label table replaces the row it looked up
with the c of the current `denoise` call, so the model's own weights, state dict and
`save_pretrained` layout stay untouched. The original DiT has one label table (``y_embedder``) that
diffusers copies into every block; a model whose blocks hold different tables has no single c to
learn and is refused.

Other DiT facts handled here: the transformer predicts noise and (learned) variance, so the output is
cut to its first ``latent_channels`` channels; the autoencoder is an ``AutoencoderKL`` whose latents are
scaled by ``scaling_factor`` (0.18215); the unconditional class for guidance is the table's extra row
(``num_classes``). Guidance is applied to all latent channels (the DiT pipeline guides only the first
three, a quirk of the original code).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from ddbench_plugins.priors.ld3m.backend_base import BACKEND_FILE, FORMAT_VERSION, LOAD_OPTIONS, LatentDiffusionBackend
from diffusers import AutoencoderKL, DDIMScheduler, DiTTransformer2DModel
from torch import Tensor, nn

from ddbench.errors import CorruptFileError, InvalidOptionError

PIPELINE_INDEX = "model_index.json"  # what a diffusers DiTPipeline directory holds at its root


class DiTBackend(LatentDiffusionBackend):
    """AutoencoderKL + DiTTransformer2DModel + DDIMScheduler; c replaces the label embedding."""

    kind = "dit"

    def __init__(self, vae: AutoencoderKL, transformer: DiTTransformer2DModel, scheduler: DDIMScheduler) -> None:
        super().__init__()
        if transformer.config.in_channels != vae.config.latent_channels:
            raise InvalidOptionError(
                f"Expected the DiT's in_channels ({transformer.config.in_channels}) to equal the autoencoder's latent "
                f"channels ({vae.config.latent_channels})"
            )
        if transformer.config.num_embeds_ada_norm is None:
            raise InvalidOptionError(
                "The DiT has no class-label embedding (num_embeds_ada_norm is None); LD3M needs a class-conditional DiT"
            )
        self.vae = vae
        self.transformer = transformer
        self.scheduler = scheduler
        self._tables = [block.norm1.emb.class_embedder for block in transformer.transformer_blocks]
        first = self._tables[0].embedding_table.weight
        if any(not torch.equal(t.embedding_table.weight, first) for t in self._tables[1:]):
            raise InvalidOptionError(
                "The DiT's transformer blocks hold different label tables, so there is no single class embedding c "
                "to learn; use a DiT converted from the original checkpoint (one shared table)"
            )
        self._condition: Tensor | None = None
        for table in self._tables:
            table.register_forward_hook(self._inject)

    def _inject(self, module: nn.Module, inputs: Any, output: Tensor) -> Tensor:
        # replaces the looked-up rows with LD3M's c while `conditioned` is active
        return output if self._condition is None else self._condition.to(output.dtype)

    @contextlib.contextmanager
    def conditioned(self, condition: Tensor) -> Iterator[None]:
        self._condition = condition
        try:
            yield
        finally:
            self._condition = None

    # -- facts
    @property
    def image_channels(self) -> int:
        return int(self.vae.config.in_channels)

    @property
    def latent_channels(self) -> int:
        return int(self.transformer.config.in_channels)

    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def native_latent_size(self) -> int:
        return int(self.transformer.config.sample_size)

    @property
    def num_classes(self) -> int:
        return int(self.transformer.config.num_embeds_ada_norm)

    @property
    def scale(self) -> float:
        return float(self.vae.config.scaling_factor)

    # -- autoencoder (continuous: the posterior mean, no quantisation)
    def encode(self, images: Tensor) -> Tensor:
        return self.vae.encode(images).latent_dist.mean * self.scale

    def decode(self, latents: Tensor) -> Tensor:
        return self.vae.decode(latents / self.scale).sample

    # -- conditioning and denoiser
    @property
    def _table(self) -> nn.Embedding:
        return self._tables[0].embedding_table

    def class_embedding(self, labels: Tensor) -> Tensor:
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= self.num_classes):
            raise InvalidOptionError(
                f"Expected class ids in [0, {self.num_classes}) but got {labels.min().item()}…{labels.max().item()}; "
                "map dataset labels to the model's classes with the prior's class_ids option"
            )
        return self._table(labels.to(self._table.weight.device))

    def unconditional_embedding(self, n: int) -> Tensor:
        if self._table.num_embeddings <= self.num_classes:
            raise InvalidOptionError(
                "This DiT was trained without label dropout, so it has no unconditional class; use guidance_scale=1"
            )
        row = torch.full((n,), self.num_classes, dtype=torch.long, device=self._table.weight.device)
        return self._table(row)

    def denoise(self, z_t: Tensor, t: Tensor, condition: Tensor) -> Tensor:
        # the labels only size the lookup; the hook returns `condition` in its place
        labels = torch.zeros(len(z_t), dtype=torch.long, device=z_t.device)
        with self.conditioned(condition):
            out = self.transformer(z_t, timestep=t, class_labels=labels).sample
        return out[:, : self.latent_channels]  # drop the learned-variance channels

    # -- persistence (the diffusers DiTPipeline layout, plus ld3m_backend.json)
    def save_pretrained(self, directory: str | Path) -> None:
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        self.vae.save_pretrained(out / "vae")
        self.transformer.save_pretrained(out / "transformer")
        self.scheduler.save_pretrained(out / "scheduler")
        (out / BACKEND_FILE).write_text(json.dumps({"format": self.kind, "version": FORMAT_VERSION}, indent=2))

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> DiTBackend:
        """A DiT directory: ``vae/``, ``transformer/``, ``scheduler/`` (its config is read as DDIM's)."""
        root = Path(directory)
        try:
            scheduler_config = DDIMScheduler.load_config(root / "scheduler", local_files_only=True)
            return cls(
                AutoencoderKL.from_pretrained(root / "vae", **LOAD_OPTIONS),
                DiTTransformer2DModel.from_pretrained(root / "transformer", **LOAD_OPTIONS),
                DDIMScheduler.from_config(scheduler_config),
            )
        except (OSError, ValueError, KeyError) as err:
            raise CorruptFileError(
                f"Could not load the DiT directory {root}: {err}. Expected the diffusers DiTPipeline layout "
                "(vae/, transformer/, scheduler/), e.g. a local copy of facebook/DiT-XL-2-256"
            ) from err


def is_dit_pipeline(directory: str | Path) -> bool:
    """True for a diffusers DiTPipeline directory (as saved by the hub or `DiTPipeline.save_pretrained`)."""
    index = Path(directory) / PIPELINE_INDEX
    try:
        return json.loads(index.read_text()).get("_class_name") == "DiTPipeline"
    except (OSError, ValueError):
        return False
