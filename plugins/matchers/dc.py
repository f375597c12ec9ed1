"""DC — gradient matching (Zhao, Mopuri & Bilen, 2021; with DSA, Zhao & Bilen, 2021).

Per class c, the gradients of the classification loss w.r.t. a network's weights on a real batch
and on the synthetic images of class c are compared layer by layer, with the same DSA draw on both:
``L = Σ_c Σ_layers Σ_rows (1 − cos(g_real, g_syn))``. Each iteration starts from a freshly
initialised network; between the ``outer_loop`` image steps of an iteration the network trains
``inner_loop`` epochs on the (current) synthetic set.

Loop schedule by IPC (``loop_schedule``): the reference's table — 1 → (1, 1), 10 → (10, 50),
20 → (20, 25), 30 → (30, 20), 40 → (40, 15), 50 → (50, 10) — and for any other IPC
``outer = min(ipc, 50)`` with the ``inner`` of the largest listed IPC not above it (so 2–9 → (ipc, 1),
11–19 → (ipc, 50), 100 → (50, 10)). As in the reference, the network is not trained after the last
outer step of an iteration (it is discarded), so at IPC 1 it is never trained.

>>> loop_schedule(1), loop_schedule(10), loop_schedule(50), loop_schedule(5)
((1, 1), (10, 50), (50, 10), (5, 1))
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from ddbench_plugins.matchers._realside import (
    PRECISIONS,
    check_precision,
    check_real_chunk,
    copy_weights,
    default_real_chunk,
    real_dtype,
    real_side_copy,
    resolve_precision,
    resolve_real_chunk,
    split,
)
from torch import Tensor, nn

from ddbench.engine.compiling import CompiledOrEager, check_compile
from ddbench.errors import InvalidOptionError
from ddbench.interfaces import IdentityContext, MatchContext, Matcher, RealSampler

#: (outer_loop, inner_loop) of the reference implementation (DatasetCondensation `get_loops`)
REFERENCE_LOOPS: dict[int, tuple[int, int]] = {
    1: (1, 1),
    10: (10, 50),
    20: (20, 25),
    30: (30, 20),
    40: (40, 15),
    50: (50, 10),
}
MAX_OUTER_LOOP = 50
EPS = 1e-6  # the reference's ε in the cosine denominator
#: ``compile="auto"`` compiles the real side from this many real images per class, where its one-off
#: compilation pays back within a few iterations (benchmarks/README.md, DC)
COMPILE_MIN_BATCH_REAL = 64
#: ``inner_compile="auto"`` compiles the inner network training from this many network steps per
#: iteration ((outer_loop − 1) × inner_loop: 450 at IPC 10), where its one-off compilation pays back
#: within the first iteration; at IPC 1 the network never trains
INNER_COMPILE_MIN_STEPS = 100


def loop_schedule(ipc: int) -> tuple[int, int]:
    """(outer_loop, inner_loop) for an IPC: the reference table, else the rule in the module docstring."""
    if ipc < 1:
        raise InvalidOptionError(f"Expected ipc ≥ 1 but got {ipc}")
    if ipc in REFERENCE_LOOPS:
        return REFERENCE_LOOPS[ipc]
    below = max(k for k in REFERENCE_LOOPS if k <= ipc)
    return min(ipc, MAX_OUTER_LOOP), REFERENCE_LOOPS[below][1]


def layer_distance(g_real: Tensor, g_syn: Tensor) -> Tensor:
    """Σ over output rows of (1 − cos) between two gradients of one weight; 0 for 1-D tensors.

    The weight's first dimension is its output (conv (out, in, kh, kw), linear (out, in)); the rest
    is flattened. Biases and normalisation weights (1-D) carry no spatial structure and count 0.
    """
    if g_real.shape != g_syn.shape:
        raise ValueError(f"Expected gradients of the same shape but got {tuple(g_real.shape)} and {tuple(g_syn.shape)}")
    if g_real.dim() <= 1:
        return g_syn.new_zeros(())
    gr = g_real.reshape(g_real.shape[0], -1)
    gs = g_syn.reshape(g_syn.shape[0], -1)
    cos = (gr * gs).sum(-1) / (gr.norm(dim=-1) * gs.norm(dim=-1) + EPS)
    return (1.0 - cos).sum()


def gradient_distance(g_real: Sequence[Tensor], g_syn: Sequence[Tensor]) -> Tensor:
    """The DC distance: ``layer_distance`` summed over the layers of a network."""
    if len(g_real) != len(g_syn) or not g_syn:
        raise ValueError(f"Expected two equally long, non-empty gradient lists but got {len(g_real)} and {len(g_syn)}")
    return torch.stack([layer_distance(r, s) for r, s in zip(g_real, g_syn)]).sum()


def inner_compiled(option: bool | str, outer_loop: int, inner_loop: int) -> bool:
    """Whether the inner training is compiled: ``option``, or for ``"auto"`` from ``INNER_COMPILE_MIN_STEPS``."""
    return option is True or (option == "auto" and (outer_loop - 1) * inner_loop >= INNER_COMPILE_MIN_STEPS)


def _draw_seed() -> int:
    # drawn from the global RNG, which the engine seeds per iteration (reproducible, resumable)
    return int(torch.randint(0, 2**31 - 1, ()).item())


class GradientMatching(Matcher):
    """Gradient matching; options are the protocols' defaults.

    Args:
        outer_loop: image steps per iteration (None: by IPC, see ``loop_schedule``).
        inner_loop: epochs the network trains on the synthetic set between outer steps (None: by IPC).
        net: evaluator whose architecture is matched (a fresh one each iteration).
        net_lr: learning rate of the network's inner training (plain SGD, as the reference).
        net_momentum: momentum of that SGD (the reference uses none).
        batch_real: real images per class in each gradient.
        batch_train: batch size of the network's inner training.
        real_precision: ``"fp32"``, ``"bf16"`` or ``"auto"`` (bf16 where the hardware has fast
            bf16) for the real-side gradients, computed on a copy of the network (they need no
            graph). bf16 gives per-layer cosine ≥ 0.998 to the fp32 gradients and the same accuracy
            within noise (benchmarks/README.md); it is slower on CPUs without bf16 units.
        compile: torch.compile the real side (``"auto"``: when ``batch_real`` ≥ 64), channels-last;
            falls back to eager if compilation fails.
        real_chunk: real images per forward/backward, their gradients summed; None: cache-sized
            chunks on a CPU (``_realside.resolve_real_chunk``; no split with batch norm).
        inner_precision: ``"fp32"``, ``"bf16"`` or ``"auto"`` (as ``real_precision``) for the inner
            training's forward and backward: bf16 runs them under autocast; the weights and their
            SGD updates stay fp32. The matching itself is unaffected.
        inner_compile: torch.compile the inner training (``"auto"``: from ``INNER_COMPILE_MIN_STEPS``
            network steps per iteration), on a channels-last copy of the network with reshape
            pooling that takes the network's weights before and gives them back after each inner
            loop; falls back to eager if compilation fails.

    Speed (``benchmarks/profile_dc.py``): at IPC 1 the real side (10 × 256 images, forward and
    backward) is nearly all of an iteration, from IPC 10 on the inner training is. Both run on
    copies of the network built once and compiled once per process, which take the current weights
    in place, so a fresh network per iteration recompiles nothing. ``inner_precision="bf16"`` with
    ``real_precision="bf16"`` and ``compile=True`` is the fast setting on CPUs with bf16 units.
    """

    name = "dc"
    description = "Gradient matching (DC/DSA): layer-wise cosine distance of real and synthetic gradients."
    version = 1
    display_order = 0
    lr_scale = 1.0  # the reference scale: priors' base learning rates are DC's
    # measured as `Matcher.seconds_per_iteration` says (records iteration-cost-dc, -dc-ipc10)
    seconds_per_iteration = (6.8, 240.0)
    cost_option = ("batch_real", 256, 0.8)

    def __init__(
        self,
        outer_loop: int | None = None,
        inner_loop: int | None = None,
        net: str = "convnet",
        net_lr: float = 0.01,
        net_momentum: float = 0.0,
        batch_real: int = 256,
        batch_train: int = 256,
        real_precision: str = "fp32",
        compile: bool | str = "auto",
        real_chunk: int | None = None,
        inner_precision: str = "fp32",
        inner_compile: bool | str = "auto",
    ) -> None:
        for key, value in (("outer_loop", outer_loop), ("inner_loop", inner_loop)):
            if value is not None and value < (1 if key == "outer_loop" else 0):
                raise InvalidOptionError(
                    f"Expected {key} ≥ {1 if key == 'outer_loop' else 0} (or None for the IPC rule) but got {value}"
                )
        if net_lr <= 0 or not 0 <= net_momentum < 1:
            raise InvalidOptionError(
                f"Expected net_lr > 0 and net_momentum in [0, 1) but got {net_lr} and {net_momentum}"
            )
        if batch_real < 1 or batch_train < 1:
            raise InvalidOptionError(
                f"Expected batch_real ≥ 1 and batch_train ≥ 1 but got {batch_real} and {batch_train}"
            )
        check_precision(real_precision)
        check_compile(compile)
        check_real_chunk(real_chunk)
        if inner_precision not in PRECISIONS:
            raise InvalidOptionError(f"Expected inner_precision in {PRECISIONS} but got '{inner_precision}'")
        if inner_compile not in (True, False, "auto"):
            raise InvalidOptionError(f"Expected inner_compile true, false or auto but got '{inner_compile}'")
        self.outer_option = outer_loop
        self.inner_option = inner_loop
        self.net_name = net
        self.net_lr = net_lr
        self.net_momentum = net_momentum
        self.batch_real = batch_real
        self.batch_train = batch_train
        self.real_precision = real_precision
        self.compile = compile
        self.real_chunk_option = real_chunk
        self.inner_precision = inner_precision
        self.inner_compile = inner_compile
        self.outer_loop, self.inner_loop = outer_loop or 1, inner_loop or 0
        self.net: nn.Module | None = None
        self.net_optimizer: torch.optim.Optimizer | None = None
        self._step = 0
        self._real_net: nn.Module | None = None
        self._real_chunk_gradients: Callable[[Tensor, int, int], tuple[Tensor, ...]] | None = None
        self._train_net: nn.Module | None = None
        self._train_step: Callable[[Tensor, Tensor], None] | None = None

    # ------------------------------------------------------------------------------ schedule

    def effective_options(self, context: IdentityContext) -> dict[str, Any]:
        # what setup() and the real side make of None and ``auto`` for this IPC and device
        options = self.options()
        outer, inner = loop_schedule(context.ipc)
        options["outer_loop"] = self.outer_option if self.outer_option is not None else outer
        options["inner_loop"] = self.inner_option if self.inner_option is not None else inner
        options["real_precision"] = resolve_precision(self.real_precision, context.device)
        options["compile"] = self.compile is True or (
            self.compile == "auto" and self.batch_real >= COMPILE_MIN_BATCH_REAL
        )
        options["inner_precision"] = resolve_precision(self.inner_precision, context.device)
        options["inner_compile"] = inner_compiled(self.inner_compile, options["outer_loop"], options["inner_loop"])
        if (options["outer_loop"] - 1) * options["inner_loop"] == 0:
            # the network is never trained between image steps (IPC 1): the inner training's options
            # cannot change the images, so they stay out of the run id
            del options["inner_precision"], options["inner_compile"]
        if self.real_chunk_option is None and context.resolution is not None:
            options["real_chunk"] = default_real_chunk(context.device, context.resolution)
        return options

    def setup(self, context: MatchContext) -> None:
        super().setup(context)
        outer, inner = loop_schedule(context.ipc)
        self.outer_loop = self.outer_option if self.outer_option is not None else outer
        self.inner_loop = self.inner_option if self.inner_option is not None else inner
        self._real_net = None  # the real side is built for this context's network at the first iteration
        self._train_net = self._train_step = None  # so is the inner training's
        self._inner_dtype = real_dtype(self.inner_precision, context.device)

    @property
    def steps_per_iteration(self) -> int:
        return self.outer_loop

    def begin_iteration(self, iteration: int) -> None:
        # a fresh network each iteration, initialised from the global RNG the engine just seeded
        self.net = self.context.build_network(self.net_name).train()
        self._step = 0
        if self._real_net is None:
            self._build_real_side(self.net)
        if self._train_step is None:
            self._build_inner_training(self.net)
        trained = self._train_net if self._train_net is not None else self.net
        self.net_optimizer = torch.optim.SGD(trained.parameters(), lr=self.net_lr, momentum=self.net_momentum)

    # ---------------------------------------------------------------------------------- loss

    def _matched_parameters(self) -> dict[str, Tensor]:
        # 1-D tensors contribute 0 to the distance, so their gradients are never computed
        assert self.net is not None, "begin_iteration() must run before loss()"
        return {name: p for name, p in self.net.named_parameters() if p.dim() > 1}

    def _build_real_side(self, net: nn.Module) -> None:
        """The real side's copy of ``net`` (``_realside.real_side_copy``), compiled once."""
        dtype = real_dtype(self.real_precision, self.context.device)
        compile = self.compile is True or (self.compile == "auto" and self.batch_real >= COMPILE_MIN_BATCH_REAL)
        real_net = real_side_copy(net, dtype, compiled=compile)
        for p in real_net.parameters():
            p.requires_grad_(p.dim() > 1)
        self._real_net, self._real_dtype, self._channels_last = real_net, dtype, compile
        self._real_matched = [p for p in real_net.parameters() if p.dim() > 1]
        self._real_chunk = resolve_real_chunk(
            self.real_chunk_option, real_net, self.context.device, self.context.data.resolution
        )
        compiled = partial(self._chunk_gradients, torch.compile(real_net, dynamic=False)) if compile else None
        self._real_chunk_gradients = CompiledOrEager(
            partial(self._chunk_gradients, real_net), compiled, "the DC real side"
        )

    def _chunk_gradients(
        self, forward: Callable[[Tensor], Tensor], images: Tensor, label: int, batch: int
    ) -> tuple[Tensor, ...]:
        """Gradients of one chunk's share (sum / ``batch``) of the batch's mean loss."""
        target = torch.full((len(images),), label, dtype=torch.long, device=images.device)
        loss = F.cross_entropy(forward(images).float(), target, reduction="sum") / batch
        # no create_graph: the real side is a constant of the matching loss
        return torch.autograd.grad(loss, self._real_matched)

    def _real_gradients(self, real_images: Tensor, label: int) -> list[Tensor]:
        assert self._real_chunk_gradients is not None
        images = real_images.to(self._real_dtype)
        if self._channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        total: list[Tensor] = []
        for part in split(images, self._real_chunk):
            grads = self._real_chunk_gradients(part, label, len(images))
            total = [g.float() for g in grads] if not total else [t + g.float() for t, g in zip(total, grads)]
        return total

    def _synthetic_gradients(self, syn_images: Tensor, label: int, params: list[Tensor]) -> tuple[Tensor, ...]:
        assert self.net is not None
        target = torch.full((len(syn_images),), label, dtype=torch.long, device=syn_images.device)
        loss = F.cross_entropy(self.net(syn_images), target)
        return torch.autograd.grad(loss, params, create_graph=True)

    def loss(self, images: Tensor, labels: Tensor, real: RealSampler) -> Tensor:
        params = list(self._matched_parameters().values())
        assert self.net is not None and self._real_net is not None
        copy_weights(self._real_net, self.net)  # the network trains between outer steps
        dsa = self.context.dsa
        total = images.new_zeros(())
        for c in torch.unique(labels).tolist():
            real_c = real.class_batch(c, self.batch_real)
            syn_c = images[labels == c]
            if dsa is not None:
                seed = _draw_seed()  # the same draw on both sides (siamese)
                real_c, syn_c = dsa(real_c, seed), dsa(syn_c, seed)
            g_real = self._real_gradients(real_c, c)
            g_syn = self._synthetic_gradients(syn_c, c, params)
            total = total + gradient_distance(g_real, g_syn)
        return total

    # ------------------------------------------------------------------- inner network training

    def after_step(self, images: Tensor, labels: Tensor, real: RealSampler) -> None:
        self._step += 1
        if self._step >= self.outer_loop:
            return  # the network is rebuilt next iteration; training it now would be wasted work
        self.train_network(images, labels, self.inner_loop)

    def _build_inner_training(self, net: nn.Module) -> None:
        """The inner training's step: eager on ``self.net``, or compiled on a persistent
        channels-last copy (``self._train_net``), so a fresh network per iteration recompiles nothing."""
        eager = partial(self._train_batch, self._eager_forward)
        if not inner_compiled(self.inner_compile, self.outer_loop, self.inner_loop):
            self._train_step = eager
            return
        self._train_net = real_side_copy(net, torch.float32, compiled=True).train()
        compiled = torch.compile(self._train_net, dynamic=False)
        self._train_step = CompiledOrEager(
            partial(self._train_batch, self._train_net), partial(self._train_batch, compiled), "the DC inner training"
        )

    def _eager_forward(self, x: Tensor) -> Tensor:
        assert self.net is not None
        return self.net(x)

    def _train_batch(self, forward: Callable[[Tensor], Tensor], x: Tensor, y: Tensor) -> None:
        """One SGD step of the network on a batch, under bf16 autocast where ``inner_precision`` asks."""
        assert self.net_optimizer is not None
        if self._train_net is not None:
            x = x.contiguous(memory_format=torch.channels_last)
        bf16 = self._inner_dtype == torch.bfloat16
        self.net_optimizer.zero_grad(set_to_none=True)
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = forward(x)
        F.cross_entropy(logits.float(), y).backward()
        self.net_optimizer.step()

    def train_network(self, images: Tensor, labels: Tensor, epochs: int) -> None:
        """Train the current network ``epochs`` epochs on the synthetic set (shuffled, DSA per batch)."""
        assert self.net is not None and self._train_step is not None, "begin_iteration() must run first"
        dsa = self.context.dsa
        images, labels = images.detach(), labels.detach()
        if self._train_net is not None:
            copy_weights(self._train_net, self.net)
        for _ in range(epochs):
            order = torch.randperm(len(images), device=images.device)
            for batch in order.split(self.batch_train):
                x, y = images[batch], labels[batch]
                if dsa is not None:
                    x = dsa(x, _draw_seed())
                self._train_step(x, y)
        if self._train_net is not None:
            copy_weights(self.net, self._train_net)
