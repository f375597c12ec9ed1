"""The matchers' shared real-side fast paths: precision, chunk rule, compile fallback, reshape pooling."""

from __future__ import annotations

import logging

import pytest
import torch
from ddbench_plugins.matchers._realside import (
    ReshapeAvgPool2d,
    bf16_is_fast,
    real_dtype,
    resolve_real_chunk,
    use_reshape_pooling,
)
from torch import nn

from ddbench.engine.compiling import CompiledOrEager
from ddbench.errors import InvalidOptionError

CPU = torch.device("cpu")


def test_real_dtype_resolves_auto_and_rejects_unknown_names():
    assert real_dtype("fp32", CPU) is torch.float32 and real_dtype("bf16", CPU) is torch.bfloat16
    assert real_dtype("auto", CPU) is (torch.bfloat16 if bf16_is_fast(CPU) else torch.float32)
    with pytest.raises(InvalidOptionError, match="real_precision"):
        real_dtype("fp8", CPU)


def test_no_split_for_batch_norm_whose_statistics_a_split_would_change():
    instance = nn.Sequential(nn.Conv2d(1, 4, 3), nn.GroupNorm(4, 4))
    batch = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4))
    assert resolve_real_chunk(None, instance, CPU, 32) == 32  # 32 images of 32 px per call on a CPU
    assert resolve_real_chunk(None, instance, CPU, 128) == 2
    assert resolve_real_chunk(7, instance, CPU, 32) == 7
    assert resolve_real_chunk(7, batch, CPU, 32) is None


def test_compiled_or_eager_falls_back_once_with_a_warning(caplog):
    calls = []

    def broken(x):
        calls.append("compiled")
        raise RuntimeError("no C++ compiler")

    call = CompiledOrEager(lambda x: x + 1, broken, "the test")
    with caplog.at_level(logging.WARNING):
        assert call(1) == 2 and call(2) == 3
    assert calls == ["compiled"]  # not retried
    assert "torch.compile failed for the test (no C++ compiler)" in caplog.text


def test_compiled_or_eager_lets_eager_failures_through():
    def eager(x):
        raise ValueError("bad input")

    with pytest.raises(ValueError, match="bad input"):
        CompiledOrEager(eager, None, "the test")(1)


@pytest.mark.parametrize("shape", [(2, 3, 8, 8), (2, 3, 7, 9), (1, 4, 32, 32)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_reshape_pooling_equals_avg_pool_in_value_and_gradient(shape, channels_last):
    x = torch.randn(shape, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    a, b = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    expected, got = nn.AvgPool2d(2)(a), ReshapeAvgPool2d()(b)
    torch.testing.assert_close(got, expected)
    weights = torch.randn_like(expected)
    (expected * weights).sum().backward()
    (got * weights).sum().backward()
    torch.testing.assert_close(b.grad, a.grad)


def test_use_reshape_pooling_replaces_only_plain_2x2_average_pools():
    net = nn.Sequential(
        nn.AvgPool2d(2),
        nn.Sequential(nn.Conv2d(1, 1, 1), nn.AvgPool2d(kernel_size=(2, 2), stride=2)),
        nn.AvgPool2d(3),
        nn.AvgPool2d(2, padding=1),
        nn.AvgPool2d(2, ceil_mode=True),
        nn.MaxPool2d(2),
    )
    assert use_reshape_pooling(net) is net
    kinds = [type(m).__name__ for m in (net[0], net[1][1], net[2], net[3], net[4], net[5])]
    assert kinds == ["ReshapeAvgPool2d", "ReshapeAvgPool2d", "AvgPool2d", "AvgPool2d", "AvgPool2d", "MaxPool2d"]
