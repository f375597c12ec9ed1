"""DM — distribution matching (Zhao & Bilen, 2023).

Each iteration draws a fresh randomly initialised network (frozen, train mode) and matches, per
class, the mean embedding of a real batch and of the synthetic images, with the same DSA draw on
both: ``L = Σ_c ‖mean φ(A(x_real_c)) − mean φ(A(s_c))‖²``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ddbench.errors import InvalidOptionError
from ddbench.interfaces import MatchContext, Matcher, RealSampler


def _draw_seed() -> int:
    # drawn from the global RNG, which the engine seeds per iteration
    return int(torch.randint(0, 2**31 - 1, ()).item())


class DistributionMatching(Matcher):
    name = "dm"
    description = "Distribution matching: mean embeddings of a fresh random network per iteration."

    def __init__(self, net: str = "convnet", batch_real: int = 256, real_precision: str = "fp32") -> None:
        if batch_real < 1:
            raise InvalidOptionError(f"Expected batch_real ≥ 1 but got {batch_real}")
        if real_precision not in ("fp32", "bf16"):
            raise InvalidOptionError(f"Expected real_precision 'fp32' or 'bf16' but got '{real_precision}'")
        self.net_name = net
        self.batch_real = batch_real
        self.real_precision = real_precision
        self.net: nn.Module | None = None

    def setup(self, context: MatchContext) -> None:
        super().setup(context)
        self.net = context.build_network(self.net_name)
        self.net.train()
        for p in self.net.parameters():
            p.requires_grad_(False)

    def begin_iteration(self, iteration: int) -> None:
        # a fresh random network each iteration, re-initialised in place (seeded by the engine)
        assert self.net is not None, "setup() must run first"
        reset = getattr(self.net, "reset_parameters", None)
        if reset is not None:
            reset()
        else:
            self.net = self.context.build_network(self.net_name).train().requires_grad_(False)

    def _augment(self, real: Tensor, syn: Tensor) -> tuple[Tensor, Tensor]:
        dsa = self.context.dsa
        if dsa is None:
            return real, syn
        seed = _draw_seed()
        return dsa(real, seed), dsa(syn, seed)

    def loss(self, images: Tensor, labels: Tensor, real: RealSampler) -> Tensor:
        assert self.net is not None
        classes = torch.unique(labels).tolist()
        real_batches, syn_batches = [], []
        for c in classes:
            real_c, syn_c = self._augment(real.class_batch(c, self.batch_real), images[labels == c])
            real_batches.append(real_c)
            syn_batches.append(syn_c)
        # one forward for all classes: instance norm is per sample, so this equals per-class passes
        with torch.no_grad():
            real_all = torch.cat(real_batches)
            if self.real_precision == "bf16":
                with torch.autocast(real_all.device.type, dtype=torch.bfloat16):
                    real_emb = self.net.embed(real_all).float()
            else:
                real_emb = self.net.embed(real_all)
        syn_emb = self.net.embed(torch.cat(syn_batches))
        real_means = torch.stack([e.mean(0) for e in real_emb.split([len(b) for b in real_batches])])
        syn_means = torch.stack([e.mean(0) for e in syn_emb.split([len(b) for b in syn_batches])])
        return ((real_means - syn_means) ** 2).sum()
