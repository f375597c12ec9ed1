"""The LDM's attention, computed as diffusers computes it, with two shortcuts that keep its values.

- **Cross-attention on the class embedding has one key.** The LDM's ClassEmbedder gives one token
  per sample, so the softmax over the keys is exactly 1 and the output at every position is
  ``to_out(to_v(c))``. The query and key projections and the attention product are skipped; the
  output is the same and the gradients differ only by rounding (the query and key got none).
- **Self-attention in bfloat16 on a CPU** runs as a plain batched product and softmax (diffusers'
  `AttnProcessor`) instead of torch's fused CPU kernel, whose bfloat16 backward is slow at the tiny
  model's head width of 4 (benchmarks/README.md, "The UNet's attention, and bfloat16"), and at the
  autoencoder's one head of 64 over 14 × 14 positions. On a GPU, and in float32, the fused kernel
  (`AttnProcessor2_0`) stays.

`use_ldm_attention` gives every attention layer of a model (the UNet's and the autoencoder's) this
processor.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers.models.attention_processor import Attention, AttnProcessor, AttnProcessor2_0
from torch import Tensor

REDUCED = (torch.bfloat16, torch.float16)


def _single_key(attn: Attention, hidden_states: Tensor, context: Tensor | None, mask: Tensor | None) -> bool:
    """Whether this call is cross-attention on one key token that the shortcut covers."""
    return (
        context is not None
        and context.shape[1] == 1
        and mask is None
        and hidden_states.ndim == 3
        and attn.spatial_norm is None
        and attn.group_norm is None
    )


def _reduced_precision_on_cpu(hidden_states: Tensor) -> bool:
    if hidden_states.device.type != "cpu":
        return False
    if hidden_states.dtype in REDUCED:
        return True
    return torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") in REDUCED


class LDMAttention:
    """Attention processor for every attention layer of an LDM (module docstring)."""

    def __init__(self) -> None:
        self.fused = AttnProcessor2_0()
        self.plain = AttnProcessor()

    def __call__(
        self,
        attn: Attention,
        hidden_states: Tensor,
        encoder_hidden_states: Tensor | None = None,
        attention_mask: Tensor | None = None,
        temb: Tensor | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> Tensor:
        if _single_key(attn, hidden_states, encoder_hidden_states, attention_mask):
            return self._single_key_attention(attn, hidden_states, encoder_hidden_states)
        processor = self.plain if _reduced_precision_on_cpu(hidden_states) else self.fused
        return processor(attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs)

    @staticmethod
    def _single_key_attention(attn: Attention, hidden_states: Tensor, context: Tensor) -> Tensor:
        if attn.norm_cross:
            context = attn.norm_encoder_hidden_states(context)
        value = attn.to_out[1](attn.to_out[0](attn.to_v(context)))  # (B, 1, dim): softmax over one key is 1
        out = value.expand(-1, hidden_states.shape[1], -1)
        if attn.residual_connection:
            out = out + hidden_states
        return out / attn.rescale_output_factor


def use_ldm_attention(model: torch.nn.Module) -> None:
    """Give every diffusers `Attention` layer of ``model`` an `LDMAttention` processor."""
    processor = LDMAttention()
    for module in model.modules():
        if isinstance(module, Attention):
            module.set_processor(processor)
