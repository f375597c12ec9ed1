"""The LD3M prior (latent dataset distillation with diffusion models) and its model backends."""

from __future__ import annotations

from typing import Any

__all__ = ["LD3MPrior"]


def __getattr__(name: str) -> Any:
    # imported on first use: `ddbench prior train --help` loads ld3m.cli, and with it this package;
    # the prior pulls in torch and diffusers (seconds), which a help text never needs
    if name == "LD3MPrior":
        from ddbench_plugins.priors.ld3m.prior import LD3MPrior

        return LD3MPrior
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
