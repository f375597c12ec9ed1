"""Process and device facts the engine adapts to: glibc's allocator, a run's share of free memory."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from ddbench.engine import hardware

_REFAULTS = """
import resource, torch
from ddbench.engine.allocator import held_free_bytes, tune_allocator
tuned = tune_allocator()
faults = []
for step in range(8):  # a training loop's pattern: the same large tensors made and freed every step
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    big, small = torch.ones(2**24), torch.ones(2**22)  # 64 and 16 MiB, above glibc's largest mmap threshold
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    del big, small
print(tuned, max(faults[-2:]), held_free_bytes())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_the_tuned_allocator_reuses_freed_memory_instead_of_faulting_it_in_again():
    """glibc as it comes maps a large tensor afresh every step; tuned, it reuses its own free heap
    and says how much it holds (`held_free_bytes`)."""
    results = {}
    for setting in ("tuned", "system"):
        env = {**os.environ, "DDBENCH_ALLOCATOR": setting, "OMP_NUM_THREADS": "1"}
        out = subprocess.run([sys.executable, "-c", _REFAULTS], capture_output=True, text=True, env=env, check=True)
        tuned, faults, held = out.stdout.split()
        results[setting] = (tuned == "True", int(faults), int(held))
    pages = 2**26 // os.sysconf("SC_PAGE_SIZE")  # of the 64 MiB tensor
    assert results["system"][0] is False and results["system"][1] > pages // 2  # mmap'd again: every page faults
    assert results["tuned"][0] is True and results["tuned"][1] < pages // 10  # steady state: the heap is reused
    # what is kept free is counted as free for this process (available_bytes adds it)
    assert results["tuned"][2] >= 2**26 + 2**24  # the last step's 64 and 16 MiB, freed


def test_a_runs_share_of_free_memory_divides_by_the_runs_at_once(monkeypatch):
    monkeypatch.setattr(hardware, "available_bytes", lambda device: 12 * 2**30)
    cpu = torch.device("cpu")
    monkeypatch.delenv(hardware.CONCURRENT_RUNS_ENV, raising=False)
    assert hardware.available_bytes_per_run(cpu) == 12 * 2**30
    monkeypatch.setenv(hardware.CONCURRENT_RUNS_ENV, "3")
    assert hardware.available_bytes_per_run(cpu) == 4 * 2**30
    monkeypatch.setenv(hardware.CONCURRENT_RUNS_ENV, "many")  # unreadable: counted as one run
    assert hardware.available_bytes_per_run(cpu) == 12 * 2**30
    monkeypatch.setattr(hardware, "available_bytes", lambda device: None)
    assert hardware.available_bytes_per_run(cpu) is None
