"""The four plugin families as small abstract base classes, and the data that flows between them.

A plugin is a class registered under an entry-point group (see `ddbench.registry`). Its options are
the keyword arguments of its ``__init__`` (unknown keys are errors), so a spec can record them as
plain JSON. The engine, not the plugin, owns loops, memory, checkpoints and randomness.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ddbench.errors import InvalidOptionError

# --------------------------------------------------------------------------------------- data


@dataclasses.dataclass
class RealData:
    """A real classification dataset held in memory.

    Images are stored as uint8 ``(N, C, H, W)`` so that 256-px ImageNet subsets fit; ``normalise``
    turns them into the float tensors every network sees (the dataset's own mean/std, used for real
    and generated images alike).
    """

    name: str
    train_images: Tensor  # uint8 (N, C, H, W)
    train_labels: Tensor  # int64 (N,)
    test_images: Tensor  # uint8 (M, C, H, W)
    test_labels: Tensor  # int64 (M,)
    class_names: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        for split, images, labels in (
            ("train", self.train_images, self.train_labels),
            ("test", self.test_images, self.test_labels),
        ):
            if images.dtype != torch.uint8 or images.dim() != 4:
                raise ValueError(
                    f"Expected {split} images as uint8 (N, C, H, W) but got {images.dtype} {tuple(images.shape)}"
                )
            if labels.shape != (images.shape[0],):
                raise ValueError(f"Expected {images.shape[0]} {split} labels but got shape {tuple(labels.shape)}")
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise ValueError(f"Expected mean/std with {self.channels} entries, got {self.mean} / {self.std}")
        self._class_index = [torch.nonzero(self.train_labels == c, as_tuple=True)[0] for c in range(self.num_classes)]
        empty = [self.class_names[c] for c, idx in enumerate(self._class_index) if len(idx) == 0]
        if empty:
            # a ValueError too; raised as a user error, as it names the data's problem and its fix
            raise InvalidOptionError(
                f"Dataset '{self.name}' has classes with no training images: {empty}; add images of each class"
            )

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def channels(self) -> int:
        return int(self.train_images.shape[1])

    @property
    def resolution(self) -> int:
        return int(self.train_images.shape[-1])

    def normalise(self, images_uint8: Tensor) -> Tensor:
        """uint8 images → float images standardised with the dataset's mean/std."""
        mean = torch.tensor(self.mean).view(1, -1, 1, 1)
        std = torch.tensor(self.std).view(1, -1, 1, 1)
        return (images_uint8.float() / 255.0 - mean) / std

    def denormalise(self, images: Tensor) -> Tensor:
        """Float (standardised) images → [0, 1] for saving as PNG."""
        mean = torch.tensor(self.mean, device=images.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=images.device).view(1, -1, 1, 1)
        return (images * std + mean).clamp(0, 1)

    def class_indices(self, label: int) -> Tensor:
        return self._class_index[label]

    def sample_class(self, label: int, n: int, generator: torch.Generator) -> Tensor:
        """``n`` normalised training images of one class, drawn without replacement when possible."""
        idx = self._class_index[label]
        if n <= len(idx):
            pick = idx[torch.randperm(len(idx), generator=generator)[:n]]
        else:
            pick = idx[torch.randint(len(idx), (n,), generator=generator)]
        return self.normalise(self.train_images[pick])

    def subset(self, train_per_class: int | None = None, test_size: int | None = None) -> RealData:
        """A smaller copy (first images of each class / first test images), for smoke runs and tests."""
        train_idx = torch.cat([idx[:train_per_class] if train_per_class else idx for idx in self._class_index])
        test_n = test_size or len(self.test_labels)
        return dataclasses.replace(
            self,
            train_images=self.train_images[train_idx],
            train_labels=self.train_labels[train_idx],
            test_images=self.test_images[:test_n],
            test_labels=self.test_labels[:test_n],
        )


