"""Where a DM iteration's time goes on Fashion-MNIST: a torch.profiler table over a few iterations
of the real engine, and the eager time of each ConvNet-3 layer on 10 × 256 images (bf16).

``--roofline`` instead sets the iteration's convolutions against this CPU's bf16 throughput: the
FLOPs of ConvNet-3's convolutions on the real batch, a large bf16 matmul's GFLOP/s (what oneDNN
reaches here), each convolution's own bf16 time, and so the least time the real side can take
without changing the protocol.

    python benchmarks/profile_dm.py --ipc 1 --iterations 8 --threads 1
    python benchmarks/profile_dm.py --roofline
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from ddbench_plugins.evaluators.convnet import ConvNet
from record import emit, table

from ddbench import registry
from ddbench.engine.distill import Distiller
from ddbench.engine.dsa import DSA
from ddbench.engine.spec import RunSpec


def profile_iterations(ipc: int, iterations: int, options: dict) -> float:
    data = registry.create("dataset", "fashion-mnist").load()
    spec = RunSpec(matcher="dm", ipc=ipc, iterations=iterations, matcher_options=options)
    stamps: list[float] = []
    schedule = torch.profiler.schedule(wait=2, warmup=1, active=max(1, iterations - 3))  # skip compilation
    with (
        tempfile.TemporaryDirectory() as tmp,
        torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], schedule=schedule) as prof,
    ):

        def on_iteration(it: int, loss: float) -> None:
            stamps.append(time.perf_counter())
            prof.step()

        Distiller(spec, data, Path(tmp), dsa=DSA(), progress=False).run(resume=False, on_iteration=on_iteration)
    per_iteration = [b - a for a, b in zip(stamps, stamps[1:])][2:]
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))
    return statistics.median(per_iteration)


def layer_times(repeats: int) -> dict:
    torch.manual_seed(0)
    net = ConvNet(1, 10, 28).to(memory_format=torch.channels_last).train()
    h = torch.randn(2560, 1, 28, 28).contiguous(memory_format=torch.channels_last)
    rows = []
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        for index, layer in enumerate(net.features):
            layer(h)  # warm-up
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                layer(h)
                times.append(time.perf_counter() - start)
            rows.append([index, type(layer).__name__, "×".join(map(str, h.shape)), f"{statistics.median(times):.3f}"])
            h = layer(h)
    return table(["#", "layer", "input", "median s (eager, bf16)"], rows, title="ConvNet-3 layers on 10 × 256 images")


def _median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up: oneDNN primitive creation, allocator
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def roofline(repeats: int, images: int = 2560) -> None:
    """Convolution FLOPs of one DM real-side embedding against the measured bf16 throughput."""
    size = 4096
    a, b = torch.randn(size, size).bfloat16(), torch.randn(size, size).bfloat16()
    peak = 2 * size**3 / _median_seconds(lambda: a @ b, repeats)
    torch.manual_seed(0)
    net = ConvNet(1, 10, 28).to(memory_format=torch.channels_last).train()
    h = torch.randn(images, 1, 28, 28).contiguous(memory_format=torch.channels_last)
    rows, total_flops, total_s = [], 0.0, 0.0
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        for layer in net.features:
            if isinstance(layer, torch.nn.Conv2d):
                out = layer(h)
                flops = 2 * out.numel() * layer.in_channels * layer.kernel_size[0] * layer.kernel_size[1]
                seconds = _median_seconds(lambda layer=layer, h=h: layer(h), repeats)
                rows.append([f"{layer.in_channels}→{layer.out_channels} at {out.shape[-1]} px", f"{flops / 1e9:.1f}",
                             f"{seconds:.3f}", f"{flops / seconds / 1e9:.0f}"])  # fmt: skip
                total_flops, total_s = total_flops + flops, total_s + seconds
            h = layer(h)
    rows.append(
        ["all convolutions", f"{total_flops / 1e9:.1f}", f"{total_s:.3f}", f"{total_flops / total_s / 1e9:.0f}"]
    )
    columns = [f"convolution ({images} images, bf16 channels-last)", "GFLOP", "median s", "GFLOP/s"]
    note = (
        f"bf16 matmul {size}×{size}: {peak / 1e9:.0f} GFLOP/s on {torch.get_num_threads()} thread(s); least time for "
        f"these convolutions at that rate: {total_flops / peak:.3f} s"
    )
    emit("profile_dm-roofline", [table(columns, rows, note=note)], matmul_flops_per_s=peak, conv_flops=total_flops)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ipc", type=int, default=1)
    parser.add_argument("--iterations", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--dm-opt", action="append", default=["real_precision=bf16"], help="DM option KEY=VALUE")
    parser.add_argument("--roofline", action="store_true", help="only the convolution FLOPs against bf16 throughput")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from ddbench.running.grid import parse_key_values

    if args.roofline:
        roofline(args.repeats)
        return
    seconds = profile_iterations(args.ipc, args.iterations, parse_key_values(args.dm_opt, "--dm-opt"))
    note = f"median s/it under the profiler: {seconds:.3f}; torch threads: {torch.get_num_threads()}"
    emit("profile_dm", [{**layer_times(args.repeats), "note": note}], seconds_per_iteration=seconds)


if __name__ == "__main__":
    main()
