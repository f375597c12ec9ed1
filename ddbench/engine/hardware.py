"""What the hardware a run lands on is good at, for plugins whose ``auto`` options depend on it."""

from __future__ import annotations

import torch


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