@dataclasses.dataclass
class LatentState:
    """What a prior optimises: learnable tensors and fixed per-sample buffers.

    Every tensor has the synthetic sample index as its first dimension, so the engine can
    regenerate any chunk of samples (the split backward) by indexing.
    """

    params: dict[str, Tensor]
    buffers: dict[str, Tensor] = dataclasses.field(default_factory=dict)

    def tensors(self) -> dict[str, Tensor]:
        return {
            **{f"param.{k}": v for k, v in self.params.items()},
            **{f"buffer.{k}": v for k, v in self.buffers.items()},
        }


# ------------------------------------------------------------------------------------ plugins

#: the learning rate of a tensor a prior's `Prior.base_lrs` does not list, before the matcher's scale
DEFAULT_BASE_LR = 0.1
#: the key of `Prior.learning_rates` that stands for every tensor of a prior without `Prior.base_lrs`
ANY_TENSOR = "*"
#: what `Matcher.evaluation_overrides` may set
EVALUATION_OVERRIDES = ("lr",)


@dataclasses.dataclass(frozen=True)
class Preparation:
    """Shared work before distilling (`Matcher.preparation`): runs with the same ``key`` share it."""

    key: str
    one_core_seconds: float


@dataclasses.dataclass(frozen=True)
class IdentityContext:
    """What a plugin may know when it resolves its options for a run id (`Plugin.effective_options`):
    the run's dataset, its resolution (None when the dataset declares none), IPC and target device.
    The device need not be present on this machine (a sweep may be planned on a login node)."""

    dataset: str
    resolution: int | None
    ipc: int
    device: torch.device


class Plugin(abc.ABC):  # noqa: B024 - a base with no abstract method of its own; the families add them
    """Common base: a registered name and a one-line description shown by `ddbench plugins`.

    What the run id records of a plugin (`ddbench.running.identity`) is declared here: its behaviour
    ``version``, which options name model files (``path_options``), which options never change the
    result (``neutral_options``) and what its options mean on the target device (`effective_options`).
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    #: behaviour version: bump it when the plugin's results change for the same options (as
    #: lm-evaluation-harness versions its tasks); None: identified by its distribution's version
    version: ClassVar[int | None] = None
    #: options that name a model file or directory: the run id hashes the weights and config files
    #: found there, the path itself is only a label (moving a model keeps the id)
    path_options: ClassVar[tuple[str, ...]] = ()
    #: options that never change the result (gradient checkpointing, where a cache lives): recorded
    #: with the run, left out of its id
    neutral_options: ClassVar[tuple[str, ...]] = ()

    # -- what tools read of a plugin, so the core never names one (recorded with each run)
    #: where the plugin sorts in tables (lower first; the built-ins use the paper's order); plugins
    #: without one follow by name
    display_order: ClassVar[int | None] = None
    #: options left out of a run's label in reports besides neutral and path options (source
    #: paths, settings fixed by the dataset): ``ld3m[diffusion=off]`` names only what makes a variant
    housekeeping_options: ClassVar[tuple[str, ...]] = ()
    #: option values a ``--budget`` preset gives this plugin, by preset name (``smoke``, ``demo``),
    #: under the user's own options: for a plugin whose full protocol costs what the preset's
    #: iterations and epochs do not cut (MTT's expert buffer). The run records them like any option
    budget_options: ClassVar[Mapping[str, Mapping[str, Any]]] = {}

    def options(self) -> dict[str, Any]:
        """The constructor arguments that define this plugin instance, defaults applied."""
        return dict(getattr(self, "_options", {}))

    def effective_options(self, context: IdentityContext) -> dict[str, Any]:
        """The options as they act in a run in ``context``: defaults applied and every ``auto`` (or
        None meaning "by rule") resolved to the value used there, e.g. ``real_precision="auto"`` →
        ``"bf16"`` on a CPU with bf16 units. The run id hashes these, and the engine builds the
        plugin from them, so the id says what ran. Never load data or models here: it runs for every
        spec of a sweep, before anything starts. Default: `options`."""
        return self.options()


class DatasetPlugin(Plugin):
    """Loads a real dataset. Raise `ddbench.errors.DataNotFoundError` saying where it looked and how to get the data."""

    #: resolutions the dataset can be loaded at; the first is the default
    resolutions: ClassVar[tuple[int, ...]] = ()

    @abc.abstractmethod
    def load(self, root: str | None = None, res: int | None = None, download: bool = False) -> RealData:
        """Read the train and test splits into memory."""

    def resolution_for(self, res: int | None) -> int | None:
        """The resolution a run asking for ``res`` loads at (None: the default, the first of
        `resolutions`); a resolution the dataset does not offer is an `InvalidOptionError`. A
        dataset that declares no resolutions takes any. Planning (`--dry-run`) checks it too."""
        if res is None:
            return self.resolutions[0] if self.resolutions else None
        if self.resolutions and res not in self.resolutions:
            raise InvalidOptionError(
                f"Dataset '{self.name}' is available at {', '.join(f'{r} px' for r in self.resolutions)}, but "
                f"{res} px was requested; pass one of those resolutions"
            )
        return int(res)

    def available(self, root: str | None = None) -> tuple[bool, str]:
        """Whether the data is on disk, and if not, why (for `ddbench run` without `--dataset`)."""
        try:
            self.locate(root)
        except Exception as err:  # noqa: BLE001 - any failure means "not available", with its reason
            return False, str(err)
        return True, ""

    def locate(self, root: str | None = None) -> str:
        """Return the directory the data would be read from, or raise DataNotFoundError."""
        raise NotImplementedError

    def fingerprint(self, root: str | None = None, res: int | None = None) -> str | None:
        """A digest of the files `load` reads (part of the run id), or None when unknown.

        Cheap enough for every run: `ddbench.util.fingerprint.files_digest` (bytes, cached) for a few
        data files, `listing_digest` (relative paths and sizes) for big image trees. Raise
        DataNotFoundError when the data is not there. Default: the listing of every file under
        `locate`'s directory, or None for a dataset without one."""
        from ddbench.util.fingerprint import listing_digest

        try:
            directory = self.locate(root)
        except NotImplementedError:
            return None
        files = [p for p in Path(directory).rglob("*") if p.is_file()]
        return listing_digest(files, directory)


