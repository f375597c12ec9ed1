"""ViT of the GLaD/LD3M cross-architecture protocol, built from timm's ``VisionTransformer``.

Dim 512, depth 10, 8 heads of 64, MLP 512 (GELU), dropout 0.1 after the embedding (``emb_dropout``)
and inside every block (after the MLP activation, the MLP output and the attention projection),
no bias on the qkv projection, a class token whose final state feeds a linear head. These are the
settings of GLaD's ViT (lucidrains' ``vit-pytorch``), mapped onto timm's arguments.

Per resolution (``patch_size=None`` / ``layer_norm=None`` choose by resolution):

========  ======  ===========  ==================================================================
res       patch   LayerNorm    why
========  ======  ===========  ==================================================================
28, 32    4       yes          GLaD's CIFAR ViT (patch 4 at 32 px) keeps pre-norm and head norm
128, 256  16      no           GLaD's ImageNet ViT (the 128/256-px protocol) has every
                               LayerNorm commented out
========  ======  ===========  ==================================================================

The rule is: patch 16 and no LayerNorm from 128 px up, patch 4 with LayerNorm below. The depth is
10 at every resolution (GLaD's CIFAR ViT used 6; ``depth=6`` gives that back).

``layer_norm=True``/``False`` and ``patch_size`` override the rule. One deliberate difference from
GLaD: timm's initialisation (truncated normal with std 0.02 for the position embedding and the
linears, std 1e-6 for the class token) instead of ``torch.randn`` (std 1) position and class
embeddings and PyTorch's default linear init.
"""

from __future__ import annotations

import functools
from typing import ClassVar

from ddbench_plugins.evaluators._layers import check_channels, input_error
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor, nn

from ddbench.errors import InvalidOptionError
from ddbench.interfaces import Evaluator

#: from this resolution on, patch 16 without LayerNorm (GLaD's ImageNet ViT); below, patch 4 with it
LARGE_RESOLUTION = 128
SMALL_PATCH, LARGE_PATCH = 4, 16


def auto_patch_size(resolution: int) -> int:
    return LARGE_PATCH if resolution >= LARGE_RESOLUTION else SMALL_PATCH


def auto_layer_norm(resolution: int) -> bool:
    return resolution < LARGE_RESOLUTION


class ViT(VisionTransformer):
    """timm's VisionTransformer with ``embed`` = the class token's final state (before the head)."""

    def embed(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x), pre_logits=True)


class ViTEvaluator(Evaluator):
    name = "vit"
    description = "ViT (timm): dim 512, depth 10, 8 heads, MLP 512, class token; patch 4 + LayerNorm < 128 px, patch 16 without ≥ 128 px."
    display_order = 4
    # measured as `Evaluator.seconds_per_image` says (record eval-cost-1thread)
    seconds_per_image = (0.049, 0.013)
    protocol_lrs: ClassVar[dict[str, float]] = {}  # ViT uses each protocol's own lr
    #: one 4-px patch (the automatic patch size below 128 px)
    min_resolution: ClassVar[int] = SMALL_PATCH
    #: only without dropout: see `batching_obstacle`
    batched_seeds: ClassVar[bool] = True

    def __init__(
        self,
        patch_size: int | None = None,
        layer_norm: bool | None = None,
        dim: int = 512,
        depth: int = 10,
        heads: int = 8,
        mlp_dim: int = 512,
        dropout: float = 0.1,
        emb_dropout: float = 0.1,
    ) -> None:
        for option, value in (("dim", dim), ("depth", depth), ("heads", heads), ("mlp_dim", mlp_dim)):
            if value < 1:
                raise InvalidOptionError(f"Expected {option} ≥ 1 but got {value}")
        if patch_size is not None and patch_size < 1:
            raise InvalidOptionError(f"Expected patch_size ≥ 1 or None (by resolution) but got {patch_size}")
        if dim % heads:
            raise InvalidOptionError(f"Expected dim divisible by heads but got dim={dim}, heads={heads}")
        for option, value in (("dropout", dropout), ("emb_dropout", emb_dropout)):
            if not 0.0 <= value < 1.0:
                raise InvalidOptionError(f"Expected {option} in [0, 1) but got {value}")
        self.patch_size = patch_size
        self.layer_norm = layer_norm
        self.dim = dim
        self.depth = depth
        self.heads = heads
        self.mlp_dim = mlp_dim
        self.dropout = dropout
        self.emb_dropout = emb_dropout

    def batching_obstacle(self) -> str | None:
        if self.dropout > 0 or self.emb_dropout > 0:
            # each seed's dropout masks come from the global RNG stream its sequential run consumes
            return (
                f"dropout {self.dropout} / emb_dropout {self.emb_dropout}: a batched model cannot draw "
                "each seed's masks from that seed's own RNG stream (with dropout=0 and emb_dropout=0 it can)"
            )
        return None

    def patch_for(self, resolution: int) -> int:
        return self.patch_size if self.patch_size is not None else auto_patch_size(resolution)

    def layer_norm_for(self, resolution: int) -> bool:
        return self.layer_norm if self.layer_norm is not None else auto_layer_norm(resolution)

    def check_input(self, channels: int, resolution: int) -> None:
        check_channels(self.name, channels)
        patch = self.patch_for(resolution)
        if resolution < patch or resolution % patch:
            smallest = patch if self.patch_size is not None else self.min_resolution
            raise input_error(
                self.name, resolution, smallest,
                f"the side must be a multiple of the patch size {patch}",
                fix=f"Resize to {max(patch, resolution - resolution % patch)} px or pass a patch_size that divides {resolution}.",
            )  # fmt: skip

    def build(self, channels: int, num_classes: int, resolution: int) -> ViT:
        self.check_input(channels, resolution)
        # lucidrains' LayerNorm uses torch's default eps (timm's default is 1e-6)
        norm = functools.partial(nn.LayerNorm, eps=1e-5) if self.layer_norm_for(resolution) else nn.Identity
        return ViT(
            img_size=resolution,
            patch_size=self.patch_for(resolution),
            in_chans=channels,
            num_classes=num_classes,
            global_pool="token",
            class_token=True,
            embed_dim=self.dim,
            depth=self.depth,
            num_heads=self.heads,
            # timm sizes the MLP as int(dim * ratio); the +0.5 keeps float rounding from losing a unit
            mlp_ratio=(self.mlp_dim + 0.5) / self.dim,
            qkv_bias=False,
            pos_drop_rate=self.emb_dropout,
            proj_drop_rate=self.dropout,
            attn_drop_rate=0.0,
            drop_rate=0.0,
            norm_layer=norm,
        )
