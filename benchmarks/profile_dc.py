"""Where a DC iteration's time goes on Fashion-MNIST, for ddbench's DC and the re-typed reference
loop side by side: per outer step the real side's gradients, the synthetic side's gradients (with
their graph), the rest of the loss and the backward into the images (with the image step), and per
inner loop the network's training on the synthetic set.

An iteration is ``outer`` outer steps with an inner loop between each two (``dc.loop_schedule``:
(1, 1) at IPC 1, (10, 50) at IPC 10). Every outer step does the same work, and so does every inner
loop, so ``--outer-steps k`` times k outer steps, each followed by an inner loop, and the table
gives ``outer × step + (outer − 1) × inner loop`` as the estimated iteration (``--outer-steps`` 0:
whole iterations). Variants and the reference run interleaved in one process stage by stage (each
outer step of every variant in turn, then each inner epoch of every variant in turn), so a shared
machine's drifting load falls on all alike, after one untimed warm-up each (compilation); figures
are medians over outer steps. Timed in-process around the matcher's own methods. The inner loop
does not use ``batch_real``, so with several ``--batch-real`` values it runs for the first only.

    taskset -c 1 python benchmarks/profile_dc.py --ipc 10 --batch-real 32 --outer-steps 1 --repeats 3 \\
        --variants 'fp32 eager=inner_compile:false;bf16=real_precision:bf16,compile:true,inner_precision:bf16'
    python benchmarks/profile_dc.py --ipc 1 --no-dsa --batch-real 256 --variants 'bf16=real_precision:bf16,compile:true'
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
from dc_reference import (
    IMAGE_LR,
    IMAGE_MOMENTUM,
    NET_LR,
    parse_variants,
    reference_inner_loop,
    reference_outer_step,
)
from ddbench_plugins.matchers.dc import GradientMatching, loop_schedule
from record import emit, table

from ddbench import registry
from ddbench.engine.dsa import DSA
from ddbench.interfaces import MatchContext, RealData, RealSampler, class_labels

STAGES = ("real", "synthetic", "rest of the loss", "backward + image step")
REFERENCE = "reference (re-typed)"


def _timed(totals: dict[str, float], key: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*args: Any) -> Any:
        start = time.perf_counter()
        out = fn(*args)
        totals[key] += time.perf_counter() - start
        return out

    return wrapper


def _initial(data: RealData, ipc: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    return torch.cat([data.sample_class(c, ipc, gen) for c in range(data.num_classes)])


class DDBenchRun:
    """ddbench's DC driven as the engine drives it, its stages timed."""

    def __init__(self, data: RealData, ipc: int, dsa: DSA | None, options: dict[str, Any]) -> None:
        self.matcher = GradientMatching(**options)
        self.matcher.setup(MatchContext(data=data, ipc=ipc, device=torch.device("cpu"), dsa=dsa))
        self.data, self.labels = data, class_labels(data.num_classes, ipc)
        self.images = _initial(data, ipc).requires_grad_(True)
        self.opt = torch.optim.SGD([self.images], lr=IMAGE_LR, momentum=IMAGE_MOMENTUM)
        self.totals = dict.fromkeys(("real", "synthetic"), 0.0)
        m = self.matcher
        m._real_gradients = _timed(self.totals, "real", m._real_gradients)  # type: ignore[method-assign]
        m._synthetic_gradients = _timed(self.totals, "synthetic", m._synthetic_gradients)  # type: ignore[method-assign]

    def begin(self, rep: int) -> None:
        torch.manual_seed(rep)
        self.matcher.begin_iteration(rep)
        self.sampler = RealSampler(self.data, torch.Generator().manual_seed(rep), torch.device("cpu"))

    def outer_step(self) -> dict[str, float]:
        self.totals.update(real=0.0, synthetic=0.0)
        start = time.perf_counter()
        loss = self.matcher.loss(self.images, self.labels, self.sampler)
        after_loss = time.perf_counter()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return {"real": self.totals["real"], "synthetic": self.totals["synthetic"],
                "rest of the loss": after_loss - start - self.totals["real"] - self.totals["synthetic"],
                "backward + image step": time.perf_counter() - after_loss}  # fmt: skip

    def inner_epoch(self) -> None:
        # what after_step runs between outer steps, one epoch at a time
        self.matcher.train_network(self.images.detach(), self.labels, 1)


