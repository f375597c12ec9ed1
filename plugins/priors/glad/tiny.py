"""A small StyleGAN2-style generator: GLaD's prior on any machine, and the paper's "Random" generator.

Architecture (Karras et al., "Analyzing and Improving the Image Quality of StyleGAN"):

- class-conditional mapping network: z and a class embedding, each normalised to unit second
  moment, concatenated, then ``mapping_layers`` fully connected layers with leaky ReLU → w,
  broadcast to W+ ``(N, num_ws, w_dim)``; a per-class average ``w_avg`` serves truncation;
- synthesis: a learned constant input at ``base`` px (4–7, so that 28 px works: 7 → 14 → 28), then
  per resolution a block of modulated + demodulated 3×3 convolutions (the first one upsamples ×2)
  and a toRGB (modulated 1×1, no demodulation) whose outputs are summed over resolutions (skips).
  Weights use the equalised learning-rate parameterisation (N(0, 1) storage, gain at run time).

Differences from StyleGAN2, on purpose: no per-pixel noise inputs (StyleGAN-XL, GLaD's generator,
has none either, and `generate` must be deterministic), and the ×2 upsampling of features and skip
images is bilinear — the [1, 3, 3, 1] FIR filter StyleGAN2 uses, with replicated instead of zero
borders.

Layer k of the synthesis is one modulated convolution (with the block's toRGB when it ends a block),
so the state between layers is the feature map *and* the partial skip image. `features` returns
them concatenated along channels (``feature_channels + img_channels``), upsampling the skip image
together with the features so both share a resolution; the split is then exact at every layer.
Layer j uses ``ws[:, j]``; a toRGB ending at layer j uses ``ws[:, j + 1]`` (as StyleGAN2), so
``num_ws = num_layers + 1``.

Weights are saved as one safetensors file whose metadata holds the config (`save` / `load`).
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from ddbench_plugins.priors.glad.generator import StyleGenerator
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

from ddbench.errors import CorruptFileError, DataNotFoundError, InvalidOptionError

FORMAT = "ddbench-glad-tiny"
FORMAT_VERSION = "1"
LRELU_SLOPE = 0.2
LRELU_GAIN = math.sqrt(2.0)  # keeps the second moment of leaky-ReLU activations at ~1
W_AVG_SAMPLES = 256  # draws per class for the truncation centre of a random generator


def base_resolution(resolution: int) -> int:
    """Side of the constant input: halve while even and above 7 (28 → 7, 32 → 4, 256 → 4)."""
    base = resolution
    while base > 7 and base % 2 == 0:
        base //= 2
    return base


@dataclasses.dataclass(frozen=True)
class TinyConfig:
    """Everything that defines the architecture (saved with the weights)."""

    resolution: int
    channels: int
    num_classes: int
    z_dim: int = 64
    w_dim: int = 512
    mapping_layers: int = 2
    channel_base: int = 1024  # channels at resolution r: min(channel_base // r, channel_max)
    channel_max: int = 128
    channel_min: int = 8

    def __post_init__(self) -> None:
        base = base_resolution(self.resolution)
        if not 4 <= base <= 7 or base == self.resolution:
            raise InvalidOptionError(
                f"The tiny GLaD generator needs a resolution b·2^k with 4 ≤ b ≤ 7 and k ≥ 1 (e.g. 28, 32, 64, "
                f"128, 256) but got {self.resolution}"
            )
        if self.channels < 1 or self.num_classes < 1:
            raise InvalidOptionError(f"Expected ≥ 1 channel and ≥ 1 class but got {self.channels} / {self.num_classes}")
        if min(self.z_dim, self.w_dim, self.mapping_layers, self.channel_max) < 1:
            raise InvalidOptionError(f"Expected positive z_dim, w_dim, mapping_layers, channel_max; got {self}")

    def resolutions(self) -> list[int]:
        res = [base_resolution(self.resolution)]
        while res[-1] < self.resolution:
            res.append(res[-1] * 2)
        return res

    def width(self, resolution: int) -> int:
        return max(self.channel_min, min(self.channel_base // resolution, self.channel_max))


class EqualLinear(nn.Module):
    """Fully connected layer with the equalised learning-rate parameterisation."""

    def __init__(self, in_features: int, out_features: int, bias_init: float = 0.0, activation: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features))
        self.bias = nn.Parameter(torch.full((out_features,), float(bias_init)))
        self.gain = 1.0 / math.sqrt(in_features)
        self.activation = activation

    def forward(self, x: Tensor) -> Tensor:
        x = F.linear(x, self.weight * self.gain, self.bias)
        return F.leaky_relu(x, LRELU_SLOPE) * LRELU_GAIN if self.activation else x


def _normalise_2nd_moment(x: Tensor) -> Tensor:
    return x * (x.square().mean(dim=1, keepdim=True) + 1e-8).rsqrt()


class MappingNetwork(nn.Module):
    def __init__(self, config: TinyConfig, num_ws: int) -> None:
        super().__init__()
        self.num_ws = num_ws
        self.embed = nn.Embedding(config.num_classes, config.z_dim)
        nn.init.normal_(self.embed.weight)
        dims = [2 * config.z_dim] + [config.w_dim] * config.mapping_layers
        self.layers = nn.ModuleList(EqualLinear(a, b, activation=True) for a, b in zip(dims[:-1], dims[1:]))
        self.register_buffer("w_avg", torch.zeros(config.num_classes, config.w_dim))

    def forward(self, z: Tensor, labels: Tensor, truncation: float = 1.0) -> Tensor:
        x = torch.cat([_normalise_2nd_moment(z), _normalise_2nd_moment(self.embed(labels))], dim=1)
        for layer in self.layers:
            x = layer(x)
        if truncation != 1.0:
            x = torch.lerp(self.w_avg[labels], x, truncation)
        return x.unsqueeze(1).repeat(1, self.num_ws, 1)


class ModulatedConv(nn.Module):
    """Style-modulated convolution; ``demodulate`` rescales each output filter to unit norm."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, w_dim: int, demodulate: bool, up: bool = False) -> None:
        super().__init__()
        self.affine = EqualLinear(w_dim, in_ch, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_ch, in_ch, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(out_ch))
        self.gain = 1.0 / math.sqrt(in_ch * kernel * kernel)
        self.demodulate = demodulate
        self.up = up

    def forward(self, x: Tensor, w: Tensor) -> Tensor:
        n, in_ch, _, _ = x.shape
        if self.up:
            x = upsample(x)
        styles = self.affine(w)  # (N, in)
        weight = self.weight.unsqueeze(0) * self.gain * styles[:, None, :, None, None]  # (N, out, in, k, k)
        if self.demodulate:
            weight = weight * (weight.square().sum(dim=(2, 3, 4), keepdim=True) + 1e-8).rsqrt()
        out_ch, k = weight.shape[1], weight.shape[-1]
        # one grouped convolution runs every sample with its own modulated weights
        y = F.conv2d(
            x.reshape(1, n * in_ch, *x.shape[2:]), weight.reshape(n * out_ch, in_ch, k, k), padding=k // 2, groups=n
        )
        return y.reshape(n, out_ch, *y.shape[2:]) + self.bias.view(1, -1, 1, 1)


