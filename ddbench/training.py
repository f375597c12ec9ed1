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

from ddbench.errors import InvalidOptionError, NonFiniteLossError
from ddbench.progress import ProgressArg, progress_task
from ddbench.seeding import derive_seed

#: ``step``: ×0.1 at half the epochs (DC); ``warmup_cosine``: linear warm-up over the first half,
#: cosine decay over the second (GLaD); ``constant``: MTT experts.
SCHEDULES = ("step", "warmup_cosine", "constant")

Normalise = Callable[[Tensor], Tensor]


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
            "lower the learning rate (--eval-lr / the protocol's lr) and run again"
        )


def train_classifier(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    momentum: float,
    weight_decay: float,
    schedule: str,
    dsa: Callable[[Tensor, int], Tensor] | None,
    seed: int,
    device: torch.device | str,
    progress: ProgressArg = None,
    on_epoch_end: Callable[[int, float], None] | None = None,
    normalise: Normalise | None = None,
    description: str = "train",
    loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
) -> TrainStats:
    """Train ``model`` in place on ``images`` (normalised float, or uint8 with ``normalise``).

    ``labels`` are class ids ``(N,)``, or class probabilities ``(N, K)`` (soft labels).
    ``loss_fn(logits, labels)`` replaces cross-entropy (e.g. KL to soft labels at a temperature).
    ``on_epoch_end(epoch, mean_loss)`` runs after every epoch (0-based), e.g. to snapshot
    parameters or to test. Raises NonFiniteLossError if the loss diverges.
    """
    check_training_inputs(epochs, lr, batch_size, schedule, images, labels)
    device = torch.device(device)
    model.to(device).train()
    # uint8 images stay on the host and are normalised per batch (a dataset's normalise is CPU-only,
    # and a full float copy of a real training set may not fit); float images move once
    images = images.detach() if not images.is_floating_point() else images.detach().to(device)
    labels = labels.detach().to(device)
    n = len(images)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    shuffle = shuffle_generator(seed)
    stats = TrainStats(losses=[], accuracies=[])
    step = 0
    with progress_task(progress, description, epochs) as (bar, task):
        for epoch in range(epochs):
            for group in optimizer.param_groups:
                group["lr"] = lr_at_epoch(schedule, lr, epoch, epochs)
            order = torch.randperm(n, generator=shuffle).to(device)
            loss_sum = torch.zeros((), device=device)
            correct = torch.zeros((), device=device)
            for start in range(0, n, batch_size):
                idx = order[start : start + batch_size]
                x = as_float(images[idx.to(images.device)], normalise).to(device, non_blocking=True)
                y = labels[idx]
                if dsa is not None:
                    x = dsa(x, dsa_seed(seed, step))
                logits = model(x)
                loss = F.cross_entropy(logits, y) if loss_fn is None else loss_fn(logits, y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                step += 1
                # accumulate on the device: no host sync per batch
                loss_sum += loss.detach() * len(idx)
                target = y.argmax(1) if y.dim() == 2 else y
                correct += (logits.detach().argmax(1) == target).sum()
            mean_loss = float(loss_sum) / n
            check_finite_loss(mean_loss, epoch, epochs, lr)
            stats.losses.append(mean_loss)
            stats.accuracies.append(float(correct) / n)
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
