"""Time the hot path of distribution matching: embedding 10 × 256 real images with a fresh ConvNet.

Each repeat re-initialises the network in place (as DM does every iteration) and embeds 2560
Fashion-MNIST-sized images without grad, in several numeric modes and (on CPU) with the layers run
over chunks of samples (as DM's ``real_chunk`` does). Prints the median per mode;
``--train-step`` also times forward + backward of one training batch.

    python benchmarks/bench_convnet_embed.py --repeats 5 --device cpu

``calibration_seconds`` times the issue's machine calibration ("fp32 whole batch": 2.3 s there), which
``bench_dm_fmnist.py --calibrate`` and ``bench_dc_mtt.py speed --calibrate`` use to scale their s/it.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from contextlib import nullcontext

import torch
from ddbench_plugins.evaluators.convnet import ConvNet
from record import emit, table
from torch import Tensor


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_embed(
    net: ConvNet,
    images: Tensor,
    repeats: int,
    autocast: torch.dtype | None,
    device: torch.device,
    chunk: int | None = None,
) -> list[float]:
    """Seconds per embed of ``images`` (in chunks of ``chunk`` samples), one reset of the weights before each timed call."""
    parts = images.split(chunk) if chunk else (images,)
    ctx: Callable[[], object] = (
        (lambda: torch.autocast(device.type, dtype=autocast)) if autocast is not None else nullcontext
    )
    times = []
    with torch.no_grad():
        with ctx():
            [net.embed(p) for p in parts]  # warm-up (allocator, kernels)
        for _ in range(repeats):
            net.reset_parameters()
            _sync(device)
            start = time.perf_counter()
            with ctx():
                torch.cat([net.embed(p) for p in parts])
            _sync(device)
            times.append(time.perf_counter() - start)
    return times


#: the issue's calibration on its machine: 10 × 256 Fashion-MNIST images embedded by ConvNet-3 in fp32
ISSUE_FP32_EMBED_SECONDS = 2.3


def calibration_seconds(repeats: int = 5) -> float:
    """The issue's calibration here: median seconds of the fp32 whole-batch embedding of 10 × 256
    28-px images by a ConvNet-3 on the CPU (fresh weights before each call)."""
    torch.manual_seed(0)
    images = torch.randn(2560, 1, 28, 28)
    return statistics.median(time_embed(ConvNet(1, 10, 28).train(), images, repeats, None, torch.device("cpu")))


def machine_factor(calibrations: list[float]) -> float:
    """How much slower this machine is than the issue's (mean calibration / 2.3 s); prints the figures."""
    factor = statistics.mean(calibrations) / ISSUE_FP32_EMBED_SECONDS
    print(f"calibration (fp32 embed of 2560 images): {' / '.join(f'{c:.2f}' for c in calibrations)} s here (before / after), "
          f"{ISSUE_FP32_EMBED_SECONDS} s on the issue's machine: this machine is {factor:.2f}× slower")  # fmt: skip
    return factor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--batch", type=int, default=256, help="real images per class")
    parser.add_argument("--resolution", type=int, default=28)
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    parser.add_argument("--train-step", action="store_true", help="also time forward+backward of a batch of 256")
    parser.add_argument("--chunks", type=int, nargs="*", default=[16, 64], help="chunk sizes to time (CPU)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    torch.manual_seed(0)
    n = args.classes * args.batch
    images = torch.randn(n, args.channels, args.resolution, args.resolution, device=device)
    net = ConvNet(args.channels, args.classes, args.resolution).to(device).train()
    modes = [
        ("fp32 whole batch", False, None, None),
        ("fp32 channels_last", True, None, None),
        ("bf16 autocast", False, torch.bfloat16, None),
        ("bf16 autocast channels_last", True, torch.bfloat16, None),
    ]
    if device.type == "cpu":  # chunking only applies on CPU
        modes += [(f"fp32 chunks of {c}", False, None, c) for c in args.chunks]
        modes += [(f"fp32 channels_last chunks of {c}", True, None, c) for c in args.chunks]
    rows = []
    baseline = None
    for name, channels_last, autocast, chunk in modes:
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        net = net.to(memory_format=fmt)
        x = images.contiguous(memory_format=fmt)
        median = statistics.median(time_embed(net, x, args.repeats, autocast, device, chunk))
        baseline = baseline or median
        rows.append([name, f"{median * 1000:.1f}", f"{n / median:.0f}", f"{baseline / median:.2f}×"])
    title = (
        f"ConvNet-{net.depth} embed of {n} images {args.channels}×{args.resolution}×{args.resolution} "
        f"on {device} ({torch.get_num_threads()} threads), median of {args.repeats}"
    )
    tables = [table(["mode", "ms", "images/s", "speed-up"], rows, title=title)]
    if args.train_step:
        tables.append(train_step_table(args, device))
    emit("bench_convnet_embed", tables)


def train_step_table(args: argparse.Namespace, device: torch.device) -> dict:
    """Forward + backward of one training batch of 256 (the evaluation loop's step), fp32."""
    torch.manual_seed(0)
    x = torch.randn(256, args.channels, args.resolution, args.resolution, device=device)
    net = ConvNet(args.channels, args.classes, args.resolution).to(device).train()
    rows = []
    for chunk in [None] + (args.chunks if device.type == "cpu" else []):
        parts = x.split(chunk) if chunk else (x,)
        times = []
        for i in range(args.repeats + 1):
            _sync(device)
            start = time.perf_counter()
            sum(net(p).sum() for p in parts).backward()
            _sync(device)
            if i:  # the first is a warm-up
                times.append(time.perf_counter() - start)
        rows.append([f"chunks of {chunk}" if chunk else "whole batch", f"{statistics.median(times) * 1000:.1f}"])
    return table(["mode", "ms"], rows, title=f"Training step (forward + backward, batch 256) on {device}")


if __name__ == "__main__":
    main()
