"""The one classifier training loop, shared by evaluation and MTT expert training.

SGD with cross-entropy, a per-epoch learning-rate schedule, seeded shuffling and seeded DSA. All
randomness of the loop comes from ``seed`` (shuffling through a local generator, DSA seeds derived
from ``(seed, step)``), so a run is repeatable; the network's own initialisation (and dropout) is
the caller's, who seeds the global RNG before building it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ddbench.engine.allocator import tune_allocator
from ddbench.engine.protocols import SCHEDULES, EvalProtocol
from ddbench.engine.seeding import derive_seed
from ddbench.errors import InvalidOptionError, NonFiniteLossError
from ddbench.util.progress import ProgressArg, progress_task

Normalise = Callable[[Tensor], Tensor]
#: ``augment(images, seed)``: a seeded batch augmentation (DSA)
Augment = Callable[[Tensor, int], Tensor]


def lr_at_epoch(schedule: str, base_lr: float, epoch: int, epochs: int) -> float:
    """The learning rate used throughout epoch ``epoch`` (0-based) of ``epochs``."""
    half = epochs // 2
    if schedule == "constant":
        return base_lr
    if schedule == "step":
        return base_lr * 0.1 if epoch >= half > 0 else base_lr
    if schedule == "warmup_cosine":
        if epoch < half:
            # starts at base/half rather than GLaD's ~0, so no epoch is wasted at lr 0
            return base_lr * (epoch + 1) / half
        span = max(epochs - half, 1)
        return base_lr * 0.5 * (1.0 + math.cos(math.pi * (epoch - half) / span))
    raise InvalidOptionError(f"Unknown lr schedule '{schedule}'; expected one of {SCHEDULES}")


@dataclasses.dataclass
class TrainStats:
    """What the loop saw: mean training loss and accuracy (on augmented batches) per epoch."""

    losses: list[float]
    accuracies: list[float]

    @property
    def train_accuracy(self) -> float | None:
        return self.accuracies[-1] if self.accuracies else None


def as_float(images: Tensor, normalise: Normalise | None) -> Tensor:
    """Float images as they are; uint8 images through ``normalise``."""
    if images.is_floating_point():
        return images
    if normalise is None:
        raise InvalidOptionError(
            f"Got {images.dtype} images without a normalise function; pass normalise=data.normalise "
            "or normalised float images"
        )
    return normalise(images)


def shuffle_generator(seed: int) -> torch.Generator:
    """The generator of a training run's epoch orders (one ``randperm`` per epoch)."""
    return torch.Generator().manual_seed(derive_seed("train-shuffle", seed))


def dsa_seed(seed: int, step: int) -> int:
    """The DSA seed of optimiser step ``step`` (0-based, counted over all epochs) of a training run."""
    return derive_seed("train-dsa", seed, step)


def check_training_inputs(
    epochs: int, lr: float, batch_size: int, schedule: str, images: Tensor, labels: Tensor
) -> None:
    """Raise InvalidOptionError for settings or data no training run can use."""
    if epochs < 0 or batch_size < 1 or lr < 0:
        raise InvalidOptionError(f"Expected epochs ≥ 0, batch_size ≥ 1, lr ≥ 0 but got {epochs}, {batch_size}, {lr}")
    if schedule not in SCHEDULES:
        raise InvalidOptionError(f"Unknown lr schedule '{schedule}'; expected one of {SCHEDULES}")
    if len(images) != len(labels) or len(images) == 0:
        raise InvalidOptionError(
            f"Expected as many labels as images (and at least one) but got {len(labels)} and {len(images)}"
        )


def check_finite_loss(mean_loss: float, epoch: int, epochs: int, lr: float, what: str = "Training loss") -> None:
    """Raise NonFiniteLossError when an epoch's mean loss diverged."""
    if not math.isfinite(mean_loss):
        raise NonFiniteLossError(
            f"{what} became {mean_loss} in epoch {epoch + 1}/{epochs} (lr {lr}); "
            "lower the learning rate: evaluate under a protocol with a lower one (e.g. --protocol glad, lr 1e-3)"
        )


def augmentation(protocol: EvalProtocol, augment: Augment | None = None) -> Augment | None:
    """The augmentation of every training batch: none unless ``protocol.dsa``, then ``augment``
    (a test's spy, say) or DSA."""
    if not protocol.dsa:
        return None
    if augment is not None:
        return augment
    from ddbench.engine.dsa import DSA  # local: ddbench.engine.dsa is only needed when a protocol augments

    return DSA()


def prepare_training_data(images: Tensor, labels: Tensor, device: torch.device) -> tuple[Tensor, Tensor]:
    """``images`` and ``labels`` where the loop reads them."""
    # uint8 images stay on the host and are normalised per batch (a dataset's normalise is CPU-only,
    # and a full float copy of a real training set may not fit); float images move once
    images = images.detach() if not images.is_floating_point() else images.detach().to(device)
    return images, labels.detach().to(device)


