"""LD3M: synthetic images as latent codes Z and class conditionings c run through a latent diffusion
model with the paper's Eq. 12 residual to z_T (Moser et al., "Latent Dataset Distillation with
Diffusion Models").

Learnable state (first dimension = synthetic sample): ``z`` = Z, initialised as E(X_s) from the
engine's random real images of the class (or N(0, I) with ``init="noise"``, paper Table 5), and
``c`` = the class embedding of the sample's class. Buffer ``noise_seed`` fixes, per sample, the
noise of q(z_T | Z) and of every reverse step, so `generate` is a deterministic function of the
state — the engine's loss pass and its chunked backward pass see the same images.
"""

from __future__ import annotations

import logging
from typing import Sequence

import torch
from torch import Tensor

from ddbench.errors import InvalidOptionError
from ddbench.interfaces import LatentState, Prior, RealData
from ddbench_plugins.priors.class_ids import resolve_class_ids
from ddbench_plugins.priors.images import DataImageSpace
from ddbench_plugins.priors.ld3m.backends import LatentDiffusionBackend, build_tiny, load_backend
from ddbench_plugins.priors.ld3m.sampler import RESIDUALS, DDIMSchedule, forward_diffuse, reverse_process

log = logging.getLogger(__name__)

#: prior option backend → the model-directory format it expects
BACKENDS = {"tiny": "ldm", "cin256": "ldm", "dit": "dit"}
LEARN = ("zc", "z", "c")
SEED_RANGE = 2**62


def _choice(name: str, value: str, allowed: Sequence[str]) -> str:
    if value not in allowed:
        raise InvalidOptionError(f"Expected ld3m {name} to be one of {list(allowed)} but got '{value}'")
    return value


