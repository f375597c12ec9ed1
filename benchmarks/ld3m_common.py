"""Shared set-up of the CPU LD3M benchmarks: data, a prior on the tiny backend, one engine step."""

from __future__ import annotations

from typing import Any

import torch
from ddbench_plugins.priors.ld3m import LD3MPrior
from torch import Tensor

from ddbench import registry
from ddbench.engine.distill import split_backward_step
from ddbench.engine.dsa import DSA
from ddbench.engine.seeding import derive_seed, generator, seed_everything
from ddbench.interfaces import LatentState, MatchContext, Matcher, Prior, RealData, RealSampler, class_labels

CPU = torch.device("cpu")


def load_data(train_per_class: int = 64) -> RealData:
    """A Fashion-MNIST slice; random 28-px images if the data is not installed."""
    try:
        data = registry.create("dataset", "fashion-mnist").load()
        return data.subset(train_per_class=train_per_class, test_size=100)
    except Exception as err:  # noqa: BLE001 - any failure: fall back, and say so
        print(f"(Fashion-MNIST unavailable: {err}; using random 28-px images)")
        g = torch.Generator().manual_seed(0)
        images = torch.randint(0, 256, (10 * train_per_class, 1, 28, 28), dtype=torch.uint8, generator=g)
        labels = torch.arange(10).repeat_interleave(train_per_class)
        return RealData(
            "random", images, labels, images[:100], labels[:100], [str(i) for i in range(10)], (0.29,), (0.35,)
        )


class PixelTarget(Matcher):
    """A fixed target per sample (real images of its class): isolates the prior's cost from any matcher."""

    name = "pixel-target"

    def __init__(self, target: Tensor) -> None:
        self.target = target

    def loss(self, images: Tensor, labels: Tensor, real: RealSampler) -> Tensor:
        return (images - self.target).square().sum(dim=(1, 2, 3)).mean()


def make_prior(
    data: RealData, ipc: int, seed: int = 0, model_dir: str | None = None, device: str = "cpu", backend=None, **options
) -> tuple[LD3MPrior, LatentState, Tensor, Tensor]:
    """(prior, state, labels, real images used as init); ``backend`` passes a built model."""
    prior = LD3MPrior(model_dir=model_dir, seed=seed, **options)
    prior.setup(data, torch.device(device), backend=backend)
    labels = class_labels(data.num_classes, ipc).to(device)
    gen = torch.Generator().manual_seed(seed)
    real = torch.cat([data.sample_class(c, ipc, gen) for c in range(data.num_classes)]).to(device)
    return prior, prior.init_state(real, labels, gen), labels, real


def engine_step(
    prior: Prior, matcher: Matcher, state: LatentState, labels: Tensor, real: RealSampler | None, chunk: int
) -> float:
    """One split-backward loss evaluation, exactly as the engine runs it; gradients land in state.params."""
    for p in state.params.values():
        p.grad = None
    loss, _ = split_backward_step(prior, matcher, state, labels, real, chunk_size=chunk)
    return loss


def dm_setup(
    data: RealData,
    prior_name: str,
    ipc: int,
    prior_options: dict[str, Any] | None = None,
    dm_options: dict[str, Any] | None = None,
) -> tuple[Prior, Matcher, LatentState, Tensor]:
    """(prior, DM matcher, state, labels) on the CPU, the set initialised from real images with a
    run's seed streams; the prior's first generation with a graph compiles what a run compiles."""
    prior = registry.create("prior", prior_name, **(prior_options or {}))
    prior.setup(data, CPU)
    matcher = registry.create("matcher", "dm", **(dm_options or {}))
    matcher.setup(MatchContext(data=data, ipc=ipc, device=CPU, dsa=DSA()))
    labels = class_labels(data.num_classes, ipc)
    gen = generator(0, "real-init")
    real = torch.cat([data.sample_class(c, ipc, gen) for c in range(data.num_classes)])
    return prior, matcher, prior.init_state(real, labels, gen), labels


def dm_iteration(
    data: RealData, prior: Prior, matcher: Matcher, state: LatentState, labels: Tensor, it: int, chunk: int
) -> float:
    """Iteration ``it`` of a `dm_setup` distillation, seeded and with real batches as a run's (`engine_step`)."""
    seed_everything(derive_seed(0, "iteration", it))
    matcher.begin_iteration(it)
    return engine_step(prior, matcher, state, labels, RealSampler(data, generator(0, "real", it), CPU), chunk)


def parse_variants(text: str) -> list[tuple[str, dict[str, Any]]]:
    """``name=k=v,k=v;name2=...`` → [(name, prior options)]."""
    from ddbench.running.grid import parse_key_values

    variants = []
    for part in filter(None, (p.strip() for p in text.split(";"))):
        name, _, options = part.partition("=")
        pairs = [o for o in options.split(",") if o]
        variants.append((name, parse_key_values(pairs, "--variants") if pairs else {}))
    return variants
