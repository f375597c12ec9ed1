"""LD3M on the paper's model size: seconds per distillation iteration and peak GPU memory.

Builds the cin256-v2 architecture (VQ-f4 autoencoder, UNet 192 × 1-2-3-5 with cross-attention 512,
1001-row class embedder) with random weights and runs DM and DC iterations at IPC 1 (10 classes)
through the real matcher plugins and the engine's split backward, on real-shaped tensors:
128 px (latents 32², T = 10) and 256 px (latents 64², T = 20). Each figure is printed as soon as
it is measured; an out-of-memory setting is reported and the next one runs.

    python benchmarks/gpu_ld3m.py                      # on the GPU (88 s on one H100, 2026-11-27)
    python benchmarks/gpu_ld3m.py --device cpu --small # smoke test: same code path, tiny sizes
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback

import torch
from ddbench_plugins.priors.ld3m.backends import CIN256_SCHEDULER, build_cin256, build_ldm, tiny_components
from record import emit, table
from torch import Tensor

from ddbench import registry
from ddbench.interfaces import LatentState, MatchContext, Matcher, Prior, RealData, RealSampler, chunked, class_labels

NUM_CLASSES = 10
IPC = 1
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # ImageNet statistics

try:  # the engine's split backward (generate without graph → dL/dS → regenerate chunks with graph)
    from ddbench.engine.distill import split_backward_step
except ImportError:  # pragma: no cover - only while the engine is missing

    def split_backward_step(
        prior: Prior, matcher: Matcher, state: LatentState, labels: Tensor, real: RealSampler, chunk_size: int
    ) -> tuple[float, Tensor]:
        with torch.no_grad():
            idx = torch.arange(len(labels), device=labels.device)
            images = torch.cat([prior.generate(state, i) for i in chunked(idx, chunk_size)])
        images.requires_grad_(True)
        loss = matcher.loss(images, labels, real)
        loss.backward()
        for i in chunked(torch.arange(len(labels), device=labels.device), chunk_size):
            prior.generate(state, i).backward(images.grad[i])
        return float(loss.detach()), images.detach()


class DeviceRealSampler(RealSampler):
    """Real-shaped batches made directly on the device (uniform pixels, normalised like real data),
    so host-to-device copies of a 256-px dataset do not dominate the timing."""

    def _images(self, n: int) -> Tensor:
        d = self.data
        x = torch.randint(0, 256, (n, d.channels, d.resolution, d.resolution), device=self.device, dtype=torch.uint8)
        mean = torch.tensor(d.mean, device=self.device).view(1, -1, 1, 1)
        std = torch.tensor(d.std, device=self.device).view(1, -1, 1, 1)
        return (x.float() / 255 - mean) / std

    def class_batch(self, label: int, n: int) -> Tensor:
        return self._images(n)

    def balanced_batch(self, n: int) -> tuple[Tensor, Tensor]:
        labels = torch.randint(0, self.data.num_classes, (n,), device=self.device)
        return self._images(n), labels


def placeholder_data(resolution: int, per_class: int = 2) -> RealData:
    """A RealData with the real shapes (networks and the prior read channels/resolution/classes from it)."""
    images = torch.randint(0, 256, (NUM_CLASSES * per_class, 3, resolution, resolution), dtype=torch.uint8)
    labels = torch.arange(NUM_CLASSES).repeat_interleave(per_class)
    names = [f"class{i}" for i in range(NUM_CLASSES)]
    return RealData("benchmark", images, labels, images[:per_class], labels[:per_class], names, MEAN, STD)


def small_backend():
    """cin256-shaped but narrow (CPU smoke test): VQ-f4, 4-level UNet with cross-attention, 1001 rows."""
    parts = tiny_components(3, 1000, base_channels=8, embed_dim=32)
    parts["vqvae"].update(
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(8, 16, 16),
    )
    parts["unet"].update(
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        block_out_channels=(8, 16, 16, 24),
        attention_head_dim=1,
    )
    parts["scheduler"] = dict(CIN256_SCHEDULER)
    return build_ldm(parts)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_setting(
    backend, matcher_name: str, resolution: int, T: int, device: torch.device, iters: int, dsa, batch_real: int | None
) -> tuple[float, int | None]:
    """Seconds per iteration (after one warm-up iteration) and peak device memory of the iterations."""
    from ddbench_plugins.priors.ld3m import LD3MPrior

    data = placeholder_data(resolution)
    prior = LD3MPrior(backend="cin256", T=T, class_ids=list(range(0, 1000, 100)))
    prior.setup(data, device, backend=backend)
    labels = class_labels(NUM_CLASSES, IPC).to(device)
    gen = torch.Generator().manual_seed(0)
    real_sampler = DeviceRealSampler(data, gen, device)
    state = prior.init_state(real_sampler.class_batch(0, len(labels)), labels, gen)

    options: dict = {"batch_real": batch_real} if batch_real else {}
    if matcher_name == "dc":  # eager real side, as the recorded figures (LD3M dominates the time anyway)
        options["compile"] = False
    matcher = registry.create("matcher", matcher_name, **options)
    matcher.setup(MatchContext(data=data, ipc=IPC, device=device, dsa=dsa))
    lrs = prior.learning_rates(matcher.lr_scale)
    groups = [{"params": [state.params[k]], "lr": lrs[k]} for k in sorted(state.params)] + matcher.parameters()
    opt = torch.optim.SGD(groups, lr=groups[0]["lr"], momentum=0.5)

    def iteration(it: int) -> None:
        torch.manual_seed(it)  # the engine seeds the global RNG per iteration
        matcher.begin_iteration(it)
        for _ in range(matcher.steps_per_iteration):
            opt.zero_grad(set_to_none=True)
            _, images = split_backward_step(prior, matcher, state, labels, real_sampler, chunk_size=10)
            opt.step()
            matcher.after_step(images, labels, real_sampler)

    iteration(0)  # warm-up: kernels, allocator, cuDNN autotuning
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for it in range(1, iters + 1):
        iteration(it)
    sync(device)
    seconds = (time.perf_counter() - start) / iters
    peak = int(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else None
    return seconds, peak


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--small", action="store_true", help="narrow model and 32/64 px (CPU smoke test)")
    parser.add_argument("--iters", type=int, default=2, help="timed iterations per setting (after 1 warm-up)")
    parser.add_argument("--matchers", default="dm,dc")
    parser.add_argument("--budget-s", type=float, default=270.0, help="skip settings once this much time has passed")
    parser.add_argument("--batch-real", type=int, default=None, help="real images per class (matcher default: 256)")
    parser.add_argument("--retry-batch-real", type=int, default=64, help="batch_real of the retry after an OOM")
    parser.add_argument("--no-dsa", action="store_true")
    args = parser.parse_args(argv)

    t0 = time.perf_counter()
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device {name} | torch {torch.__version__} | fp32 | IPC {IPC} × {NUM_CLASSES} classes", flush=True)

    for matcher_name in args.matchers.split(","):
        registry.get_plugin_class("matcher", matcher_name)  # fail now, naming what is installed
    dsa = None
    if not args.no_dsa:
        from ddbench.engine.dsa import DSA

        dsa = DSA()

    with torch.device(device):  # initialise the 450M random weights on the device itself
        backend = small_backend() if args.small else build_cin256()
    n_params = sum(p.numel() for p in backend.parameters()) / 1e6
    print(f"model built in {time.perf_counter() - t0:.1f}s: {n_params:.1f}M parameters", flush=True)

    settings = [(32, 3), (32, 2)] if args.small else [(128, 10), (256, 20)]
    batch_real = args.batch_real or (16 if args.small else None)
    print(f"{'matcher':8} {'px':>4} {'T':>3} {'s/iter':>8} {'peak GPU memory':>16}", flush=True)
    failures = 0
    rows: list[list[str]] = []
    for resolution, T in settings:
        for matcher_name in args.matchers.split(","):
            label = f"{matcher_name:8} {resolution:4d} {T:3d}"
            if time.perf_counter() - t0 > args.budget_s:
                print(f"{label} skipped (time budget {args.budget_s:.0f}s spent)", flush=True)
                rows.append([matcher_name, str(resolution), str(T), "skipped (time budget)", "—"])
                continue
            # on OOM, retry once with fewer real images per class: the matcher's real-side forward
            # (not the prior) is what grows with batch_real
            for attempt_real in (batch_real, args.retry_batch_real):
                note = f" (batch_real {attempt_real})" if attempt_real else ""
                try:
                    seconds, peak = run_setting(
                        backend, matcher_name, resolution, T, device, args.iters, dsa, attempt_real
                    )
                    mem = f"{peak / 2**30:13.2f} GiB" if peak is not None else f"{'n/a (cpu)':>16}"
                    print(f"{label} {seconds:8.2f} {mem}{note}", flush=True)
                    rows.append([matcher_name, str(resolution), str(T), f"{seconds:.2f}", mem.strip() + note])
                    break
                except torch.cuda.OutOfMemoryError as err:
                    failures += 1
                    print(f"{label} OUT OF MEMORY{note}: {str(err).splitlines()[0][:160]}", flush=True)
                    rows.append([matcher_name, str(resolution), str(T), "out of memory", note.strip() or "—"])
                except Exception:  # noqa: BLE001 - report and go on to the next setting
                    failures += 1
                    print(f"{label} FAILED{note}:\n{traceback.format_exc()}", flush=True)
                    rows.append([matcher_name, str(resolution), str(T), "failed", note.strip() or "—"])
                    break
                finally:
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
    total = time.perf_counter() - t0
    print(f"total {total:.1f}s", flush=True)
    model = "narrow cin256-shaped model (--small)" if args.small else "cin256-v2 architecture, random weights"
    note = (
        f"{model}: {n_params:.1f} M parameters; IPC {IPC} × {NUM_CLASSES} classes, fp32, "
        f"{'no DSA' if args.no_dsa else 'DSA'}; {args.iters} timed iterations after 1 warm-up; {total:.0f} s in all"
    )
    columns = ["matcher", "px", "T", "s / iteration", "peak GPU memory"]
    emit("gpu_ld3m", [table(columns, rows, note=note)])
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
