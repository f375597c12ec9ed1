"""Classifier-free guidance's two UNet calls with their class-free start computed once.

Guidance runs the UNet on the same z_t and t under two conditionings, the unconditional class and
c. In an LDM's UNet2DConditionModel the conditioning enters only through cross-attention, so
everything before the first cross-attention — the time embedding, ``conv_in``, the down blocks
without attention, the first ResNet of the first cross-attention block and, in its first
transformer, the input projection and the first block's self-attention — sees the same input in
both halves. `denoise_pair` runs that prefix once on z_t, then duplicates its activations (and
the skip connections it produced) and runs the rest of the UNet on both conditionings in one
batch: the same values as diffusers' forward on the doubled batch, with the prefix's arithmetic
(forward and backward) halved (benchmarks/README.md, "The guidance halves' class-free start").
``through_self_attention=False`` stops the prefix before the transformer, as it did first.

`supports_shared_prefix` names the UNet configurations this forward covers; any other UNet is
called once on the doubled batch, as before.
"""

from __future__ import annotations

import torch
from diffusers import UNet2DConditionModel
from diffusers.models.transformers.transformer_2d import Transformer2DModel
from diffusers.models.unets.unet_2d_blocks import CrossAttnDownBlock2D
from torch import Tensor


def supports_shared_prefix(unet: UNet2DConditionModel) -> bool:
    """True when ``unet`` uses none of the inputs `denoise_pair`'s forward leaves out."""
    config = unet.config
    return (
        config.class_embed_type is None
        and config.addition_embed_type is None
        and config.encoder_hid_dim_type is None
        and config.time_cond_proj_dim is None
        and not config.center_input_sample
        and getattr(unet, "position_net", None) is None
        and any(_has_cross_attention(block) for block in unet.down_blocks)
    )


def _has_cross_attention(block: torch.nn.Module) -> bool:
    return bool(getattr(block, "has_cross_attention", False))


def _conditioning(block: torch.nn.Module, condition: Tensor) -> dict[str, Tensor]:
    """The keyword a block takes the conditioning by: only blocks with cross-attention see it."""
    return {"encoder_hidden_states": condition} if _has_cross_attention(block) else {}


def _twice(tensor: Tensor) -> Tensor:
    return torch.cat([tensor, tensor])


def denoise_pair(
    unet: UNet2DConditionModel,
    z_t: Tensor,
    t: Tensor,
    uncond: Tensor,
    cond: Tensor,
    through_self_attention: bool = True,
) -> tuple[Tensor, Tensor]:
    """(ε̂(z_t, t, uncond), ε̂(z_t, t, cond)): diffusers' UNet2DConditionModel forward on
    ``cat([z_t, z_t])`` under ``cat([uncond, cond])``, the class-free prefix run once."""
    # 1. time embedding and 2. conv_in, as diffusers' forward does them
    emb = unet.time_embedding(unet.get_time_embed(sample=z_t, timestep=t), None)
    if unet.time_embed_act is not None:
        emb = unet.time_embed_act(emb)
    forward_upsample_size = any(size % 2**unet.num_upsamplers != 0 for size in z_t.shape[-2:])
    sample = unet.conv_in(z_t)
    skips: tuple[Tensor, ...] = (sample,)
    condition = torch.cat([uncond, cond])
    emb_both = _twice(emb)

    # 3. down: the blocks before the first cross-attention on one half, then both halves
    blocks = list(unet.down_blocks)
    first = next(i for i, block in enumerate(blocks) if _has_cross_attention(block))
    for block in blocks[:first]:
        sample, residuals = block(hidden_states=sample, temb=emb)
        skips += residuals
    if type(blocks[first]) is CrossAttnDownBlock2D:
        sample, residuals = _cross_attn_down_from_shared(
            blocks[first], sample, emb, emb_both, condition, through_self_attention
        )
    else:
        sample, residuals = blocks[first](hidden_states=_twice(sample), temb=emb_both, encoder_hidden_states=condition)
    skips = tuple(_twice(skip) for skip in skips) + residuals
    for block in blocks[first + 1 :]:
        sample, residuals = block(hidden_states=sample, temb=emb_both, **_conditioning(block, condition))
        skips += residuals

    # 4. mid
    if unet.mid_block is not None:
        sample = unet.mid_block(sample, emb_both, **_conditioning(unet.mid_block, condition))

    # 5. up
    upsample_size = None
    for index, block in enumerate(unet.up_blocks):
        residuals = skips[-len(block.resnets) :]
        skips = skips[: -len(block.resnets)]
        if index < len(unet.up_blocks) - 1 and forward_upsample_size:
            upsample_size = skips[-1].shape[2:]
        sample = block(
            hidden_states=sample,
            temb=emb_both,
            res_hidden_states_tuple=residuals,
            upsample_size=upsample_size,
            **_conditioning(block, condition),
        )

    # 6. out
    if unet.conv_norm_out is not None:
        sample = unet.conv_act(unet.conv_norm_out(sample))
    eps_u, eps_c = unet.conv_out(sample).chunk(2)
    return eps_u, eps_c


