"""ddbench: a plugin-based benchmark suite for dataset distillation with generative priors."""

__version__ = "0.1.0"
