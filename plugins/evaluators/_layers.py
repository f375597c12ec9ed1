"""Building blocks the evaluator networks share: the norm factory, the 28→32 px input rule, errors.

Instance norm is ``nn.GroupNorm(C, C, affine=True)`` (one group per channel), as in the
DC/DSA/DM/MTT/GLaD reference networks, rather than ``nn.InstanceNorm2d``: the same maths with
affine parameters on by default and no running statistics.
"""

from __future__ import annotations

from torch import Tensor, nn

from ddbench.errors import InvalidOptionError

#: normalisation layers a convolutional evaluator accepts (``none`` reproduces GLaD's ``*BN`` nets,
#: whose ``'batchnorm'`` vs ``'batch'`` string mismatch left them without any normalisation)
NORMS: tuple[str, ...] = ("instancenorm", "batchnorm", "none")

#: MNIST-like 28-px inputs are padded to this size by the first conv, as in the DC reference
PADDED_28 = 32


def check_norm(kind: str) -> str:
    """Return ``kind`` if it names a known normalisation, else raise with the accepted names."""
    if kind not in NORMS:
        raise InvalidOptionError(f"Expected norm in {NORMS} but got '{kind}'")
    return kind


def norm_layer(kind: str, channels: int) -> nn.Module:
    """A 2-D normalisation layer over ``channels`` feature maps."""
    check_norm(kind)
    if kind == "instancenorm":
        return nn.GroupNorm(channels, channels, affine=True)
    if kind == "batchnorm":
        return nn.BatchNorm2d(channels)
    return nn.Identity()


def padded_resolution(resolution: int) -> int:
    """Side of the feature map after a 'same' first conv: 28 px becomes 32 px, others stay.

    The DC reference pads MNIST/Fashion-MNIST to 32 px in the first conv so that every 32-px
    architecture (five 2× poolings in VGG11, three in AlexNet) applies unchanged.
    """
    return PADDED_28 if resolution == 28 else resolution


def first_conv_padding(resolution: int, kernel_size: int) -> int:
    """Padding of the first conv: 'same' padding plus the extra that turns 28 px into 32 px."""
    return kernel_size // 2 + (padded_resolution(resolution) - resolution) // 2


def pooled_size(resolution: int, poolings: int) -> int:
    """Side of the feature map after ``poolings`` floor-halvings of the padded input."""
    return padded_resolution(resolution) >> poolings


def input_error(evaluator: str, resolution: int, smallest: int, why: str, fix: str = "") -> InvalidOptionError:
    """The error an evaluator raises (before training) for an input it cannot take."""
    hint = f" {fix}" if fix else f" Use images of at least {smallest} px."
    return InvalidOptionError(
        f"Evaluator '{evaluator}' cannot take {resolution}-px images: {why}. "
        f"The smallest resolution it supports is {smallest} px.{hint}"
    )


def check_channels(evaluator: str, channels: int) -> None:
    if channels < 1:
        raise InvalidOptionError(f"Evaluator '{evaluator}' expected images with ≥ 1 channel but got {channels}")


class FeaturesThenLinear(nn.Module):
    """A network that is ``features`` (flattened) followed by a linear ``classifier``.

    ``embed`` gives the features distribution matching uses; subclasses build the two parts.
    """

    features: nn.Module
    classifier: nn.Linear

    def embed(self, x: Tensor) -> Tensor:
        return self.features(x).flatten(1)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.embed(x))

    def get_classifier(self) -> nn.Linear:
        return self.classifier
