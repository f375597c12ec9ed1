"""DM — distribution matching (Zhao & Bilen, 2023).

Each iteration draws a fresh randomly initialised network (frozen, train mode) and matches, per
class, the mean embedding of a real batch and of the synthetic images, with the same DSA draw on
both: ``L = Σ_c ‖mean φ(A(x_real_c)) − mean φ(A(s_c))‖²``.

Speed: the real side (10 × 256 images through ConvNet-3 on Fashion-MNIST) is nearly all of an
iteration's work and needs no gradient, so it runs on its own copy of the network
(``_realside.real_side_copy``) that may be bfloat16, channels-last, compiled and fed in cache-sized
chunks (``real_precision``, ``compile``, ``real_chunk``). The network is re-initialised in place
each iteration and the copy takes its weights in place, so the compiled graph is built once per
process, not once per iteration. The synthetic side always runs in fp32 with autograd.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from ddbench_plugins.matchers._realside import (
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


def _draw_seed() -> int:
    # drawn from the global RNG, which the engine seeds per iteration
    return int(torch.randint(0, 2**31 - 1, ()).item())


class DistributionMatching(Matcher):
    name = "dm"
    description = "Distribution matching: mean embeddings of a fresh random network per iteration."
    version = 1
    display_order = 1
    lr_scale = 10.0  # protocols.md: DM's rates are ten times DC's for every prior
    # measured as `Matcher.seconds_per_iteration` says (record iteration-cost-dm)
    seconds_per_iteration = (0.52, 0.79)
    cost_option = ("batch_real", 256, 0.88)

    def __init__(
        self,
        net: str = "convnet",
        batch_real: int = 256,
        real_precision: str = "auto",
        compile: bool | str = "auto",
        real_chunk: int | None = None,
    ) -> None:
        """
        Args:
            net: evaluator plugin whose network embeds the images.
            batch_real: real images per class per iteration (256 in the reference).
            real_precision: ``fp32``, ``bf16``, or ``auto`` (bf16 where the hardware has fast bf16).
                Only the real, gradient-free embedding is affected.
            compile: torch.compile the real embedding (``auto``: on; falls back to eager if the
                compiler is unavailable).
            real_chunk: real images per embedding call; None: `_realside.resolve_real_chunk`
                (cache-sized chunks on a CPU, large ones on a GPU; no split with batch norm).
        """
        if batch_real < 1:
            raise InvalidOptionError(f"Expected batch_real ≥ 1 but got {batch_real}")
        check_precision(real_precision)
        check_compile(compile)
        check_real_chunk(real_chunk)
        self.net_name = net
        self.batch_real = batch_real
        self.real_precision = real_precision
        self.compile = compile
        self.real_chunk_option = real_chunk
        self.net: nn.Module | None = None
        self._real_net: nn.Module | None = None
        self._real_embed: Callable[[Tensor], Tensor] | None = None

    def effective_options(self, context: IdentityContext) -> dict[str, Any]:
        # what setup() makes of ``auto`` and None on the target device (a batch-norm network is
        # never split, whatever real_chunk says: resolve_real_chunk)
        options = self.options()
        options["real_precision"] = resolve_precision(self.real_precision, context.device)
        options["compile"] = self.compile in (True, "auto")
        if self.real_chunk_option is None and context.resolution is not None:
            options["real_chunk"] = default_real_chunk(context.device, context.resolution)
        return options

    def setup(self, context: MatchContext) -> None:
        super().setup(context)
        self.net = self._fresh_network()
        self.dtype = real_dtype(self.real_precision, context.device)
        self.real_chunk = resolve_real_chunk(self.real_chunk_option, self.net, context.device, context.data.resolution)
        self._build_real_side(compile=self.compile in (True, "auto") and hasattr(self.net, "reset_parameters"))

    def _fresh_network(self) -> nn.Module:
        net = self.context.build_network(self.net_name).to(memory_format=torch.channels_last)
        return net.train().requires_grad_(False)

    def _build_real_side(self, compile: bool) -> None:
        assert self.net is not None
        self._real_net = real_side_copy(self.net, self.dtype, compiled=compile)
        compiled = torch.compile(self._real_net.embed, dynamic=False) if compile else None
        self._real_embed = CompiledOrEager(self._real_net.embed, compiled, "the DM real embedding")

    def begin_iteration(self, iteration: int) -> None:
        # a fresh random network each iteration (seeded by the engine): re-initialised in place when
        # the network supports it, so a compiled embedding stays valid; otherwise rebuilt
        assert self.net is not None, "setup() must run first"
        reset = getattr(self.net, "reset_parameters", None)
        if reset is not None:
            reset()
        else:
            self.net = self._fresh_network()
            self._build_real_side(compile=False)

    def _augment(self, real: Tensor, syn: Tensor) -> tuple[Tensor, Tensor]:
        dsa = self.context.dsa
        if dsa is None:
            return real, syn
        seed = _draw_seed()
        return dsa(real, seed), dsa(syn, seed)

    def _embed_real(self, images: Tensor) -> Tensor:
        return torch.cat([self._embed_real_chunk(part) for part in split(images, self.real_chunk)])

    def _embed_real_chunk(self, images: Tensor) -> Tensor:
        assert self._real_embed is not None
        images = images.to(self.dtype).contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            return self._real_embed(images).float()

    def loss(self, images: Tensor, labels: Tensor, real: RealSampler) -> Tensor:
        assert self.net is not None and self._real_net is not None
        copy_weights(self._real_net, self.net)  # this iteration's network
        classes = torch.unique(labels).tolist()
        real_batches, syn_batches = [], []
        for c in classes:
            real_c, syn_c = self._augment(real.class_batch(c, self.batch_real), images[labels == c])
            real_batches.append(real_c)
            syn_batches.append(syn_c)
        # one forward for all classes: instance norm is per sample, so this equals per-class passes
        real_emb = self._embed_real(torch.cat(real_batches))
        syn_emb = self.net.embed(torch.cat(syn_batches))
        real_means = torch.stack([e.mean(0) for e in real_emb.split([len(b) for b in real_batches])])
        syn_means = torch.stack([e.mean(0) for e in syn_emb.split([len(b) for b in syn_batches])])
        return ((real_means - syn_means) ** 2).sum()
