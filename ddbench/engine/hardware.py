"""What the hardware a run lands on is good at and has free, for plugins whose ``auto`` options depend on it."""

from __future__ import annotations

import os

import torch

from ddbench.engine.allocator import held_free_bytes

#: set in each worker process by an executor that runs several runs on one machine at once
CONCURRENT_RUNS_ENV = "DDBENCH_CONCURRENT_RUNS"


def bf16_is_fast(device: torch.device) -> bool:
    """True where bfloat16 has hardware support: AVX512-BF16/AMX CPUs, bf16-capable GPUs."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    flags = ""
    try:
        with open("/proc/cpuinfo") as fh:
            flags = next((line for line in fh if line.startswith("flags")), "")
    except OSError:
        pass
    return "avx512_bf16" in flags or "amx_bf16" in flags


def available_bytes(device: torch.device) -> int | None:
    """Free memory of ``device``: CUDA's free bytes, or Linux's MemAvailable plus what this process's
    allocator holds free (`allocator.held_free_bytes`); None when unknown."""
    if device.type == "cuda":
        try:
            return int(torch.cuda.mem_get_info(device)[0])
        except RuntimeError:
            return None
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    # what this process's allocator keeps free is free for this process too
                    return int(line.split()[1]) * 1024 + held_free_bytes()
    except (OSError, ValueError, IndexError):
        pass
    return None


def available_bytes_per_run(device: torch.device) -> int | None:
    """This run's share of ``device``'s free memory: `available_bytes` over the runs an executor
    runs on this machine at once (`CONCURRENT_RUNS_ENV`); None when unknown."""
    free = available_bytes(device)
    try:
        runs = max(1, int(os.environ.get(CONCURRENT_RUNS_ENV, "1")))
    except ValueError:
        runs = 1
    return None if free is None else free // runs
