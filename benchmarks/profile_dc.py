"""Where a DC iteration's time goes on Fashion-MNIST (IPC 1, no DSA): the real side's gradients,
the synthetic side's gradients (with their graph), the rest of the loss, and the backward into the
images — timed in-process around the matcher's own methods, median over the iterations after the
first (which pays for compilation).

    python benchmarks/profile_dc.py --real-precision bf16 --compile true
    python benchmarks/profile_dc.py --real-precision fp32 --compile false --iterations 4
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
from ddbench_plugins.matchers.dc import GradientMatching
from tabulate import tabulate

from ddbench import registry
from ddbench.interfaces import MatchContext, RealSampler, class_labels


def _timed(totals: dict[str, float], key: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*args: Any) -> Any:
        start = time.perf_counter()
        out = fn(*args)
        totals[key] += time.perf_counter() - start
        return out

    return wrapper


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real-precision", default="bf16", choices=["fp32", "bf16"])
    parser.add_argument("--compile", default="true", choices=["true", "false"])
    parser.add_argument("--iterations", type=int, default=5)
    args = parser.parse_args()

    data = registry.create("dataset", "fashion-mnist").load()
    matcher = GradientMatching(real_precision=args.real_precision, compile=args.compile == "true")
    matcher.setup(MatchContext(data=data, ipc=1, device=torch.device("cpu"), dsa=None))
    labels = class_labels(data.num_classes, 1)
    images = torch.cat([data.sample_class(c, 1, torch.Generator().manual_seed(c)) for c in range(data.num_classes)])
    images.requires_grad_(True)
    sampler = RealSampler(data, torch.Generator().manual_seed(0), torch.device("cpu"))
    totals = {"real": 0.0, "synthetic": 0.0}
    matcher._real_gradients = _timed(totals, "real", matcher._real_gradients)  # type: ignore[method-assign]
    matcher._synthetic_gradients = _timed(totals, "synthetic", matcher._synthetic_gradients)  # type: ignore[method-assign]
    rows = []
    for it in range(args.iterations):
        torch.manual_seed(it)
        matcher.begin_iteration(it)
        totals.update(real=0.0, synthetic=0.0)
        start = time.perf_counter()
        loss = matcher.loss(images, labels, sampler)
        after_loss = time.perf_counter()
        loss.backward()
        end = time.perf_counter()
        rest = after_loss - start - totals["real"] - totals["synthetic"]
        rows.append({"whole iteration": end - start, "real-side gradients": totals["real"],
                     "synthetic gradients (graph)": totals["synthetic"], "rest of the loss": rest,
                     "backward into the images": end - after_loss})  # fmt: skip
    steady = rows[1:] or rows
    table = [[part, f"{statistics.median(r[part] for r in steady):.3f}"] for part in rows[0]]
    print(tabulate(table, headers=["part (Fashion-MNIST IPC 1, no DSA)", "median s"], tablefmt="github"))
    print(f"\ncommand: python {' '.join(shlex.quote(a) for a in sys.argv)}  (torch threads: {torch.get_num_threads()})")


if __name__ == "__main__":
    main()