class ReferenceRun:
    """The re-typed reference loop (``dc_reference``), its stages timed."""

    def __init__(self, data: RealData, ipc: int, dsa: DSA | None, batch_real: int) -> None:
        self.context = MatchContext(data=data, ipc=ipc, device=torch.device("cpu"), dsa=dsa)
        self.data, self.dsa, self.batch_real = data, dsa, batch_real
        self.labels = class_labels(data.num_classes, ipc)
        self.syn = _initial(data, ipc).requires_grad_(True)
        self.opt = torch.optim.SGD([self.syn], lr=IMAGE_LR, momentum=IMAGE_MOMENTUM)

    def begin(self, rep: int) -> None:
        torch.manual_seed(rep)
        self.net = self.context.build_network("convnet").train()
        self.net_opt = torch.optim.SGD(self.net.parameters(), lr=NET_LR)
        self.gen = torch.Generator().manual_seed(rep)

    def outer_step(self) -> dict[str, float]:
        times: dict[str, float] = {}
        start = time.perf_counter()
        reference_outer_step(self.net, self.data, self.syn, self.opt, self.gen, self.batch_real, self.dsa, times)
        row = {"real": times["real"], "synthetic": times["synthetic"], "backward + image step": times["backward"]}
        row["rest of the loss"] = time.perf_counter() - start - sum(row.values())
        return row

    def inner_epoch(self) -> None:
        reference_inner_loop(self.net, self.net_opt, self.syn, self.labels, 1, dsa=self.dsa)


def run_interleaved(
    runs: dict[str, DDBenchRun | ReferenceRun],
    rep: int,
    outer_steps: int,
    loops: tuple[int, int],
    inner_from: dict[str, str],
) -> dict[str, list[dict[str, float]]]:
    """Iteration ``rep`` of every run, interleaved stage by stage: each outer step of every run in
    turn, then each epoch of the inner loop of every run in turn, so that the machine's drifting
    load falls on all of them alike. ``outer_steps`` (0: all) outer steps, each followed by its inner
    loop where the iteration has one (not after its last step). The inner loop does not depend on
    ``batch_real``: a run named in ``inner_from`` takes the inner-loop time of the run named there."""
    outer_loop, inner_loop = loops
    rows: dict[str, list[dict[str, float]]] = {name: [] for name in runs}
    for run in runs.values():
        run.begin(rep)
    for step in range(outer_steps or outer_loop):
        for name, run in runs.items():
            rows[name].append(run.outer_step())
        inner = dict.fromkeys(runs, 0.0)
        trains = step < outer_loop - 1
        for _ in range(inner_loop if trains else 0):
            for name, run in runs.items():
                if name in inner_from:
                    continue
                start = time.perf_counter()
                run.inner_epoch()
                inner[name] += time.perf_counter() - start
        for name in runs:
            rows[name][-1]["inner loop"] = inner[inner_from.get(name, name)] if trains else float("nan")
            print(f"rep {rep} step {step} {name}: {rows[name][-1]}", file=sys.stderr, flush=True)
    return rows


def _median(values: list[float]) -> float:
    finite = [v for v in values if v == v]
    return statistics.median(finite) if finite else 0.0


COLUMNS = ["variant", "batch_real", "outer step", "real", "synthetic", "backward + image step", "inner loop",
           "estimated s/it", "× reference"]  # fmt: skip


