"""DM — distribution matching (Zhao & Bilen, 2023).

Each iteration draws a fresh randomly initialised network (frozen, train mode) and matches, per
class, the mean embedding of a real batch and of the synthetic images, with the same DSA draw on
both: ``L = Σ_c ‖mean φ(A(x_real_c)) − mean φ(A(s_c))‖²``.

Speed: the real side (10 × 256 images through ConvNet-3 on Fashion-MNIST) is nearly all of an
iteration's work and needs no gradient, so it may run in bfloat16, channels-last, compiled and in
cache-sized chunks (``real_precision``, ``compile``, ``real_chunk``). The network is re-initialised
in place each iteration, so the compiled graph is built once per process, not once per iteration.
The synthetic side always runs in fp32 with autograd.
"""

from __future__ import annotations

import logging
from typing import Callable

import torch
from torch import Tensor, nn

from ddbench.errors import InvalidOptionError
from ddbench.interfaces import MatchContext, Matcher, RealSampler

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "bf16")


def _draw_seed() -> int:
    # drawn from the global RNG, which the engine seeds per iteration
    return int(torch.randint(0, 2**31 - 1, ()).item())


def _bf16_is_fast(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    flags = ""
    try:
        with open("/proc/cpuinfo") as fh:
            flags = next((line for line in fh if line.startswith("flags")), "")
    except OSError:
        pass
    return "avx512_bf16" in flags or "amx_bf16" in flags


def default_real_chunk(device: torch.device, resolution: int) -> int:
    """Real images per embedding call.

    CPU: chunks whose activations match 32 images of 32 px, so a chunk's layer-1 activations stay in
    cache (measured on 2 cores, Fashion-MNIST IPC 1 / 10: 1.03 / 1.21 s/it in chunks of 32 against
    1.38 / 1.72 s/it for the whole 2560-image batch, and half the memory). GPU: activations of 2560
    images of 32 px (the whole batch on CIFAR/Fashion-MNIST; 160 at 128 px, 40 at 256 px), which fits.
    """
    if device.type == "cpu":
        return max(1, (32 * 32 * 32) // resolution**2)
    return max(16, (2560 * 32 * 32) // resolution**2)


class DistributionMatching(Matcher):
    name = "dm"
    description = "Distribution matching: mean embeddings of a fresh random network per iteration."

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
            real_chunk: real images per embedding call; None: `default_real_chunk` (cache-sized
                chunks on a CPU, large ones on a GPU). Instance norm is per sample, so chunking
                changes no result beyond rounding.
        """
        if batch_real < 1:
            raise InvalidOptionError(f"Expected batch_real ≥ 1 but got {batch_real}")
        if real_precision not in PRECISIONS:
            raise InvalidOptionError(f"Expected real_precision in {PRECISIONS} but got '{real_precision}'")
        if compile not in (True, False, "auto"):
            raise InvalidOptionError(f"Expected compile true, false or auto but got '{compile}'")
        if real_chunk is not None and (isinstance(real_chunk, bool) or not isinstance(real_chunk, int) or real_chunk < 1):
            raise InvalidOptionError(f"Expected real_chunk ≥ 1 (or None for the resolution rule) but got {real_chunk!r}")
        self.net_name = net
        self.batch_real = batch_real
        self.real_precision = real_precision
        self.compile = compile
        self.real_chunk_option = real_chunk
        self.net: nn.Module | None = None
        self._real_embed: Callable[[Tensor], Tensor] | None = None

    def setup(self, context: MatchContext) -> None:
        super().setup(context)
        self.net = context.build_network(self.net_name).to(memory_format=torch.channels_last)
        self.net.train()
        for p in self.net.parameters():
            p.requires_grad_(False)
        precision = self.real_precision
        if precision == "auto":
            precision = "bf16" if _bf16_is_fast(context.device) else "fp32"
        self.dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        self.real_chunk = self.real_chunk_option or default_real_chunk(context.device, context.data.resolution)
        self._real_embed = self.net.embed
        if self.compile in (True, "auto") and hasattr(self.net, "reset_parameters"):
            self._real_embed = torch.compile(self.net.embed, dynamic=False)

    def begin_iteration(self, iteration: int) -> None:
        # a fresh random network each iteration (seeded by the engine): re-initialised in place when
        # the network supports it, so a compiled embedding stays valid; otherwise rebuilt
        assert self.net is not None, "setup() must run first"
        reset = getattr(self.net, "reset_parameters", None)
        if reset is not None:
            reset()
            return
        self.net = self.context.build_network(self.net_name).to(memory_format=torch.channels_last)
        self.net.train().requires_grad_(False)
        self._real_embed = self.net.embed

    def _augment(self, real: Tensor, syn: Tensor) -> tuple[Tensor, Tensor]:
        dsa = self.context.dsa
        if dsa is None:
            return real, syn
        seed = _draw_seed()
        return dsa(real, seed), dsa(syn, seed)

    def _embed_real(self, images: Tensor) -> Tensor:
        return torch.cat([self._embed_real_chunk(part) for part in images.split(self.real_chunk)])

    def _embed_real_chunk(self, images: Tensor) -> Tensor:
        assert self.net is not None and self._real_embed is not None
        images = images.contiguous(memory_format=torch.channels_last)
        autocast = torch.autocast(images.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32)
        with torch.no_grad(), autocast:
            try:
                return self._real_embed(images).float()
            except Exception as err:  # noqa: BLE001 - a missing C++ compiler etc.: fall back to eager
                if self._real_embed is self.net.embed:
                    raise
                log.warning("torch.compile failed (%s); DM continues in eager mode", err)
                self._real_embed = self.net.embed
                return self._real_embed(images).float()

    def loss(self, images: Tensor, labels: Tensor, real: RealSampler) -> Tensor:
        assert self.net is not None
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
