"""GLaD: synthetic images as W+ codes and an intermediate feature map of a style generator
(Cazenavette et al., "Generalizing Dataset Distillation via Deep Generative Prior", CVPR 2023).

Learnable state (first dimension = synthetic sample): ``w`` — W+ codes ``(N, num_ws, w_dim)`` —
and ``features`` — the synthesis state after the first ``layer`` synthesis layers. Images are the
remaining layers applied to ``features`` with ``w``. Both start from the generator itself:
w = mapping(z, class) with z ~ N(0, I) drawn from the engine's seeded generator (or the class's
average w over ``avg_samples`` draws, ``init="avg_w"``), and ``features`` = the first ``layer``
layers run on that w. Real images are not used for the initialisation (as in GLaD).

Generated images are mapped from [−1, 1] to [0, 1] and standardised with the dataset's own mean and
std — the same statistics as the real images (GLaD's code normalises them with other constants, a
defect not copied). They are not clamped, so gradients reach out-of-range pixels. A generator of
another resolution is resized (bilinear, antialiased) to the data's; a 3-channel generator on 1-channel
data gives the mean of its three channels, and a 1-channel one on RGB data is repeated.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from ddbench_plugins.priors._class_ids import resolve_class_ids
from ddbench_plugins.priors._generator_names import generator_from_path
from ddbench_plugins.priors._images import DataImageSpace
from ddbench_plugins.priors.glad.generator import StyleGenerator
from torch import Tensor

from ddbench.errors import InvalidOptionError
from ddbench.interfaces import LatentState, Prior, RealData

log = logging.getLogger(__name__)

BACKENDS = ("tiny", "stylegan-xl")
INITS = ("random", "avg_w")
INIT_CHUNK = 16  # samples per generator call while initialising (bounds memory at 256 px)


def _choice(name: str, value: str, allowed: Sequence[str]) -> str:
    if value not in allowed:
        raise InvalidOptionError(f"Expected glad {name} to be one of {list(allowed)} but got {value!r}")
    return value


class GLaDPrior(Prior):
    """W+ codes and an intermediate feature map of a style generator (GLaD).

    Options:
        backend: ``tiny`` (a StyleGAN2-style generator built for the dataset; random weights unless
            ``weights``) or ``stylegan-xl`` (an official StyleGAN-XL pickle; needs ``weights`` and
            ``stylegan_xl_src``).
        layer: synthesis layers before the learnable feature map, 0 … the generator's layer count;
            ``None`` = half of them; ``-1`` = no feature map, W+ only (images from the whole
            synthesis). GLaD's StyleGAN-XL runs used 16 (DC), 20 (DM) and 12 (MTT).
        init: ``random`` (w of a random z) or ``avg_w`` (the class's mean w; every sample of a class
            then starts identical, so use it at IPC 1).
        weights: tiny — a ``.safetensors`` file from `TinyStyleGenerator.save`; stylegan-xl — the
            local network pickle (e.g. ``imagenet128.pkl``).
        trust_pickle: stylegan-xl only — StyleGAN-XL networks exist only as Python pickles, and
            unpickling runs code from the file; ``true`` says you trust ``weights`` (e.g. the official
            download). Without it a stylegan-xl prior refuses to load. Does not change the images.
        stylegan_xl_src: local checkout of https://github.com/autonomousvision/stylegan-xl.
        truncation: ψ of the initial w, w_avg + ψ·(w − w_avg); 1 = none.
        avg_samples: z draws averaged per class for ``init="avg_w"`` (GLaD: 1000).
        class_ids: the generator's class of each dataset class; default the identity, or the
            ImageNet indices of an ImageNet subset's classes for a 1000-class generator.
        seed: weight seed of a random ``tiny`` generator (the paper's "Random" generator, Table 3).
        cuda_ops: use StyleGAN-XL's custom CUDA ops on a GPU (they fall back to the reference
            implementations when they cannot be built; False always uses the reference).
    """

    name = "glad"
    description = "GLaD: W+ codes and an intermediate feature map of a StyleGAN (tiny or StyleGAN-XL)."
    #: w of a random z or the class's mean w: no real image is ever inverted
    starts_from_real = False
    version = 1
    #: the run id hashes the generator's weights, not where they lie
    path_options = ("weights",)
    display_order = 1
    # protocols.md (GLaD): feature map / W+ — DC 1 / 0.001, DM 10 / 0.01, MTT 10000 / 10: the DC
    # rates × each matcher's lr_scale
    base_lrs = {"features": 1.0, "w": 0.001}
    #: consent to unpickle, not a setting of the images: recorded with a run, left out of its id
    neutral_options = ("trust_pickle",)
    #: not what makes a variant in a report's label: where the code lies, how a GPU runs it, the
    #: dataset's class mapping
    housekeeping_options = ("stylegan_xl_src", "cuda_ops", "class_ids")
    # the tiny generator, measured as `Prior.seconds_per_generation` says (record iteration-cost-dm)
    seconds_per_generation = (0.07, 0.84)

    @classmethod
    def generator_label(cls, options: Mapping[str, Any]) -> str:
        weights = options.get("weights")
        return generator_from_path(weights) if weights else "random"

    def __init__(
        self,
        backend: str = "tiny",
        layer: int | None = None,
        init: str = "random",
        weights: str | None = None,
        stylegan_xl_src: str | None = None,
        truncation: float = 1.0,
        avg_samples: int = 1000,
        class_ids: Sequence[int] | None = None,
        seed: int = 0,
        cuda_ops: bool = True,
        trust_pickle: bool = False,
    ) -> None:
        self.backend = _choice("backend", backend, BACKENDS)
        if layer is not None and (isinstance(layer, bool) or not isinstance(layer, int) or layer < -1):
            raise InvalidOptionError(f"Expected glad layer to be an integer ≥ -1 (or None) but got {layer!r}")
        self.layer_option = layer
        self.init = _choice("init", init, INITS)
        if self.backend == "stylegan-xl" and (not weights or not stylegan_xl_src):
            raise InvalidOptionError(
                "backend='stylegan-xl' needs weights=/path/to/imagenet128.pkl and stylegan_xl_src=/path/to/stylegan-xl "
                "(--prior-opt weights=... --prior-opt stylegan_xl_src=...)"
            )
        if self.backend == "stylegan-xl" and trust_pickle is not True:
            # a pickle runs code while it loads: the user opts in per run, knowingly
            raise InvalidOptionError(
                f"backend='stylegan-xl' loads {weights} with pickle, which can run code from the file; if you trust it "
                "(e.g. the official StyleGAN-XL download), add --prior-opt glad.trust_pickle=true (suites: trust_pickle = true)"
            )
        if self.backend == "tiny" and stylegan_xl_src:
            raise InvalidOptionError(
                "stylegan_xl_src applies to backend='stylegan-xl' only; drop it or set the backend"
            )
        if not isinstance(truncation, (int, float)) or not 0 <= float(truncation) <= 2:
            raise InvalidOptionError(f"Expected truncation ψ in [0, 2] but got {truncation!r}")
        if int(avg_samples) < 1:
            raise InvalidOptionError(f"Expected avg_samples ≥ 1 but got {avg_samples}")
        self.weights = weights
        self.stylegan_xl_src = stylegan_xl_src
        self.truncation = float(truncation)
        self.avg_samples = int(avg_samples)
        self.class_ids = None if class_ids is None else [int(i) for i in class_ids]
        self.seed = int(seed)
        self.cuda_ops = bool(cuda_ops)
        self.trust_pickle = trust_pickle
        self.generator: StyleGenerator | None = None

    # ------------------------------------------------------------------------------ set-up

    def setup(self, data: RealData, device: torch.device, generator: StyleGenerator | None = None) -> None:
        """Build or load the generator for this dataset; ``generator`` passes an already built one."""
        self.device = torch.device(device)
        self.channels, self.resolution = data.channels, data.resolution
        self.space = DataImageSpace(data, self.device)
        if generator is None:
            generator = self._build_generator(data)
        self.use_generator(generator, data)

    def _build_generator(self, data: RealData) -> StyleGenerator:
        if self.backend == "stylegan-xl":
            from ddbench_plugins.priors.glad.stylegan_xl import load_stylegan_xl

            return load_stylegan_xl(self.weights, self.stylegan_xl_src, self.device, use_cuda_ops=self.cuda_ops)
        from ddbench_plugins.priors.glad.tiny import TinyConfig, TinyStyleGenerator

        if self.weights:
            return TinyStyleGenerator.load(self.weights)
        config = TinyConfig(resolution=data.resolution, channels=data.channels, num_classes=data.num_classes)
        return TinyStyleGenerator.build(config, seed=self.seed)

    def use_generator(self, generator: StyleGenerator, data: RealData) -> None:
        """Attach a generator: check channels and classes, resolve the layer and the class ids."""
        if generator.img_channels != data.channels and 1 not in (generator.img_channels, data.channels):
            raise InvalidOptionError(
                f"The generator makes {generator.img_channels}-channel images but {data.name} has {data.channels} channels"
            )
        self.generator = generator.eval().requires_grad_(False).to(self.device)
        self.layer = generator.num_layers // 2 if self.layer_option is None else self.layer_option
        if self.layer != -1:
            generator.check_layer(self.layer)
        self.model_class = torch.tensor(self._class_ids(data, generator), dtype=torch.long, device=self.device)

    def _class_ids(self, data: RealData, generator: StyleGenerator) -> list[int]:
        if generator.num_classes == 0:  # unconditional: the class is ignored by the mapping
            return [0] * data.num_classes
        return resolve_class_ids(self.class_ids, data.name, data.num_classes, generator.num_classes, "generator")

    def _require_setup(self) -> StyleGenerator:
        if self.generator is None:
            raise RuntimeError("GLaDPrior.setup(data, device) must be called before init_state/generate")
        return self.generator

    # ----------------------------------------------------------------------------- state

    def init_state(self, real_images: Tensor, labels: Tensor, generator: torch.Generator) -> LatentState:
        gen = self._require_setup()
        classes = self.model_class[labels.to(self.device)]
        with torch.no_grad():
            if self.init == "avg_w":
                if len(classes) > len(classes.unique()):
                    log.warning("glad init='avg_w' starts every sample of a class from the same w; use it at IPC 1")
                ws = gen.mean_w(classes, self.avg_samples, generator)
            else:
                z = torch.randn(len(classes), gen.z_dim, generator=generator).to(self.device)
                ws = torch.cat(
                    [
                        gen.mapping(zc, cc, self.truncation)
                        for zc, cc in zip(z.split(INIT_CHUNK), classes.split(INIT_CHUNK))
                    ]
                )
            params = {"w": ws.detach().float().clone()}
            if self.layer >= 0:
                params["features"] = torch.cat(
                    [gen.features(chunk, self.layer) for chunk in params["w"].split(INIT_CHUNK)]
                ).float()
        return LatentState(params={k: v.contiguous().requires_grad_(True) for k, v in params.items()})

    def is_learnable(self, name: str) -> bool:
        # layer -1 optimises W+ alone: there is no feature map
        return name == "w" or getattr(self, "layer", self.layer_option) != -1

    # -------------------------------------------------------------------------- generation

    def generate(self, state: LatentState, indices: Tensor) -> Tensor:
        gen = self._require_setup()
        idx = indices.to(self.device)
        ws = state.params["w"][idx]
        if self.layer >= 0:
            images = gen.from_features(state.params["features"][idx], ws, self.layer)
        else:
            images = gen.synthesis(ws)
        return self.to_data_images(images)

    def to_data_images(self, images: Tensor) -> Tensor:
        """Generator output in [−1, 1] → dataset-standardised images at the data's channels and resolution."""
        return self.space.from_generator(images)
