"""Convert an original CompVis latent-diffusion checkpoint (class-conditional, VQ first stage,
ClassEmbedder cond stage — e.g. cin256-v2 ``model.ckpt``) into an `LDMBackend` directory.

The key renaming of the UNet and of the autoencoder's encoder/decoder is diffusers' own
(``diffusers.loaders.single_file_utils``); this module adds the parts it does not cover (the VQ
codebook, the class embedder, the configs of a VQ model) and checks the result: every converted
tensor must load strictly into the diffusers classes, and the schedule must reproduce the
checkpoint's own ``alphas_cumprod``.
"""

from __future__ import annotations

import copy
import pickle
from pathlib import Path
from typing import Any

import torch
from ddbench_plugins.priors.ld3m.backends import ClassEmbedder, LDMBackend
from diffusers import DDIMScheduler, UNet2DConditionModel, VQModel
from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint
from torch import Tensor

from ddbench.errors import CorruptFileError, DataNotFoundError, InvalidOptionError

# configs/latent-diffusion/cin256-v2.yaml of CompVis/latent-diffusion (the parts conversion needs)
CIN256_V2_CONFIG: dict[str, Any] = {
    "model": {
        "params": {
            "linear_start": 0.0015,
            "linear_end": 0.0195,
            "timesteps": 1000,
            "unet_config": {
                "params": {
                    "image_size": 64,
                    "in_channels": 3,
                    "out_channels": 3,
                    "model_channels": 192,
                    "attention_resolutions": [8, 4, 2],
                    "num_res_blocks": 2,
                    "channel_mult": [1, 2, 3, 5],
                    "num_heads": 1,
                    "use_spatial_transformer": True,
                    "transformer_depth": 1,
                    "context_dim": 512,
                }
            },
            "first_stage_config": {
                "params": {
                    "embed_dim": 3,
                    "n_embed": 8192,
                    "ddconfig": {
                        "double_z": False,
                        "z_channels": 3,
                        "resolution": 256,
                        "in_channels": 3,
                        "out_ch": 3,
                        "ch": 128,
                        "ch_mult": [1, 2, 4],
                        "num_res_blocks": 2,
                        "attn_resolutions": [],
                    },
                }
            },
            "cond_stage_config": {
                "target": "ldm.modules.encoders.modules.ClassEmbedder",
                "params": {"n_classes": 1001, "embed_dim": 512},
            },
        }
    }
}


def read_ldm_config(path: str | Path | None) -> dict[str, Any]:
    """The original YAML config, or cin256-v2's when ``path`` is None."""
    if path is None:
        return copy.deepcopy(CIN256_V2_CONFIG)
    import yaml

    try:
        return yaml.safe_load(Path(path).read_text())
    except OSError as err:
        raise DataNotFoundError(f"Cannot read the LDM config {path}: {err}") from err


def unet_config(ldm: dict[str, Any]) -> dict[str, Any]:
    """UNet2DConditionModel config of an LDM openaimodel UNet with a spatial transformer."""
    p = ldm["model"]["params"]["unet_config"]["params"]
    if not p.get("use_spatial_transformer", False) or p.get("context_dim") is None:
        raise InvalidOptionError(
            "Only cross-attention (use_spatial_transformer, context_dim) LDM UNets can be converted"
        )
    blocks = [p["model_channels"] * m for m in p["channel_mult"]]
    attn = set(p["attention_resolutions"])  # downsampling factors with attention: level i has ds = 2**i
    with_attn = [2**i in attn for i in range(len(blocks))]
    heads = p.get("num_heads", -1)
    if heads == -1:
        heads = [c // p["num_head_channels"] for c in blocks]
    return dict(
        sample_size=p["image_size"],
        in_channels=p["in_channels"],
        out_channels=p["out_channels"],
        down_block_types=tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in with_attn),
        up_block_types=tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(with_attn)),
        block_out_channels=tuple(blocks),
        layers_per_block=p["num_res_blocks"],
        cross_attention_dim=p["context_dim"],
        attention_head_dim=heads,  # diffusers' legacy name for the number of heads
        transformer_layers_per_block=p.get("transformer_depth", 1),
        use_linear_projection=p.get("use_linear_in_transformer", False),
    )


def vq_config(ldm: dict[str, Any]) -> dict[str, Any]:
    """VQModel config of an LDM VQModelInterface first stage."""
    params = ldm["model"]["params"]["first_stage_config"]["params"]
    if "n_embed" not in params:
        raise InvalidOptionError(
            "Only VQ first stages (n_embed) are supported; this checkpoint's autoencoder is not VQ"
        )
    dd = params["ddconfig"]
    if dd.get("attn_resolutions"):
        raise InvalidOptionError(
            f"VQ encoders with attention at resolutions {dd['attn_resolutions']} are not supported"
        )
    n = len(dd["ch_mult"])
    return dict(
        in_channels=dd["in_channels"],
        out_channels=dd["out_ch"],
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=tuple(dd["ch"] * m for m in dd["ch_mult"]),
        layers_per_block=dd["num_res_blocks"],
        latent_channels=dd["z_channels"],
        sample_size=dd["resolution"],
        num_vq_embeddings=params["n_embed"],
        vq_embed_dim=params["embed_dim"],
        norm_num_groups=32,
        scaling_factor=float(ldm["model"]["params"].get("scale_factor", 1.0)),
    )


