"""Maximum mean discrepancy with a Gaussian kernel on the embeddings of a fresh random network."""

from __future__ import annotations

import torch
from torch import Tensor

from ddbench.interfaces import MatchContext, Matcher, RealSampler


def _gaussian_mmd(x: Tensor, y: Tensor) -> Tensor:
    both = torch.cat([x, y])
    dist = torch.cdist(both, both).pow(2)
    bandwidth = dist.detach().median().clamp_min(1e-6)  # median heuristic
    k = torch.exp(-dist / bandwidth)
    n = len(x)
    return k[:n, :n].mean() + k[n:, n:].mean() - 2 * k[:n, n:].mean()


class MMDMatcher(Matcher):
    name = "mmd"
    description = "Per-class Gaussian-kernel MMD between real and synthetic embeddings."

    def __init__(self, batch_real: int = 64, net: str = "convnet") -> None:
        self.batch_real = batch_real
        self.net_name = net

    def setup(self, context: MatchContext) -> None:
        super().setup(context)
        self.net = context.build_network(self.net_name).requires_grad_(False)

    def begin_iteration(self, iteration: int) -> None:
        self.net = self.context.build_network(self.net_name).requires_grad_(False)

    def loss(self, images: Tensor, labels: Tensor, real: RealSampler) -> Tensor:
        total = images.new_zeros(())
        for c in torch.unique(labels).tolist():
            with torch.no_grad():
                real_emb = self.net.embed(real.class_batch(c, self.batch_real))
            total = total + _gaussian_mmd(real_emb, self.net.embed(images[labels == c]))
        return total
