"""Latent-diffusion backends: what LD3M needs from a pretrained (or random) latent diffusion model.

A backend exposes the autoencoder (encode / quantize / decode, images in [−1, 1]), the class
conditioning (learned embedding rows and the unconditional one), the noise predictor
``denoise(z_t, t, condition)`` and a diffusers DDIM scheduler. All weights are frozen.

``LDMBackend`` holds diffusers classes — VQModel, UNet2DConditionModel (cross-attention on the class
embedding, as the class-conditional ImageNet LDM), `ClassEmbedder`, DDIMScheduler — and serves two
of the prior's backends: ``tiny`` (CPU-sized, random or trained by ``ddbench prior train ld3m``) and
``cin256`` (the paper's model, converted by ``ddbench prior convert-ldm``); ``DiTBackend`` (dit.py)
serves ``dit``. Its UNet and autoencoder compute attention with `LDMAttention` (attention.py),
upsample with `NearestUpsample2D` (upsample.py) and, compiled for a CPU, normalise with
`ChannelSumGroupNorm` (group_norm.py) and add the UNet's linear biases after the product
(`BiasAfterLinear`, linear.py); guidance's two halves share the UNet's class-free start
(shared_prefix.py). Each gives diffusers' values up to rounding, faster. A directory written by
`save_pretrained` has one diffusers sub-folder per component plus ``ld3m_backend.json``. The
interface both implement is `LatentDiffusionBackend` (backend_base.py); `load_backend` reads either
kind.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from ddbench_plugins.priors.ld3m.attention import use_ldm_attention
from ddbench_plugins.priors.ld3m.backend_base import BACKEND_FILE, FORMAT_VERSION, LOAD_OPTIONS, LatentDiffusionBackend
from ddbench_plugins.priors.ld3m.dit import DiTBackend, is_dit_pipeline
from ddbench_plugins.priors.ld3m.group_norm import use_channel_sum_group_norm
from ddbench_plugins.priors.ld3m.linear import use_bias_after_product
from ddbench_plugins.priors.ld3m.shared_prefix import denoise_pair, supports_shared_prefix
from ddbench_plugins.priors.ld3m.upsample import use_nearest_upsample
from diffusers import DDIMScheduler, UNet2DConditionModel, VQModel
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import Tensor, nn

from ddbench.errors import CorruptFileError, DataNotFoundError, InvalidOptionError

# cin256-v2 (CompVis latent-diffusion configs/latent-diffusion/cin256-v2.yaml): LDM "linear" betas are
# linear in √β, which diffusers calls "scaled_linear"; DDIM "uniform" steps are 1, 1 + 1000/T, … .
CIN256_SCHEDULER = dict(
    num_train_timesteps=1000,
    beta_start=0.0015,
    beta_end=0.0195,
    beta_schedule="scaled_linear",
    clip_sample=False,
    set_alpha_to_one=False,
    steps_offset=1,
    timestep_spacing="leading",
    prediction_type="epsilon",
)
CIN256_NUM_CLASSES = 1000  # the embedder has 1001 rows; row 1000 is the unconditional class
CIN256_EMBED_DIM = 512
CIN256_VQ = dict(  # VQ-f4: ch 128, ch_mult 1-2-4, 2 res blocks, 3 latent channels, 8192 codes
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 3,
    up_block_types=("UpDecoderBlock2D",) * 3,
    block_out_channels=(128, 256, 512),
    layers_per_block=2,
    latent_channels=3,
    sample_size=256,
    num_vq_embeddings=8192,
    vq_embed_dim=3,
    norm_num_groups=32,
    scaling_factor=1.0,  # the LDM config has no scale_factor
)
CIN256_UNET = dict(  # model_channels 192, mult 1-2-3-5, attention at ds 2/4/8, 1 head, context 512
    sample_size=64,
    in_channels=3,
    out_channels=3,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    block_out_channels=(192, 384, 576, 960),
    layers_per_block=2,
    cross_attention_dim=CIN256_EMBED_DIM,
    attention_head_dim=1,  # diffusers' legacy name for the number of heads (LDM num_heads: 1)
    transformer_layers_per_block=1,
    use_linear_projection=False,
)


class ClassEmbedder(ModelMixin, ConfigMixin):
    """LDM's ClassEmbedder: one learned row per class plus row ``num_classes`` = unconditional.

    Returns a length-1 token sequence ``(B, 1, embed_dim)`` for the UNet's cross-attention.
    """

    @register_to_config
    def __init__(self, num_classes: int, embed_dim: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(num_classes + 1, embed_dim)

    def forward(self, labels: Tensor) -> Tensor:
        return self.embedding(labels)[:, None, :]


class LDMBackend(LatentDiffusionBackend):
    """VQModel + class-conditional UNet2DConditionModel + ClassEmbedder + DDIMScheduler."""

    kind = "ldm"

    def __init__(
        self, vqvae: VQModel, unet: UNet2DConditionModel, embedder: ClassEmbedder, scheduler: DDIMScheduler
    ) -> None:
        super().__init__()
        if unet.config.cross_attention_dim != embedder.config.embed_dim:
            raise InvalidOptionError(
                f"Expected the UNet's cross_attention_dim ({unet.config.cross_attention_dim}) to equal the class "
                f"embedding size ({embedder.config.embed_dim}); rebuild one of them to match"
            )
        if unet.config.in_channels != vqvae.config.latent_channels:
            raise InvalidOptionError(
                f"Expected UNet in_channels {unet.config.in_channels} to equal the autoencoder's latent channels "
                f"{vqvae.config.latent_channels}"
            )
        self.vqvae = vqvae
        use_ldm_attention(unet)
        use_ldm_attention(vqvae)
        use_nearest_upsample(unet)
        use_nearest_upsample(vqvae)
        use_channel_sum_group_norm(unet)
        use_channel_sum_group_norm(vqvae)
        use_bias_after_product(unet)
        self.unet = unet
        self.shares_prefix = supports_shared_prefix(unet)
        self.shares_self_attention = True  # the shared prefix goes on through the first self-attention
        self.embedder = embedder
        self.scheduler = scheduler

    # -- facts
    @property
    def image_channels(self) -> int:
        return int(self.vqvae.config.in_channels)

    @property
    def latent_channels(self) -> int:
        return int(self.vqvae.config.latent_channels)

    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.vqvae.config.block_out_channels) - 1)

    @property
    def native_latent_size(self) -> int:
        return int(self.unet.config.sample_size)

    @property
    def num_classes(self) -> int:
        return int(self.embedder.config.num_classes)

    @property
    def scale(self) -> float:
        # LDM's scale_factor: the diffusion model sees scale·E(x) (1.0 for cin256)
        return float(self.vqvae.config.scaling_factor)

    # -- autoencoder
    def encode(self, images: Tensor) -> Tensor:
        return self.vqvae.encode(images).latents * self.scale

    def quantize(self, latents: Tensor) -> Tensor:
        return self.vqvae.quantize(latents / self.scale)[0] * self.scale

    def decode(self, latents: Tensor) -> Tensor:
        # quantisation with a straight-through estimator, so gradients reach the latents; always in
        # fp32 (a nearest-code search in bf16 would pick other codes), the decoder in the caller's precision
        with torch.autocast(latents.device.type, enabled=False):
            quantized = self.vqvae.quantize(latents.float() / self.scale)[0]
        return self.vqvae.decode(quantized, force_not_quantize=True).sample

    # -- conditioning and denoiser
    def class_embedding(self, labels: Tensor) -> Tensor:
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= self.num_classes):
            raise InvalidOptionError(
                f"Expected class ids in [0, {self.num_classes}) but got {labels.min().item()}…{labels.max().item()}; "
                "map dataset labels to the model's classes with the prior's class_ids option"
            )
        return self.embedder(labels)

    def unconditional_embedding(self, n: int) -> Tensor:
        row = torch.full((n,), self.num_classes, dtype=torch.long, device=self.embedder.embedding.weight.device)
        return self.embedder(row)

    def denoise(self, z_t: Tensor, t: Tensor, condition: Tensor) -> Tensor:
        return self.unet(z_t, t, encoder_hidden_states=condition).sample

    def denoise_pair(self, z_t: Tensor, t: Tensor, uncond: Tensor, cond: Tensor) -> tuple[Tensor, Tensor]:
        if self.shares_prefix:
            return denoise_pair(self.unet, z_t, t, uncond, cond, self.shares_self_attention)
        return super().denoise_pair(z_t, t, uncond, cond)

    def with_random_denoiser(self, seed: int) -> LDMBackend:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            unet = UNet2DConditionModel.from_config(self.unet.config)
            embedder = ClassEmbedder.from_config(self.embedder.config)
        device = next(self.vqvae.parameters()).device
        return LDMBackend(self.vqvae, unet.to(device), embedder.to(device), self.scheduler)

    # -- persistence (diffusers layout)
    def save_pretrained(self, directory: str | Path) -> None:
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        self.vqvae.save_pretrained(out / "vqvae")
        self.unet.save_pretrained(out / "unet")
        self.embedder.save_pretrained(out / "class_embedder")
        self.scheduler.save_pretrained(out / "scheduler")
        (out / BACKEND_FILE).write_text(json.dumps({"format": self.kind, "version": FORMAT_VERSION}, indent=2))

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> LDMBackend:
        root = Path(directory)
        try:
            return cls(
                VQModel.from_pretrained(root / "vqvae", **LOAD_OPTIONS),
                UNet2DConditionModel.from_pretrained(root / "unet", **LOAD_OPTIONS),
                ClassEmbedder.from_pretrained(root / "class_embedder", **LOAD_OPTIONS),
                DDIMScheduler.from_pretrained(root / "scheduler", local_files_only=True),
            )
        except (OSError, ValueError, KeyError) as err:
            raise CorruptFileError(
                f"Could not load the LD3M model directory {root}: {err}. Re-create it with "
                "`ddbench prior train ld3m` or `ddbench prior convert-ldm`"
            ) from err


# ------------------------------------------------------------------------------ constructors


def tiny_components(
    image_channels: int,
    num_classes: int,
    base_channels: int = 32,
    embed_dim: int = 64,
    latent_channels: int = 3,
    num_codes: int = 256,
) -> dict[str, Any]:
    """Configs of the CPU-sized LDM: VQ-f2 autoencoder, 2-level UNet with cross-attention on c."""
    b = base_channels
    return dict(
        vqvae=dict(
            in_channels=image_channels,
            out_channels=image_channels,
            down_block_types=("DownEncoderBlock2D",) * 2,
            up_block_types=("UpDecoderBlock2D",) * 2,
            block_out_channels=(b, 2 * b),
            layers_per_block=1,
            latent_channels=latent_channels,
            sample_size=32,
            num_vq_embeddings=num_codes,
            vq_embed_dim=latent_channels,
            norm_num_groups=8,
            scaling_factor=1.0,
        ),
        unet=dict(
            sample_size=16,
            in_channels=latent_channels,
            out_channels=latent_channels,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            block_out_channels=(b, 2 * b),
            layers_per_block=1,
            cross_attention_dim=embed_dim,
            attention_head_dim=4,  # number of heads (diffusers' legacy name)
            norm_num_groups=8,
        ),
        embedder=dict(num_classes=num_classes, embed_dim=embed_dim),
        scheduler=dict(CIN256_SCHEDULER),
    )


def build_ldm(components: dict[str, Any], seed: int = 0) -> LDMBackend:
    """Randomly initialised LDMBackend from component configs (the paper's "Random" generator)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return LDMBackend(
            VQModel(**components["vqvae"]),
            UNet2DConditionModel(**components["unet"]),
            ClassEmbedder(**components["embedder"]),
            DDIMScheduler(**components["scheduler"]),
        )