def _cross_attn_down_from_shared(
    block: CrossAttnDownBlock2D,
    sample: Tensor,
    emb: Tensor,
    emb_both: Tensor,
    condition: Tensor,
    through_self_attention: bool,
) -> tuple[Tensor, tuple[Tensor, ...]]:
    """CrossAttnDownBlock2D's forward with its first ResNet (and, where `_self_attention_first`
    allows, its first transformer up to the cross-attention) on one half (``sample``, ``emb``) and
    everything from its first cross-attention on both halves (``emb_both``)."""
    residuals: tuple[Tensor, ...] = ()
    for index, (resnet, attention) in enumerate(zip(block.resnets, block.attentions, strict=True)):
        if index > 0:
            sample = attention(resnet(sample, emb_both), encoder_hidden_states=condition, return_dict=False)[0]
        elif through_self_attention and _self_attention_first(attention):
            sample = _transformer_from_shared(attention, resnet(sample, emb), condition)
        else:
            sample = attention(_twice(resnet(sample, emb)), encoder_hidden_states=condition, return_dict=False)[0]
        residuals += (sample,)
    if block.downsamplers is not None:
        for downsampler in block.downsamplers:
            sample = downsampler(sample)
        residuals += (sample,)
    return sample, residuals


def _self_attention_first(transformer: torch.nn.Module) -> bool:
    """True for a Transformer2DModel whose first block runs as `_transformer_from_shared` writes it:
    continuous input, a layer-norm BasicTransformerBlock with self-attention, then cross-attention."""
    if not isinstance(transformer, Transformer2DModel) or not transformer.is_input_continuous:
        return False
    first = transformer.transformer_blocks[0]
    return (
        first.norm_type == "layer_norm"
        and first.pos_embed is None
        and not first.only_cross_attention
        and first.attn2 is not None
        and first.attn2.is_cross_attention
        and first._chunk_size is None
        and not transformer.gradient_checkpointing
    )


def _transformer_from_shared(transformer: Transformer2DModel, hidden: Tensor, condition: Tensor) -> Tensor:
    """Transformer2DModel's forward on both halves of ``cat([hidden, hidden])``, its input
    projection and its first block's self-attention run once on ``hidden`` (diffusers' steps)."""
    batch, _, height, width = hidden.shape
    tokens, inner_dim = transformer._operate_on_continuous_inputs(hidden)
    first, *others = transformer.transformer_blocks
    tokens = _twice(first.attn1(first.norm1(tokens)) + tokens)  # self-attention sees no class
    tokens = first.attn2(first.norm2(tokens), encoder_hidden_states=condition) + tokens
    tokens = first.ff(first.norm3(tokens)) + tokens
    for block in others:
        tokens = block(tokens, encoder_hidden_states=condition)
    return transformer._get_output_for_continuous_inputs(
        hidden_states=tokens,
        residual=_twice(hidden),
        batch_size=2 * batch,
        height=height,
        width=width,
        inner_dim=inner_dim,
    )
