"""Several seeds of one network trained as one batched model, and tested in one pass.

Each seed's network is built as the sequential path builds it (the caller seeds the global RNG,
then the evaluator's ``build``); their parameters and buffers are stacked along a new first
dimension (`torch.func.stack_module_state`) and every forward runs all seeds at once with
`torch.func.vmap` over `torch.func.functional_call`. Each seed keeps its own data order and DSA
draws, derived as `ddbench.engine.training.train_classifier` derives them, and SGD with momentum and
weight decay is elementwise, so updating the stacked tensors updates each seed as its own run
would: a seed's result differs from its sequential run only by floating-point summation order.

vmap runs with ``randomness="error"``: a network that draws random numbers in its forward
(dropout) cannot reproduce its sequential draws batched, so it fails loudly instead of silently
differing. Batch norm is faithful: its running statistics are stacked buffers, updated per seed.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import warnings
from collections.abc import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap

from ddbench.engine.protocols import EvalProtocol
from ddbench.engine.training import (
    Augment,
    Normalise,
    as_float,
    augmentation,
    check_finite_loss,
    check_training_inputs,
    dsa_seed,
    prepare_training_data,
    set_epoch_lr,
    shuffle_generator,
)
from ddbench.errors import InvalidOptionError
from ddbench.util.progress import ProgressArg, progress_task


@contextlib.contextmanager
def _quiet_fallbacks() -> Iterator[None]:
    # vmap runs an op without a batching rule (CPU attention) seed by seed, correctly, and warns about
    # the speed in terms of PyTorch internals a user cannot act on
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message="There is a performance drop because we have not yet implemented the batching rule"
        )
        yield


#: test images per chunk on a CPU, for all seeds at once: small enough that the stacked activations
#: stay in cache, where larger chunks made the batched test pass cost more CPU time than the seeds'
#: sequential passes (benchmarks/README.md, "Batched evaluation")
CPU_TEST_CHUNK = 8


class StackedNetworks:
    """The networks of several seeds as stacked tensors; ``forward`` runs them all at once.

    ``params`` and ``buffers`` map each name of the network's state to a tensor whose first
    dimension is the seed. The networks passed in are not changed (``unstack_into`` writes the
    trained state back).
    """

    def __init__(self, networks: Sequence[nn.Module]) -> None:
        if not networks:
            raise InvalidOptionError("Expected at least one network to stack")
        self.size = len(networks)
        params, buffers = stack_module_state(list(networks))
        self.params: dict[str, Tensor] = params
        self.buffers: dict[str, Tensor] = buffers
        # the structure without storage: functional_call supplies every tensor
        self.template = copy.deepcopy(networks[0]).to("meta")
        self._forward = vmap(self._one, in_dims=(0, 0, 0), randomness="error")
        self._forward_shared = vmap(self._one, in_dims=(0, 0, None), randomness="error")

    def _one(self, params: dict[str, Tensor], buffers: dict[str, Tensor], x: Tensor) -> Tensor:
        return functional_call(self.template, (params, buffers), (x,))

    def parameters(self) -> list[Tensor]:
        return list(self.params.values())

    def to(self, device: torch.device) -> StackedNetworks:
        with torch.no_grad():
            for state in (self.params, self.buffers):
                for name, tensor in state.items():
                    moved = tensor.to(device)
                    state[name] = moved.requires_grad_(tensor.requires_grad) if moved is not tensor else tensor
        return self

    def train(self, mode: bool = True) -> StackedNetworks:
        self.template.train(mode)
        return self

    def forward(self, x: Tensor) -> Tensor:
        """``x`` of shape (seeds, batch, …) → logits (seeds, batch, classes): seed s sees ``x[s]``."""
        with _quiet_fallbacks():
            return self._forward(self.params, self.buffers, x)

    def forward_shared(self, x: Tensor) -> Tensor:
        """``x`` of shape (batch, …) → logits (seeds, batch, classes): every seed sees all of ``x``."""
        with _quiet_fallbacks():
            return self._forward_shared(self.params, self.buffers, x)

    @torch.no_grad()
    def unstack_into(self, networks: Sequence[nn.Module]) -> None:
        """Copy seed i's trained parameters and buffers into ``networks[i]``."""
        for index, network in enumerate(networks):
            state = {name: tensor[index] for name, tensor in {**self.params, **self.buffers}.items()}
            network.load_state_dict(state, strict=False)


