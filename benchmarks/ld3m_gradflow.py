"""Gradient flow into Z with and without Eq. 12 (paper Fig. 7), tiny backend on CPU.

For each T, distils a Fashion-MNIST slice for a few DM iterations (the real matcher, random
ConvNet per iteration, through the engine's split backward) once with the paper's residual
(``residual=mean``, Eq. 12) and once without (``residual=none``, Eq. 10), and reports the mean
per-sample ‖∂L/∂Z‖, its signal-to-noise ratio over iterations (mean / std) and the ratio
with / without Eq. 12.

    python benchmarks/ld3m_gradflow.py                    # T ∈ {2, 5, 10, 20, 40}, 4 iterations
    python benchmarks/ld3m_gradflow.py --model-dir DIR    # a trained tiny model instead of random weights
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from ld3m_common import engine_step, load_data, make_prior
from tabulate import tabulate

from ddbench import registry
from ddbench.interfaces import MatchContext, RealSampler


def grad_norms(
    data, T: int, residual: str, iters: int, ipc: int, model_dir: str | None, batch_real: int
) -> list[float]:
    prior, state, labels, _ = make_prior(data, ipc, model_dir=model_dir, T=T, residual=residual)
    matcher = registry.create("matcher", "dm", batch_real=batch_real)
    matcher.setup(MatchContext(data=data, ipc=ipc, device=torch.device("cpu"), dsa=None))
    opt = torch.optim.SGD(list(state.params.values()), lr=prior.learning_rates(matcher.lr_scale)["z"], momentum=0.5)
    real = RealSampler(data, torch.Generator().manual_seed(1), torch.device("cpu"))
    norms = []
    for it in range(iters):
        torch.manual_seed(it)  # same networks and real batches for both residual modes
        matcher.begin_iteration(it)
        engine_step(prior, matcher, state, labels, real, chunk=10)
        norms.append(float(state.params["z"].grad.flatten(1).norm(dim=1).mean()))
        opt.step()
    return norms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--Ts", default="2,5,10,20,40")
    parser.add_argument("--iters", type=int, default=4)
    parser.add_argument("--ipc", type=int, default=1)
    parser.add_argument("--batch-real", type=int, default=64)
    parser.add_argument("--model-dir", default=None)
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    data = load_data()
    rows = []
    for T in [int(t) for t in args.Ts.split(",")]:
        start = time.perf_counter()
        stats = {}
        for residual in ("mean", "none"):
            norms = grad_norms(data, T, residual, args.iters, args.ipc, args.model_dir, args.batch_real)
            mean = statistics.fmean(norms)
            snr = mean / statistics.stdev(norms) if len(norms) > 1 and statistics.stdev(norms) > 0 else float("inf")
            stats[residual] = (mean, snr)
        rows.append(
            [
                T,
                f"{stats['mean'][0]:.3e}",
                f"{stats['mean'][1]:.2f}",
                f"{stats['none'][0]:.3e}",
                f"{stats['none'][1]:.2f}",
                f"{stats['mean'][0] / stats['none'][0]:.2f}×",
                f"{time.perf_counter() - start:.0f}s",
            ]
        )
        print(rows[-1], flush=True)
    headers = ["T", "‖∂L/∂Z‖ Eq.12", "SNR Eq.12", "‖∂L/∂Z‖ Eq.10", "SNR Eq.10", "ratio", "time"]
    print(tabulate(rows, headers=headers, tablefmt="github"))
    print(
        f"(data: {data.name}, IPC {args.ipc}, DM with batch_real {args.batch_real}, {args.iters} iterations, "
        f"model: {args.model_dir or 'tiny, random weights'})"
    )


if __name__ == "__main__":
    main()
