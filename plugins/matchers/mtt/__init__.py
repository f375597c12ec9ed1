"""The MTT matcher (matching training trajectories) and its expert buffer (`ddbench experts`)."""

from __future__ import annotations

from typing import Any

__all__ = ["TrajectoryMatching"]


def __getattr__(name: str) -> Any:
    # imported on first use: `ddbench experts --help` loads mtt.cli, and with it this package; the
    # matcher pulls in torch (seconds), which a help text never needs
    if name == "TrajectoryMatching":
        from ddbench_plugins.matchers.mtt.matcher import TrajectoryMatching

        return TrajectoryMatching
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
