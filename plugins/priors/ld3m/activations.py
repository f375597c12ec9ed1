"""Whether a generation keeps its denoiser activations for backward or recomputes them (``checkpoint``).

Keeping them is faster: backward then does not run every denoiser call a second time. But it holds
the activations of all of a generation's denoiser calls at once, which at 256 px or with large sets
is more memory than a machine has. With ``checkpoint=auto`` a generation keeps them when they take
at most `ACTIVATION_SHARE` of this run's share of the memory its device has free (the free memory
over the runs a local executor runs at once); the bytes per sample are counted once,
from what autograd saves for one denoiser call, and the choice is made once per batch size, so a
run does not switch back and forth as its own memory use moves. The images are the same either way.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
from torch import Tensor

from ddbench.engine.hardware import available_bytes_per_run
from ddbench.util.units import format_bytes

log = logging.getLogger(__name__)

#: the share of a device's free memory that a generation's kept activations may take
ACTIVATION_SHARE = 0.25


def saved_bytes(fn: Callable[..., Tensor], *inputs: Tensor) -> int:
    """Bytes of the tensors autograd saves for backward while ``fn(*inputs)`` runs."""
    total = 0

    def count(tensor: Tensor) -> Tensor:
        nonlocal total
        total += tensor.numel() * tensor.element_size()
        return tensor

    with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(count, lambda tensor: tensor):
        fn(*inputs)
    return total


class CheckpointPolicy:
    """Decides the ld3m option ``checkpoint`` (True, False or ``"auto"``) per generation (module docstring);
    remembers the bytes per sample and each batch size's choice."""

    def __init__(self) -> None:
        self.per_sample: int | None = None
        self.decided: dict[int, bool] = {}

    def __call__(
        self, option: bool | str, eps_fn: Callable[..., Tensor], z: Tensor, t: Tensor, c: Tensor, calls: int
    ) -> bool:
        """Whether to recompute the ``calls`` denoiser calls of a generation of ``len(z)`` samples."""
        if isinstance(option, bool):
            return option
        if not torch.is_grad_enabled() or calls == 0:
            return True  # nothing would be kept
        batch = len(z)
        if batch not in self.decided:
            if self.per_sample is None:
                self.per_sample = self._bytes_per_sample(eps_fn, z, t, c)
            free = available_bytes_per_run(z.device)
            need = self.per_sample * batch * calls
            self.decided[batch] = free is None or need > ACTIVATION_SHARE * free
            log.info(
                "ld3m checkpoint=auto: %s the denoiser's activations for %d samples (%s; %s free)",
                "recomputing" if self.decided[batch] else "keeping",
                batch,
                format_bytes(need),
                "unknown" if free is None else format_bytes(free),
            )
        return self.decided[batch]

    @staticmethod
    def _bytes_per_sample(eps_fn: Callable[..., Tensor], z: Tensor, t: Tensor, c: Tensor) -> int:
        # two probe batches: their difference leaves out what every call saves whatever the batch (weights)
        def probe(n: int) -> int:
            inputs = [x[:1].detach().expand(n, *x.shape[1:]).clone() for x in (z, c)]
            for x in inputs:
                x.requires_grad_(x.is_floating_point())
            return saved_bytes(eps_fn, inputs[0], t[:1].expand(n), inputs[1])

        one, two = probe(1), probe(2)
        return max(two - one, 1) if two > one else max(one, 1)