class Prior(Plugin):
    """Parameterises synthetic images (pixels, GAN latents, diffusion latents).

    The engine calls `setup` once, then `init_state` with real images of each class, then
    `generate` many times. A prior never sees the matcher's loss, only gradients on its tensors.
    """

    # -- what tools read of a prior (see `Plugin`)
    #: base learning rate of each learnable tensor: the rate under a matcher of ``lr_scale`` 1
    #: (gradient matching). A run uses base × `Matcher.lr_scale`; ``--lr NAME=VALUE`` replaces it.
    #: A tensor not listed here (or a prior that lists none) gets `DEFAULT_BASE_LR`.
    base_lrs: ClassVar[dict[str, float]] = {}
    #: how many times longer the matcher's part of an iteration takes than with raw pixels, at IPC 1
    #: and IPC 10; a rough guide for sweep estimates (`ddbench run --dry-run`)
    cost_factor: ClassVar[tuple[float, float]] = (1.0, 1.0)
    #: one-core CPU seconds that generating the set and back-propagating through the generator add
    #: to an iteration at 28 px, at IPC 1 and IPC 10, whatever the matcher (a cheap matcher such as
    #: DM makes this most of an iteration; `benchmarks/iteration_cost.py --threads 1` measures it
    #: over pixel + DM, on a quiet machine)
    seconds_per_generation: ClassVar[tuple[float, float]] = (0.0, 0.0)
    #: whether `init_state` starts from the real images it is given (pixels: the images; a latent
    #: prior: their encoding), so that a matcher that does not distil (`Matcher.distils` False, the
    #: random-real baseline) keeps real images: True always, False never (random latents), or the
    #: option values under which it does, e.g. ``{"init": "real"}`` (compared with the run's
    #: effective options). Where it does not, `ddbench run` refuses that baseline and reports mark it.
    starts_from_real: ClassVar[bool | Mapping[str, Any]] = True

    @classmethod
    def generator_label(cls, options: Mapping[str, Any]) -> str:
        """Which generator makes the images, in the paper's words (its Table 3 column), for these
        options (as typed or effective): ``-`` for none (pixels), ``random`` for an untrained one,
        else what its weights were trained on (``imagenet``, ``ffhq``) or ``trained``. Recorded with
        each run; reports read it from the store."""
        return "-"

    def setup(self, data: RealData, device: torch.device) -> None:
        """Load or build the generative model for this dataset (channels, resolution, classes).

        Called once, before `init_state`, with the run's data and device; a prior that needs
        neither may skip it. Raise `ddbench.errors.InvalidOptionError` (one line, with the fix) for
        options that do not fit the data; any other exception is reported as a failure of this
        plugin, naming it and its distribution."""

    @abc.abstractmethod
    def init_state(self, real_images: Tensor, labels: Tensor, generator: torch.Generator) -> LatentState:
        """Learnable state initialised from normalised real images ``(N, C, H, W)`` and their labels."""

    @abc.abstractmethod
    def generate(self, state: LatentState, indices: Tensor) -> Tensor:
        """Normalised images ``(len(indices), C, H, W)`` for the given synthetic sample indices."""

    def generation_chunk(self) -> int | None:
        """How many images the engine may regenerate with a graph at once (called after `setup`):
        a generator whose activations for the whole synthetic set fit in memory runs one pass with
        a graph instead of the split backward. None: the engine's default chunk."""
        return None

    def is_learnable(self, name: str) -> bool:
        """Whether the tensor ``name`` of `base_lrs` is optimised with these options (e.g. LD3M's ``learn=c``)."""
        return True

    def learning_rates(self, lr_scale: float = 1.0, overrides: Mapping[str, float] | None = None) -> dict[str, float]:
        """Learning rate per learnable tensor: `base_lrs` × the matcher's ``lr_scale``, with the
        user's overrides applied. A prior without `base_lrs` does not know its tensors before
        `init_state`: its rates come back under ``"*"`` (`DEFAULT_BASE_LR` × ``lr_scale``), and
        the engine checks override names against the tensors `init_state` returns."""
        declared = {k: v for k, v in self.base_lrs.items() if self.is_learnable(k)}
        lrs = {k: v * lr_scale for k, v in declared.items()} if declared else {ANY_TENSOR: DEFAULT_BASE_LR * lr_scale}
        for key, value in (overrides or {}).items():
            if declared and key not in declared:
                raise InvalidOptionError(
                    f"Prior '{self.name}' has no learnable tensor '{key}'; expected one of {sorted(declared)} (--lr NAME=VALUE)"
                )
            lrs[key] = float(value)
        return lrs


