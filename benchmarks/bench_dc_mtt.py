"""Issue benchmark: pixel + DC and pixel + MTT against random real images on Fashion-MNIST.

Two parts, both through the same engine `ddbench run` uses:

``speed``  seconds per iteration and peak memory of DC (IPC 1, fp32 and bf16 real side, eager and
           compiled real side) and of MTT at several ``syn_steps`` (memory grows linearly with the
           unrolled steps). Each setting runs in its own process, so the CPU figure (peak RSS) of
           one does not leak into the next.
``accuracy`` random real vs DC (reference budget: 50 iterations, real init, 300 evaluation epochs, no
           augmentation: protocol ``dc-noaug``; ``--protocol dc`` evaluates with DSA)
           vs MTT (experts built on first use into OUT/cache/experts), mean ± std over seeds.

    python benchmarks/bench_dc_mtt.py speed --out bench-out/dc-mtt
    python benchmarks/bench_dc_mtt.py accuracy --out bench-out/dc-mtt --seeds 3
    python benchmarks/bench_dc_mtt.py accuracy --distill-seeds 0,1,2,3,4   # several draws of the real images
    python benchmarks/bench_dc_mtt.py speed --device cuda --syn-steps 10,20,40,80
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from statistics import median
from typing import Any

import torch
from record import emit, table
from spec_runs import draw_cells

from ddbench.engine.memory import format_bytes
from ddbench.engine.spec import RunEnv, RunSpec
from ddbench.results.store import ResultsStore

#: MTT experts for the benchmark: 4 epochs cover max_start_epoch 2 + expert_epochs 2 (the IPC-1 rule)
MTT_EXPERT_OPTIONS = {"num_experts": 5, "build_experts": True}


def _child(args: argparse.Namespace) -> None:
    """One distillation in this process; prints a JSON line with its timing and peak memory."""
    from ddbench import registry
    from ddbench.engine.distill import Distiller
    from ddbench.engine.dsa import DSA

    spec = RunSpec.from_dict(json.loads(args.spec))
    data = registry.create("dataset", spec.dataset).load().subset(spec.train_per_class)
    distiller = Distiller(spec, data, args.out / "speed" / spec.run_id, device=args.device, dsa=DSA() if spec.dsa else None,
                          checkpoint_every=10**9, progress=False, cache_dir=str(args.out / "cache"))  # fmt: skip
    warm = args.warmup
    if warm:  # untimed iterations first (allocator, oneDNN primitive caches)
        Distiller(dataclass_replace(spec, iterations=warm), data, args.out / "speed" / "warm", device=args.device,
                  dsa=DSA() if spec.dsa else None, progress=False, cache_dir=str(args.out / "cache")).run(resume=False)  # fmt: skip
    stamps: list[float] = []
    result = distiller.run(resume=False, on_iteration=lambda it, loss: stamps.append(time.perf_counter()))
    # steady state: the median iteration after the first (which pays for torch.compile, if any)
    steady = [b - a for a, b in zip(stamps, stamps[1:])] or [result.seconds_per_iteration]
    print(json.dumps({"seconds_per_iteration": median(steady), "run_seconds_per_iteration": result.seconds_per_iteration,
                      "peak_memory_bytes": result.peak_memory_bytes}))  # fmt: skip


def _reference_child(args: argparse.Namespace) -> None:
    """The reference implementation's DC iteration at IPC 1 (``dc_reference.reference_iteration``),
    the baseline for s/it on the same machine."""
    from dc_reference import IMAGE_LR, IMAGE_MOMENTUM, initial_images, reference_iteration

    from ddbench import registry
    from ddbench.engine.memory import PeakMemory
    from ddbench.interfaces import MatchContext

    device = torch.device(args.device)
    data = registry.create("dataset", "fashion-mnist").load()
    gen = torch.Generator().manual_seed(0)
    syn = initial_images(data, 0).to(device).requires_grad_(True)
    opt = torch.optim.SGD([syn], lr=IMAGE_LR, momentum=IMAGE_MOMENTUM)
    context = MatchContext(data=data, ipc=1, device=device, dsa=None)
    times = []
    with PeakMemory(device) as mem:
        for it in range(args.iterations + args.warmup):
            start = time.perf_counter()
            reference_iteration(context, syn, opt, gen)
            if device.type == "cuda":
                torch.cuda.synchronize()
            if it >= args.warmup:
                times.append(time.perf_counter() - start)
    print(json.dumps({"seconds_per_iteration": median(times), "run_seconds_per_iteration": sum(times) / len(times),
                      "peak_memory_bytes": mem.peak_bytes}))  # fmt: skip


def dataclass_replace(spec: RunSpec, **changes: Any) -> RunSpec:
    return RunSpec.from_dict({**spec.to_dict(), **changes})


def _measure(spec: RunSpec | None, args: argparse.Namespace) -> dict[str, Any]:
    if spec is None:  # the reference baseline
        command = [sys.executable, __file__, "reference", "--iterations", str(args.iterations), "--device", args.device,
                   "--warmup", str(args.warmup)]  # fmt: skip
    else:
        command = [sys.executable, __file__, "child", "--spec", json.dumps(spec.to_dict()), "--out", str(args.out),
                   "--device", args.device, "--warmup", str(args.warmup)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{spec.label} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def speed(args: argparse.Namespace) -> None:
    from bench_convnet_embed import calibration_seconds, machine_factor

    calibrations = [calibration_seconds()] if args.calibrate else []
    rows = []
    common = dict(dataset="fashion-mnist", prior="pixel", ipc=1, iterations=args.iterations)
    settings: list[tuple[str, RunSpec | None]] = [("reference DC loop (re-typed)", None)]
    for precision in [p for p in args.precisions.split(",") if p]:
        for compiled in (False, True):  # side by side: the eager real side and the compiled one
            # no DSA: the reference figure is plain DC (DSA adds its augmentation cost on top)
            options = {"real_precision": precision, "compile": compiled}
            label = f"DC ({precision}, no DSA, {'compiled' if compiled else 'eager'})"
            settings.append((label, RunSpec(matcher="dc", matcher_options=options, dsa=False, **common)))
    settings.append(("DC (fp32, DSA)", RunSpec(matcher="dc", **common)))
    for steps in [int(s) for s in args.syn_steps.split(",") if s]:
        options = {**MTT_EXPERT_OPTIONS, "num_experts": 1, "syn_steps": steps}
        # speed and memory do not depend on how good the experts are: a small buffer on a data slice
        settings.append(
            (f"MTT (syn_steps {steps})", RunSpec(matcher="mtt", matcher_options=options, train_per_class=100, **common))
        )
    medians = []
    for label, spec in settings:
        m = _measure(spec, args)
        medians.append(m["seconds_per_iteration"])
        rows.append(
            [
                label,
                f"{m['seconds_per_iteration']:.3f}",
                f"{m['run_seconds_per_iteration']:.3f}",
                format_bytes(m["peak_memory_bytes"]),
            ]
        )
        print(rows[-1], file=sys.stderr, flush=True)
    memory = "peak GPU allocation" if args.device.startswith("cuda") else "peak process RSS"
    headers = ["setting (Fashion-MNIST, IPC 1)", "s/it (median)", "s/it (run mean)", memory]
    if args.calibrate:  # the median scaled to the machine of the figures
        calibrations.append(calibration_seconds())
        factor = machine_factor(calibrations)
        headers.append("median scaled to the issue's machine")
        rows = [row + [f"{spi / factor:.3f}"] for row, spi in zip(rows, medians)]
    emit("bench_dc_mtt-speed", [table(headers, rows, note=_note(args))], calibrations=calibrations)


def accuracy(args: argparse.Namespace) -> None:
    from ddbench.running.pipeline import DataCache

    env = RunEnv(out=args.out, device=args.device, progress=sys.stderr.isatty())
    dc_it, mtt_it = args.dc_iterations, args.mtt_iterations
    draws = [int(s) for s in args.distill_seeds.split(",")]
    cache = DataCache(env)
    rows = []
    with ResultsStore(args.out / "results.sqlite") as store:
        for label, make_spec in _accuracy_rows(args, dc_it, mtt_it):
            rows.append([label, *draw_cells(make_spec, draws, env, store, cache)])
    headers = [
        "Fashion-MNIST IPC 1",
        "accuracy %",
        "draws × eval seeds",
        "mean per draw",
        "s/it (median)",
        "peak memory",
    ]
    emit("bench_dc_mtt-accuracy", [table(headers, rows, note=_note(args))])


def _note(args: argparse.Namespace) -> str:
    return f"torch threads: {torch.get_num_threads()}, device: {args.device}"


def _accuracy_rows(args: argparse.Namespace, dc_it: int, mtt_it: int) -> list[tuple[str, Callable[[int], RunSpec]]]:
    """(label, draw → spec) for each method the accuracy table compares."""
    common = dict(dataset="fashion-mnist", prior="pixel", ipc=1, eval_epochs=args.eval_epochs,
                  eval_seeds=tuple(range(args.seeds)), protocol=args.protocol, train_per_class=args.train_per_class)  # fmt: skip
    rows: list[tuple[str, Callable[[int], RunSpec]]] = [
        ("random real", lambda d: RunSpec(matcher="real", seed=d, **common))
    ]
    for precision in [p for p in args.precisions.split(",") if p]:  # '' = no DC rows
        options: dict[str, Any] = {"real_precision": precision}
        if args.dc_compile != "auto":  # only when set, so specs stored without it are still reused
            options["compile"] = args.dc_compile == "true"
        rows.append((f"pixel + DC ({precision}, no DSA, {dc_it} it)",
                     lambda d, o=options: RunSpec(matcher="dc", iterations=dc_it, dsa=False, matcher_options=o, seed=d, **common)))  # fmt: skip
    if not args.skip_dc_dsa:
        rows.append(
            (f"pixel + DC (fp32, DSA, {dc_it} it)", lambda d: RunSpec(matcher="dc", iterations=dc_it, seed=d, **common))
        )
    for lr in [float(v) for v in args.mtt_image_lrs.split(",") if v]:
        rows.append((f"pixel + MTT (images lr {lr:g}, {mtt_it} it)",
                     lambda d, lr=lr: RunSpec(matcher="mtt", iterations=mtt_it, matcher_options=MTT_EXPERT_OPTIONS, lrs={"images": lr}, seed=d, **common)))  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="part", required=True)
    for name in ("speed", "accuracy", "child", "reference"):
        p = sub.add_parser(name)
        p.add_argument("--out", type=Path, default=Path("bench-out/dc-mtt"))
        p.add_argument("--device", default="cpu")
        p.add_argument("--threads", type=int, default=None)
    sub.choices["speed"].add_argument("--iterations", type=int, default=5)
    sub.choices["speed"].add_argument("--warmup", type=int, default=1)
    sub.choices["speed"].add_argument("--precisions", default="fp32,bf16", help="DC real-side precision(s)")
    sub.choices["speed"].add_argument("--syn-steps", default="10,20,50", help="MTT unrolled steps to measure")
    sub.choices["speed"].add_argument(
        "--calibrate",
        action="store_true",
        help="also scale s/it to the issue's machine (bench_convnet_embed.calibration_seconds)",
    )
    sub.choices["child"].add_argument("--spec", required=True)
    sub.choices["child"].add_argument("--warmup", type=int, default=0)
    sub.choices["reference"].add_argument("--iterations", type=int, default=5)
    sub.choices["reference"].add_argument("--warmup", type=int, default=1)
    acc = sub.choices["accuracy"]
    acc.add_argument("--seeds", type=int, default=3)
    acc.add_argument(
        "--protocol",
        default="dc-noaug",
        help="evaluation protocol: dc-noaug (the reference figure: no augmentation) or dc (DSA)",
    )
    acc.add_argument("--eval-epochs", type=int, default=300)
    acc.add_argument("--dc-iterations", type=int, default=50, help="the reference figure's budget")
    acc.add_argument("--mtt-iterations", type=int, default=200)
    acc.add_argument("--precisions", default="fp32,bf16", help="DC real-side precision(s) ('' = no DC)")
    acc.add_argument("--mtt-image-lrs", default="1000,100", help="pixel learning rate(s) for MTT ('' = no MTT)")
    acc.add_argument(
        "--dc-compile",
        default="auto",
        choices=["auto", "true", "false"],
        help="DC's compile option (auto: DC's own rule)",
    )
    acc.add_argument("--skip-dc-dsa", action="store_true", help="leave out DC distilled with DSA")
    acc.add_argument("--train-per-class", type=int, default=None, help="a training slice (quick checks only)")
    acc.add_argument(
        "--distill-seeds",
        default="0",
        help="spec seeds, i.e. draws of the real images (random real, real init): '0,1,2,3,4'",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    {"speed": speed, "accuracy": accuracy, "child": _child, "reference": _reference_child}[args.part](args)


if __name__ == "__main__":
    main()
