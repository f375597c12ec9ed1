"""LD3M's faster settings against float32 eager: as accurate? Fashion-MNIST, DM, the shipped LDM.

The runs share everything but their ld3m options (``--variants``, e.g. ``precision`` and
``compile``) — the spec, the seed, the real images Z starts from, the real batches and the
evaluation seeds — and go through `ddbench run`'s path (`spec_runs.run_specs`, each run in a
process of its own, one after the other, so their s/it compare). The table gives each one's
accuracy (mean ± std over the evaluation seeds), its s/it, and how far its distilled images ended
from the first variant's (relative L2 over the whole set).

    python benchmarks/ld3m_precision.py --ipc 1 --iterations 500 --seeds 5
    python benchmarks/ld3m_precision.py --ipc 10 --variants "fp32 eager=precision=fp32,compile=false;default="
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ld3m_common import parse_variants
from record import emit, table
from spec_runs import RESULT_HEADERS, result_cells, run_specs
from torch import Tensor

from ddbench.engine.spec import RunEnv, RunSpec
from ddbench.engine.synthetic import SyntheticSet
from ddbench.results.store import ResultsStore, store_path

DEFAULT_VARIANTS = "fp32=precision=fp32;bf16=precision=bf16"


def images_of(store: ResultsStore, spec: RunSpec) -> Tensor:
    return SyntheticSet.load(store.get_run(spec.run_id)["run_dir"]).images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench-out/ld3m-precision"))
    parser.add_argument("--ipc", type=int, default=1)
    parser.add_argument("--iterations", type=int, default=500)
    parser.add_argument("--eval-epochs", type=int, default=300)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument(
        "--variants", default=DEFAULT_VARIANTS, help="NAME=k=v,k=v;… ld3m option sets; the first is the reference"
    )
    args = parser.parse_args()
    variants = parse_variants(args.variants)

    specs = [
        RunSpec(
            dataset="fashion-mnist", prior="ld3m", matcher="dm", ipc=args.ipc, iterations=args.iterations,
            prior_options=options, eval_epochs=args.eval_epochs,
            eval_seeds=tuple(range(args.seeds)), protocol="dc",
        )
        for _, options in variants
    ]  # fmt: skip
    env = RunEnv(out=args.out, device="cpu", progress=sys.stderr.isatty())
    resolved = run_specs(specs, env, args.threads)
    with ResultsStore(store_path(args.out)) as store:
        reference = images_of(store, resolved[0])
        rows = []
        for (name, _), spec in zip(variants, resolved, strict=True):
            images = images_of(store, spec)
            apart = float((images - reference).norm() / reference.norm())
            rows.append([name, *result_cells(store, spec, env), f"{apart:.4f}"])
    emit(
        "ld3m_precision",
        [
            table(
                ["ld3m options", *RESULT_HEADERS, f"images apart from {variants[0][0]} (relative L2)"],
                rows,
                title=f"LD3M + DM, Fashion-MNIST, IPC {args.ipc}, shipped LDM, {args.iterations} iterations",
                note=f"ConvNet-3 accuracy over {args.seeds} evaluation seeds (DC protocol, {args.eval_epochs} epochs); "
                f"s/it of each run in a process of its own, one after the other; variants {variants}",
            )
        ],
    )


if __name__ == "__main__":
    main()
