"""Where an LD3M + DM iteration's time goes on Fashion-MNIST, stage by stage, through the real engine.

Each iteration runs `ddbench.engine.distill.split_backward_step` exactly as a run does; the prior's
noise draws, its guided denoiser calls (both guidance halves in one batch, compiled or not) and
decoder calls and the matcher's loss are wrapped with clocks, and ``Tensor.backward`` with a flag,
so every call is attributed to a stage:

- ``noise``: the per-sample reparameterised noise of q(z_T | Z) and of the reverse steps;
- ``denoiser (no grad)`` / ``decoder (no grad)``: the pass that makes the images for the loss;
- ``DM loss`` forward and ``loss backward`` (the matcher's backward into the images);
- ``denoiser (graph)`` / ``decoder (graph)``: the forward of the chunked regeneration with a graph;
- ``denoiser recompute``: checkpointed denoiser calls re-run inside backward;
- ``generator backward (rest)``: the backward through the generator less the recomputation.

Several prior settings run side by side, interleaved iteration by iteration in one process, so
the machine's drift hits every setting alike; the table shows medians.

    python benchmarks/profile_ld3m.py --ipc 10 --iterations 4
    python benchmarks/profile_ld3m.py --ipc 10 --variants "split=chunk=10;one-pass="

A variant's ``chunk`` sets the engine's chunk size for it (default: the prior's `generation_chunk`),
``attention=diffusers`` gives its UNet diffusers' own attention processor in place of ddbench's
(`ddbench_plugins.priors.ld3m.attention`) and ``upsample=diffusers`` its upsamplers diffusers' own
`Upsample2D` in place of `ddbench_plugins.priors.ld3m.upsample`'s (``upsample=traced-layout``: its
own, repeating in the layout the input was traced in when compiled), ``guidance=batched`` runs
both guidance halves through the whole UNet in place of sharing its class-free start
(`ddbench_plugins.priors.ld3m.shared_prefix`; ``guidance=shared-resnet`` ends that start before the
first transformer, as it first did), ``group_norm=torch`` gives the LDM torch's own
GroupNorm in place of `ddbench_plugins.priors.ld3m.group_norm`'s per-channel sums, and
``autoencoder_attention=diffusers`` its autoencoder diffusers' own attention processor,
``wrapper=python`` compiles its generator with inductor's Python wrapper in place of the C++ one
(`CPU_COMPILE_OPTIONS`), and ``linear=addmm`` gives its UNet torch's Linear (the bias inside the
product) in place of `ddbench_plugins.priors.ld3m.linear`'s; its other keys are ld3m options. ``--pixel`` adds pixel + DM on the same images and real batches,
interleaved with the others, for the ratio the LD3M speed target is stated in. ``--flops`` counts
each variant's matrix-product and convolution floating-point operations in one more, untimed
iteration (torch's FlopCounterMode, forward and backward), and adds the rate they ran at: how much
of a time ratio is the arithmetic itself; and a table of the UNet's blocks' shares of one forward
call's arithmetic (the first variant's UNet).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any
from unittest import mock

import torch
from ddbench_plugins.priors.ld3m.group_norm import ChannelSumGroupNorm
from ddbench_plugins.priors.ld3m.linear import BiasAfterLinear
from ddbench_plugins.priors.ld3m.prior import CPU_COMPILE_OPTIONS
from ddbench_plugins.priors.ld3m.upsample import NearestUpsample2D
from diffusers.models.attention_processor import Attention, AttnProcessor2_0
from diffusers.models.upsampling import Upsample2D
from ld3m_common import dm_iteration, dm_setup, parse_variants
from record import emit, table
from torch.utils.flop_counter import FlopCounterMode

from ddbench import registry
from ddbench.engine.allocator import tune_allocator

STAGES = (
    "noise",
    "denoiser (no grad)",
    "decoder (no grad)",
    "DM loss",
    "loss backward",
    "denoiser (graph)",
    "decoder (graph)",
    "denoiser recompute",
    "generator backward (rest)",
    "other",
)


class StageClock:
    """Accumulates wall seconds per stage for one iteration."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = collections.defaultdict(float)
        self.backward_depth = 0
        self.backward_target = ""

    @contextlib.contextmanager
    def timed(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] += time.perf_counter() - start

    def wrap(
        self, fn: Callable[..., Any], no_grad: str, graph: str, recompute: str | None = None
    ) -> Callable[..., Any]:
        def timed_call(*args: Any, **kwargs: Any) -> Any:
            if self.backward_depth and recompute:
                stage = recompute
            else:
                stage = graph if torch.is_grad_enabled() else no_grad
            with self.timed(stage):
                return fn(*args, **kwargs)

        return timed_call


