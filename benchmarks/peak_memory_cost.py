"""What measuring a block's peak memory costs the work inside it on a CPU (`ddbench.engine.memory`).

`Distiller` and the evaluators run inside `PeakMemory`. This times one distillation step through the
engine (`split_backward_step`, as a run takes it) of pixel + DM and of LD3M + DM on Fashion-MNIST,
each under three settings, interleaved step by step in one process so that a noisy machine hits
them alike:

- ``none``: no measurement;
- ``sampling thread``: a thread reading the process RSS every 5 ms (`PeakMemory` where the kernel's
  peak cannot be reset, and everywhere before 2026-12-03);
- ``kernel peak``: the kernel's peak RSS, reset when the block opens (`PeakMemory` on Linux).

The table gives the median seconds per step and each setting's peak next to ``none``'s.

    python benchmarks/peak_memory_cost.py --ipc 10 --steps 8 --threads 2
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from collections.abc import Callable, Iterator
from unittest import mock

import torch
from ld3m_common import dm_iteration, dm_setup
from record import emit, table

from ddbench import registry
from ddbench.engine import memory
from ddbench.engine.allocator import tune_allocator
from ddbench.engine.memory import PeakMemory

SAMPLING_INTERVAL = 0.005  # PeakMemory's default interval


@contextlib.contextmanager
def measured(setting: str, peaks: list[int]) -> Iterator[None]:
    if setting == "none":
        yield
        return
    # a clear_refs that cannot be opened makes PeakMemory fall back to its sampling thread
    refused = mock.patch.object(memory, "_CLEAR_REFS", "/nonexistent/clear_refs")
    with refused if setting == "sampling thread" else contextlib.nullcontext():
        with PeakMemory("cpu", interval=SAMPLING_INTERVAL) as mem:
            yield
    peaks.append(mem.peak_bytes)


def make_step(data, prior_name: str, ipc: int) -> Callable[[int], None]:
    """One engine step of ``prior_name`` + DM at ``ipc`` (its first call compiles what the run compiles)."""
    prior, matcher, state, labels = dm_setup(data, prior_name, ipc)
    chunk = prior.generation_chunk() or len(labels)
    return lambda it: dm_iteration(data, prior, matcher, state, labels, it, chunk)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ipc", type=int, default=10)
    parser.add_argument("--steps", type=int, default=8, help="timed steps per setting (after one warm-up)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--priors", default="pixel,ld3m")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    tune_allocator()  # as a run's Distiller does
    data = registry.create("dataset", "fashion-mnist").load().subset(train_per_class=1000, test_size=100)
    settings = ("none", "sampling thread", "kernel peak")
    steps = {name: make_step(data, name, args.ipc) for name in args.priors.split(",")}
    seconds: dict[tuple[str, str], list[float]] = {(p, s): [] for p in steps for s in settings}
    peaks: dict[tuple[str, str], list[int]] = {(p, s): [] for p in steps for s in settings}
    for it in range(args.steps + 1):  # step 0 warms up (and compiles)
        for prior, step in steps.items():
            for setting in settings:
                with measured(setting, peaks[prior, setting]):
                    start = time.perf_counter()
                    step(it)
                    took = time.perf_counter() - start
                if it:
                    seconds[prior, setting].append(took)
        print(f"step {it} done", flush=True)
    rows = []
    for prior in steps:
        base = statistics.median(seconds[prior, "none"])
        for setting in settings:
            median = statistics.median(seconds[prior, setting])
            peak = max(peaks[prior, setting]) if peaks[prior, setting] else None
            rows.append(
                [
                    f"{prior} + DM",
                    setting,
                    f"{median:.3f}",
                    f"{median / base:.3f}",
                    memory.format_bytes(peak) if peak else "–",
                ]
            )
    note = (
        f"median s per engine step over {args.steps} steps after a warm-up, interleaved; Fashion-MNIST, IPC {args.ipc}, "
        f"default options, torch threads {torch.get_num_threads()}; peak: the most the setting measured over its steps"
    )
    emit("peak_memory_cost", [table(["work", "peak memory", "s per step", "× none", "peak"], rows, note=note)])


if __name__ == "__main__":
    main()