def set_epoch_lr(optimizer: torch.optim.Optimizer, protocol: EvalProtocol, epoch: int) -> None:
    """Set every parameter group's learning rate to the protocol's rate for ``epoch``."""
    for group in optimizer.param_groups:
        group["lr"] = lr_at_epoch(protocol.schedule, protocol.lr, epoch, protocol.epochs)


@dataclasses.dataclass
class _Loop:
    """One training run's fixed parts, shared by its epochs."""

    model: nn.Module
    images: Tensor
    labels: Tensor
    optimizer: torch.optim.Optimizer
    batch_size: int
    dsa: Augment | None
    seed: int
    device: torch.device
    normalise: Normalise | None
    loss_fn: Callable[[Tensor, Tensor], Tensor] | None
    step: int = 0  # optimiser steps so far, over all epochs: the DSA seeds' counter

    def epoch(self, order: Tensor) -> tuple[float, float]:
        """One pass over the data in ``order``; its mean loss and training accuracy."""
        n = len(self.images)
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device)
        for start in range(0, n, self.batch_size):
            idx = order[start : start + self.batch_size]
            x = as_float(self.images[idx.to(self.images.device)], self.normalise).to(self.device, non_blocking=True)
            y = self.labels[idx]
            if self.dsa is not None:
                x = self.dsa(x, dsa_seed(self.seed, self.step))
            logits = self.model(x)
            loss = F.cross_entropy(logits, y) if self.loss_fn is None else self.loss_fn(logits, y)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.step += 1
            # accumulate on the device: no host sync per batch
            loss_sum += loss.detach() * len(idx)
            target = y.argmax(1) if y.dim() == 2 else y
            correct += (logits.detach().argmax(1) == target).sum()
        return float(loss_sum) / n, float(correct) / n


def train_classifier(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    protocol: EvalProtocol,
    *,
    seed: int,
    device: torch.device | str,
    progress: ProgressArg = None,
    on_epoch_end: Callable[[int, float], None] | None = None,
    normalise: Normalise | None = None,
    description: str = "train",
    loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
    augment: Augment | None = None,
) -> TrainStats:
    """Train ``model`` in place on ``images`` (normalised float, or uint8 with ``normalise``) as
    ``protocol`` says (epochs, batch size, SGD settings, lr schedule, DSA or not).

    ``labels`` are class ids ``(N,)``, or class probabilities ``(N, K)`` (soft labels).
    ``loss_fn(logits, labels)`` replaces cross-entropy (e.g. KL to soft labels at a temperature);
    ``augment(images, seed)`` replaces DSA when the protocol augments. ``on_epoch_end(epoch,
    mean_loss)`` runs after every epoch (0-based), e.g. to snapshot parameters or to test. Raises
    NonFiniteLossError if the loss diverges.
    """
    tune_allocator()
    p = protocol
    check_training_inputs(p.epochs, p.lr, p.batch_size, p.schedule, images, labels)
    device = torch.device(device)
    model.to(device).train()
    images, labels = prepare_training_data(images, labels, device)
    optimizer = torch.optim.SGD(model.parameters(), lr=p.lr, momentum=p.momentum, weight_decay=p.weight_decay)
    loop = _Loop(
        model, images, labels, optimizer, p.batch_size, augmentation(p, augment), seed, device, normalise, loss_fn
    )
    shuffle = shuffle_generator(seed)
    stats = TrainStats(losses=[], accuracies=[])
    with progress_task(progress, description, p.epochs) as (bar, task):
        for epoch in range(p.epochs):
            set_epoch_lr(optimizer, p, epoch)
            mean_loss, accuracy = loop.epoch(torch.randperm(len(images), generator=shuffle).to(device))
            check_finite_loss(mean_loss, epoch, p.epochs, p.lr)
            stats.losses.append(mean_loss)
            stats.accuracies.append(accuracy)
            bar.update(task, advance=1, loss=mean_loss)
            if on_epoch_end is not None:
                on_epoch_end(epoch, mean_loss)
    return stats


@torch.no_grad()
def test_accuracy(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    normalise: Normalise | None = None,
    batch_size: int = 1024,
    device: torch.device | str = "cpu",
) -> float:
    """Top-1 accuracy of ``model`` (eval mode, no grad) on uint8 images (normalised here) or float ones."""
    if len(images) != len(labels) or len(images) == 0:
        raise InvalidOptionError(
            f"Expected as many labels as images (and at least one) but got {len(labels)} and {len(images)}"
        )
    device = torch.device(device)
    was_training = model.training
    model.to(device).eval()
    correct = torch.zeros((), dtype=torch.long, device=device)
    for start in range(0, len(images), batch_size):
        x = as_float(images[start : start + batch_size], normalise).to(device, non_blocking=True)
        y = labels[start : start + batch_size].to(device)
        correct += (model(x).argmax(1) == y).sum()
    model.train(was_training)
    return float(correct) / len(images)


# pytest would otherwise collect `test_accuracy` from modules that import it
test_accuracy.__test__ = False  # type: ignore[attr-defined]