def instrument(prior: Any, matcher: Any, clock: StageClock) -> None:
    # the clocks wrap the prior's calls into its (possibly compiled) guided denoiser and decoder,
    # never code inside a compiled region
    prior.guided_eps = clock.wrap(prior.guided_eps, "denoiser (no grad)", "denoiser (graph)", "denoiser recompute")
    prior._decode = clock.wrap(prior._decode, "decoder (no grad)", "decoder (graph)")
    prior.noise = clock.wrap(prior.noise, "noise", "noise")
    matcher.loss = clock.wrap(matcher.loss, "DM loss", "DM loss")


@contextlib.contextmanager
def backward_clock(clock: StageClock) -> Iterator[None]:
    """Attribute ``Tensor.backward`` time: the first call is the loss's, later ones the generator's."""
    original = torch.Tensor.backward
    calls = {"n": 0}

    def backward(self: torch.Tensor, *args: Any, **kwargs: Any) -> None:
        stage = "loss backward" if calls["n"] == 0 else "generator backward (rest)"
        calls["n"] += 1
        clock.backward_depth += 1
        before = clock.seconds["denoiser recompute"]
        start = time.perf_counter()
        try:
            original(self, *args, **kwargs)
        finally:
            clock.backward_depth -= 1
            recomputed = clock.seconds["denoiser recompute"] - before
            clock.seconds[stage] += time.perf_counter() - start - recomputed

    torch.Tensor.backward = backward  # type: ignore[method-assign]
    try:
        yield
    finally:
        torch.Tensor.backward = original  # type: ignore[method-assign]


def unet_block_shares(unet: torch.nn.Module) -> dict[str, float]:
    """Each top-level block's share of one forward call's FLOP (backward attribution by module is unreliable)."""
    config = unet.config
    z = torch.randn(2, config.in_channels, config.sample_size, config.sample_size)
    context = torch.randn(2, 1, config.cross_attention_dim)
    with torch.no_grad(), FlopCounterMode(display=False, depth=3) as counter:
        unet(z, torch.full((2,), 500), encoder_hidden_states=context)
    counts = {name: sum(ops.values()) for name, ops in counter.get_flop_counts().items()}
    root = type(unet).__name__
    shares = {}
    for name, flop in counts.items():
        parts = name.removeprefix(f"{root}.").split(".")
        # a child that was called, or an item of a container child that never is (a ModuleList)
        if name.startswith(f"{root}.") and (len(parts) == 1 or len(parts) == 2 and f"{root}.{parts[0]}" not in counts):
            shares[".".join(parts)] = flop / counts[root]
    return shares


