"""How far did distillation move each stored set from where it started? Stored runs, re-initialised.

A matcher can only improve a set it changes. This script rebuilds each run's starting point exactly
as `ddbench run` does (same spec, same seeds: `Distiller` initial state), generates its images, and
compares them and the learnable parameters with the run's final checkpoint and stored set:
relative change of every learnable tensor, of the images (in the dataset's normalised units), and
the loss's fall (mean of the last ten iterations over the first ten, from ``metrics.jsonl``).

    python benchmarks/distill_movement.py --runs bench-out/table4-fmnist/runs/fashion-mnist/*-ipc1-*
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from record import emit, table
from safetensors.torch import load_file

from ddbench import registry
from ddbench.engine.distill import CHECKPOINT_FILE, Distiller
from ddbench.engine.metrics import read_metrics
from ddbench.engine.spec import RunEnv
from ddbench.running.pipeline import DataCache, spec_from_run_dir


def relative_change(start: torch.Tensor, end: torch.Tensor) -> float:
    return float((end - start).norm() / start.norm().clamp_min(1e-12))


def loss_fall(run_dir: Path) -> float | None:
    """Mean loss of the last ten logged iterations over the first ten (1: no progress)."""
    losses = [float(row["loss"]) for row in read_metrics(run_dir) if "loss" in row]
    if len(losses) < 20:
        return None
    return (sum(losses[-10:]) / 10) / (sum(losses[:10]) / 10)


def movement(run_dir: Path, data_cache: DataCache) -> list[str]:
    """The row of figures for ``run_dir``."""
    spec = spec_from_run_dir(run_dir)
    data = data_cache.get(spec)
    with tempfile.TemporaryDirectory() as scratch:
        # built from the options as typed: the recorded resolved ones name paths of the machine that ran it
        prior = registry.create("prior", spec.prior, **spec.prior_options)
        matcher = registry.create("matcher", spec.matcher, **spec.matcher_options)
        distiller = Distiller(spec, data, run_dir=scratch, device="cpu", prior=prior, matcher=matcher)
        state = distiller._init_state()  # the exact starting point of the run
        with torch.no_grad():
            start_images = distiller.prior.generate(state, torch.arange(len(distiller.labels)))
    final = torch.load(run_dir / CHECKPOINT_FILE, map_location="cpu", weights_only=True)
    end_images = load_file(run_dir / "synthetic.safetensors")["images"]
    params = "; ".join(
        f"{name} {relative_change(state.params[name].detach(), final['params'][name]):.3f}"
        for name in sorted(state.params)
    )
    fall = loss_fall(run_dir)
    return [
        run_dir.name, spec.matcher, str(spec.iterations), params,
        f"{relative_change(start_images, end_images):.3f}",
        f"{float(start_images.std()):.2f} → {float(end_images.std()):.2f}",
        "—" if fall is None else f"{fall:.3f}",
    ]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="+", type=Path, required=True, help="finished run directories")
    args = parser.parse_args()
    data_cache = DataCache(RunEnv())
    # an unfinished run has no end to compare with
    rows = [movement(run_dir, data_cache) for run_dir in args.runs if (run_dir / "synthetic.safetensors").exists()]
    columns = [
        "run", "matcher", "iterations", "params ‖Δ‖/‖start‖", "images ‖Δ‖/‖start‖", "images std start → end",
        "loss last10/first10",
    ]  # fmt: skip
    note = "images in the dataset's normalised units (real images: std 1); start = the run's own initial state"
    emit("distill_movement", [table(columns, rows, note=note)])


if __name__ == "__main__":
    main()