class RealSampler:
    """Draws class-balanced real batches for a matcher, from the engine's seeded generator."""

    def __init__(self, data: RealData, generator: torch.Generator, device: torch.device) -> None:
        self.data = data
        self.generator = generator
        self.device = device

    def class_batch(self, label: int, n: int) -> Tensor:
        return self.data.sample_class(label, n, self.generator).to(self.device)

    def balanced_batch(self, n: int) -> tuple[Tensor, Tensor]:
        """``n`` images drawn uniformly from the training set, with labels."""
        pick = torch.randint(len(self.data.train_labels), (n,), generator=self.generator)
        return (
            self.data.normalise(self.data.train_images[pick]).to(self.device),
            self.data.train_labels[pick].to(self.device),
        )


@dataclasses.dataclass
class MatchContext:
    """What a matcher may know about the run (never which prior made the images).

    ``dsa`` is `ddbench.engine.dsa.DSA` or None (``--no-dsa``): call ``dsa(images, seed)`` on the real
    and the synthetic batch with ONE seed (siamese: the same op and parameters on both sides), and
    draw that seed with `draw_seed`, from the RNG the engine seeds each iteration, so a run is
    reproducible and resumes exactly.
    """

    data: RealData
    ipc: int
    device: torch.device
    dsa: Any  # ddbench.engine.dsa.DSA, or None when augmentation is off
    cache_dir: str | None = None  # where a matcher may keep derived data (e.g. MTT expert buffers)
    #: the run's progress display for long set-up work (`ddbench.util.progress.ProgressArg`: pass it
    #: on as ``progress=`` to `ddbench.engine.training.train_classifier`); None: silent
    progress: Any = None

    @staticmethod
    def draw_seed() -> int:
        """A seed for one siamese DSA call, from the global RNG the engine seeds per iteration."""
        return int(torch.randint(0, 2**31 - 1, ()).item())

    def build_network(self, name: str = "convnet") -> nn.Module:
        """A freshly initialised evaluator network for this dataset, on the run's device."""
        from ddbench import registry

        evaluator = registry.create("evaluator", name)
        evaluator.check_input(self.data.channels, self.data.resolution)
        return evaluator.build(self.data.channels, self.data.num_classes, self.data.resolution).to(self.device)


