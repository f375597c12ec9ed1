"""The official StyleGAN-XL generators (Sauer et al., 2022) behind the `StyleGenerator` interface.

Loading needs two local things, never a download: the network pickle (e.g. ``imagenet128.pkl``) and
a checkout of the StyleGAN-XL source tree (https://github.com/autonomousvision/stylegan-xl), whose
``dnnlib`` and ``torch_utils`` packages rebuild the pickled networks. The tree is put on
``sys.path`` and only ``G_ema`` is built (`lazy_pickle`): the discriminator's modules are never
imported. The tree's own Python dependencies (scipy, dill, …) must be installed.

StyleGAN-XL's synthesis is StyleGAN3's: ``synthesis.input`` (Fourier features, driven by ``ws[:, 0]``)
then the layers named in ``synthesis.layer_names``, layer i driven by ``ws[:, i + 1]``, then
``output_scale``. A split after k layers is GLaD's ``to_f`` / ``from_f``.

Custom CUDA ops (bias_act, filtered_lrelu, upfirdn2d) take their reference PyTorch paths on the CPU by
themselves. On a GPU each op's plugin is built once up front; one that fails to build (no compiler,
no ninja) is switched to its reference path with a warning instead of failing mid-run.
"""

from __future__ import annotations

import logging
import sys
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from ddbench_plugins.priors.glad.generator import StyleGenerator
from ddbench_plugins.priors.glad.lazy_pickle import load_deferred, materialise
from torch import Tensor, nn

from ddbench.errors import CorruptFileError, DataNotFoundError, InvalidOptionError, PluginLoadError

log = logging.getLogger(__name__)

GENERATOR_KEY = "G_ema"
CUSTOM_OPS = ("bias_act", "filtered_lrelu", "upfirdn2d")
SOURCE_PACKAGES = ("dnnlib", "torch_utils")


class StyleGANXLGenerator(StyleGenerator):
    """Adapter over a loaded StyleGAN-XL (or StyleGAN3-layout) ``G`` with ``mapping`` and ``synthesis``."""

    def __init__(self, G: nn.Module) -> None:
        super().__init__()
        missing = [a for a in ("mapping", "synthesis", "z_dim", "c_dim", "w_dim", "num_ws") if not hasattr(G, a)]
        syn = getattr(G, "synthesis", None)
        missing += [f"synthesis.{a}" for a in ("input", "layer_names") if syn is not None and not hasattr(syn, a)]
        if missing:
            raise InvalidOptionError(
                f"The pickled generator lacks {missing}; expected a StyleGAN-XL / StyleGAN3 generator "
                "(G_ema of a StyleGAN-XL snapshot)"
            )
        self.G = G
        self.z_dim, self.w_dim, self.num_ws = int(G.z_dim), int(G.w_dim), int(G.num_ws)
        self.num_classes = int(G.c_dim)
        self.img_channels, self.img_resolution = int(G.img_channels), int(G.img_resolution)
        self.num_layers = len(syn.layer_names)

    def mapping(self, z: Tensor, labels: Tensor, truncation: float = 1.0) -> Tensor:
        if self.num_classes > 0:
            c = F.one_hot(labels.long(), self.num_classes).to(z.dtype)
        else:
            c = torch.zeros(z.shape[0], 0, device=z.device, dtype=z.dtype)
        return self.G.mapping(z, c, truncation_psi=truncation)

    def _layers(self) -> list[nn.Module]:
        syn = self.G.synthesis
        return [getattr(syn, name) for name in syn.layer_names]

    def features(self, ws: Tensor, layer: int) -> Tensor:
        self.check_ws(ws)
        self.check_layer(layer)
        w = ws.to(torch.float32).unbind(dim=1)
        x = self.G.synthesis.input(w[0])
        for module, w_i in zip(self._layers()[:layer], w[1 : 1 + layer]):
            x = module(x, w_i)
        return x

    def from_features(self, features: Tensor, ws: Tensor, layer: int) -> Tensor:
        self.check_ws(ws)
        self.check_layer(layer)
        w = ws.to(torch.float32).unbind(dim=1)
        x = features
        for module, w_i in zip(self._layers()[layer:], w[1 + layer :]):
            x = module(x, w_i)
        scale = getattr(self.G.synthesis, "output_scale", 1)
        if scale != 1:
            x = x * scale
        return x.to(torch.float32)


