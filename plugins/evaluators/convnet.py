"""ConvNet-D, the standard dataset-distillation network (DC/DSA/DM/MTT/GLaD).

``[conv3×3 (width) → instance norm → ReLU → avgpool 2] × depth → linear``.

Depth rule (``depth=None``): halve the feature map until it is at most 4 px — 3 at 28/32 px, 4 at
64, 5 at 128, 6 at 256. At 28 px the first conv pads by 3 instead of 1 so the net sees 32 px
(28 → 32 → 16 → 8 → 4), as the DC reference does for MNIST/Fashion-MNIST; every other resolution
pads by 1 and pools with floor.

Instance norm is ``nn.GroupNorm(C, C, affine=True)``, as the reference; on CPU it was faster than
``F.instance_norm`` and a hand-written ``var_mean`` version.

Speed (the embed is DM's hot path): on a CPU the first block's activations (N × 128 × 32 × 32) are
memory-bound, so DM embeds its real batch in cache-sized chunks outside the network
(``dm.real_chunk``; measured in ``benchmarks/README.md``). Instance norm is per sample, so chunking
changes nothing but float rounding.
"""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor, nn

from ddbench.errors import InvalidOptionError
from ddbench.interfaces import Evaluator

NORMS = ("instancenorm", "batchnorm", "none")


def effective_resolution(resolution: int) -> int:
    """The size after the first conv: 28 px is padded to 32 px (the reference's MNIST ConvNet)."""
    return 32 if resolution == 28 else resolution


def auto_depth(resolution: int) -> int:
    """Number of conv blocks: pool until the feature map is at most 4 px."""
    size, depth = effective_resolution(resolution), 0
    while size > 4:
        size //= 2
        depth += 1
    return max(depth, 1)


def feature_size(resolution: int, depth: int) -> int:
    """Side of the last feature map after ``depth`` floor-halvings."""
    return effective_resolution(resolution) >> depth


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "instancenorm":
        return nn.GroupNorm(channels, channels, affine=True)
    if kind == "batchnorm":
        return nn.BatchNorm2d(channels)
    return nn.Identity()


class ConvNet(nn.Module):
    """ConvNet-D; ``forward`` gives logits, ``embed`` the flattened features before the classifier."""

    def __init__(
        self,
        channels: int,
        num_classes: int,
        resolution: int,
        width: int = 128,
        depth: int | None = None,
        norm: str = "instancenorm",
    ) -> None:
        super().__init__()
        depth = auto_depth(resolution) if depth is None else depth
        side = feature_size(resolution, depth)
        if side < 1:
            raise InvalidOptionError(
                f"ConvNet of depth {depth} pools a {resolution}-px image below 1 px; use depth ≤ {auto_depth(resolution)}"
            )
        first_pad = 1 + (effective_resolution(resolution) - resolution) // 2
        layers: list[nn.Module] = []
        in_channels = channels
        for d in range(depth):
            layers += [
                nn.Conv2d(in_channels, width, kernel_size=3, padding=first_pad if d == 0 else 1),
                _norm(norm, width),
                nn.ReLU(inplace=True),
                nn.AvgPool2d(kernel_size=2, stride=2),
            ]
            in_channels = width
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(width * side * side, num_classes)
        self.depth = depth
        self.norm = norm
        self.embed_dim = width * side * side

    def embed(self, x: Tensor) -> Tensor:
        return self.features(x).flatten(1)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.embed(x))

    def reset_parameters(self) -> None:
        """Re-initialise every weight in place (PyTorch's default init), keeping the Parameter objects.

        Distribution matching draws a fresh random network each iteration; re-initialising in place
        lets a compiled or device-resident module be reused. Uses the global RNG, which the caller seeds.
        """
        for module in self.modules():
            if module is not self and hasattr(module, "reset_parameters"):
                module.reset_parameters()
            if isinstance(module, nn.BatchNorm2d):
                module.reset_running_stats()


class ConvNetEvaluator(Evaluator):
    name = "convnet"
    description = "ConvNet-D: conv3×3-128 → instance norm → ReLU → avgpool, depth by resolution (3 at ≤32 px)."
    display_order = 0
    # measured as `Evaluator.seconds_per_image` says (record eval-cost-1thread)
    seconds_per_image = (0.0039, 0.0014)
    protocol_lrs: ClassVar[dict[str, float]] = {}  # ConvNet uses each protocol's own lr
    min_resolution: ClassVar[int] = 8
    batched_seeds: ClassVar[bool] = True

    def __init__(self, width: int = 128, depth: int | None = None, norm: str = "instancenorm") -> None:
        if width < 1:
            raise InvalidOptionError(f"Expected width ≥ 1 but got {width}")
        if depth is not None and depth < 1:
            raise InvalidOptionError(f"Expected depth ≥ 1 or None (by resolution) but got {depth}")
        if norm not in NORMS:
            raise InvalidOptionError(f"Expected norm in {NORMS} but got '{norm}'")
        self.width = width
        self.depth = depth
        self.norm = norm

    def check_input(self, channels: int, resolution: int) -> None:
        super().check_input(channels, resolution)
        if self.depth is not None and feature_size(resolution, self.depth) < 1:
            raise InvalidOptionError(
                f"ConvNet depth {self.depth} is too deep for {resolution}-px images; "
                f"use depth ≤ {auto_depth(resolution)} or depth=None"
            )

    def build(self, channels: int, num_classes: int, resolution: int) -> ConvNet:
        return ConvNet(channels, num_classes, resolution, width=self.width, depth=self.depth, norm=self.norm)
