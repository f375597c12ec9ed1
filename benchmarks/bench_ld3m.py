"""LD3M benchmark: ld3m + DM with a trained tiny LDM next to pixel + DM on Fashion-MNIST, and the
paper's ablations at IPC 1 (no Eq. 12 residual, only c learnable, no diffusion) and the reference
code's residual.

Every setting runs the same specs `ddbench run` would (same engine, store, protocol, budget and
seeds): DM with DSA, ``--iterations`` distillation iterations, DC-protocol evaluation of ConvNet for
``--eval-epochs`` epochs over ``--seeds`` seeds, each setting in a fresh process (its own peak RSS).
The model comes from ``ddbench prior train ld3m --dataset fashion-mnist --out DIR``.

    ddbench prior train ld3m --dataset fashion-mnist --out ddbench-out/models/ld3m-fmnist
    python benchmarks/bench_ld3m.py --model-dir ddbench-out/models/ld3m-fmnist --out bench-out/dm-fmnist \\
        --dm-opt real_precision=bf16        # next to bench_dm_fmnist.py's pixel + DM runs (same specs)
    python benchmarks/bench_ld3m.py --model-dir DIR --iterations 2 --eval-epochs 2 --seeds 1 --ipcs 1 \\
        --train-per-class 20 --test-size 200                     # a check that it runs (minutes)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from record import emit, table
from spec_runs import RESULT_HEADERS, result_cells, run_specs

from ddbench.cli.main import parse_key_values

# Paper Tables 6 and 7 (IPC 1): each ablation changes one option of the full method; the last row is
# the reference code's residual (x̂0 blended toward quantize(Z)) in place of the paper's Eq. 12
ABLATIONS = {
    "without Eq. 12 (residual=none)": {"residual": "none"},
    "only c learnable (learn=c)": {"learn": "c"},
    "without diffusion (decoder only)": {"diffusion": "off"},
    "reference code's residual (residual=x0)": {"residual": "x0"},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, required=True, help="a tiny LDM from `ddbench prior train ld3m`")
    parser.add_argument("--out", type=Path, default=Path("bench-out/ld3m"))
    parser.add_argument("--ipcs", default="1,10")
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--eval-epochs", type=int, default=300)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--ablation-ipc", type=int, default=1)
    parser.add_argument("--no-ablations", action="store_true")
    parser.add_argument("--ld3m-opt", action="append", default=[], help="ld3m option KEY=VALUE (repeatable)")
    parser.add_argument("--dm-opt", action="append", default=[], help="DM option KEY=VALUE (repeatable)")
    parser.add_argument(
        "--lr",
        action="append",
        default=[],
        help="ld3m learning rate NAME=VALUE (z, c; repeatable), "
        "e.g. z=1 c=1 for the reference code's DM values instead of the paper's 1e-2",
    )
    parser.add_argument("--train-per-class", type=int, default=None, help="first N training images per class (checks)")
    parser.add_argument("--test-size", type=int, default=None, help="first N test images (checks)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()

    from ddbench_plugins.priors.ld3m.backends import load_backend

    from ddbench.engine.spec import RunEnv, RunSpec
    from ddbench.results.store import ResultsStore, store_path

    load_backend(args.model_dir)  # fail here, with the fix in the message, not in the first child process
    ld3m_opts = {**parse_key_values(args.ld3m_opt, "--ld3m-opt"), "model_dir": str(args.model_dir.resolve())}
    ld3m_lrs = {name: float(value) for name, value in parse_key_values(args.lr, "--lr").items()}
    common = dict(
        dataset="fashion-mnist", matcher="dm", matcher_options=parse_key_values(args.dm_opt, "--dm-opt"),
        iterations=args.iterations, eval_epochs=args.eval_epochs, eval_seeds=tuple(range(args.seeds)), protocol="dc",
        train_per_class=args.train_per_class, test_size=args.test_size,
    )  # fmt: skip

    def ld3m(ipc: int, **changes: str) -> RunSpec:
        return RunSpec(prior="ld3m", ipc=ipc, prior_options={**ld3m_opts, **changes}, lrs=ld3m_lrs, **common)

    rows: list[tuple[RunSpec, str]] = []
    for ipc in (int(i) for i in args.ipcs.split(",")):
        rows += [(RunSpec(prior="pixel", ipc=ipc, **common), "pixel + DM"), (ld3m(ipc), "ld3m + DM")]
    ablations = (
        []
        if args.no_ablations
        else [
            (ld3m(args.ablation_ipc), "ld3m + DM (full)"),
            *[(ld3m(args.ablation_ipc, **opts), label) for label, opts in ABLATIONS.items()],
        ]
    )

    env = RunEnv(out=args.out, device=args.device, progress=sys.stderr.isatty())
    run_specs([spec for spec, _ in rows + ablations], env, args.threads)

    headers = ["IPC", "method", *RESULT_HEADERS]
    memory = (
        "peak CUDA allocation" if args.device.startswith("cuda") else "peak process RSS of the setting's own process"
    )
    lrs = ", ".join(f"{k} {v:g}" for k, v in ld3m_lrs.items()) or "the paper's defaults"
    with ResultsStore(store_path(args.out)) as store:
        tables = [table(headers, [[s.ipc, label, *result_cells(store, s, env)] for s, label in rows],
                        title=f"Fashion-MNIST, DM: pixel vs LD3M ({args.model_dir.name}; ld3m learning rates: {lrs})",
                        note=f"memory: {memory}")]  # fmt: skip
        if ablations:
            tables.append(table(headers, [[s.ipc, label, *result_cells(store, s, env)] for s, label in ablations],
                                title=f"LD3M ablations (IPC {args.ablation_ipc})"))  # fmt: skip
    emit("bench_ld3m", tables)


if __name__ == "__main__":
    main()