class LD3MPrior(Prior):
    """Latent codes + class conditioning through a latent diffusion model (LD3M, Eq. 12).

    Options:
        backend: ``tiny`` (CPU-sized LDM; random weights unless ``model_dir``), ``cin256`` (the
            paper's class-conditional ImageNet LDM, a directory from ``ddbench prior convert-ldm``) or
            ``dit`` (a local diffusers DiT directory such as DiT-XL/2-256; c replaces its label embedding).
        model_dir: directory of the model in diffusers layout; required except for a random ``tiny``.
        T: reverse steps; default 10 below 256 px and 20 at 256 px (paper A.3).
        guidance_scale: classifier-free guidance scale s, ε̂ = ε̂_u + s·(ε̂_c − ε̂_u) (paper: 3).
        eta: DDIM η of σ_t; 1 makes μθ the paper's Eq. 9 (the reference code uses 0: no noise term).
        latent_size: side of Z; default resolution / autoencoder factor. The reference code uses 32
            at 128 px although the cin256 UNet was trained at 64 (= 256 px); images are resized
            to latent_size × factor for encoding and decoded images back to the data resolution.
        residual: ``mean`` = paper Eq. 12; ``x0`` = reference code (x̂0 blended toward quantize(Z)
            with weight (t−1)/(T−1)); ``none`` = plain Eq. 10.
        learn: which of Z and c are learnable: ``zc`` (paper), ``z`` or ``c`` (Table 7 ablations).
        diffusion: ``on``, or ``off`` for decoder only, images = D(Z) (paper Table 6).
        init: ``real`` (Z = E(X_s)) or ``noise`` (Z ~ N(0, I), paper Table 5).
        resample_noise: draw fresh noise at every generation from the global RNG, as the reference
            code does; the loss and backward passes then see different images.
        forward_noise: z_T ~ q(z_T | Z) at the first step's ᾱ (paper); False feeds z_T = Z.
        checkpoint: recompute each denoiser call in backward (memory flat in T).
        class_ids: model class id of each dataset class; default the ImageNet indices of an
            ImageNet subset's classes on a 1000-class model (cin256), else the identity.
        seed: weight seed of a randomly initialised ``tiny`` model.
    """

    name = "ld3m"
    description = "LD3M: latent codes and class conditioning through a latent diffusion model (Eq. 12)."
    version = 1
    #: the run id hashes the model's weights and config, not where they lie
    path_options = ("model_dir",)
    #: gradient checkpointing recomputes the same values
    neutral_options = ("checkpoint",)
    # Paper A.3: one lr for Z and c — DC 1e-3, DM 1e-2, MTT 10. The reference code
    # (Brian-Moser/prune_and_distill) uses DC 0.1, DM 1, MTT 1000; pass them as lr overrides to compare.
    default_lrs = {
        "dc": {"z": 1e-3, "c": 1e-3},
        "dm": {"z": 1e-2, "c": 1e-2},
        "mtt": {"z": 10.0, "c": 10.0},
        "*": {"z": 1e-2, "c": 1e-2},  # other matchers: DM's values
    }

    def __init__(
        self,
        backend: str = "tiny",
        model_dir: str | None = None,
        T: int | None = None,
        guidance_scale: float = 3.0,
        eta: float = 1.0,
        latent_size: int | None = None,
        residual: str = "mean",
        learn: str = "zc",
        diffusion: str = "on",
        init: str = "real",
        resample_noise: bool = False,
        forward_noise: bool = True,
        checkpoint: bool = True,
        class_ids: Sequence[int] | None = None,
        seed: int = 0,
    ) -> None:
        self.backend_name = _choice("backend", backend, BACKENDS)
        if T is not None and T < 1:
            raise InvalidOptionError(f"Expected T ≥ 1 but got {T}")
        if guidance_scale < 0:
            raise InvalidOptionError(f"Expected guidance_scale ≥ 0 but got {guidance_scale}")
        if eta < 0:
            raise InvalidOptionError(f"Expected eta ≥ 0 but got {eta}")
        if latent_size is not None and latent_size < 1:
            raise InvalidOptionError(f"Expected latent_size ≥ 1 but got {latent_size}")
        self.model_dir = model_dir
        self.T_option = T
        self.guidance_scale = float(guidance_scale)
        self.eta = float(eta)
        self.latent_size_option = latent_size
        self.residual = _choice("residual", residual, RESIDUALS)
        self.learn = _choice("learn", learn, LEARN)
        self.diffusion = _choice("diffusion", diffusion, ("on", "off"))
        self.init = _choice("init", init, ("real", "noise"))
        self.resample_noise = bool(resample_noise)
        self.forward_noise = bool(forward_noise)
        self.checkpoint = bool(checkpoint)
        self.class_ids = None if class_ids is None else [int(i) for i in class_ids]
        self.seed = int(seed)
        self.backend: LatentDiffusionBackend | None = None

    # ------------------------------------------------------------------------------ set-up

    def setup(self, data: RealData, device: torch.device, backend: LatentDiffusionBackend | None = None) -> None:
        """Load (or, for a random ``tiny``, build) the model; ``backend`` passes an already built one."""
        self.device = torch.device(device)
        self.channels, self.resolution = data.channels, data.resolution
        self.space = DataImageSpace(data, self.device)
        if backend is None and self.model_dir:
            backend = load_backend(self.model_dir)
            if backend.kind != BACKENDS[self.backend_name]:
                raise InvalidOptionError(
                    f"ld3m backend '{self.backend_name}' expects a '{BACKENDS[self.backend_name]}' model but {self.model_dir} "
                    f"holds a '{backend.kind}' one; pass backend={'dit' if backend.kind == 'dit' else 'cin256'}"
                )
        elif backend is None and self.backend_name == "tiny":
            backend = build_tiny(data.channels, data.num_classes, seed=self.seed)
            # measured on Fashion-MNIST: the untrained VQ codebook (±1/num_codes) sends every latent to
            # nearly the same decoder input, so all synthetic images come out alike
            log.warning(
                "ld3m uses a randomly initialised tiny LDM: its untrained VQ decoder makes nearly identical images "
                "for every latent, so expect near-chance accuracy. Train one with `ddbench prior train ld3m "
                "--dataset %s --out DIR` and pass --prior-opt model_dir=DIR.", data.name,
            )
        elif backend is None:
            raise InvalidOptionError(
                f"ld3m backend '{self.backend_name}' needs model_dir (create one with "
                "`ddbench prior convert-ldm MODEL.ckpt DIR`)"
            )
        self.use_backend(backend, data.num_classes, data.name)

    def use_backend(self, backend: LatentDiffusionBackend, num_classes: int, dataset: str = "") -> None:
        """Attach a loaded or built backend and derive T, the latent size, class ids and the schedule."""
        if backend.image_channels != self.channels and 1 not in (backend.image_channels, self.channels):  # grey ↔ colour only
            raise InvalidOptionError(
                f"The model makes {backend.image_channels}-channel images but the data has {self.channels}; "
                "use a model trained on this dataset (`ddbench prior train ld3m`)"
            )
        self.backend = backend.freeze().to(self.device)
        self.dataset_name = dataset
        self.T = self.T_option or (20 if self.resolution >= 256 else 10)
        f = backend.downsample_factor
        self.latent_size = self.latent_size_option or max(1, round(self.resolution / f))
        ids = resolve_class_ids(self.class_ids, self.dataset_name, num_classes, backend.num_classes, "model")
        self.model_class = torch.tensor(ids, dtype=torch.long, device=self.device)
        scheduler = backend.scheduler
        scheduler.set_timesteps(self.T)
        self.schedule = DDIMSchedule.from_alphas_cumprod(
            scheduler.alphas_cumprod, scheduler.timesteps, float(scheduler.final_alpha_cumprod), self.eta
        )

    def _require_setup(self) -> LatentDiffusionBackend:
        if self.backend is None:
            raise RuntimeError("LD3MPrior.setup(data, device) must be called before init_state/generate")
        return self.backend

    # ------------------------------------------------------------------- image conversions

    def to_model_images(self, images: Tensor) -> Tensor:
        """Dataset-normalised images → the autoencoder's [−1, 1] input at latent_size × factor."""
        backend = self._require_setup()
        return self.space.to_generator(images, backend.image_channels, self.latent_size * backend.downsample_factor)

    def to_data_images(self, images: Tensor) -> Tensor:
        """Decoder output in [−1, 1] → dataset-normalised images at the data resolution (not clamped)."""
        return self.space.from_generator(images)

    # ----------------------------------------------------------------------------- state

    def init_state(self, real_images: Tensor, labels: Tensor, generator: torch.Generator) -> LatentState:
        backend = self._require_setup()
        labels = labels.to(self.device)
        n = len(labels)
        shape = (n, backend.latent_channels, self.latent_size, self.latent_size)
        with torch.no_grad():
            if self.init == "real":
                x = self.to_model_images(real_images.to(self.device))
                z = torch.cat([backend.encode(chunk) for chunk in x.split(16)])
            else:
                z = torch.randn(shape, generator=generator).to(self.device)
            c = backend.class_embedding(self.model_class[labels])
        if tuple(z.shape) != shape:
            raise InvalidOptionError(f"The encoder gave latents {tuple(z.shape)}, expected {shape}; check latent_size")
        seeds = torch.randint(0, SEED_RANGE, (n,), generator=generator, dtype=torch.long).to(self.device)
        tensors = {"z": z.detach().clone(), "c": c.detach().clone()}
        params = {k: v.requires_grad_(True) for k, v in tensors.items() if k in self.learn}
        buffers = {k: v for k, v in tensors.items() if k not in self.learn}
        buffers["noise_seed"] = seeds
        return LatentState(params=params, buffers=buffers)

    def is_learnable(self, name: str) -> bool:
        return name in self.learn  # learn = "zc" | "z" | "c"

    # -------------------------------------------------------------------------- generation

    @staticmethod
    def _get(state: LatentState, key: str) -> Tensor:
        return state.params[key] if key in state.params else state.buffers[key]

    def noise(self, state: LatentState, indices: Tensor, shape: Sequence[int]) -> Tensor:
        """(B, 1 + T, C, h, w): ε of q(z_T | Z), then ε of reverse steps T … 1, per sample."""
        size = (1 + self.T, *shape)
        if self.resample_noise:
            return torch.randn((len(indices), *size), device=self.device)
        # one CPU generator per sample: the same sample always gets the same noise, on any device
        seeds = state.buffers["noise_seed"][indices].tolist()
        draws = [torch.randn(size, generator=torch.Generator().manual_seed(int(s))) for s in seeds]
        return torch.stack(draws).to(self.device)

    def guided_eps(self, z_t: Tensor, t: Tensor, c: Tensor) -> Tensor:
        """Classifier-free guided noise prediction ε̂_u + s·(ε̂_c − ε̂_u), one batched denoiser call."""
        backend = self._require_setup()
        if self.guidance_scale == 1.0:
            return backend.denoise(z_t, t, c)
        uc = backend.unconditional_embedding(z_t.shape[0]).to(c.dtype)
        out = backend.denoise(torch.cat([z_t, z_t]), torch.cat([t, t]), torch.cat([uc, c]))
        eps_u, eps_c = out.chunk(2)
        return eps_u + self.guidance_scale * (eps_c - eps_u)

    def latents(self, state: LatentState, indices: Tensor) -> Tensor:
        """z_0 for the given samples (before decoding)."""
        backend = self._require_setup()
        idx = indices.to(self.device)
        z = self._get(state, "z")[idx]
        if self.diffusion == "off":
            return z
        c = self._get(state, "c")[idx]
        noise = self.noise(state, idx, z.shape[1:]).to(z.dtype)
        alpha_T = float(self.schedule.alpha[0])
        z_T = forward_diffuse(z, noise[:, 0], alpha_T) if self.forward_noise else z
        anchor = backend.quantize(z) if self.residual == "x0" else None
        step_noise = noise[:, 1:] if self.eta > 0 else None
        return reverse_process(
            z_T, c, self.guided_eps, self.schedule, step_noise, self.residual, anchor=anchor, checkpoint=self.checkpoint
        )

    def generate(self, state: LatentState, indices: Tensor) -> Tensor:
        backend = self._require_setup()
        return self.to_data_images(backend.decode(self.latents(state, indices)))

