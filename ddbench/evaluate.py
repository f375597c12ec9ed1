"""The evaluation engine: train one evaluator from scratch on a synthetic set, test on real data.

The learning rate is, by precedence: an explicit ``lr`` (MTT's distilled lr) → the evaluator's
``protocol_lrs[protocol]`` (GLaD's VGG11 1e-4) → the protocol's own.

``report="final"`` (default) scores the network after the last epoch. ``report="max"`` also tests
every ~10% of training and records the best of those rounds as ``accuracy_max`` — GLaD's code
reports that number (model selection on the test set), so use it only to compare with published
tables; ``accuracy`` stays the final score either way.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable

import torch
from torch import Tensor

from ddbench import registry
from ddbench.dsa import DSA
from ddbench.errors import InvalidOptionError
from ddbench.interfaces import RealData
from ddbench.memory import PeakMemory
from ddbench.protocols import EvalProtocol, get_protocol
from ddbench.progress import ProgressArg
from ddbench.training import test_accuracy, train_classifier

REPORTS = ("final", "max")
#: with report="max", the number of test rounds spread evenly over training
MAX_ROUNDS = 10


@dataclasses.dataclass
class EvalResult:
    evaluator: str
    seed: int
    protocol: dict[str, Any]  # the protocol actually used (overrides and effective lr applied)
    accuracy: float  # after the last epoch
    accuracy_max: float | None  # best test round (report="max" only), else None
    train_seconds: float  # training only, test rounds excluded
    eval_seconds: float  # every test pass
    peak_memory_bytes: int

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _check_synthetic(images: Tensor, labels: Tensor, data: RealData) -> None:
    expected = (data.channels, data.resolution, data.resolution)
    if images.dim() != 4 or tuple(images.shape[1:]) != expected:
        raise InvalidOptionError(
            f"Expected synthetic images of shape (N, {', '.join(map(str, expected))}) for dataset '{data.name}' "
            f"but got {tuple(images.shape)}; evaluate a set distilled from this dataset at its resolution"
        )
    if labels.shape[0] != images.shape[0]:
        raise InvalidOptionError(f"Expected {images.shape[0]} labels but got {labels.shape[0]}")
    if labels.dim() == 1 and labels.numel() and not 0 <= int(labels.min()) <= int(labels.max()) < data.num_classes:
        raise InvalidOptionError(
            f"Expected labels in [0, {data.num_classes}) for dataset '{data.name}' but got "
            f"[{int(labels.min())}, {int(labels.max())}]"
        )


def round_epochs(epochs: int, rounds: int = MAX_ROUNDS) -> set[int]:
    """0-based epochs after which report="max" tests, every ~epochs/rounds; the final test
    after the last epoch is always one more round."""
    every = max(1, epochs // rounds)
    return {e for e in range(epochs - 1) if (e + 1) % every == 0}


def evaluate_synthetic(
    images: Tensor,
    labels: Tensor,
    data: RealData,
    evaluator: str,
    protocol: str | EvalProtocol,
    seed: int,
    device: torch.device | str,
    epochs: int | None = None,
    lr: float | None = None,
    report: str = "final",
    progress: ProgressArg = None,
    evaluator_options: dict[str, Any] | None = None,
    loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
) -> EvalResult:
    """Train ``evaluator`` from scratch on normalised synthetic ``images`` and test on ``data``'s test split.

    ``evaluator_options`` are the evaluator plugin's constructor options (e.g. ``{"width": 64}``).
    ``loss_fn(logits, labels)`` replaces cross-entropy (soft-label losses, `ddbench.scoring.SoftLabels`).
    """
    if report not in REPORTS:
        raise InvalidOptionError(f"Expected report in {REPORTS} but got '{report}'")
    _check_synthetic(images, labels, data)
    proto = get_protocol(protocol) if isinstance(protocol, str) else protocol
    plugin = registry.create("evaluator", evaluator, **(evaluator_options or {}))
    plugin.check_input(data.channels, data.resolution)
    effective_lr = lr if lr is not None else plugin.protocol_lrs.get(proto.name, proto.lr)
    proto = proto.with_overrides(epochs=epochs, lr=float(effective_lr))
    device = torch.device(device)

    torch.manual_seed(seed)  # the network's init (and any dropout) is reproducible per seed
    model = plugin.build(data.channels, data.num_classes, data.resolution).to(device)

    eval_seconds = 0.0
    best: float | None = None
    rounds = round_epochs(proto.epochs) if report == "max" else set()

    def test_round(epoch: int, _loss: float) -> None:
        nonlocal eval_seconds, best
        if epoch not in rounds:
            return
        start = time.perf_counter()
        acc = test_accuracy(model, data.test_images, data.test_labels, data.normalise, device=device)
        eval_seconds += time.perf_counter() - start
        best = acc if best is None else max(best, acc)

    with PeakMemory(device) as mem:
        start = time.perf_counter()
        train_classifier(
            model,
            images,
            labels,
            epochs=proto.epochs,
            lr=proto.lr,
            batch_size=proto.batch_size,
            momentum=proto.momentum,
            weight_decay=proto.weight_decay,
            schedule=proto.schedule,
            dsa=DSA() if proto.dsa else None,
            seed=seed,
            device=device,
            progress=progress,
            on_epoch_end=test_round if rounds else None,
            description=f"eval {evaluator} seed {seed}",
            loss_fn=loss_fn,
        )
        train_seconds = time.perf_counter() - start - eval_seconds
        start = time.perf_counter()
        accuracy = test_accuracy(model, data.test_images, data.test_labels, data.normalise, device=device)
        eval_seconds += time.perf_counter() - start
    if report == "max":
        best = accuracy if best is None else max(best, accuracy)
    return EvalResult(
        evaluator=evaluator,
        seed=seed,
        protocol=proto.as_dict(),
        accuracy=accuracy,
        accuracy_max=best,
        train_seconds=train_seconds,
        eval_seconds=eval_seconds,
        peak_memory_bytes=int(mem.peak_bytes),
    )
