"""Does a distilled set's contrast decide its unseen-architecture score? Stored sets, rescaled.

DM and DC match through ConvNet-3, whose instance norm makes the match blind to an image's
contrast, so pixel and GLaD sets are free to grow far beyond the data's range (table4-fmnist:
pixel + DM about 4x the data's standard deviation, GLaD + DM about 100x), while LD3M's decoder keeps
its images in the data's range. An evaluator without normalisation layers (AlexNet) trained with
a small learning rate for a fixed number of epochs learns faster from high-contrast inputs. This
script scores stored synthetic sets (run directories of `ddbench run`) as they are and multiplied
to given standard deviations (in the dataset's normalised units; the data itself: 1), under one
protocol, so that the effect of contrast is measured rather than guessed.

    python benchmarks/contrast_eval.py --runs bench-out/table4-fmnist/runs/fashion-mnist/pixel-dm-ipc1-2d445d3f7cb819cc \\
        bench-out/table4-fmnist/runs/fashion-mnist/ld3m-dm-ipc1-daa5f433e402d5aa --stds native,1,4.2 \\
        --evaluators alexnet --seeds 2
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from record import emit, table
from safetensors.torch import load_file

import ddbench


def scaled(images: torch.Tensor, target: str) -> tuple[torch.Tensor, float]:
    """``images`` multiplied to standard deviation ``target`` ("native": unchanged) and that std."""
    std = float(images.std())
    if target == "native":
        return images, std
    return images * (float(target) / std), float(target)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="+", type=Path, required=True, help="run directories of `ddbench run`")
    parser.add_argument("--stds", default="native,1,4.2", help="'native' and/or standard deviations to scale to")
    parser.add_argument("--evaluators", default="alexnet")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--protocol", default="glad")
    parser.add_argument("--eval-epochs", type=int, default=300)
    parser.add_argument("--test-size", type=int, default=2000)
    parser.add_argument("--dataset", default="fashion-mnist")
    args = parser.parse_args()
    evaluators = args.evaluators.split(",")
    rows = []
    for run_dir in args.runs:
        tensors = load_file(run_dir / "synthetic.safetensors")
        images, labels = tensors["images"], tensors["labels"]
        native = float(images.std())
        for target in args.stds.split(","):
            shown, std = scaled(images, target)
            frame = ddbench.evaluate_set(
                shown, labels, dataset=args.dataset, evaluators=evaluators, seeds=args.seeds,
                protocol=args.protocol, eval_epochs=args.eval_epochs, test_size=args.test_size,
                range="normalized", verbose=False,
            )  # fmt: skip
            for evaluator, part in frame.groupby("evaluator", sort=False):
                accs = [100 * a for a in part.sort_values("seed")["accuracy"]]
                rows.append([
                    run_dir.name, f"{native:.2f}", f"{std:.2f}" + (" (native)" if target == "native" else ""),
                    evaluator, " ".join(f"{a:.1f}" for a in accs), f"{sum(accs) / len(accs):.1f}",
                ])  # fmt: skip
    note = (
        f"{args.dataset}, {args.protocol} protocol at {args.eval_epochs} epochs, first {args.test_size} test images, "
        f"seeds 0..{args.seeds - 1}; std in the dataset's normalised units (real images: 1)"
    )
    columns = ["run", "native std", "scored at std", "evaluator", "accuracy % per seed", "mean"]
    emit("contrast_eval", [table(columns, rows, note=note)])


if __name__ == "__main__":
    main()
