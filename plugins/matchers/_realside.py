"""Fast paths for a matcher's real side: the big real batch that needs no graph to the synthetic set.

DM embeds 10 × 256 real images per iteration without gradients; DC takes their weight gradients
without a graph. That work is nearly all of an iteration on a CPU, and since nothing flows back
from it into the synthetic images it may run in bfloat16, channels-last, in cache-sized chunks and
compiled (`ddbench.engine.compiling`). This module holds what both matchers share: the precision
rule, the chunk rule, and the real side's own copy of the network (its dtype, its layout, a pooling
layer that compiles to a faster backward).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ddbench.engine.hardware import bf16_is_fast
from ddbench.errors import InvalidOptionError

PRECISIONS = ("auto", "fp32", "bf16")


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise InvalidOptionError(f"Expected real_precision in {PRECISIONS} but got '{precision}'")


def real_dtype(precision: str, device: torch.device) -> torch.dtype:
    """The dtype of a ``real_precision`` option: ``auto`` is bf16 where it is fast, else fp32."""
    check_precision(precision)
    if precision == "auto":
        precision = "bf16" if bf16_is_fast(device) else "fp32"
    return torch.bfloat16 if precision == "bf16" else torch.float32


def resolve_precision(precision: str, device: torch.device) -> str:
    """``real_precision`` as it acts on ``device``: ``auto`` becomes ``bf16`` or ``fp32`` (run ids record this)."""
    return "bf16" if real_dtype(precision, device) == torch.bfloat16 else "fp32"


def default_real_chunk(device: torch.device, resolution: int) -> int:
    """Real images per network call.

    CPU: chunks whose activations match 32 images of 32 px, so a chunk's layer-1 activations stay in
    cache: faster than the whole 2560-image batch, in half the memory (benchmarks/README.md, the
    chunk study in its DM section). GPU: activations of 2560
    images of 32 px (the whole batch on CIFAR/Fashion-MNIST; 160 at 128 px, 40 at 256 px), which fits.
    """
    if device.type == "cpu":
        return max(1, (32 * 32 * 32) // resolution**2)
    return max(16, (2560 * 32 * 32) // resolution**2)


def check_real_chunk(real_chunk: int | None) -> None:
    if real_chunk is not None and (isinstance(real_chunk, bool) or not isinstance(real_chunk, int) or real_chunk < 1):
        raise InvalidOptionError(f"Expected real_chunk ≥ 1 (or None for the resolution rule) but got {real_chunk!r}")


def resolve_real_chunk(option: int | None, net: nn.Module, device: torch.device, resolution: int) -> int | None:
    """Real images per network call: the option, else ``default_real_chunk``; None (no splitting)
    for a network with batch norm, whose batch statistics a split would change. Instance norm is per
    sample, so for ConvNet splitting changes only float rounding."""
    if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules()):
        return None
    return option or default_real_chunk(device, resolution)


class ReshapeAvgPool2d(nn.Module):
    """2×2 average pooling with stride 2 (floor mode) as a reshape and a mean: ``nn.AvgPool2d(2)`` up
    to float rounding.

    Why: compiled on a CPU, its backward is a broadcast, where ``avg_pool2d``'s backward becomes index
    arithmetic per element. DC's compiled bf16 real side (forward and backward of 10 × 256
    Fashion-MNIST images through ConvNet-3) took 2.85 s with it against 3.92 s (``profile_dc.py``,
    benchmarks/README.md). Eager, it is about 10 % slower than ``avg_pool2d``, so only compiled
    real-side copies use it (``real_side_copy``).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2] // 2, x.shape[-1] // 2
        x = x[..., : 2 * h, : 2 * w]  # floor mode drops an odd last row / column
        return x.unflatten(-2, (h, 2)).unflatten(-1, (w, 2)).mean((-3, -1))


def _pair(value: object) -> tuple[object, object]:
    return value if isinstance(value, tuple) else (value, value)


def _is_plain_2x2_pool(module: nn.Module) -> bool:
    return (
        type(module) is nn.AvgPool2d
        and _pair(module.kernel_size) == (2, 2)
        and _pair(module.stride or module.kernel_size) == (2, 2)
        and _pair(module.padding) == (0, 0)
        and not module.ceil_mode
        and module.divisor_override is None
    )


def use_reshape_pooling(net: nn.Module) -> nn.Module:
    """Replace, in place, every plain 2×2 / stride-2 ``nn.AvgPool2d`` of ``net`` by ``ReshapeAvgPool2d``;
    returns ``net``. Other pooling layers are left alone."""
    for name, module in list(net.named_modules()):
        if name and _is_plain_2x2_pool(module):  # name "": ``net`` itself, which has no parent to swap it in
            parent_name, _, child = name.rpartition(".")
            setattr(net.get_submodule(parent_name) if parent_name else net, child, ReshapeAvgPool2d())
    return net


def real_side_copy(net: nn.Module, dtype: torch.dtype, compiled: bool) -> nn.Module:
    """The real side's own copy of ``net``, in ``dtype``; to be compiled: channels-last (the faster
    compiled layout on a CPU) with reshape pooling. Keep it current with ``copy_weights``.

    A copy in bf16 rather than autocast keeps every activation in bf16, where autocast runs instance
    norm in fp32: DM's compiled embedding of 10 × 256 Fashion-MNIST images took 0.65–0.68 s against
    0.81 s under autocast (benchmarks/README.md)."""
    real_net = copy.deepcopy(net).to(dtype)
    if compiled:
        real_net = use_reshape_pooling(real_net.to(memory_format=torch.channels_last))
    return real_net


def copy_weights(dst: nn.Module, src: nn.Module) -> None:
    """``dst`` takes ``src``'s current parameters and buffers in place: the same tensors, so code
    compiled for ``dst`` stays valid when ``src`` is re-initialised or trained."""
    with torch.no_grad():
        for target, source in zip(dst.parameters(), src.parameters()):
            target.copy_(source)
        for target, source in zip(dst.buffers(), src.buffers()):
            target.copy_(source)


def split(images: torch.Tensor, chunk: int | None) -> tuple[torch.Tensor, ...]:
    return (images,) if chunk is None else images.split(chunk)