class Matcher(Plugin):
    """A distillation objective: a scalar loss on synthetic images, differentiable in them.

    One engine iteration runs `begin_iteration` and then `steps_per_iteration` optimiser steps; after
    each step `after_step` sees the (detached) synthetic set, e.g. to train DC's inner network.
    """

    #: False for baselines that keep the initial images (the engine then runs no iterations)
    distils: ClassVar[bool] = True

    # -- what tools read of a matcher (see `Plugin`)
    #: multiplies each prior's `Prior.base_lrs`: this loss's scale relative to gradient matching
    #: (the published rates factorise as DC ×1, DM ×10, MTT ×10⁴)
    lr_scale: ClassVar[float] = 1.0
    #: one-core CPU seconds per iteration with raw pixels at 28 px, at IPC 1 and IPC 10 (linear in
    #: between), with the default options (one thread of a quiet machine:
    #: `benchmarks/iteration_cost.py --threads 1`); None: unknown. A rough guide for sweep estimates.
    seconds_per_iteration: ClassVar[tuple[float, float] | None] = None
    #: the option an iteration's cost grows with, its default, and the share of the cost that grows
    #: with it linearly (e.g. ``("batch_real", 256, 0.9)``)
    cost_option: ClassVar[tuple[str, float, float] | None] = None

    def preparation(
        self, context: IdentityContext, train_images: int, cache_dir: str | Path | None = None
    ) -> Preparation | None:
        """Work done before distilling that runs of a sweep share (MTT's expert trajectories), for
        the sweep's estimate; None when these options need none, or when it is already done in
        ``cache_dir`` (the runs' `MatchContext.cache_dir`; None: unknown)."""
        return None

    def evaluation_overrides(self) -> dict[str, float]:
        """Settings evaluation must use for this synthetic set instead of the protocol's, saved
        with it: ``{"lr": …}`` for a learned evaluation learning rate (MTT). Keys: `EVALUATION_OVERRIDES`."""
        return {}

    def setup(self, context: MatchContext) -> None:
        """Called once before the first iteration; an override must call ``super().setup(context)``
        (it keeps ``self.context``). Build networks with ``context.build_network(name)``."""
        self.context = context

    @property
    def steps_per_iteration(self) -> int:
        return 1

    def begin_iteration(self, iteration: int) -> None:
        """Called once per iteration, after the engine seeded the RNGs for it."""

    @abc.abstractmethod
    def loss(self, images: Tensor, labels: Tensor, real: RealSampler) -> Tensor:
        """Scalar loss on the full synthetic set ``images`` (requires grad) with class ``labels``.

        ``images`` are normalised with the dataset's mean/std, and so are the real batches that
        ``real`` returns (`RealSampler`): compare them as they come."""

    def after_step(self, images: Tensor, labels: Tensor, real: RealSampler) -> None:
        """Hook after each optimiser step; ``images`` are detached."""

    def parameters(self) -> list[dict[str, Any]]:
        """Extra learnable parameters as optimiser groups (e.g. MTT's learnable lr)."""
        return []

    def state_dict(self) -> dict[str, Tensor]:
        """Tensors to checkpoint (besides `parameters`, which the engine saves)."""
        return {}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        pass

    def iteration_metrics(self) -> dict[str, float]:
        """Scalars of the matcher's own to record after each iteration (``metrics.jsonl``, TensorBoard),
        e.g. a learned learning rate; names must differ from the engine's (``loss``, ``seconds``, …)."""
        return {}

    def synthetic_metadata(self) -> dict[str, Any]:
        """Anything evaluation needs from distillation (e.g. MTT's learned lr), saved with the set."""
        return {}


