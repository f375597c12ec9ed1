"""A block's CPU peak memory: the kernel's reset peak RSS where Linux allows it, a sampling thread elsewhere."""

from __future__ import annotations

import ctypes
import mmap
import time

import pytest

from ddbench.engine import memory
from ddbench.engine.memory import PeakMemory, current_rss_bytes

SIZE = 96 * 2**20


def _touch_and_release(size: int = SIZE, hold_seconds: float = 0.0) -> None:
    """Make ``size`` bytes resident (a fresh anonymous map: not memory the allocator keeps), hold
    them ``hold_seconds``, then hand them back to the system."""
    block = mmap.mmap(-1, size)
    view = (ctypes.c_char * size).from_buffer(block)
    ctypes.memset(view, 1, size)
    time.sleep(hold_seconds)
    del view
    block.close()


def _kernel_peak_available() -> bool:
    with PeakMemory("cpu") as mem:
        pass
    return mem._kernel_peak


def test_the_peak_holds_memory_the_block_released() -> None:
    start = current_rss_bytes()
    with PeakMemory("cpu") as mem:
        _touch_and_release()
        assert mem.peak_so_far() >= start + SIZE * 0.9
    assert mem.peak_bytes >= start + SIZE * 0.9
    assert current_rss_bytes() < mem.peak_bytes


def test_the_peak_is_the_blocks_not_the_processes() -> None:
    if not _kernel_peak_available():
        pytest.skip("the kernel's peak RSS cannot be reset here")
    _touch_and_release(2 * SIZE)  # an earlier peak of this process
    with PeakMemory("cpu") as mem:
        pass
    assert mem.peak_bytes < current_rss_bytes() + SIZE


def test_a_block_opened_inside_another_keeps_the_outer_peak() -> None:
    if not _kernel_peak_available():
        pytest.skip("the kernel's peak RSS cannot be reset here")
    start = current_rss_bytes()
    with PeakMemory("cpu") as outer:
        _touch_and_release()
        with PeakMemory("cpu") as inner:  # resets the kernel's peak
            pass
        assert inner.peak_bytes < start + SIZE * 0.5
    assert outer.peak_bytes >= start + SIZE * 0.9
    assert not outer._kernel_peak or outer not in memory._OPEN_BLOCKS


def test_without_the_kernels_peak_a_thread_samples(monkeypatch) -> None:
    monkeypatch.setattr(memory, "_CLEAR_REFS", "/nonexistent/clear_refs")
    start = current_rss_bytes()
    with PeakMemory("cpu", interval=0.001) as mem:
        assert not mem._kernel_peak and mem._thread is not None
        _touch_and_release(hold_seconds=0.05)  # resident while the sampler looks
    assert mem.peak_bytes >= start + SIZE * 0.9
    assert mem._thread is not None and not mem._thread.is_alive()
