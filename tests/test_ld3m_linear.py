"""The LDM's linear layers with the bias after the product give torch's values, and only where they are compiled for a CPU."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from compiled_swaps import assert_swapped_only_while_compiling, forward_backward
from ddbench_plugins.priors.ld3m import linear as linear_module
from ddbench_plugins.priors.ld3m.backends import build_tiny
from ddbench_plugins.priors.ld3m.linear import BiasAfterLinear, bias_after_product, use_bias_after_product
from torch import nn


def _layer_and_input() -> tuple[nn.Linear, torch.Tensor]:
    torch.manual_seed(0)
    return nn.Linear(8, 12), torch.randn(3, 5, 8)


def test_values_and_gradients_match_torch() -> None:
    layer, x = _layer_and_input()
    expected = forward_backward(F.linear, x, layer.weight, layer.bias)
    got = forward_backward(bias_after_product, x, layer.weight, layer.bias)
    for ours, theirs in zip(got, expected, strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)


def test_bfloat16_autocast_keeps_the_products_dtype_and_torch_values() -> None:
    layer, x = _layer_and_input()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected = F.linear(x, layer.weight, layer.bias)
        got = bias_after_product(x, layer.weight, layer.bias)
    assert got.dtype == expected.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), expected.float(), rtol=2e-2, atol=2e-2)


def test_the_module_adds_the_bias_after_only_while_compiling(monkeypatch) -> None:
    layer, x = _layer_and_input()
    use_bias_after_product(layer)
    assert type(layer) is BiasAfterLinear
    assert_swapped_only_while_compiling(
        monkeypatch,
        linear_module,
        "bias_after_product",
        layer,
        x,
        F.linear(x, layer.weight, layer.bias),
        rtol=1e-5,
        atol=1e-6,
    )


def test_a_layer_without_bias_stays_one_product(monkeypatch) -> None:
    monkeypatch.setattr(linear_module, "bias_after_product", lambda *args: (_ for _ in ()).throw(AssertionError))
    layer = nn.Linear(8, 4, bias=False)
    use_bias_after_product(layer)
    x = torch.randn(2, 8)
    torch.testing.assert_close(torch.compile(layer)(x), F.linear(x, layer.weight))


def test_the_tiny_ldm_unet_gets_them_and_its_autoencoder_does_not() -> None:
    backend = build_tiny(1, 10, seed=0)
    unet_linears = [m for m in backend.unet.modules() if isinstance(m, nn.Linear)]
    assert unet_linears and all(type(m) is BiasAfterLinear for m in unet_linears)
    assert not any(type(m) is BiasAfterLinear for m in backend.vqvae.modules())