class Evaluator(Plugin):
    """An architecture trained from scratch on the synthetic set.

    ``protocol_lrs`` maps protocol names to this architecture's learning rate where it differs from
    the protocol's default (GLaD: VGG11 uses 1e-4).
    """

    protocol_lrs: ClassVar[dict[str, float]] = {}
    #: smallest input resolution the architecture supports
    min_resolution: ClassVar[int] = 1
    #: whether the seeds of one evaluation may train as one batched model (`ddbench.engine.seed_batching`):
    #: every op of the network must have a vmap rule and its forward must draw no random numbers
    batched_seeds: ClassVar[bool] = False

    def batching_obstacle(self) -> str | None:
        """Why this instance (with its options) cannot train several seeds as one batched model,
        or None when it can. Override to refuse option by option (e.g. dropout > 0)."""
        if not self.batched_seeds:
            return "it does not declare batched_seeds"
        return None

    # -- what tools read of an evaluator (see `Plugin`)
    #: one-core CPU seconds at 28 px per training image per epoch and per test image (one thread of a
    #: quiet machine: `benchmarks/bench_eval_batched.py --threads 1`, seeds one after another, the
    #: mean of IPC 1 and IPC 10); None: unknown. A rough guide for sweep estimates.
    seconds_per_image: ClassVar[tuple[float, float] | None] = None

    @abc.abstractmethod
    def build(self, channels: int, num_classes: int, resolution: int) -> nn.Module:
        """A freshly initialised network (seeded by the caller).

        The module's ``forward`` returns logits; it should also have ``embed(x)`` returning the
        features before the final linear layer, which distribution matching uses.
        """

    def check_input(self, channels: int, resolution: int) -> None:
        """Raise InvalidOptionError before any training if the architecture cannot take this input."""
        if resolution < self.min_resolution:
            from ddbench.errors import InvalidOptionError

            raise InvalidOptionError(
                f"Evaluator '{self.name}' needs images of at least {self.min_resolution} px, got {resolution} px"
            )


def chunked(indices: Tensor, size: int) -> Iterator[Tensor]:
    """Split a 1-D index tensor into consecutive chunks of at most ``size``."""
    for start in range(0, len(indices), size):
        yield indices[start : start + size]


def class_labels(num_classes: int, ipc: int) -> Tensor:
    """Labels of a class-balanced synthetic set, ``ipc`` consecutive samples per class."""
    return torch.arange(num_classes).repeat_interleave(ipc)


__all__: Sequence[str] = [
    "RealData",
    "LatentState",
    "IdentityContext",
    "Preparation",
    "DEFAULT_BASE_LR",
    "ANY_TENSOR",
    "EVALUATION_OVERRIDES",
    "Plugin",
    "DatasetPlugin",
    "Prior",
    "RealSampler",
    "MatchContext",
    "Matcher",
    "Evaluator",
    "chunked",
    "class_labels",
]
