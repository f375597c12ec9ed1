"""ResNet18 with the CIFAR-style stem and instance norm in every block.

torchvision's ``ResNet`` with ``BasicBlock × [2, 2, 2, 2]`` and ``norm_layer`` set to instance norm
(``GroupNorm(C, C)``) in the stem, in both convs of every block and in every downsampling shortcut.
Only the stem is replaced: a 3×3 stride-1 conv and no max-pool (torchvision hard-codes the ImageNet
7×7 stride-2 conv + max-pool), so a 32-px image reaches the last stage at 4×4. A global average
pool feeds the 512-wide linear classifier at every resolution (as GLaD's ``ResNet18``).

GLaD's ``ResNet18BN`` ran without any normalisation (it asked for ``'batchnorm'`` but tested for
``'batch'``); that is available only on request, as ``norm="none"``.
"""

from __future__ import annotations

import functools
from typing import ClassVar

from ddbench_plugins.evaluators._layers import check_channels, check_norm, input_error, norm_layer
from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock, ResNet

from ddbench.interfaces import Evaluator

STAGES = (2, 2, 2, 2)
#: three stride-2 stages, each ``ceil(n / 2)``
DOWNSAMPLINGS = 3


def last_stage_size(resolution: int) -> int:
    """Side of the last stage's feature map (a 3×3 stride-2 conv with padding 1 gives ceil(n/2))."""
    size = resolution
    for _ in range(DOWNSAMPLINGS):
        size = (size + 1) // 2
    return size


class ResNet18(ResNet):
    """``forward`` gives logits, ``embed`` the pooled 512-d features before the classifier."""

    def __init__(self, channels: int, num_classes: int, norm: str = "instancenorm") -> None:
        super().__init__(
            BasicBlock, list(STAGES), num_classes=num_classes, norm_layer=functools.partial(norm_layer, norm)
        )
        self.conv1 = nn.Conv2d(channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        # the same init torchvision gives every other conv of the network
        nn.init.kaiming_normal_(self.conv1.weight, mode="fan_out", nonlinearity="relu")
        self.maxpool = nn.Identity()
        self.embed_dim = self.fc.in_features

    def embed(self, x: Tensor) -> Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.avgpool(x).flatten(1)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.embed(x))

    def get_classifier(self) -> nn.Linear:
        return self.fc


class ResNet18Evaluator(Evaluator):
    name = "resnet18"
    description = "ResNet18, CIFAR-style stem (3×3 stride 1, no max-pool), instance norm in every block."
    display_order = 3
    # measured as `Evaluator.seconds_per_image` says (record eval-cost-1thread)
    seconds_per_image = (0.024, 0.0077)
    protocol_lrs: ClassVar[dict[str, float]] = {}  # ResNet18 uses each protocol's own lr
    #: with instance norm the last stage must be at least 2×2: a 1×1 map normalises to a constant
    min_resolution: ClassVar[int] = 9
    batched_seeds: ClassVar[bool] = True

    def __init__(self, norm: str = "instancenorm") -> None:
        self.norm = check_norm(norm)

    def smallest_resolution(self) -> int:
        """Instance norm of a 1×1 map is constant (zero variance), so it needs a 2×2 last stage."""
        return self.min_resolution if self.norm == "instancenorm" else 1

    def check_input(self, channels: int, resolution: int) -> None:
        check_channels(self.name, channels)
        smallest = self.smallest_resolution()
        if resolution < smallest:
            raise input_error(
                self.name, resolution, smallest,
                f"its last stage would be {last_stage_size(resolution)}×{last_stage_size(resolution)}, "
                "and instance norm turns a 1×1 map into a constant",
            )  # fmt: skip

    def build(self, channels: int, num_classes: int, resolution: int) -> ResNet18:
        self.check_input(channels, resolution)
        return ResNet18(channels, num_classes, norm=self.norm)
