"""The LD3M prior (latent dataset distillation with diffusion models) and its model backends."""

from ddbench_plugins.priors.ld3m.prior import LD3MPrior

__all__ = ["LD3MPrior"]
