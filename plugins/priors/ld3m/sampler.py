"""The LD3M reverse process (paper Eq. 12) on a DDIM schedule, differentiable in z_T and c.

For k = T … 1 (k is the step index, τ_k the model timestep of that step):

    z_{k-1} = (1 − k/T) · μθ(c, z_k, τ_k) + (k/T) · z_T + σ_k² · ε_k          (Eq. 12)

μθ is the DDIM mean without its noise term, √ᾱ_prev·x̂0 + √(1 − ᾱ_prev − σ_k²)·ε̂. With η = 1 it
equals the paper's Eq. 9, 1/√α_k·(z_k − (1 − α_k)/√(1 − ᾱ_k)·ε̂) with α_k = ᾱ_k/ᾱ_prev (the DDPM
posterior mean on the strided schedule); σ_k = η·√((1 − ᾱ_prev)/(1 − ᾱ_k))·√(1 − α_k). The noise
term is σ_k²·ε_k exactly as the paper writes it (the variance, not the standard deviation).

Other residual modes: ``x0`` is the reference code's (the predicted x̂0 is blended toward
quantize(Z) with weight (k−1)/(T−1) before a plain DDIM update) and ``none`` is Eq. 10.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint as _checkpoint

from ddbench.errors import InvalidOptionError

#: (z_t, t, c) -> predicted noise ε̂ (classifier-free guidance already applied)
EpsFn = Callable[[Tensor, Tensor, Tensor], Tensor]

RESIDUALS = ("mean", "x0", "none")


@dataclasses.dataclass(frozen=True)
class DDIMSchedule:
    """The T sampling steps, first (k = T) to last (k = 1), with their ᾱ values and σ."""

    timesteps: Tensor  # int64 (T,) model timesteps τ_T … τ_1
    alpha: Tensor  # float64 (T,) ᾱ at τ_k
    alpha_prev: Tensor  # float64 (T,) ᾱ at τ_{k-1} (the scheduler's final ᾱ after the last step)
    sigma: Tensor  # float64 (T,)

    @property
    def steps(self) -> int:
        return int(self.timesteps.numel())

    @classmethod
    def from_alphas_cumprod(
        cls, alphas_cumprod: Tensor, timesteps: Tensor, final_alpha_cumprod: float, eta: float
    ) -> DDIMSchedule:
        """Schedule for the given descending model ``timesteps`` (e.g. a diffusers DDIMScheduler's)."""
        ac = alphas_cumprod.double().cpu()
        ts = timesteps.long().cpu()
        alpha = ac[ts]
        alpha_prev = torch.cat([ac[ts[1:]], torch.tensor([float(final_alpha_cumprod)], dtype=torch.float64)])
        sigma = eta * ((1 - alpha_prev) / (1 - alpha) * (1 - alpha / alpha_prev)).clamp_min(0).sqrt()
        return cls(timesteps=ts, alpha=alpha, alpha_prev=alpha_prev, sigma=sigma)


def ddim_mean(z_t: Tensor, eps: Tensor, alpha: float, alpha_prev: float, sigma: float) -> tuple[Tensor, Tensor]:
    """(μθ, x̂0): the DDIM mean without its noise term, and the predicted clean latent."""
    x0 = (z_t - (1 - alpha) ** 0.5 * eps) / alpha**0.5
    return alpha_prev**0.5 * x0 + max(1 - alpha_prev - sigma**2, 0.0) ** 0.5 * eps, x0


def forward_diffuse(z: Tensor, noise: Tensor, alpha: float) -> Tensor:
    """z_T ~ q(z_T | Z): the forward process to ᾱ of the first sampling step, reparameterised."""
    return alpha**0.5 * z + (1 - alpha) ** 0.5 * noise


def reverse_process(
    z_T: Tensor,
    cond: Tensor,
    eps_fn: EpsFn,
    schedule: DDIMSchedule,
    step_noise: Tensor | None,
    residual: str = "mean",
    anchor: Tensor | None = None,
    checkpoint: bool = True,
) -> Tensor:
    """Run the T reverse steps from ``z_T`` and return z_0.

    ``step_noise`` is (B, T, C, h, w) with ε for step k = T at index 0 (``None`` = no noise term);
    ``anchor`` is quantize(Z) for ``residual="x0"``. With ``checkpoint`` each denoiser call is
    recomputed in backward instead of storing its activations; the timestep goes in as an
    argument of the checkpointed call so the recomputation sees the same t.
    """
    if residual not in RESIDUALS:
        raise InvalidOptionError(f"Expected residual in {RESIDUALS} but got '{residual}'")
    if residual == "x0" and anchor is None:
        raise InvalidOptionError("residual='x0' blends toward quantize(Z): pass anchor=quantize(Z)")
    T = schedule.steps
    z = z_T
    for i in range(T):
        k = T - i  # paper's step index t: T … 1
        alpha, alpha_prev = float(schedule.alpha[i]), float(schedule.alpha_prev[i])
        sigma = float(schedule.sigma[i])
        w_mean = 1.0 - k / T if residual == "mean" else 1.0
        if w_mean == 0.0:
            # Eq. 12 at k = T gives μθ zero weight: skip the (wasted) denoiser call; same value, same graph
            z_next = z_T
        else:
            t = torch.full((z.shape[0],), int(schedule.timesteps[i]), device=z.device, dtype=torch.long)
            if checkpoint and torch.is_grad_enabled():
                eps = _checkpoint(eps_fn, z, t, cond, use_reentrant=False)
            else:
                eps = eps_fn(z, t, cond)
            if residual == "x0":
                # reference code: x̂0 ← (1 − w)·x̂0 + w·quantize(Z), w = (k−1)/(T−1), then plain DDIM
                _, x0 = ddim_mean(z, eps, alpha, alpha_prev, sigma)
                w = (k - 1) / (T - 1) if T > 1 else 0.0
                x0 = (1 - w) * x0 + w * anchor
                mu = alpha_prev**0.5 * x0 + max(1 - alpha_prev - sigma**2, 0.0) ** 0.5 * eps
            else:
                mu, _ = ddim_mean(z, eps, alpha, alpha_prev, sigma)
            z_next = w_mean * mu + (k / T) * z_T if residual == "mean" else mu
        if step_noise is not None and sigma > 0:
            # the paper's σ_t²·ε_t (Eq. 10/12); the reference-code mode uses DDIM's σ_t·ε_t
            scale = sigma if residual == "x0" else sigma**2
            z_next = z_next + scale * step_noise[:, i]
        z = z_next
    return z