@dataclasses.dataclass
class _StackedLoop:
    """One batched training run's fixed parts, shared by its epochs."""

    stack: StackedNetworks
    images: Tensor
    labels: Tensor
    optimizer: torch.optim.Optimizer
    seeds: Sequence[int]
    batch_size: int
    dsa: Augment | None
    device: torch.device
    normalise: Normalise | None
    loss_fn: Callable[[Tensor, Tensor], Tensor] | None
    step: int = 0  # optimiser steps so far, over all epochs: the DSA seeds' counter

    def losses(self, logits: Tensor, y: Tensor) -> Tensor:
        """Each seed's loss on its own batch, stacked."""
        loss_fn = self.loss_fn
        return torch.stack(
            [
                F.cross_entropy(logits[s], y[s]) if loss_fn is None else loss_fn(logits[s], y[s])
                for s in range(self.stack.size)
            ]
        )

    def epoch(self, orders: Tensor) -> list[float]:
        """One pass over the data, seed ``s`` in ``orders[s]``; each seed's mean loss."""
        n = len(self.images)
        loss_sums = torch.zeros(self.stack.size, device=self.device)
        for start in range(0, n, self.batch_size):
            idx = orders[:, start : start + self.batch_size]  # (seeds, batch)
            x = as_float(self.images[idx.to(self.images.device)].flatten(0, 1), self.normalise)
            x = x.to(self.device, non_blocking=True).unflatten(0, idx.shape)
            y = self.labels[idx]
            if self.dsa is not None:
                x = torch.stack([self.dsa(x[s], dsa_seed(seed, self.step)) for s, seed in enumerate(self.seeds)])
            losses = self.losses(self.stack.forward(x), y)
            self.optimizer.zero_grad(set_to_none=True)
            # seeds share no parameter, so the sum's gradient is each seed's own loss gradient
            losses.sum().backward()
            self.optimizer.step()
            self.step += 1
            loss_sums += losses.detach() * idx.shape[1]
        return (loss_sums / n).tolist()


def train_stacked(
    stack: StackedNetworks,
    images: Tensor,
    labels: Tensor,
    protocol: EvalProtocol,
    *,
    seeds: Sequence[int],
    device: torch.device | str,
    progress: ProgressArg = None,
    on_epoch_end: Callable[[int, list[float]], None] | None = None,
    normalise: Normalise | None = None,
    description: str = "train",
    loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
    augment: Augment | None = None,
) -> list[list[float]]:
    """Train every seed of ``stack`` in place as `ddbench.engine.training.train_classifier` trains one
    network with that seed and ``protocol``; return each epoch's mean loss per seed.

    ``on_epoch_end(epoch, losses)`` runs after every epoch with the seeds' mean losses. Raises
    NonFiniteLossError when any seed's loss diverges (naming the seed).
    """
    if len(seeds) != stack.size:
        raise InvalidOptionError(f"Expected one seed per stacked network ({stack.size}) but got {len(seeds)}")
    p = protocol
    check_training_inputs(p.epochs, p.lr, p.batch_size, p.schedule, images, labels)
    device = torch.device(device)
    stack.to(device).train()
    images, labels = prepare_training_data(images, labels, device)
    optimizer = torch.optim.SGD(stack.parameters(), lr=p.lr, momentum=p.momentum, weight_decay=p.weight_decay)
    loop = _StackedLoop(
        stack, images, labels, optimizer, seeds, p.batch_size, augmentation(p, augment), device, normalise, loss_fn
    )
    shuffles = [shuffle_generator(seed) for seed in seeds]
    history: list[list[float]] = []
    with progress_task(progress, description, p.epochs) as (bar, task):
        for epoch in range(p.epochs):
            set_epoch_lr(optimizer, p, epoch)
            # one randperm per seed per epoch, from each seed's own generator, as the sequential loop draws them
            orders = torch.stack([torch.randperm(len(images), generator=shuffle) for shuffle in shuffles])
            mean_losses = loop.epoch(orders.to(device))
            for seed, mean_loss in zip(seeds, mean_losses):
                check_finite_loss(mean_loss, epoch, p.epochs, p.lr, what=f"Training loss of seed {seed}")
            history.append(mean_losses)
            bar.update(task, advance=1, loss=sum(mean_losses) / len(mean_losses))
            if on_epoch_end is not None:
                on_epoch_end(epoch, mean_losses)
    return history


@torch.no_grad()
def stacked_test_accuracies(
    stack: StackedNetworks,
    images: Tensor,
    labels: Tensor,
    normalise: Normalise | None = None,
    batch_size: int = 1024,
    device: torch.device | str = "cpu",
) -> list[float]:
    """Top-1 accuracy of every seed (eval mode) in one pass over ``images``. On a GPU
    ``batch_size`` bounds the images of all seeds together, as `ddbench.engine.training.test_accuracy`
    bounds one network's; on a CPU the chunks are `CPU_TEST_CHUNK` images."""
    if len(images) != len(labels) or len(images) == 0:
        raise InvalidOptionError(
            f"Expected as many labels as images (and at least one) but got {len(labels)} and {len(images)}"
        )
    device = torch.device(device)
    was_training = stack.template.training
    stack.to(device).train(False)
    chunk = CPU_TEST_CHUNK if device.type == "cpu" else max(1, batch_size // stack.size)
    correct = torch.zeros(stack.size, dtype=torch.long, device=device)
    for start in range(0, len(images), chunk):
        x = as_float(images[start : start + chunk], normalise).to(device, non_blocking=True)
        y = labels[start : start + chunk].to(device)
        correct += (stack.forward_shared(x).argmax(2) == y).sum(1)
    stack.train(was_training)
    return [int(c) / len(images) for c in correct.tolist()]


# pytest would otherwise collect `stacked_test_accuracies` from modules that import it
stacked_test_accuracies.__test__ = False  # type: ignore[attr-defined]
