"""Keep freed tensor memory inside the process, so that large activations are not re-faulted every step.

glibc serves large blocks with ``mmap`` and hands them back to the kernel on ``free``; the next
block of that size is then zeroed by the kernel page by page. Training and distillation allocate
and free the same large tensors every step, so on a CPU they pay those page faults every step.
`tune_allocator` asks glibc (``mallopt``) to serve large blocks from its heap and not to give the
heap back, so freed memory is reused as it is. The process's peak memory stays what it was; it is
only not returned to the system until the process ends. Figures: ``benchmarks/allocator.py``.

``DDBENCH_ALLOCATOR=system`` keeps glibc's defaults; elsewhere than glibc this does nothing.
Memory the process keeps free is still this process's to use: `held_free_bytes` says how much, for
free-memory checks that would otherwise see it as taken.
"""

from __future__ import annotations

import ctypes
import functools
import os
import sys

#: glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4

ENV_VAR = "DDBENCH_ALLOCATOR"


@functools.cache
def tune_allocator() -> bool:
    """Tune glibc's allocator for this process, once; True where it is tuned (idempotent)."""
    if os.environ.get(ENV_VAR, "tuned") == "system" or not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library this process runs on
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    # no mmap'd blocks: large tensors come from the heap; a trim threshold of -1 (SIZE_MAX once
    # glibc converts it) keeps freed heap memory in the process for the next step
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, -1))


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost"
    )]  # fmt: skip


def held_free_bytes() -> int:
    """Bytes glibc holds free inside this process (``mallinfo2().fordblks``); 0 where unknown."""
    try:
        mallinfo2 = ctypes.CDLL(None).mallinfo2  # glibc ≥ 2.33
    except (OSError, AttributeError):
        return 0
    mallinfo2.restype = _MallInfo2
    return int(mallinfo2().fordblks)