def stage_table(
    medians: dict[str, dict[str, float]], ipc: int, outer: int, dsa: bool, note: str | None = None
) -> dict[str, Any]:
    """The figure table of ``medians`` ({'label @ batch_real': stage medians}): per variant and
    batch_real the outer step and its stages, the inner loop, the estimated iteration (``outer ×
    step + (outer − 1) × inner loop``) and its ratio to the same batch_real's reference."""
    rows = []
    for name, fig in medians.items():
        label, _, batch_real = name.rpartition(" @ ")
        ratio = fig["× reference"]
        rows.append([label, batch_real, f"{fig['outer step']:.2f}", f"{fig['real']:.2f}", f"{fig['synthetic']:.2f}",
                     f"{fig['backward + image step']:.2f}", f"{fig['inner loop']:.2f}" if outer > 1 else "—",
                     f"{spi:.1f}" if (spi := fig["iteration (estimated)"]) >= 10 else f"{spi:.2f}",
                     f"{ratio:.2f}×" if ratio else "—"])  # fmt: skip
    title = (
        f"Fashion-MNIST IPC {ipc} ({outer} outer steps), {'DSA' if dsa else 'no DSA'}: median seconds; "
        f"estimated s/it = {outer} × outer step + {outer - 1} × inner loop"
    )
    parts = ["outer step = real + synthetic + the rest of the loss + backward + image step."]
    if len({row[1] for row in rows}) > 1:
        parts.append("The inner loop does not use batch_real: timed at the first batch_real, shown for each.")
    return table(COLUMNS, rows, title=title, note=" ".join([*parts, note] if note else parts))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ipc", type=int, default=10)
    parser.add_argument("--batch-real", default="32", help="real images per class, comma-separated")
    parser.add_argument(
        "--variants",
        default="default",
        help="ddbench DC option sets: 'label=key:value,key:value;label2=…' ('default': no options)",
    )
    parser.add_argument("--no-reference", action="store_true", help="leave out the re-typed reference loop")
    parser.add_argument("--no-dsa", action="store_true", help="without DSA (the suite distils with DSA)")
    parser.add_argument("--outer-steps", type=int, default=1, help="outer steps timed per repetition (0: all)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--train-per-class", type=int, default=1000, help="as the fmnist-cpu suite")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = registry.create("dataset", "fashion-mnist").load().subset(args.train_per_class)
    dsa = None if args.no_dsa else DSA()
    outer, inner = loop_schedule(args.ipc)
    runs: dict[str, DDBenchRun | ReferenceRun] = {}
    inner_from: dict[str, str] = {}
    batches = [int(b) for b in args.batch_real.split(",")]
    for batch_real in batches:
        if not args.no_reference:
            runs[f"{REFERENCE} @ {batch_real}"] = ReferenceRun(data, args.ipc, dsa, batch_real)
        for label, options in parse_variants(args.variants).items():
            runs[f"{label} @ {batch_real}"] = DDBenchRun(data, args.ipc, dsa, {"batch_real": batch_real, **options})
        if batch_real != batches[0]:
            labels = ([REFERENCE] if not args.no_reference else []) + list(parse_variants(args.variants))
            inner_from.update({f"{label} @ {batch_real}": f"{label} @ {batches[0]}" for label in labels})
    # one process holds every variant's compiled copies of ConvNet.forward: beyond the default limit
    # of 8 compiled entries per function, dynamo would silently run the later ones eager
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 4 * len(runs))
    for name, run in runs.items():  # untimed: compilation, allocator, oneDNN primitive caches
        start = time.perf_counter()
        run.begin(10**6)
        run.outer_step()
        if name not in inner_from:
            run.inner_epoch()
            run.inner_epoch()
        print(f"warm-up {name}: {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)
    samples: dict[str, list[dict[str, float]]] = {name: [] for name in runs}
    for rep in range(args.repeats):
        for name, rows in run_interleaved(runs, rep, args.outer_steps, (outer, inner), inner_from).items():
            samples[name] += rows
    figures: dict[str, dict[str, float]] = {}
    for name, rows in samples.items():
        fig = {stage: _median([r[stage] for r in rows]) for stage in (*STAGES, "inner loop")}
        fig["outer step"] = sum(fig[s] for s in STAGES)
        fig["iteration (estimated)"] = outer * fig["outer step"] + (outer - 1) * fig["inner loop"]
        fig["samples"] = len(rows)
        figures[name] = fig
    for name, fig in figures.items():
        reference = figures.get(f"{REFERENCE} @ {name.rpartition(' @ ')[2]}")
        fig["× reference"] = fig["iteration (estimated)"] / reference["iteration (estimated)"] if reference else 0.0
    note = (
        f"torch threads: {torch.get_num_threads()}; medians of {len(next(iter(samples.values())))} outer steps per row"
    )
    emit(
        f"profile_dc_ipc{args.ipc}",
        [stage_table(figures, args.ipc, outer, dsa is not None, note)],
        ipc=args.ipc,
        dsa=dsa is not None,
        samples=samples,
        medians=figures,
    )


if __name__ == "__main__":
    main()
