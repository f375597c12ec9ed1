"""LD3M: synthetic images as latent codes Z and class conditionings c run through a latent diffusion
model with the paper's Eq. 12 residual to z_T (Moser et al., "Latent Dataset Distillation with
Diffusion Models").

Learnable state (first dimension = synthetic sample): ``z`` = Z, initialised as E(X_s) from the
engine's random real images of the class (or N(0, I) with ``init="noise"``, paper Table 5), and
``c`` = the class embedding of the sample's class. Buffer ``noise_seed`` fixes, per sample, the
noise of q(z_T | Z) and of every reverse step, so `generate` is a deterministic function of the
state — the engine's loss pass and its chunked backward pass see the same images.

Which generator (``generator``, the "generator" column of the paper's Table 3):

- ``trained``: every weight from a model directory — ``model_dir``, or on a dataset for which
  ddbench ships a tiny LDM (Fashion-MNIST, `packaged_model`) that one. The default there.
- ``random``: the paper's "random" LDM. Its reference code (`load_ldm` in the LD3M repository)
  builds the LDM from a config with no checkpoint for the diffusion model, but the first stage is
  constructed from the pretrained VQ-f4 checkpoint: the denoiser is random, the autoencoder is not.
  So here the autoencoder comes from the model directory (the shipped one by default) and the UNet
  and class embedding are re-initialised with ``seed``: random weights, nothing learned for the
  part LD3M distils through.
- ``untrained``: every weight random, the autoencoder too. Not what the paper measured: a VQ
  codebook that never trained holds entries of size ≤ 1/num_codes (diffusers' uniform init), so
  nearest-code quantisation sends every latent to almost the same decoder input and all images
  come out alike (`benchmarks/ld3m_random_spread.py` measures it). Kept for tests and plumbing.
- ``auto``: ``trained`` when a model is known (``model_dir`` or a shipped one), else ``untrained``
  with a warning.

z_T (a documented deviation): the paper writes z_T ~ q(z_T | Z) without the noise level; the
reference code draws it at the first sampling step's ᾱ (t = 901 at T = 10, √ᾱ ≈ 0.03), so z_T is
nearly pure noise, and carries Z to the image through its x̂0 blend toward quantize(Z) instead of
Eq. 12. Eq. 12 with that z_T keeps about 3 % of Z: the images start far from the real images Z was
encoded from and the gradient reaching Z is some thirty times smaller than with z_T = Z, which
defeats Eq. 12's stated purpose (gradient flow to Z) and sank the random LDM below random real
images. So ddbench keeps Eq. 12 and feeds z_T = Z (``forward_noise=False``); ``forward_noise=True``
restores the reference's draw. ``benchmarks/ld3m_z_signal.py`` measures the signal and gradient per
variant; benchmarks/README.md has the accuracies.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any, Literal

import torch
from ddbench_plugins.priors._class_ids import resolve_class_ids
from ddbench_plugins.priors._generator_names import generator_from_path
from ddbench_plugins.priors._images import DataImageSpace
from ddbench_plugins.priors.ld3m.activations import CheckpointPolicy
from ddbench_plugins.priors.ld3m.backend_base import LatentDiffusionBackend
from ddbench_plugins.priors.ld3m.backends import build_tiny, load_backend, packaged_model
from ddbench_plugins.priors.ld3m.sampler import RESIDUALS, DDIMSchedule, forward_diffuse, reverse_process
from torch import Tensor

from ddbench.engine.compiling import CompiledOrEager, check_compile
from ddbench.engine.hardware import bf16_is_fast
from ddbench.errors import InvalidOptionError
from ddbench.interfaces import IdentityContext, LatentState, Prior, RealData

log = logging.getLogger(__name__)

#: prior option backend → the model-directory format it expects
BACKENDS = {"tiny": "ldm", "cin256": "ldm", "dit": "dit"}
LEARN = ("zc", "z", "c")
GENERATORS = ("auto", "trained", "random", "untrained")
PRECISIONS = ("fp32", "bf16", "auto")
SEED_RANGE = 2**62
#: decoded pixels regenerated with a graph at once (`generation_chunk`)
GRAPH_PIXELS = 2**19
#: ``compile="auto"`` compiles on a CPU from this IPC: compiling is paid once per process and pays
#: back only through a larger set's per-iteration saving (benchmarks/README.md, "Compiled and in
#: bfloat16"); on GPUs it is unmeasured, so ``auto`` stays eager there
COMPILE_MIN_IPC = 10
#: inductor options of the generator compiled for a CPU: its C++ wrapper calls each graph's few
#: hundred kernels from C++, not one Python call at a time (benchmarks/README.md, "The compiled
#: graphs' C++ wrapper, and the linear layers' bias after the product"); the kernels, and so the
#: images, are the same
CPU_COMPILE_OPTIONS = {"cpp_wrapper": True}


def compiles(option: bool | str, ipc: int, device: torch.device) -> bool:
    """What the ``compile`` option does for a run of ``ipc`` images per class on ``device``."""
    if isinstance(option, bool):
        return option
    return device.type == "cpu" and ipc >= COMPILE_MIN_IPC


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
        model_dir: directory of the model in diffusers layout; default the model ddbench ships for
            the dataset (Fashion-MNIST), if any; required for ``cin256`` and ``dit``.
        generator: ``auto``, ``trained``, ``random`` (pretrained autoencoder, random denoiser and
            class embedding: the paper's Table 3 "random") or ``untrained`` (all weights random,
            images collapse); see the module docstring.
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
        forward_noise: False (default) feeds z_T = Z; True draws z_T ~ q(z_T | Z) at the first
            step's ᾱ, as the reference code does (t = 901 at T = 10). See "z_T" in the module
            docstring for why the default deviates; the reference code is ``residual=x0
            forward_noise=true``.
        checkpoint: recompute each denoiser call in backward (memory flat in T): True, False (keep
            every call's activations: faster, memory grows with T and the set), or ``auto`` (keep them
            where they take at most a quarter of the device's free memory; `activations`). The
            images are the same either way.
        precision: ``fp32``, ``bf16`` (the denoiser and decoder under bfloat16 autocast; latents,
            Eq. 12's arithmetic and the learnable Z and c stay fp32; on a CPU self-attention then
            avoids torch's fused kernel, `attention`) or ``auto`` (the default: bf16 where the
            hardware has fast bf16, e.g. AMX CPUs and recent GPUs; on Fashion-MNIST bf16 scores as
            fp32 at IPC 1 and 10, benchmarks/README.md).
        compile: torch.compile the guided denoiser call and the decoder (the same values up to
            rounding; falls back to eager where compiling fails): True, False or ``auto`` (on a CPU
            from IPC `COMPILE_MIN_IPC`). Only generations with a graph are compiled; denoiser calls
            that ``checkpoint`` recomputes run eager.
        class_ids: model class id of each dataset class; default the ImageNet indices of an
            ImageNet subset's classes on a 1000-class model (cin256), else the identity.
        seed: weight seed of the random parts (``generator`` random or untrained).
    """

    name = "ld3m"
    description = "LD3M: latent codes and class conditioning through a latent diffusion model (Eq. 12)."
    #: Z = E(X) of the real images with init="real"; only a trained model gives them back (a random
    #: denoiser or autoencoder turns them into noise)
    starts_from_real = {"init": "real", "generator": "trained"}
    #: 2: nearest upsampling by expand/reshape (upsample.py); 3: guidance halves share the UNet's
    #: class-free start (shared_prefix.py); 4: compiled group norms as per-channel sums
    #: (group_norm.py) and the autoencoder's attention on `LDMAttention`; 5: the shared start goes
    #: on through the first self-attention; 6: compiled linear layers add their bias after the
    #: product (linear.py). Each: the same images and gradients up to rounding
    version = 6
    #: the run id hashes the model's weights and config, not where they lie
    path_options = ("model_dir",)
    #: gradient checkpointing recomputes the same values
    neutral_options = ("checkpoint",)
    #: not what makes a variant in a report's label: the dataset's class mapping
    housekeeping_options = ("class_ids",)
    # the tiny LDM with the default options, measured as `Prior.seconds_per_generation` says (record
    # iteration-cost-dm-group-norm); the same under DC (iteration-cost-dc), so the matcher's part is pixels'
    seconds_per_generation = (0.69, 2.54)

    @classmethod
    def generator_label(cls, options: Mapping[str, Any]) -> str:
        declared = options.get("generator")
        if isinstance(declared, str) and declared != "auto":
            return declared  # resolved options say which model ran
        model_dir = options.get("model_dir")
        return generator_from_path(model_dir) if model_dir else "random"

    display_order = 2
    # Paper A.3: one lr for Z and c — DC 1e-3, DM 1e-2, MTT 10, the DC rate × each matcher's
    # lr_scale. The reference code (Brian-Moser/prune_and_distill) uses DC 0.1, DM 1, MTT 1000;
    # pass them as lr overrides to compare.
    base_lrs = {"z": 1e-3, "c": 1e-3}

    def __init__(
        self,
        backend: str = "tiny",
        model_dir: str | None = None,
        generator: str = "auto",
        T: int | None = None,
        guidance_scale: float = 3.0,
        eta: float = 1.0,
        latent_size: int | None = None,
        residual: str = "mean",
        learn: str = "zc",
        diffusion: str = "on",
        init: str = "real",
        resample_noise: bool = False,
        forward_noise: bool = False,
        checkpoint: bool | Literal["auto"] = "auto",
        precision: str = "auto",
        compile: bool | Literal["auto"] = "auto",
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
        self.generator_option = _choice("generator", generator, GENERATORS)
        if generator == "untrained" and model_dir:
            raise InvalidOptionError(
                "ld3m generator=untrained builds every weight at random; drop model_dir or pass generator=random"
            )
        if generator == "random" and self.backend_name == "dit":
            raise InvalidOptionError(
                "ld3m generator=random re-initialises an LDM's UNet; the dit backend has none (use backend tiny or cin256)"
            )
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
        if checkpoint != "auto" and not isinstance(checkpoint, bool):
            raise InvalidOptionError(f"Expected ld3m checkpoint to be true, false or auto but got {checkpoint!r}")
        self.checkpoint = checkpoint
        self._checkpoint_policy = CheckpointPolicy()
        self.precision = _choice("precision", precision, PRECISIONS)
        check_compile(compile, "ld3m compile")
        self.compile = compile
        self.class_ids = None if class_ids is None else [int(i) for i in class_ids]
        self.seed = int(seed)
        self.backend: LatentDiffusionBackend | None = None

    # ------------------------------------------------------------------------------ set-up

    def resolve_model(self, dataset: str) -> tuple[str, str | None]:
        """(generator, model directory) this prior uses on ``dataset``: the user's ``model_dir``, else
        the one ddbench ships for the dataset (``tiny`` only); ``auto`` becomes what that allows."""
        model_dir = self.model_dir or (packaged_model(dataset) if self.backend_name == "tiny" else None)
        generator = self.generator_option
        if generator == "auto":
            generator = "trained" if model_dir else "untrained"
        if generator == "untrained":
            return generator, None
        if model_dir is None:
            raise InvalidOptionError(
                f"ld3m generator={generator} needs a model directory and none ships for '{dataset}': train one with "
                f"`ddbench prior train ld3m --dataset {dataset} --out DIR` (for generator=random the autoencoder is "
                "enough: --diffusion-steps 0) and pass --prior-opt model_dir=DIR"
            )
        return generator, str(model_dir)

    def effective_options(self, context: IdentityContext) -> dict[str, Any]:
        """The resolved generator and model directory are part of what ran (the run id hashes the
        directory's content through ``path_options``)."""
        options = super().effective_options(context)
        options["generator"], options["model_dir"] = self.resolve_model(context.dataset)
        options["precision"] = self.resolve_precision(context.device)
        options["compile"] = compiles(self.compile, context.ipc, context.device)
        return options

    def resolve_precision(self, device: torch.device) -> str:
        if self.precision == "auto":
            return "bf16" if bf16_is_fast(device) else "fp32"
        return self.precision

    def _autocast(self) -> AbstractContextManager[Any]:
        if self.resolved_precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def setup(self, data: RealData, device: torch.device, backend: LatentDiffusionBackend | None = None) -> None:
        """Load (or, for an untrained ``tiny``, build) the model; ``backend`` passes an already built one."""
        self.device = torch.device(device)
        self.channels, self.resolution = data.channels, data.resolution
        self.space = DataImageSpace(data, self.device)
        self.generator_kind, model_dir = self.resolve_model(data.name)
        self.resolved_precision = self.resolve_precision(self.device)
        if backend is None and model_dir:
            backend = load_backend(model_dir)
            if backend.kind != BACKENDS[self.backend_name]:
                raise InvalidOptionError(
                    f"ld3m backend '{self.backend_name}' expects a '{BACKENDS[self.backend_name]}' model but {model_dir} "
                    f"holds a '{backend.kind}' one; pass backend={'dit' if backend.kind == 'dit' else 'cin256'}"
                )
        elif backend is None and self.backend_name == "tiny":
            backend = build_tiny(data.channels, data.num_classes, seed=self.seed)
            log.warning(
                "ld3m uses an untrained tiny LDM (autoencoder included): its untrained VQ codebook sends every latent "
                "to nearly the same decoder input, so expect near-chance accuracy. Train one with `ddbench prior train "
                "ld3m --dataset %s --out DIR` and pass --prior-opt model_dir=DIR.",
                data.name,
            )
        elif backend is None:
            raise InvalidOptionError(
                f"ld3m backend '{self.backend_name}' needs model_dir (create one with "
                "`ddbench prior convert-ldm MODEL.ckpt DIR`)"
            )
        if self.generator_kind == "random":
            backend = backend.with_random_denoiser(self.seed)
        self.use_backend(backend, data.num_classes, data.name)

    def use_backend(self, backend: LatentDiffusionBackend, num_classes: int, dataset: str = "") -> None:
        """Attach a loaded or built backend and derive T, the latent size, class ids and the schedule."""
        if backend.image_channels != self.channels and 1 not in (
            backend.image_channels,
            self.channels,
        ):  # grey ↔ colour only
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
        self._guided = CompiledOrEager(self._guided_eager, None, "the LD3M denoiser")
        self._decode = CompiledOrEager(self._decode_eager, None, "the LD3M decoder")
        self._compile_decided = False

    def _compile_generator(self, ipc: int) -> None:
        """Compile the guided denoiser call and the decoder if ``compile`` says so for this IPC,
        once per backend: a later init_state keeps them, and a failed compile stays eager."""
        if self._compile_decided:
            return
        self._compile_decided = True
        if compiles(self.compile, ipc, self.device):
            options = dict(CPU_COMPILE_OPTIONS) if self.device.type == "cpu" else None
            self._guided.compiled = torch.compile(self._guided_eager, dynamic=False, options=options)
            self._decode.compiled = torch.compile(self._decode_eager, dynamic=False, options=options)

    def generation_chunk(self) -> int | None:
        # what a graph holds grows with the decoded pixels (the checkpointed denoiser calls keep
        # only their inputs): tiny at 28 px regenerates whole sets at once, 256 px in chunks of 8
        return max(1, GRAPH_PIXELS // (self.resolution * self.resolution))

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
        self._compile_generator(ipc=n // max(1, int(labels.unique().numel())))
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

    def guided_eps(self, z_t: Tensor, t: Tensor, c: Tensor, eager: bool = False) -> Tensor:
        """Classifier-free guided noise prediction ε̂_u + s·(ε̂_c − ε̂_u), both halves in one
        `denoise_pair` call (compiled if ``compile`` says so, unless ``eager``)."""
        self._require_setup()
        return self._guided_eager(z_t, t, c) if eager else self._guided(z_t, t, c)

    def _guided_eager(self, z_t: Tensor, t: Tensor, c: Tensor) -> Tensor:
        backend = self._require_setup()
        if self.guidance_scale == 1.0:
            with self._autocast():
                return backend.denoise(z_t, t, c).float()
        uc = backend.unconditional_embedding(z_t.shape[0]).to(c.dtype)
        with self._autocast():
            eps_u, eps_c = backend.denoise_pair(z_t, t, uc, c)
        eps_u, eps_c = eps_u.float(), eps_c.float()
        return eps_u + self.guidance_scale * (eps_c - eps_u)

    def _decode_eager(self, latents: Tensor) -> Tensor:
        backend = self._require_setup()
        with self._autocast():
            return backend.decode(latents).float()

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
        first_t = torch.full((len(z),), int(self.schedule.timesteps[0]), device=z.device, dtype=torch.long)
        calls = self.T - 1 if self.residual == "mean" else self.T  # Eq. 12 skips the call its first step ignores
        # the policy measures what autograd saves on the eager path: probing the compiled one would
        # compile it for the probe's batch sizes
        eager_eps = functools.partial(self.guided_eps, eager=True)
        checkpoint = self._checkpoint_policy(self.checkpoint, eager_eps, z_T, first_t, c, calls)
        # compiled calls serve the distillation steps; a compiled call inside torch.utils.checkpoint
        # fails on recomputation, and passes without a graph (saving images) would compile anew
        eps_fn = eager_eps if checkpoint or not torch.is_grad_enabled() else self.guided_eps
        return reverse_process(
            z_T, c, eps_fn, self.schedule, step_noise, self.residual, anchor=anchor, checkpoint=checkpoint
        )

    def generate(self, state: LatentState, indices: Tensor) -> Tensor:
        self._require_setup()
        latents = self.latents(state, indices)
        decode = self._decode if torch.is_grad_enabled() else self._decode_eager  # as for the denoiser
        return self.to_data_images(decode(latents))
