"""GLaD benchmark: glad + DM next to pixel + DM and ld3m + DM on Fashion-MNIST, and the effect of `layer`.

Every setting runs the same specs `ddbench run` would (same engine, store, protocol, budget and
seeds): DM with DSA, real batch 256 per class, ``--iterations`` distillation iterations, DC-protocol
evaluation of ConvNet for ``--eval-epochs`` epochs over ``--seeds`` seeds. The generative priors use
their CPU backends — randomly initialised ``tiny`` generators (GLaD's "Random" generator, paper
Table 3) unless ``--glad-opt weights=…`` / ``--ld3m-opt model_dir=…`` point at trained ones.

Each setting distils in a fresh process, so the peak-memory column (process RSS on the CPU, allocator
peak on CUDA) belongs to that setting alone. Prints Markdown tables with accuracy (mean ± std),
seconds per iteration and peak memory, then the command that produced them.

    python benchmarks/bench_glad.py --out bench-out/glad                       # IPC 1 and 10, layer sweep at IPC 1
    python benchmarks/bench_glad.py --ipcs 1 --layers -1,0,5 --seeds 5
    python benchmarks/bench_glad.py --out bench-out/dm-fmnist --dm-opt real_precision=bf16 --priors pixel,glad --layers=-1,2
        # next to bench_dm_fmnist.py's pixel + DM runs (same specs, reused from its store)
    python benchmarks/bench_glad.py --iterations 2 --eval-epochs 2 --seeds 1 --ipcs 1 --layers 0 \\
        --train-per-class 20 --test-size 200                                   # a check that it runs (minutes)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from record import emit, table
from spec_runs import RESULT_HEADERS, result_cells, run_specs

from ddbench.cli.main import parse_key_values


def _row(store: Any, spec: Any, label: str, env: Any) -> list[Any]:
    return [spec.ipc, label, spec.prior_options.get("layer", "—"), *result_cells(store, spec, env)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench-out/glad"))
    parser.add_argument("--ipcs", default="1,10")
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--eval-epochs", type=int, default=300)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--layer", type=int, default=2, help="glad layer of the main comparison")
    parser.add_argument("--layers", default="-1,0,1,2,3,4,5", help="glad layers of the sweep ('' = no sweep)")
    parser.add_argument("--layer-ipc", type=int, default=1, help="IPC of the layer sweep")
    parser.add_argument("--glad-opt", action="append", default=[], help="glad option KEY=VALUE (repeatable)")
    parser.add_argument("--ld3m-opt", action="append", default=[], help="ld3m option KEY=VALUE (repeatable)")
    parser.add_argument(
        "--dm-opt",
        action="append",
        default=[],
        help="DM option KEY=VALUE (repeatable), e.g. real_precision=bf16 to reuse bench_dm_fmnist.py's pixel runs in the same --out",
    )
    parser.add_argument("--priors", default="pixel,glad,ld3m", help="priors of the main comparison")
    parser.add_argument("--train-per-class", type=int, default=None, help="first N training images per class (checks)")
    parser.add_argument("--test-size", type=int, default=None, help="first N test images (checks)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()

    from ddbench.engine.spec import RunEnv, RunSpec
    from ddbench.results.store import ResultsStore, store_path

    ipcs = [int(i) for i in args.ipcs.split(",")]
    layers = [int(i) for i in args.layers.split(",") if i.strip()]
    glad_opts, ld3m_opts = parse_key_values(args.glad_opt, "--glad-opt"), parse_key_values(args.ld3m_opt, "--ld3m-opt")
    priors = [p for p in args.priors.split(",") if p]
    common = dict(
        dataset="fashion-mnist", matcher="dm", matcher_options=parse_key_values(args.dm_opt, "--dm-opt"),
        iterations=args.iterations, eval_epochs=args.eval_epochs, eval_seeds=tuple(range(args.seeds)), protocol="dc",
        train_per_class=args.train_per_class, test_size=args.test_size,
    )  # fmt: skip

    def glad(ipc: int, layer: int) -> RunSpec:
        return RunSpec(prior="glad", ipc=ipc, prior_options={**glad_opts, "layer": layer}, **common)

    main_rows: list[tuple[RunSpec, str]] = []
    for ipc in ipcs:
        by_prior = {
            "pixel": RunSpec(prior="pixel", ipc=ipc, **common),
            "glad": glad(ipc, args.layer),
            "ld3m": RunSpec(prior="ld3m", ipc=ipc, prior_options=ld3m_opts, **common),
        }
        main_rows += [(by_prior[p], f"{p} + DM") for p in priors]
    sweep = [(glad(args.layer_ipc, layer), "glad + DM") for layer in layers]

    env = RunEnv(out=args.out, device=args.device, progress=sys.stderr.isatty())
    # the sweep's `--layer` run is the main one: run_specs runs each spec once
    run_specs([spec for spec, _ in main_rows + sweep], env, args.threads)

    memory = (
        "peak CUDA allocation" if args.device.startswith("cuda") else "peak process RSS of the setting's own process"
    )
    with ResultsStore(store_path(args.out)) as store:
        headers = ["IPC", "method", "layer", *RESULT_HEADERS]
        tables = [table(headers, [_row(store, s, label, env) for s, label in main_rows],
                        title="Fashion-MNIST, DM: pixel vs GLaD vs LD3M", note=f"memory: {memory}")]  # fmt: skip
        if sweep:
            tables.append(table(headers, [_row(store, s, label, env) for s, label in sweep],
                                title=f"GLaD layer sweep (IPC {args.layer_ipc}; -1 = W+ only)"))  # fmt: skip
    emit("bench_glad", tables)


if __name__ == "__main__":
    main()
