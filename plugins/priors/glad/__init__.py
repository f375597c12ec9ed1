"""The GLaD prior (W+ and intermediate-feature latents of a style generator) and its generators."""

from ddbench_plugins.priors.glad.prior import GLaDPrior

__all__ = ["GLaDPrior"]
