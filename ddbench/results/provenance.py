"""Where a result came from: package versions, the ddbench git commit and the host.

Every run and every score in the results store carries these, so a number in a table can be traced
to the code and machine that produced it (as lm-evaluation-harness records do).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.metadata
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

#: distributions whose versions change results; looked up in package metadata, never imported
TRACKED_DISTRIBUTIONS = ("ddbench", "torch", "torchvision", "diffusers", "timm", "numpy")

#: seconds a git call may take before we give up (a hung network filesystem must not stall a run)
GIT_TIMEOUT_S = 5.0

_SOURCE_ROOT = Path(__file__).resolve().parents[2]


def _distribution_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def plugin_distributions() -> dict[str, str]:
    """``"family:name" -> "distribution==version"`` for every installed plugin, read from metadata."""
    from ddbench import registry  # local: registry imports stevedore, not needed for the rest

    found: dict[str, str] = {}
    for family in registry.FAMILIES:
        for info in registry.list_plugins(family):
            found[f"{family}:{info.name}"] = f"{info.distribution}=={info.version}"
    return found


def package_versions() -> dict[str, Any]:
    """Versions of Python, ddbench, the libraries that shape results, and each plugin's distribution.

    Missing libraries are recorded as ``None`` rather than raising: provenance must never stop a run.
    """
    versions: dict[str, Any] = {"python": platform.python_version()}
    for name in TRACKED_DISTRIBUTIONS:
        versions[name] = _distribution_version(name)
    versions["plugins"] = plugin_distributions()
    return versions


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        done = subprocess.run(
            ["git", *args],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):  # git missing, or hung
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def git_commit(source_root: str | os.PathLike[str] | None = None) -> str | None:
    """The commit of the ddbench source checkout, with ``-dirty`` if tracked files are modified.

    ``None`` when ddbench is not run from a git checkout (an installed wheel), when the repository
    has no commit yet, or when git is unavailable. ``source_root`` defaults to the directory that
    holds the ``ddbench`` package; it must be the top level of its repository, so that a wheel
    installed inside some other project's repository is not credited with that project's commit.
    """
    root = Path(source_root).resolve() if source_root is not None else _SOURCE_ROOT
    if not root.is_dir():
        return None
    toplevel = _git(["rev-parse", "--show-toplevel"], root)
    if toplevel is None or Path(toplevel).resolve() != root:
        return None
    commit = _git(["rev-parse", "--verify", "--quiet", "HEAD"], root)
    if not commit:
        return None
    status = _git(["status", "--porcelain", "--untracked-files=no"], root)
    return f"{commit}-dirty" if status else commit


def _cpu_count() -> int | None:
    # The CPUs this process may use (a cgroup or taskset limit), not the machine's total.
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count()


def host_info() -> dict[str, Any]:
    """Platform, CPU count and accelerator of this machine."""
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "hostname": platform.node(),
        "cpu_count": _cpu_count(),
        "cuda_device": None,
        "cuda_device_count": 0,
        "cuda_version": None,
    }
    try:
        import torch
    except ImportError:
        return info
    info["torch_threads"] = torch.get_num_threads()
    if torch.cuda.is_available():
        info["cuda_device"] = torch.cuda.get_device_name(torch.cuda.current_device())
        info["cuda_device_count"] = torch.cuda.device_count()
        info["cuda_version"] = torch.version.cuda
    return info


@dataclasses.dataclass(frozen=True)
class Provenance:
    """The record stored with each run and score."""

    versions: dict[str, Any]
    git_commit: str | None
    host: dict[str, Any]


@functools.lru_cache(maxsize=1)
def collect() -> Provenance:
    """Provenance of this process, computed once (git and torch are slow to ask repeatedly)."""
    return Provenance(versions=package_versions(), git_commit=git_commit(), host=host_info())


__all__ = [
    "Provenance",
    "collect",
    "git_commit",
    "host_info",
    "package_versions",
    "plugin_distributions",
]

if __name__ == "__main__":  # pragma: no cover - a quick look: python -m ddbench.results.provenance
    import json

    json.dump(dataclasses.asdict(collect()), sys.stdout, indent=2)
    print()
