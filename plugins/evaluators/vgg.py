"""VGG11 with instance norm, the small-image variant of the dataset-distillation literature.

The standard 11-layer stack ``64, M, 128, M, 256, 256, M, 512, 512, M, 512, 512, M`` of 3×3 convs,
each followed by instance norm (``GroupNorm(C, C)``) and ReLU; ``M`` is a 2× max-pool. As in the DC
reference, a 28-px input is padded to 32 px by the first conv, so after five poolings the
classifier sees 512×1×1 at 28/32 px; at 128/256 px it sees the flattened 512×4×4 / 512×8×8 map.

``head="adaptive-max-7"`` reproduces GLaD's ImageNet VGG11 instead: an ``AdaptiveMaxPool2d(7)``
before the classifier (512×7×7 inputs at any resolution; at 128 px it repeats the 4×4 map).

Written by hand: torchvision's ``vgg11`` can put only batch norm (or nothing) after a conv, pads
every conv by 1, and ends in a 4096-wide dropout MLP; none of that fits this protocol.
"""

from __future__ import annotations

from typing import ClassVar

from ddbench_plugins.evaluators._layers import (
    FeaturesThenLinear,
    check_channels,
    check_norm,
    first_conv_padding,
    input_error,
    norm_layer,
    pooled_size,
)
from torch import nn

from ddbench.errors import InvalidOptionError
from ddbench.interfaces import Evaluator

#: conv widths, "M" = 2× max-pool
VGG11_CONFIG: tuple[int | str, ...] = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")
POOLINGS = VGG11_CONFIG.count("M")
HEADS = ("flatten", "adaptive-max-7")


class VGG(FeaturesThenLinear):
    """``forward`` gives logits, ``embed`` the flattened features before the classifier."""

    def __init__(
        self,
        channels: int,
        num_classes: int,
        resolution: int,
        config: tuple[int | str, ...] = VGG11_CONFIG,
        norm: str = "instancenorm",
        head: str = "flatten",
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_channels = channels
        for item in config:
            if item == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
                continue
            width = int(item)
            padding = first_conv_padding(resolution, 3) if not layers else 1
            layers += [
                nn.Conv2d(in_channels, width, kernel_size=3, padding=padding),
                norm_layer(norm, width),
                nn.ReLU(inplace=True),
            ]
            in_channels = width
        if head == "adaptive-max-7":
            layers.append(nn.AdaptiveMaxPool2d((7, 7)))
            side = 7
        else:
            side = pooled_size(resolution, config.count("M"))
        self.features = nn.Sequential(*layers)
        self.embed_dim = in_channels * side * side
        self.classifier = nn.Linear(self.embed_dim, num_classes)


class VGG11Evaluator(Evaluator):
    name = "vgg11"
    description = "VGG11 with instance norm after every conv (small-image variant: 28 px padded to 32, flattened head)."
    display_order = 2
    # measured as `Evaluator.seconds_per_image` says (record eval-cost-1thread)
    seconds_per_image = (0.010, 0.0026)
    # GLaD trains VGG11 with a 10× smaller lr than the other architectures
    protocol_lrs: ClassVar[dict[str, float]] = {"glad": 1e-4}
    #: five 2× max-pools need 32 px; 28-px images are padded to 32 by the first conv
    min_resolution: ClassVar[int] = 28
    batched_seeds: ClassVar[bool] = True

    def __init__(self, norm: str = "instancenorm", head: str = "flatten") -> None:
        self.norm = check_norm(norm)
        if head not in HEADS:
            raise InvalidOptionError(f"Expected head in {HEADS} but got '{head}'")
        self.head = head

    def check_input(self, channels: int, resolution: int) -> None:
        check_channels(self.name, channels)
        if pooled_size(resolution, POOLINGS) < 1:
            raise input_error(
                self.name, resolution, self.min_resolution,
                f"its {POOLINGS} max-pools need at least {1 << POOLINGS} px (28-px images are padded to 32)",
                fix=f"Use 28-px or ≥ {1 << POOLINGS}-px images.",
            )  # fmt: skip

    def build(self, channels: int, num_classes: int, resolution: int) -> VGG:
        self.check_input(channels, resolution)
        return VGG(channels, num_classes, resolution, norm=self.norm, head=self.head)
