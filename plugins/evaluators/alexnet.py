"""AlexNet, the small-image variant of the dataset-distillation literature (DC/DSA/DM/MTT/GLaD).

``conv5×5-128 → maxpool → conv5×5-192 → maxpool → conv3×3-256 → conv3×3-192 → conv3×3-192 →
maxpool → linear``, ReLU after every conv, no normalisation and no dropout.

Every conv keeps the size ('same' padding) and each max-pool halves it, so the classifier sees
``192 × (s/8)²`` features: 4×4 at 28/32 px (28-px images are padded to 32 by the first conv,
as the DC reference does for MNIST), 16×16 at 128 px, 32×32 at 256 px (GLaD's ``im_size // 8``).

Written by hand: torchvision's ``AlexNet`` is the ImageNet network (11×11 stride-4 stem, 6×6
adaptive pooling, a 4096-wide dropout MLP head), which this protocol does not use.
"""

from __future__ import annotations

from typing import ClassVar

from ddbench_plugins.evaluators._layers import (
    FeaturesThenLinear,
    check_channels,
    first_conv_padding,
    input_error,
    pooled_size,
)
from torch import nn

from ddbench.interfaces import Evaluator

#: (out channels, kernel, max-pool after) of each conv
LAYERS: tuple[tuple[int, int, bool], ...] = (
    (128, 5, True),
    (192, 5, True),
    (256, 3, False),
    (192, 3, False),
    (192, 3, True),
)
POOLINGS = sum(pool for _, _, pool in LAYERS)


class AlexNet(FeaturesThenLinear):
    """``forward`` gives logits, ``embed`` the flattened features before the classifier."""

    def __init__(self, channels: int, num_classes: int, resolution: int) -> None:
        super().__init__()
        side = pooled_size(resolution, POOLINGS)
        layers: list[nn.Module] = []
        in_channels = channels
        for index, (width, kernel, pool) in enumerate(LAYERS):
            padding = first_conv_padding(resolution, kernel) if index == 0 else kernel // 2
            layers += [nn.Conv2d(in_channels, width, kernel_size=kernel, padding=padding), nn.ReLU(inplace=True)]
            if pool:
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            in_channels = width
        self.features = nn.Sequential(*layers)
        self.embed_dim = in_channels * side * side
        self.classifier = nn.Linear(self.embed_dim, num_classes)


class AlexNetEvaluator(Evaluator):
    name = "alexnet"
    description = "AlexNet (small-image variant): 5 convs 128-192-256-192-192, 3 max-pools, no norm, linear head."
    display_order = 1
    # measured as `Evaluator.seconds_per_image` says (record eval-cost-1thread)
    seconds_per_image = (0.011, 0.0036)
    protocol_lrs: ClassVar[dict[str, float]] = {}  # AlexNet uses each protocol's own lr
    #: three 2× max-pools need at least 8 px (28 px is padded to 32)
    min_resolution: ClassVar[int] = 1 << POOLINGS
    batched_seeds: ClassVar[bool] = True

    def check_input(self, channels: int, resolution: int) -> None:
        check_channels(self.name, channels)
        if pooled_size(resolution, POOLINGS) < 1:
            raise input_error(
                self.name, resolution, self.min_resolution,
                f"its {POOLINGS} max-pools would shrink the feature map below 1 px",
            )  # fmt: skip

    def build(self, channels: int, num_classes: int, resolution: int) -> AlexNet:
        self.check_input(channels, resolution)
        return AlexNet(channels, num_classes, resolution)
