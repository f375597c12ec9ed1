"""Teacher soft labels for a synthetic set: ``softmax(teacher(x))`` of a network trained on real data.

The teacher is `ddbench.engine.full_data`'s network for (dataset, architecture, protocol, epochs, seed),
cached in the store directory, so every set evaluated with the same teacher gets labels from the
same network. The temperature belongs to the loss (`ddbench.engine.soft_labels.SoftLabels`), which softens
these probabilities to ``softmax(teacher(x) / T)``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

from ddbench.engine.full_data import FullDataKey, full_data_model
from ddbench.engine.soft_labels import Teacher
from ddbench.interfaces import RealData
from ddbench.util.progress import ProgressArg

BATCH = 512


def teacher_labels(
    images: Tensor,
    data: RealData,
    teacher: Teacher,
    protocol: str,
    *,
    cache_dir: str | Path | None,
    fingerprint: str | None,
    device: torch.device | str = "cpu",
    progress: ProgressArg = None,
    say: Callable[[str], None] = lambda _: None,
) -> Tensor:
    """Class probabilities (N, K) of normalised ``images`` under the teacher, on the CPU.

    ``data`` is the real data the teacher trains on; a teacher with ``train_per_class`` uses the first
    that many training images of each class (``data`` may already be that slice).
    """
    if teacher.train_per_class is not None:
        data = data.subset(teacher.train_per_class, None)
    key = FullDataKey.of(data, fingerprint, teacher.arch, protocol, teacher.epochs, teacher.seed)
    model = full_data_model(data, key, cache_dir, device, progress, say).to(device).eval()
    with torch.no_grad():
        probabilities = [
            model(images[start : start + BATCH].to(device)).softmax(1).cpu() for start in range(0, len(images), BATCH)
        ]
    return torch.cat(probabilities).float()


__all__ = ["teacher_labels"]
