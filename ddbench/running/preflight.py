"""Checks before a run starts: the data can make a benchmark at this IPC, and the run fits in memory.

Both fail with the numbers and the fix instead of running into a meaningless score (one class scores
100 %) or an out-of-memory kill minutes later.

The memory estimate is deliberately simple (a documented rule of thumb, not a model of each prior):
the synthetic set is ``IPC × classes`` images of ``C × H × W`` float32 pixels, and distillation holds
about `STATE_COPIES` copies of it at once — the learnable tensors, their gradients, Adam's two
moments, the generated images and their gradients, a DSA-augmented copy and the chunked graph. The
real training images are already in memory when the check runs, so only the run's own growth is
compared with what the device has free (`available_bytes`). Set ``DDBENCH_SKIP_MEMORY_CHECK=1`` to
run anyway when the estimate is wrong for your prior.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch

from ddbench.engine.hardware import available_bytes
from ddbench.engine.memory import format_bytes
from ddbench.engine.spec import RunEnv, RunSpec
from ddbench.errors import DataNotFoundError, InvalidOptionError
from ddbench.interfaces import RealData

#: copies of the synthetic set that distillation holds at once (see the module docstring)
STATE_COPIES = 8
#: fixed overhead of a run: networks, optimiser of the evaluator, DSA buffers, Python
BASE_BYTES = 512 * 2**20
SKIP_MEMORY_ENV = "DDBENCH_SKIP_MEMORY_CHECK"


def check_data(spec: RunSpec, data: RealData) -> None:
    """A benchmark needs ≥ 2 classes, test images of every class and ≥ IPC training images per class."""
    if data.num_classes < 2:
        raise DataNotFoundError(
            f"Dataset '{spec.dataset}' has {data.num_classes} class ({', '.join(data.class_names) or 'none'}); "
            "a classification benchmark needs at least 2 classes, add another class folder"
        )
    tested = set(int(label) for label in torch.unique(data.test_labels))
    untested = [name for c, name in enumerate(data.class_names) if c not in tested]
    if untested:
        sliced = f" in the first {spec.test_size} test images (test_size)" if spec.test_size else ""
        raise DataNotFoundError(
            f"Dataset '{spec.dataset}' has no test images of class(es) {', '.join(map(repr, untested[:5]))}"
            f"{'…' if len(untested) > 5 else ''}{sliced}; every class needs test images to be scored (add some, "
            "or give the class more images so that a share can be held out)"
        )
    counts = [len(data.class_indices(c)) for c in range(data.num_classes)]
    smallest = min(range(data.num_classes), key=counts.__getitem__)
    if spec.ipc > counts[smallest]:
        sliced = (
            f" (the run uses the first {spec.train_per_class} per class, train_per_class)"
            if spec.train_per_class
            else ""
        )
        raise InvalidOptionError(
            f"--ipc {spec.ipc} is more than the {counts[smallest]} training images of class "
            f"'{data.class_names[smallest]}' of {spec.dataset}{sliced}; use --ipc {counts[smallest]} or less"
        )


def estimate_run_bytes(spec: RunSpec, data: RealData) -> int:
    """Rough bytes a distillation of ``spec`` adds on top of the loaded data (module docstring)."""
    pixels = data.channels * data.resolution * data.resolution
    return BASE_BYTES + STATE_COPIES * spec.ipc * data.num_classes * pixels * 4


def check_memory(spec: RunSpec, data: RealData, device: torch.device) -> None:
    """Refuse a distillation whose estimate exceeds the free memory of its device, with both numbers."""
    if os.environ.get(SKIP_MEMORY_ENV):
        return
    free = available_bytes(device)
    need = estimate_run_bytes(spec, data)
    if free is not None and need > free:
        raise InvalidOptionError(
            f"{spec.label} needs about {format_bytes(need)} ({spec.ipc * data.num_classes} synthetic images of "
            f"{data.channels}x{data.resolution}x{data.resolution}, ×{STATE_COPIES} while distilling) but "
            f"{device.type} has {format_bytes(free)} free; lower --ipc (or --res), free memory, "
            f"or set {SKIP_MEMORY_ENV}=1 if the estimate is wrong for this prior"
        )


def check_data_present(specs: Sequence[RunSpec], env: RunEnv) -> None:
    """Raise the dataset's own DataNotFoundError (where it looked, how to get the data) for the first
    dataset of ``specs`` that is not on disk, before any run starts. Resolved specs say where their
    data was found; a dataset that cannot tell (no `locate`) is checked when it loads."""
    from ddbench import registry

    checked: set[str] = set()
    for spec in specs:
        found = ((spec.identity or {}).get("dataset") or {}).get("found_at")
        if found or spec.dataset in checked:
            continue
        checked.add(spec.dataset)
        try:
            registry.create("dataset", spec.dataset).locate(env.data_root)
        except NotImplementedError:
            continue


__all__ = ["check_data_present", "check_data", "check_memory", "estimate_run_bytes", "available_bytes", "STATE_COPIES"]
