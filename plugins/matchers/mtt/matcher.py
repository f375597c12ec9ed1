"""MTT — matching training trajectories (Cazenavette et al., 2022).

Each iteration samples an expert trajectory θ* and a start epoch s < ``max_start_epoch``; a
functional copy of the network (``torch.func.functional_call`` on one flat parameter vector) starts
at θ*_s and takes ``syn_steps`` differentiable SGD steps on synthetic minibatches with a learnable
learning rate α; the loss is ``‖θ̂ − θ*_{s+E}‖² / ‖θ*_s − θ*_{s+E}‖²`` with E = ``expert_epochs``.
Gradients reach the images and α. The learned α is saved with the synthetic set
(``evaluation_overrides``) and evaluation trains with it, as the MTT protocol does.

Memory: only the current parameter vector is held by Python; each step's graph (activations of one
minibatch and the update θ_k → θ_{k+1}) is what the backward needs, so peak memory grows linearly
with ``syn_steps`` (``benchmarks/bench_dc_mtt.py`` measures it).

Defaults by dataset (``default_hyperparameters``), for options left as None:

- resolution ≥ 64 px (the ImageNet subsets): syn_steps 20, expert_epochs 2, max_start_epoch 5 at
  IPC 1 and 10 above, lr_lr 1e-6 (protocols.md; GLaD's ImageNet settings lie in 2–3 / 5–10).
- smaller images (CIFAR-10, Fashion-MNIST): the MTT paper's CIFAR-10 table — IPC 1: syn_steps 50,
  expert_epochs 2, max_start_epoch 2, lr_lr 1e-7; IPC 2–49: 30, 2, 20, 1e-5; IPC ≥ 50: 30, 2, 40, 1e-5.

Experts need ``max_start_epoch + expert_epochs`` epochs. A run trains the buffer's missing experts
before distilling and keeps them in its cache (``ddbench experts`` builds one ahead, resumably);
with ``build_experts=False`` a missing buffer is an error naming that command.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from ddbench_plugins.matchers.mtt.experts import (
    ExpertBuffer,
    ExpertConfig,
    ExpertTrajectory,
    default_root,
    missing_buffer_message,
)
from torch import Tensor, nn
from torch.func import functional_call

from ddbench.errors import DataNotFoundError, DDBenchError, InvalidOptionError
from ddbench.interfaces import IdentityContext, MatchContext, Matcher, Preparation, RealSampler

LR_MOMENTUM = 0.5  # SGD momentum of the learnable lr, as the reference
#: expert training for sweep estimates: one-core seconds per real training image per epoch
#: (ConvNet-3, batch 256, DSA, 28 px), measured on one thread of a quiet machine (record expert-cost)
EXPERT_SECONDS_PER_IMAGE_EPOCH = 0.0041


class LearningRateDivergedError(DDBenchError, FloatingPointError):
    """MTT's learnable learning rate became negative, zero or non-finite."""


def default_hyperparameters(resolution: int, ipc: int) -> dict[str, float]:
    """syn_steps, expert_epochs, max_start_epoch and lr_lr for a dataset (rule in the module docstring)."""
    if resolution >= 64:
        return {"syn_steps": 20, "expert_epochs": 2, "max_start_epoch": 5 if ipc == 1 else 10, "lr_lr": 1e-6}
    if ipc == 1:
        return {"syn_steps": 50, "expert_epochs": 2, "max_start_epoch": 2, "lr_lr": 1e-7}
    if ipc < 50:
        return {"syn_steps": 30, "expert_epochs": 2, "max_start_epoch": 20, "lr_lr": 1e-5}
    return {"syn_steps": 30, "expert_epochs": 2, "max_start_epoch": 40, "lr_lr": 1e-5}


def _draw(high: int) -> int:
    # from the global RNG, which the engine seeds per iteration (reproducible, resumable)
    return int(torch.randint(0, high, ()).item())


