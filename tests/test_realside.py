"""The matchers' shared real-side fast paths: precision, chunk rule, compile fallback."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from ddbench.errors import InvalidOptionError
from ddbench_plugins.matchers.realside import CompiledOrEager, bf16_is_fast, real_dtype, resolve_real_chunk

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