def build_tiny(image_channels: int, num_classes: int, seed: int = 0, **sizes: Any) -> LDMBackend:
    return build_ldm(tiny_components(image_channels, num_classes, **sizes), seed=seed)


def build_cin256(seed: int = 0) -> LDMBackend:
    """The cin256-v2 architecture with random weights (for converting into, and for benchmarks)."""
    components = dict(
        vqvae=dict(CIN256_VQ),
        unet=dict(CIN256_UNET),
        embedder=dict(num_classes=CIN256_NUM_CLASSES, embed_dim=CIN256_EMBED_DIM),
        scheduler=dict(CIN256_SCHEDULER),
    )
    return build_ldm(components, seed=seed)


#: models that ship inside the package, one folder per dataset name (see models/README.md)
PACKAGED_MODELS = Path(__file__).parent / "models"


def packaged_model(dataset: str) -> Path | None:
    """The tiny LDM ddbench ships for ``dataset`` (trained by `ddbench prior train ld3m`), or None."""
    folder = PACKAGED_MODELS / dataset
    return folder if (folder / BACKEND_FILE).is_file() else None


def load_backend(directory: str | Path) -> LatentDiffusionBackend:
    """Load a backend directory written by `save_pretrained`, or a diffusers DiTPipeline directory (no network access)."""
    root = Path(directory)
    marker = root / BACKEND_FILE
    if not marker.is_file():
        if is_dit_pipeline(root):
            return DiTBackend.from_pretrained(root)
        raise DataNotFoundError(
            f"{root} is not an LD3M model directory (no {BACKEND_FILE}). Create one with "
            "`ddbench prior train ld3m --out DIR` (tiny) or `ddbench prior convert-ldm MODEL.ckpt DIR` (cin256), "
            "or pass a local diffusers DiT directory (model_index.json, vae/, transformer/, scheduler/)"
        )
    try:
        fmt = json.loads(marker.read_text())["format"]
    except (ValueError, KeyError) as err:
        raise CorruptFileError(f"{marker} is unreadable ({err}); re-create the model directory") from err
    formats: dict[str, Any] = {LDMBackend.kind: LDMBackend, DiTBackend.kind: DiTBackend}
    if fmt not in formats:
        raise CorruptFileError(f"{marker} names an unknown backend format '{fmt}'; expected one of {sorted(formats)}")
    return formats[fmt].from_pretrained(root)