def upsample(x: Tensor) -> Tensor:
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)


class SynthesisLayer(nn.Module):
    """One modulated 3×3 convolution with leaky ReLU, plus the block's toRGB when it ends a block."""

    def __init__(self, in_ch: int, out_ch: int, w_dim: int, img_channels: int, up: bool, to_rgb: bool) -> None:
        super().__init__()
        self.conv = ModulatedConv(in_ch, out_ch, 3, w_dim, demodulate=True, up=up)
        self.torgb = ModulatedConv(out_ch, img_channels, 1, w_dim, demodulate=False) if to_rgb else None
        self.up = up

    def forward(self, x: Tensor, img: Tensor, w: Tensor, w_rgb: Tensor) -> tuple[Tensor, Tensor]:
        x = F.leaky_relu(self.conv(x, w), LRELU_SLOPE) * LRELU_GAIN
        if self.up:
            img = upsample(img)
        if self.torgb is not None:
            img = img + self.torgb(x, w_rgb)
        return x, img


class TinyStyleGenerator(StyleGenerator):
    """StyleGAN2-style generator of ``config.resolution`` px (see the module docstring)."""

    def __init__(self, config: TinyConfig) -> None:
        super().__init__()
        self.config = config
        res = config.resolutions()
        self.z_dim, self.w_dim = config.z_dim, config.w_dim
        self.num_classes, self.img_channels, self.img_resolution = (
            config.num_classes,
            config.channels,
            config.resolution,
        )
        self.const = nn.Parameter(torch.randn(config.width(res[0]), res[0], res[0]))
        layers = [
            SynthesisLayer(
                config.width(res[0]), config.width(res[0]), config.w_dim, config.channels, up=False, to_rgb=True
            )
        ]
        for prev, r in zip(res[:-1], res[1:]):
            layers.append(
                SynthesisLayer(
                    config.width(prev), config.width(r), config.w_dim, config.channels, up=True, to_rgb=False
                )
            )
            layers.append(
                SynthesisLayer(config.width(r), config.width(r), config.w_dim, config.channels, up=False, to_rgb=True)
            )
        self.layers = nn.ModuleList(layers)
        self.num_layers = len(layers)
        self.num_ws = self.num_layers + 1
        self.mapping_network = MappingNetwork(config, self.num_ws)

    # ------------------------------------------------------------------ StyleGenerator API

    def mapping(self, z: Tensor, labels: Tensor, truncation: float = 1.0) -> Tensor:
        return self.mapping_network(z, labels, truncation)

    def features(self, ws: Tensor, layer: int) -> Tensor:
        self.check_ws(ws)
        self.check_layer(layer)
        n, side = ws.shape[0], self.const.shape[-1]
        x = self.const.unsqueeze(0).expand(n, -1, -1, -1)
        img = torch.zeros(n, self.img_channels, side, side, device=ws.device, dtype=x.dtype)
        for j in range(layer):
            x, img = self.layers[j](x, img, ws[:, j], ws[:, j + 1])
        return torch.cat([x, img], dim=1)

    def from_features(self, features: Tensor, ws: Tensor, layer: int) -> Tensor:
        self.check_ws(ws)
        self.check_layer(layer)
        x, img = features[:, : -self.img_channels], features[:, -self.img_channels :]
        for j in range(layer, self.num_layers):
            x, img = self.layers[j](x, img, ws[:, j], ws[:, j + 1])
        return img

    # --------------------------------------------------------------------- build / save / load

    @classmethod
    def build(cls, config: TinyConfig, seed: int = 0) -> TinyStyleGenerator:
        """A randomly initialised generator; the same seed gives the same weights, without touching the global RNG."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            generator = cls(config)
        generator.update_w_avg(torch.Generator().manual_seed(seed))
        return generator.eval().requires_grad_(False)

    @torch.no_grad()
    def update_w_avg(self, generator: torch.Generator, samples: int = W_AVG_SAMPLES) -> None:
        """Set each class's average w (the truncation centre) from ``samples`` draws of z."""
        labels = torch.arange(self.num_classes, device=self.const.device)
        self.mapping_network.w_avg.copy_(self.mean_w(labels, samples, generator)[:, 0])

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        metadata = {"format": FORMAT, "version": FORMAT_VERSION, "config": json.dumps(dataclasses.asdict(self.config))}
        save_file(tensors, str(path), metadata=metadata)
        return path

    @classmethod
    def load(cls, path: str | Path) -> TinyStyleGenerator:
        path = Path(path)
        if not path.is_file():
            raise DataNotFoundError(
                f"No tiny GLaD generator at {path}; pass the .safetensors file written by TinyStyleGenerator.save, "
                "or leave the `weights` option unset for a randomly initialised generator"
            )
        try:
            with safe_open(str(path), framework="pt") as handle:
                metadata = handle.metadata() or {}
                tensors = {key: handle.get_tensor(key) for key in handle.keys()}
            if metadata.get("format") != FORMAT:
                raise ValueError(f"format is {metadata.get('format')!r}, not {FORMAT!r}")
            generator = cls(TinyConfig(**json.loads(metadata["config"])))
            generator.load_state_dict(tensors, strict=True)
        except (SafetensorError, ValueError, KeyError, RuntimeError, TypeError, OSError) as err:
            raise CorruptFileError(
                f"{path} is not a tiny GLaD generator written by TinyStyleGenerator.save ({err})"
            ) from err
        return generator.eval().requires_grad_(False)