def modules_of(model: torch.nn.Module, kind: type) -> list[torch.nn.Module]:
    """``model``'s modules of ``kind`` (a list: the caller may change their class)."""
    return [module for module in model.modules() if isinstance(module, kind)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ipc", type=int, default=10)
    parser.add_argument("--iterations", type=int, default=4, help="timed iterations per variant (after one warm-up)")
    parser.add_argument(
        "--chunk", type=int, default=None, help="the engine's chunk size (default: the prior's generation_chunk)"
    )
    parser.add_argument("--variants", default="default=", help="NAME=k=v,k=v;… ld3m option sets to compare")
    parser.add_argument(
        "--dm-opt", action="append", default=[], help="DM option KEY=VALUE (default: DM's defaults, as a run uses)"
    )
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--train-per-class", type=int, default=1000)
    parser.add_argument("--pixel", action="store_true", help="also time pixel + DM, interleaved")
    parser.add_argument("--flops", action="store_true", help="also count each variant's GFLOP per iteration")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    tune_allocator()  # as a run's Distiller does (DDBENCH_ALLOCATOR=system: glibc as it comes)
    from ddbench.running.grid import parse_key_values

    dm_options = parse_key_values(args.dm_opt, "--dm-opt")
    data = (
        registry.create("dataset", "fashion-mnist").load().subset(train_per_class=args.train_per_class, test_size=100)
    )
    variants = parse_variants(args.variants)
    built = {}
    for name, options in variants:
        options = dict(options)
        chunk = int(options.pop("chunk", 0)) or args.chunk
        attention = options.pop("attention", "ddbench")
        upsample = options.pop("upsample", "ddbench")
        guidance = options.pop("guidance", "shared")
        group_norm = options.pop("group_norm", "ddbench")
        autoencoder_attention = options.pop("autoencoder_attention", "ddbench")
        wrapper = options.pop("wrapper", "cpp")
        linear = options.pop("linear", "ddbench")
        # the options are read when init_state (in build) compiles the generator
        with mock.patch.dict(CPU_COMPILE_OPTIONS, {"cpp_wrapper": wrapper == "cpp"}):
            prior, matcher, state, labels = dm_setup(data, "ld3m", args.ipc, options, dm_options)
        backend = prior.backend
        if guidance == "batched":
            backend.shares_prefix = False  # only ever switched off: not every UNet supports it
        backend.shares_self_attention = guidance != "shared-resnet"
        if attention == "diffusers":
            backend.unet.set_attn_processor(AttnProcessor2_0())
        for module in modules_of(backend, NearestUpsample2D):
            if upsample == "diffusers":
                module.__class__ = Upsample2D
            elif upsample == "traced-layout":
                module.channels_last_when_compiled = False
        if autoencoder_attention == "diffusers":
            for module in modules_of(backend.vqvae, Attention):
                module.set_processor(AttnProcessor2_0())
        if linear == "addmm":
            for module in modules_of(backend, BiasAfterLinear):
                module.__class__ = torch.nn.Linear
        if group_norm == "torch":
            for module in modules_of(backend, ChannelSumGroupNorm):
                module.__class__ = torch.nn.GroupNorm
        clock = StageClock()
        instrument(prior, matcher, clock)
        built[name] = (prior, matcher, state, labels, clock, chunk or prior.generation_chunk())
    if args.pixel:
        prior, matcher, state, labels = dm_setup(data, "pixel", args.ipc, dm_options=dm_options)
        clock = StageClock()
        matcher.loss = clock.wrap(matcher.loss, "DM loss", "DM loss")
        built["pixel + DM"] = (prior, matcher, state, labels, clock, 10)
        variants.append(("pixel + DM", {}))
    per_variant: dict[str, list[dict[str, float]]] = {name: [] for name, _ in variants}

    def step(name: str, it: int) -> None:
        prior, matcher, state, labels, clock, chunk = built[name]
        clock.seconds.clear()
        with backward_clock(clock):
            dm_iteration(data, prior, matcher, state, labels, it, chunk)

    for it in range(args.iterations + 1):  # iteration 0 warms up (and compiles)
        for name, _ in variants:
            clock = built[name][4]
            start = time.perf_counter()
            step(name, it)
            total = time.perf_counter() - start
            stages = dict(clock.seconds)
            stages["other"] = total - sum(stages.values())
            stages["total"] = total
            if it:
                per_variant[name].append(stages)
            print(f"iteration {it} {name}: {total:.2f} s", flush=True)
    headers = ["stage"] + [name for name, _ in variants]
    rows = []
    for stage in (*STAGES, "total"):
        rows.append(
            [stage] + [f"{statistics.median(s.get(stage, 0.0) for s in per_variant[name]):.3f}" for name, _ in variants]
        )
    tables = []
    if args.flops:
        gflop = {}
        for name, _ in variants:
            with FlopCounterMode(display=False) as counter:
                step(name, args.iterations + 1)
            gflop[name] = counter.get_total_flops() / 1e9
        rows.append(["GFLOP per iteration"] + [f"{gflop[name]:.1f}" for name, _ in variants])
        rows.append(
            ["GFLOP/s"]
            + [f"{gflop[name] / statistics.median(s['total'] for s in per_variant[name]):.1f}" for name, _ in variants]
        )
        first = variants[0][0]
        shares = unet_block_shares(built[first][0].backend.unet)
        tables.append(
            table(
                ["UNet block", "share of a forward call's FLOP"],
                [[block, f"{share:.3f}"] for block, share in shares.items()],
                title=f"The UNet's arithmetic by block ({first})",
            )
        )
    chunks = {name: built[name][-1] for name, _ in variants}
    note = (
        f"median s over {args.iterations} iterations after a warm-up; LD3M + DM, Fashion-MNIST, IPC {args.ipc}, "
        f"chunks {chunks}, DM {dm_options}, torch threads {torch.get_num_threads()}; variants: {variants}"
    )
    emit("profile_ld3m", [table(headers, rows, note=note), *tables])


if __name__ == "__main__":
    main()