def scheduler_config(ldm: dict[str, Any]) -> dict[str, Any]:
    p = ldm["model"]["params"]
    return dict(
        num_train_timesteps=p.get("timesteps", 1000),
        beta_start=p.get("linear_start", 0.0015),
        beta_end=p.get("linear_end", 0.0195),
        beta_schedule="scaled_linear",  # LDM "linear" = linear in √β
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,  # LDM DDIM "uniform" timesteps 1, 1 + 1000/T, …
        timestep_spacing="leading",
        prediction_type="epsilon",
    )


def embedder_config(ldm: dict[str, Any]) -> dict[str, Any]:
    cond = ldm["model"]["params"]["cond_stage_config"]
    if not str(cond.get("target", "ClassEmbedder")).endswith("ClassEmbedder"):
        raise InvalidOptionError(f"Only class-conditional LDMs (ClassEmbedder) are supported, not {cond.get('target')}")
    # n_classes counts the unconditional row (cin256: 1001 = 1000 classes + unconditional)
    return dict(num_classes=cond["params"]["n_classes"] - 1, embed_dim=cond["params"]["embed_dim"])


def load_checkpoint(path: str | Path, trust_pickle: bool = False) -> dict[str, Tensor]:
    """The ``state_dict`` of a Lightning ``.ckpt`` (or a bare state dict)."""
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(
            f"No checkpoint at {path}; download cin256-v2 model.ckpt from the latent-diffusion README"
        )
    try:
        obj = torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except pickle.UnpicklingError as err:
        raise CorruptFileError(
            f"{path} holds more than tensors ({str(err).splitlines()[0]}). If you trust its source, convert with "
            "--trust-checkpoint to unpickle it fully"
        ) from err
    state = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict) or not any(k.startswith("model.diffusion_model.") for k in state):
        raise CorruptFileError(f"{path} is not a latent-diffusion checkpoint (no model.diffusion_model.* weights)")
    return state


def _load_strict(module: torch.nn.Module, weights: dict[str, Tensor], what: str) -> None:
    fix = "Pass the checkpoint's own YAML config with --config"
    try:
        missing, unexpected = module.load_state_dict(weights, strict=False)
    except RuntimeError as err:  # shape mismatches
        first = [line.strip() for line in str(err).splitlines() if "size mismatch" in line][:3]
        raise CorruptFileError(
            f"The {what} weights do not fit the architecture from the config ({first}). {fix}"
        ) from err
    if missing or unexpected:
        raise CorruptFileError(
            f"The {what} weights do not match the architecture from the config: missing {missing[:5]}"
            f"{'…' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}{'…' if len(unexpected) > 5 else ''}. {fix}"
        )


def convert_state_dict(state: dict[str, Tensor], ldm_config: dict[str, Any]) -> LDMBackend:
    """Build an LDMBackend from an original state dict and its config (checked strictly)."""
    u_cfg, v_cfg = unet_config(ldm_config), vq_config(ldm_config)
    unet = UNet2DConditionModel(**u_cfg)
    _load_strict(unet, convert_ldm_unet_checkpoint(state, dict(u_cfg)), "UNet")
    vq = VQModel(**v_cfg)
    vq_weights = convert_ldm_vae_checkpoint(state, dict(v_cfg))
    codebook = "first_stage_model.quantize.embedding.weight"
    if codebook not in state:
        raise CorruptFileError(f"The checkpoint has no VQ codebook ({codebook})")
    vq_weights["quantize.embedding.weight"] = state[codebook]
    _load_strict(vq, vq_weights, "VQ autoencoder")
    embedder = ClassEmbedder(**embedder_config(ldm_config))
    _load_strict(embedder, {"embedding.weight": state["cond_stage_model.embedding.weight"]}, "class embedder")
    scheduler = DDIMScheduler(**scheduler_config(ldm_config))
    if "alphas_cumprod" in state:  # the checkpoint stores its schedule: it must be the one we rebuilt
        ours, theirs = scheduler.alphas_cumprod.double(), state["alphas_cumprod"].double()
        if ours.shape != theirs.shape or not torch.allclose(ours, theirs, rtol=1e-5, atol=1e-7):
            raise CorruptFileError("The checkpoint's alphas_cumprod differ from its config's schedule; check --config")
    return LDMBackend(vq, unet, embedder, scheduler)


def convert_ldm(
    checkpoint: str | Path, out_dir: str | Path, config: str | Path | None = None, trust_pickle: bool = False
) -> LDMBackend:
    """Convert ``checkpoint`` (with its YAML ``config``; cin256-v2 by default) and save it to ``out_dir``."""
    backend = convert_state_dict(load_checkpoint(checkpoint, trust_pickle), read_ldm_config(config))
    backend.save_pretrained(out_dir)
    return backend
