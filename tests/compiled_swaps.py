"""Checks shared by the LD3M layers that swap in another formulation of a torch op only while
torch.compile traces them (`group_norm`, `linear`): the same values and gradients as torch's op,
and torch's own op everywhere else."""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType

import pytest
import torch
from torch import Tensor, nn


def forward_backward(fn: Callable[..., Tensor], x: Tensor, *params: Tensor | None) -> list[Tensor]:
    """``fn(x, *params)``'s output, then the gradients of a fixed weighting of it with respect to
    ``x`` and to every given parameter (``None`` parameters are passed on and skipped)."""
    inputs = x.detach().clone().requires_grad_(True)
    for p in params:
        if p is not None:
            p.grad = None
    out = fn(inputs, *params)
    (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
    return [out.detach(), inputs.grad] + [p.grad for p in params if p is not None]


def assert_swapped_only_while_compiling(
    monkeypatch: pytest.MonkeyPatch,
    module: ModuleType,
    function: str,
    layer: nn.Module,
    x: Tensor,
    torch_output: Tensor,
    **tolerance: float,
) -> None:
    """``layer`` calls ``module.function`` only while torch.compile traces it: eagerly it gives
    exactly ``torch_output`` (torch's op) without calling it, compiled it calls it and stays close."""
    calls = []
    swapped = getattr(module, function)

    def counted(*args, **kwargs):
        calls.append(1)
        return swapped(*args, **kwargs)

    monkeypatch.setattr(module, function, counted)
    eager = layer(x)
    assert not calls and torch.equal(eager, torch_output)
    compiled = torch.compile(layer)(x)
    assert calls  # traced through the swapped-in function
    torch.testing.assert_close(compiled, eager, **tolerance)
