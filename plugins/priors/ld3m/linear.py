"""The LDM's linear layers, inside a graph torch.compile makes for a CPU, as a product and then a bias.

For a linear layer with a bias, torch's CPU ``addmm`` first writes the bias into every row of the
output and then adds the product onto it: two passes over the output, the first a broadcast copy.
At the tiny UNet's shapes (a GEGLU's 64 → 512 over every position of a batch) that copy is as
large as the product's own output. `BiasAfterLinear` computes the product alone and adds the
bias as an elementwise step, which inductor fuses into the pointwise kernel that follows (the
GEGLU's activation, a residual sum). The values are the layer's up to rounding: under bfloat16
autocast the product is rounded to bfloat16 before the bias is added; benchmarks/README.md, "The
compiled graphs' C++ wrapper, and the linear layers' bias after the product", has the speed.

Everywhere else — eager, on GPUs — the module is torch's Linear as it was.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def bias_after_product(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """``F.linear(x, weight, bias)`` as the product, then the bias in the product's dtype."""
    product = F.linear(x, weight)
    return product + bias.to(product.dtype)


class BiasAfterLinear(nn.Linear):
    """`nn.Linear` that, while torch.compile traces it for a CPU, is `bias_after_product`."""

    def forward(self, input: Tensor) -> Tensor:
        if self.bias is not None and torch.compiler.is_compiling() and input.device.type == "cpu":
            return bias_after_product(input, self.weight, self.bias)
        return super().forward(input)


def use_bias_after_product(model: nn.Module) -> None:
    """Turn every `nn.Linear` of ``model`` into a `BiasAfterLinear` (same parameters and state dict)."""
    for module in model.modules():
        if type(module) is nn.Linear:
            module.__class__ = BiasAfterLinear
