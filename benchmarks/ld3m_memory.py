"""Seconds per iteration and memory of the LD3M prior against T (tiny backend, CPU).

One engine iteration = the split backward (generate all images without a graph, loss, regenerate
each chunk with a graph and push dL/dS through it) with a fixed pixel-target loss, so only the
prior's cost is measured. Two memory figures per setting: the bytes autograd saves for backward
while a chunk is regenerated (exact, independent of other processes) and the peak RSS of the
process (what the machine must hold; on CPU each setting runs in a fresh process). With per-denoiser-call checkpointing the saved bytes stay
roughly flat in T (one latent per step); without it they grow in proportion to T.

    python benchmarks/ld3m_memory.py                 # T ∈ {2, 5, 10, 20, 40}, checkpoint on and off
    python benchmarks/ld3m_memory.py --device cuda --cin256 --res 128   # the paper's model size (random
                                                     # weights); peak = CUDA allocator peak
"""

from __future__ import annotations

import argparse
import multiprocessing
import time

import torch
from ld3m_common import PixelTarget, engine_step, load_data, make_prior
from record import emit, table

from ddbench.engine.memory import PeakMemory, format_bytes
from ddbench.interfaces import chunked


class SavedBytes:
    """Sum of tensor bytes autograd saves for backward inside the block (outer hooks only: tensors
    that a checkpointed region recomputes are not counted, which is the point)."""

    def __init__(self) -> None:
        self.total = 0

    def pack(self, t: torch.Tensor) -> torch.Tensor:
        self.total += t.numel() * t.element_size()
        return t

    def __enter__(self) -> SavedBytes:
        self._ctx = torch.autograd.graph.saved_tensors_hooks(self.pack, lambda t: t)
        self._ctx.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._ctx.__exit__(*exc)


def measure(
    data, T: int, checkpoint: bool, ipc: int, chunk: int, iters: int, device: str, backend
) -> tuple[float, int, int]:
    prior, state, labels, real = make_prior(
        data, ipc, T=T, checkpoint=checkpoint, device=device, backend=backend, class_ids=list(range(data.num_classes))
    )
    matcher = PixelTarget(real)
    engine_step(prior, matcher, state, labels, None, chunk)  # warm-up
    with SavedBytes() as saved:
        first = next(chunked(torch.arange(len(labels), device=labels.device), chunk))
        prior.generate(state, first).sum().backward()
    with PeakMemory(device) as mem:
        start = time.perf_counter()
        for _ in range(iters):
            engine_step(prior, matcher, state, labels, None, chunk)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        seconds = (time.perf_counter() - start) / iters
    return seconds, saved.total, mem.peak_bytes


def measure_isolated(*args) -> tuple[float, int, int]:
    """`measure` in a fresh process: the peak RSS of one setting, not the high-water mark the
    allocator kept from earlier ones (glibc seldom returns freed memory to the system)."""
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        return pool.apply(measure, args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--Ts", default="2,5,10,20,40")
    parser.add_argument("--ipc", type=int, default=1)
    parser.add_argument("--chunk", type=int, default=10)
    parser.add_argument("--iters", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--cin256", action="store_true", help="the cin256-v2 architecture with random weights")
    parser.add_argument("--res", type=int, default=128, help="image resolution with --cin256")
    parser.add_argument("--no-plain", action="store_true", help="skip the runs without checkpointing")
    args = parser.parse_args()
    backend = None
    if args.cin256:
        from ddbench_plugins.priors.ld3m.backends import build_cin256
        from gpu_ld3m import placeholder_data

        data = placeholder_data(args.res)
        with torch.device(args.device):
            backend = build_cin256()
    else:
        data = load_data(train_per_class=8)
    peak_name = "peak GPU" if args.device.startswith("cuda") else "peak RSS"
    modes = (True,) if args.no_plain else (True, False)
    rows = []
    for T in [int(t) for t in args.Ts.split(",")]:
        row: list[object] = [T]
        for checkpoint in modes:
            try:
                run = measure if backend is not None else measure_isolated  # a GPU model is built once
                seconds, saved, peak = run(data, T, checkpoint, args.ipc, args.chunk, args.iters, args.device, backend)
                row += [f"{seconds:.2f}", format_bytes(saved), format_bytes(peak)]
            except torch.cuda.OutOfMemoryError:
                row += ["OOM", "—", "—"]
                torch.cuda.empty_cache()
        rows.append(row)
        print(row, flush=True)
    headers = ["T"]
    for name in ("checkpointed", "no checkpoint")[: len(modes)]:
        headers += [f"s/it ({name})", "saved for backward", peak_name]
    model = f"cin256-v2 architecture, random weights, {args.res} px" if args.cin256 else "tiny backend"
    note = (
        f"data: {data.name}, {data.num_classes} classes × IPC {args.ipc}, chunk {args.chunk}, {model}, "
        f"device {args.device}, torch threads {torch.get_num_threads()}; one engine iteration with a fixed pixel-target loss"
    )
    emit("ld3m_memory", [table(headers, rows, note=note)])


if __name__ == "__main__":
    main()