def _import_source_tree(src: Path) -> None:
    if not src.is_dir():
        raise DataNotFoundError(
            f"StyleGAN-XL source tree {src} does not exist; clone https://github.com/autonomousvision/stylegan-xl "
            "and pass its directory as stylegan_xl_src (--prior-opt stylegan_xl_src=/path/to/stylegan-xl)"
        )
    missing = [pkg for pkg in SOURCE_PACKAGES if not (src / pkg / "__init__.py").is_file()]
    if missing:
        raise DataNotFoundError(
            f"{src} is not a StyleGAN-XL source tree (no {', '.join(missing)} package); pass the root of a "
            "checkout of https://github.com/autonomousvision/stylegan-xl as stylegan_xl_src"
        )
    path = str(src.resolve())
    if path not in sys.path:
        sys.path.insert(0, path)
    for pkg in SOURCE_PACKAGES:  # a different tree imported earlier in this process would shadow this one
        loaded = sys.modules.get(pkg)
        origin = getattr(loaded, "__file__", None)
        if loaded is not None and origin and not Path(origin).resolve().is_relative_to(Path(path)):
            raise InvalidOptionError(
                f"`{pkg}` is already imported from {origin}, not from {src}; run with one StyleGAN source tree per process"
            )


def configure_custom_ops(device: torch.device, use_cuda_ops: bool = True) -> dict[str, str]:
    """Decide, per custom op, whether its CUDA plugin or its reference implementation runs.

    Returns ``{op: "cuda" | "reference"}`` for the ops the loaded networks imported.
    """
    modes: dict[str, str] = {}
    for name in CUSTOM_OPS:
        module = sys.modules.get(f"torch_utils.ops.{name}")
        if module is None or not callable(getattr(module, "_init", None)):
            continue
        if device.type != "cuda":
            modes[name] = "reference"  # the ops check the tensor's device themselves
            continue
        if not use_cuda_ops:
            module._init = _reference_only
            modes[name] = "reference"
            continue
        try:
            ok = bool(module._init())
        except Exception as err:  # noqa: BLE001 - any build failure (compiler, ninja, CUDA headers) means "use the reference"
            warnings.warn(
                f"StyleGAN-XL's {name} CUDA op could not be built ({err}); using its reference implementation",
                stacklevel=2,
            )
            ok = False
        if not ok:
            module._init = _reference_only
        modes[name] = "cuda" if ok else "reference"
    return modes


def _reference_only() -> bool:
    return False


def load_stylegan_xl(
    pickle_path: str | Path,
    src: str | Path,
    device: torch.device | str = "cpu",
    use_cuda_ops: bool = True,
    key: str = GENERATOR_KEY,
) -> StyleGANXLGenerator:
    """``G_ema`` (or ``key``) of a StyleGAN-XL network pickle, frozen, in eval mode, on ``device``."""
    pickle_path, src, device = Path(pickle_path), Path(src), torch.device(device)
    if not pickle_path.is_file():
        raise DataNotFoundError(
            f"No StyleGAN-XL pickle at {pickle_path}; download e.g. imagenet128.pkl from the StyleGAN-XL README "
            "once and pass its local path as weights (--prior-opt weights=/path/imagenet128.pkl)"
        )
    _import_source_tree(src)
    try:
        with open(pickle_path, "rb") as handle:
            data, _ = load_deferred(handle)
    except Exception as err:  # noqa: BLE001 - truncated or foreign files fail in many ways
        raise CorruptFileError(f"{pickle_path} is not a readable network pickle ({type(err).__name__}: {err})") from err
    if not isinstance(data, dict) or key not in data:
        found = sorted(map(str, data)) if isinstance(data, dict) else type(data).__name__
        raise CorruptFileError(
            f"{pickle_path} has no '{key}' entry (found {found}); pass a StyleGAN-XL snapshot pickle"
        )
    try:
        G = materialise(data[key])
    except ModuleNotFoundError as err:
        raise PluginLoadError(
            f"Building {key} from {pickle_path} needs the Python module '{err.name}', which StyleGAN-XL's code "
            f"imports; install it (e.g. `pip install {err.name}`) or check that {src} is a complete StyleGAN-XL checkout"
        ) from err
    if not isinstance(G, nn.Module):
        raise CorruptFileError(f"'{key}' in {pickle_path} is a {type(G).__name__}, not a torch module")
    G = G.eval().requires_grad_(False).to(device)
    modes = configure_custom_ops(device, use_cuda_ops)
    log.info("loaded %s from %s (custom ops: %s)", key, pickle_path, modes or "none")
    return StyleGANXLGenerator(G).eval()