class TrajectoryMatching(Matcher):
    """Trajectory matching; None options take ``default_hyperparameters``.

    Args:
        expert_epochs: expert epochs between the start and the target parameters.
        max_start_epoch: the start epoch is drawn uniformly from ``[0, max_start_epoch)``.
        syn_steps: differentiable student steps per iteration.
        lr_teacher: the experts' learning rate, and the initial value of the learnable lr.
        lr_lr: learning rate of the learnable lr (SGD, momentum 0.5).
        batch_syn: synthetic images per student step (None: the whole set).
        net: evaluator architecture of the experts and the student.
        num_experts: experts in the buffer (the first ``num_experts`` are sampled from).
        expert_train_epochs: epochs per expert (None: ``max_start_epoch + expert_epochs``); a cached
            buffer with more epochs of the same configuration is reused.
        expert_dir: buffer root (None: ``<run cache>/experts``).
        build_experts: train the buffer's missing experts as part of the run (the default), or
            raise an error naming the ``ddbench experts`` command that builds them.
        expert_seed: seed of the expert buffer (expert i is seeded from (expert_seed, i)).
    """

    name = "mtt"
    description = "Trajectory matching: unrolled student SGD steps against expert trajectories, learnable lr."
    version = 1
    display_order = 2
    lr_scale = 1e4  # protocols.md: MTT's rates are 10⁴ times DC's for every prior
    # measured as `Matcher.seconds_per_iteration` says, on a one-expert buffer built for it (record
    # iteration-cost-mtt)
    seconds_per_iteration = (6.4, 38.0)
    cost_option = ("syn_steps", 50, 0.95)
    #: where the expert buffer lives and whether a missing one is trained: the same experts either way
    neutral_options = ("expert_dir", "build_experts")
    #: the full expert buffer (10 experts of max_start_epoch + expert_epochs epochs on the whole
    #: training set) takes hours of a CPU, which cutting iterations and epochs leaves: the presets
    #: take fmnist-cpu's smaller buffer and student (2 experts of 4 epochs, 10 steps), smoke less
    budget_options = {
        "smoke": {"num_experts": 1, "max_start_epoch": 1, "expert_epochs": 1, "syn_steps": 5},
        "demo": {"num_experts": 2, "max_start_epoch": 2, "expert_epochs": 2, "syn_steps": 10},
    }

    def __init__(
        self,
        expert_epochs: int | None = None,
        max_start_epoch: int | None = None,
        syn_steps: int | None = None,
        lr_teacher: float = 0.01,
        lr_lr: float | None = None,
        batch_syn: int | None = None,
        net: str = "convnet",
        num_experts: int = 10,
        expert_train_epochs: int | None = None,
        expert_dir: str | None = None,
        build_experts: bool = True,
        expert_seed: int = 0,
    ) -> None:
        for key, value in (
            ("expert_epochs", expert_epochs),
            ("max_start_epoch", max_start_epoch),
            ("syn_steps", syn_steps),
            ("batch_syn", batch_syn),
            ("expert_train_epochs", expert_train_epochs),
        ):
            if value is not None and value < 1:
                raise InvalidOptionError(f"Expected {key} ≥ 1 (or None for the dataset default) but got {value}")
        if not lr_teacher > 0 or (lr_lr is not None and not lr_lr >= 0):
            raise InvalidOptionError(f"Expected lr_teacher > 0 and lr_lr ≥ 0 but got {lr_teacher} and {lr_lr}")
        if num_experts < 1:
            raise InvalidOptionError(f"Expected num_experts ≥ 1 but got {num_experts}")
        self.options_given = {
            "expert_epochs": expert_epochs,
            "max_start_epoch": max_start_epoch,
            "syn_steps": syn_steps,
            "lr_lr": lr_lr,
        }
        self.lr_teacher = lr_teacher
        self.batch_syn = batch_syn
        self.net_name = net
        self.num_experts = num_experts
        self.expert_train_epochs = expert_train_epochs
        self.expert_dir = expert_dir
        self.build_experts = build_experts
        self.expert_seed = expert_seed
        self.syn_lr = torch.tensor(float(lr_teacher), requires_grad=True)
        self.experts: list[ExpertTrajectory] = []
        self.net: nn.Module | None = None
        self.iteration = 0

    # ------------------------------------------------------------------------------ set-up

    def effective_options(self, context: IdentityContext) -> dict[str, Any]:
        # None takes the dataset's defaults in setup(): record them
        options = self.options()
        if context.resolution is not None:
            defaults = default_hyperparameters(context.resolution, context.ipc)
            options.update({k: (v if v is not None else defaults[k]) for k, v in self.options_given.items()})
        return options

    def setup(self, context: MatchContext) -> None:
        super().setup(context)
        defaults = default_hyperparameters(context.data.resolution, context.ipc)
        resolved = {k: (v if v is not None else defaults[k]) for k, v in self.options_given.items()}
        self.expert_epochs = int(resolved["expert_epochs"])
        self.max_start_epoch = int(resolved["max_start_epoch"])
        self.syn_steps = int(resolved["syn_steps"])
        self.lr_lr = float(resolved["lr_lr"])
        needed = self.max_start_epoch + self.expert_epochs
        epochs = self._expert_train_epochs(context.data.resolution, context.ipc)
        if epochs < needed:
            raise InvalidOptionError(
                f"expert_train_epochs={epochs} is too short: max_start_epoch + expert_epochs = {needed}"
            )
        with torch.no_grad():  # same tensor object, so optimiser groups built later see it
            self.syn_lr.data = self.syn_lr.detach().to(context.device)
        self.net = context.build_network(self.net_name).train()
        self.buffer = self._load_buffer(context, epochs)
        self.experts = self.buffer.trajectories(limit=self.num_experts)
        names = [n for n, _ in self.net.named_parameters()]
        if self.experts[0].names != names:
            raise InvalidOptionError(
                f"The experts in {self.buffer.directory} were trained with other parameters than "
                f"'{self.net_name}' has here ({self.experts[0].names[:3]}… vs {names[:3]}…); build a buffer for this net."
            )
        self._shapes = [p.shape for _, p in self.net.named_parameters()]
        self._names = names

    def _load_buffer(self, context: MatchContext, epochs: int) -> ExpertBuffer:
        root = self._expert_root(context.cache_dir)
        data = context.data
        config = self._expert_config(data.name, data.resolution, len(data.train_labels), epochs)
        found = ExpertBuffer.find(root, config, self.num_experts)
        if found is not None:
            return found
        if not self.build_experts:
            raise DataNotFoundError(missing_buffer_message(config, self.num_experts, root, data))
        buffer = ExpertBuffer.at(root, config)
        return buffer.build(data, self.num_experts, device=context.device, progress=context.progress)

    # ------------------------------------------------------------------ the learnable lr

    def parameters(self) -> list[dict[str, Any]]:
        return [{"params": [self.syn_lr], "lr": self._lr_lr(), "momentum": LR_MOMENTUM, "name": "matcher.syn_lr"}]

    def _lr_lr(self) -> float:
        value = getattr(self, "lr_lr", None)
        if value is None:
            raise RuntimeError("TrajectoryMatching.parameters() needs setup() first (lr_lr depends on the dataset)")
        return value

    def check_lr(self) -> float:
        """The current learnable lr; raises LearningRateDivergedError unless it is finite and > 0."""
        value = float(self.syn_lr.detach())
        if not math.isfinite(value) or value <= 0:
            raise LearningRateDivergedError(
                f"MTT's learnable learning rate became {value} (iteration {self.iteration}); the student "
                f"cannot step with it. Lower lr_lr (now {self.lr_lr:g}; --algo-opt lr_lr=...) or the image "
                "learning rate (--lr), then run again; the last good checkpoint is kept."
            )
        return value

    def synthetic_metadata(self) -> dict[str, Any]:
        return {"lr": float(self.syn_lr.detach())}

    def evaluation_overrides(self) -> dict[str, float]:
        return {"lr": float(self.syn_lr.detach())}  # the MTT protocol evaluates with the learned lr

    def preparation(
        self, context: IdentityContext, train_images: int, cache_dir: str | Path | None = None
    ) -> Preparation | None:
        """Training the expert buffer's missing experts, when ``build_experts`` lets the run do it
        (a buffer already in ``expert_dir`` or the run's cache costs nothing)."""
        if not self.build_experts:
            return None
        epochs = self._expert_train_epochs(context.resolution or 28, context.ipc)
        config = self._expert_config(context.dataset, context.resolution or 28, train_images, epochs)
        root = self._expert_root(cache_dir)
        if ExpertBuffer.find(root, config, self.num_experts) is not None:
            return None
        missing = self.num_experts - min(self.num_experts, len(ExpertBuffer.at(root, config)))
        key = f"experts:{root}:{config.directory_name()}:{self.num_experts}"
        return Preparation(key, missing * epochs * train_images * EXPERT_SECONDS_PER_IMAGE_EPOCH)

    def _expert_train_epochs(self, resolution: int, ipc: int) -> int:
        """Epochs per expert: ``expert_train_epochs``, else max_start_epoch + expert_epochs."""
        defaults = default_hyperparameters(resolution, ipc)
        given = {k: v if v is not None else defaults[k] for k, v in self.options_given.items()}
        return self.expert_train_epochs or int(given["max_start_epoch"] + given["expert_epochs"])

    def _expert_config(self, dataset: str, resolution: int, train_size: int, epochs: int) -> ExpertConfig:
        return ExpertConfig(
            dataset=dataset,
            resolution=resolution,
            train_size=train_size,
            model=self.net_name,
            epochs=epochs,
            lr=self.lr_teacher,
            seed=self.expert_seed,
        )

    def _expert_root(self, cache_dir: str | Path | None) -> Path:
        return Path(self.expert_dir) if self.expert_dir else default_root(cache_dir)

    def iteration_metrics(self) -> dict[str, float]:
        return {"lr": float(self.syn_lr.detach())}  # the learned lr's course, for metrics.jsonl and plots

    def state_dict(self) -> dict[str, Tensor]:
        return {"syn_lr": self.syn_lr.detach().cpu().clone()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        if "syn_lr" in state:
            with torch.no_grad():
                self.syn_lr.copy_(state["syn_lr"])

    # ------------------------------------------------------------------------------ loss

    def begin_iteration(self, iteration: int) -> None:
        self.iteration = iteration

    def _flat(self, params: dict[str, Tensor]) -> Tensor:
        return torch.cat([params[n].reshape(-1) for n in self._names]).to(self.context.device)

    def _unflatten(self, flat: Tensor) -> dict[str, Tensor]:
        sizes = [s.numel() for s in self._shapes]
        return {n: t.view(s) for n, t, s in zip(self._names, flat.split(sizes), self._shapes)}

    def sample_segment(self) -> tuple[Tensor, Tensor]:
        """(θ*_start, θ*_target) as flat vectors from a random expert and start epoch."""
        expert = self.experts[_draw(len(self.experts))]
        start = _draw(self.max_start_epoch)
        return self._flat(expert.params_at(start)), self._flat(expert.params_at(start + self.expert_epochs))

    def loss(self, images: Tensor, labels: Tensor, real: RealSampler) -> Tensor:
        self.check_lr()
        start, target = self.sample_segment()
        return self.trajectory_loss(images, labels, start, target)

    def trajectory_loss(self, images: Tensor, labels: Tensor, start: Tensor, target: Tensor) -> Tensor:
        """Unroll ``syn_steps`` student steps from ``start`` and compare with ``target`` (normalised)."""
        assert self.net is not None, "setup() must run first"
        dsa = self.context.dsa
        batch = self.batch_syn or len(images)
        theta = start.detach().requires_grad_(True)  # a leaf, so the first step can differentiate
        chunks: list[Tensor] = []
        for _ in range(self.syn_steps):
            if not chunks:  # epochs over the synthetic set in random order, as the reference
                chunks = list(torch.randperm(len(images), device=images.device).split(batch))
            idx = chunks.pop()
            x, y = images[idx], labels[idx]
            if dsa is not None:
                x = dsa(x, _draw(2**31 - 1))
            logits = functional_call(self.net, self._unflatten(theta), (x,))
            (grad,) = torch.autograd.grad(F.cross_entropy(logits, y), theta, create_graph=True)
            theta = theta - self.syn_lr * grad  # only the newest θ is referenced; the graph keeps the rest
        distance = (theta - target).pow(2).sum()
        scale = (start - target).pow(2).sum()
        return distance / scale.clamp_min(1e-12)

    def after_step(self, images: Tensor, labels: Tensor, real: RealSampler) -> None:
        self.check_lr()  # stop at once when the optimiser step made the lr unusable
