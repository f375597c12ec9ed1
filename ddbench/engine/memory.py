"""Peak memory of a block of work: GPU allocator peak on CUDA, the process's peak RSS on CPU.

On Linux the kernel keeps each process's peak resident set size (``VmHWM`` in /proc/self/status)
and lets the process reset it (``5`` written to /proc/self/clear_refs), so a block's CPU peak costs
nothing while it runs. Elsewhere, or where the reset is refused, a background thread samples the
RSS instead: a thread that wakes every few milliseconds takes the GIL and a core from the work it
measures (benchmarks/README.md, "Peak memory without a sampling thread").
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from types import TracebackType

import torch

from ddbench.util.units import format_bytes  # noqa: F401 - re-exported (its home before ddbench.util.units)

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_STATUS = "/proc/self/status"
_CLEAR_REFS = "/proc/self/clear_refs"
_RESET_PEAK = "5"  # clear_refs: reset the peak RSS to the current RSS (Linux ≥ 4.0)


def current_rss_bytes() -> int:
    """Resident set size of this process (Linux /proc; falls back to ru_maxrss elsewhere)."""
    try:
        with open("/proc/self/statm", "rb") as fh:
            return int(fh.read().split()[1]) * _PAGE
    except OSError:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def kernel_peak_rss_bytes() -> int | None:
    """The kernel's peak RSS of this process since it was last reset (``VmHWM``); None where unknown."""
    try:
        with open(_STATUS, "rb") as fh:
            for line in fh:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


# blocks that read the kernel's peak: a reset for a new block first hands them the peak so far
_OPEN_BLOCKS: weakref.WeakSet[PeakMemory] = weakref.WeakSet()
_RESET_LOCK = threading.Lock()


def _open_kernel_block(block: PeakMemory) -> bool:
    """Reset the kernel's peak RSS to the current RSS for ``block``, after the open blocks took the
    old peak, and count ``block`` among them; False where the kernel's peak cannot be reset."""
    with _RESET_LOCK:
        peak = kernel_peak_rss_bytes()
        if peak is None:
            return False
        try:
            with open(_CLEAR_REFS, "w") as fh:
                fh.write(_RESET_PEAK)
        except OSError:
            return False
        for other in _OPEN_BLOCKS:
            other.peak_bytes = max(other.peak_bytes, peak)
        _OPEN_BLOCKS.add(block)
        return True


def _close_kernel_block(block: PeakMemory) -> None:
    with _RESET_LOCK:
        _OPEN_BLOCKS.discard(block)


class PeakMemory:
    """``with PeakMemory(device) as mem: ...`` then ``mem.peak_bytes``.

    On CUDA this is ``torch.cuda.max_memory_allocated`` over the block. On CPU, torch's allocator
    keeps no statistics; the figure is the peak RSS of the whole process over the block (what a
    user's machine must hold), not only the tensors of the block: the kernel's own peak where it
    can be reset (module docstring), else sampled by a background thread every ``interval`` seconds.
    """

    def __init__(self, device: torch.device | str = "cpu", interval: float = 0.005) -> None:
        self.device = torch.device(device)
        self.interval = interval
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._kernel_peak = False

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak_bytes = max(self.peak_bytes, current_rss_bytes())
            time.sleep(self.interval)

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            self.peak_bytes = current_rss_bytes()
            self._kernel_peak = _open_kernel_block(self)
            if not self._kernel_peak:
                self._thread = threading.Thread(target=self._sample, daemon=True)
                self._thread.start()
        return self

    def peak_so_far(self) -> int:
        """The peak since the block began, read while it runs (per-iteration metrics)."""
        if self.device.type == "cuda":
            return int(torch.cuda.max_memory_allocated(self.device))
        return max(self.peak_bytes, current_rss_bytes(), self._kernel_peak_now())

    def _kernel_peak_now(self) -> int:
        return (kernel_peak_rss_bytes() or 0) if self._kernel_peak else 0

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_bytes = int(torch.cuda.max_memory_allocated(self.device))
        else:
            self._stop.set()
            if self._thread is not None:
                self._thread.join()
            self.peak_bytes = max(self.peak_bytes, current_rss_bytes(), self._kernel_peak_now())
            _close_kernel_block(self)
