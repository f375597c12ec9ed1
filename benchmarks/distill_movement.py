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
import json
import tempfile
from pathlib import Path

import torch
from record import emit, table
from safetensors.torch import load_file

import ddbench
from ddbench import registry
from ddbench.engine.distill import CHECKPOINT_FILE, Distiller
from ddbench.engine.spec import RunEnv
from ddbench.running.pipeline import DataCache, spec_from_run_dir


def relative_change(start: torch.Tensor, end: torch.Tensor) -> float:
    return float((end - start).norm() / start.norm().clamp_min(1e-12))


def loss_fall(run_dir: Path) -> float | None:
    """Mean loss of the last ten logged iterations over the first ten (1: no progress)."""
    losses = []
    with open(run_dir / "metrics.jsonl", encoding="utf-8") as lines:
        for line in lines:
            row = json.loads(line)
            if "loss" in row:
                losses.append(float(row["loss"]))
    if len(losses) < 20:
        return None
    return (sum(losses[-10:]) / 10) / (sum(losses[:10]) / 10)


def movement(run_dir: Path, data_cache: DataCache) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """The row of figures for ``run_dir``, and its starting images and labels."""
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
    row = [
        run_dir.name, spec.matcher, str(spec.iterations), params,
        f"{relative_change(start_images, end_images):.3f}",
        f"{float(start_images.std()):.2f} → {float(end_images.std()):.2f}",
        "—" if fall is None else f"{fall:.3f}",
    ]  # fmt: skip
    return row, start_images, distiller.labels.cpu()


def start_scores(
    run_dir: Path, images: torch.Tensor, labels: torch.Tensor, evaluators: list[str], seeds: int
) -> list[list[str]]:
    """The starting set scored under the run's own evaluation protocol."""
    spec = spec_from_run_dir(run_dir)
    frame = ddbench.evaluate_set(
        images, labels, dataset=spec.dataset, evaluators=evaluators, seeds=seeds, protocol=spec.protocol,
        eval_epochs=spec.eval_epochs, test_size=spec.test_size, res=spec.res, range="normalized", verbose=False,
    )  # fmt: skip
    rows = []
    for evaluator, part in frame.groupby("evaluator", sort=False):
        accs = [100 * a for a in part.sort_values("seed")["accuracy"]]
        mean = sum(accs) / len(accs)
        std = (sum((a - mean) ** 2 for a in accs) / len(accs)) ** 0.5
        rows.append([run_dir.name, evaluator, " ".join(f"{a:.1f}" for a in accs), f"{mean:.1f} ± {std:.1f}"])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="+", type=Path, required=True, help="finished run directories")
    parser.add_argument(
        "--score-start", default="", metavar="EVALUATORS",
        help="also score each starting set with these evaluators (comma-separated), under the run's protocol",
    )  # fmt: skip
    parser.add_argument("--seeds", type=int, default=3, help="evaluation seeds for --score-start")
    args = parser.parse_args()
    data_cache = DataCache(RunEnv())
    evaluators = [e for e in args.score_start.split(",") if e]
    rows, scored = [], []
    for run_dir in args.runs:
        if not (run_dir / "synthetic.safetensors").exists():
            continue  # not finished: no end to compare with
        row, images, labels = movement(run_dir, data_cache)
        rows.append(row)
        if evaluators:
            scored += start_scores(run_dir, images, labels, evaluators, args.seeds)
    columns = [
        "run", "matcher", "iterations", "params ‖Δ‖/‖start‖", "images ‖Δ‖/‖start‖", "images std start → end",
        "loss last10/first10",
    ]  # fmt: skip
    note = "images in the dataset's normalised units (real images: std 1); start = the run's own initial state"
    tables = [table(columns, rows, note=note)]
    if scored:
        score_note = (
            f"the starting set (iteration 0) of each run, scored under its run's protocol, seeds 0..{args.seeds - 1}"
        )
        tables.append(table(["run", "evaluator", "accuracy % per seed", "mean ± std"], scored, note=score_note))
    emit("distill_movement", tables)


if __name__ == "__main__":
    main()
