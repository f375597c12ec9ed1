"""The distillation engine: generate → matcher loss → backward into the prior's latents → step.

It owns what every method shares: seeding, the split backward, checkpoints and resume, the NaN
guard, progress and timing. Plugins only see their own inputs.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ddbench import registry
from ddbench.engine.allocator import tune_allocator
from ddbench.engine.memory import PeakMemory
from ddbench.engine.metrics import RunMetrics, read_metrics, summarise
from ddbench.engine.seeding import derive_seed, generator, seed_everything
from ddbench.engine.spec import RunSpec
from ddbench.engine.synthetic import SyntheticSet
from ddbench.errors import CorruptFileError, InvalidOptionError, NonFiniteLossError
from ddbench.interfaces import (
    ANY_TENSOR,
    DEFAULT_BASE_LR,
    LatentState,
    MatchContext,
    Matcher,
    Prior,
    RealData,
    RealSampler,
    chunked,
    class_labels,
)
from ddbench.util.fileio import write_atomic
from ddbench.util.progress import ProgressArg, progress_task

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint.pt"
#: a checkpoint is also written when this long has passed since the last one, so runs with slow
#: iterations (DC at IPC 10: minutes each) lose at most this much work when killed
CHECKPOINT_SECONDS = 300.0
SYNTHETIC_MOMENTUM = 0.5  # SGD momentum on synthetic parameters in DC, DM and MTT alike
#: images regenerated with a graph at once when neither the run nor the prior says otherwise
DEFAULT_CHUNK = 10


@dataclasses.dataclass
class DistillResult:
    synthetic: SyntheticSet
    seconds: float  # wall time of this process's iterations (excludes set-up)
    seconds_per_iteration: float | None
    peak_memory_bytes: int
    losses: list[float]
    resumed_from: int  # iteration the run resumed at (0 = fresh)
    #: `ddbench.engine.metrics.summarise` of the run's metrics.jsonl (every iteration, resumed ones included)
    metrics: dict[str, Any] = dataclasses.field(default_factory=dict)


def generate_all(prior: Prior, state: LatentState, n: int, chunk_size: int, device: torch.device) -> Tensor:
    """Every synthetic image, generated chunk by chunk without a graph."""
    with torch.no_grad():
        return torch.cat([prior.generate(state, idx) for idx in chunked(torch.arange(n, device=device), chunk_size)])


def split_backward_step(
    prior: Prior,
    matcher: Matcher,
    state: LatentState,
    labels: Tensor,
    real: RealSampler,
    chunk_size: int,
) -> tuple[float, Tensor]:
    """One loss evaluation with the GLaD/LD3M split backward; returns (loss, detached images).

    The images are generated once without a graph, the matcher's loss gives dL/dS on them, and each
    chunk is then regenerated with a graph and dL/dS pushed through it — so the generator's
    activations are held for one chunk at a time, never for the whole synthetic set. When the whole
    set is one chunk, the split gains nothing: the images are generated once, with a graph, and the
    loss's backward runs through the generator (same gradients, one generation pass fewer).
    """
    device = labels.device
    if len(labels) <= chunk_size:
        images = prior.generate(state, torch.arange(len(labels), device=device))
        loss = matcher.loss(images, labels, real)
        value = float(loss.detach())
        if math.isfinite(value) and loss.requires_grad:
            loss.backward()
        return value, images.detach()
    images = generate_all(prior, state, len(labels), chunk_size, device).requires_grad_(True)
    loss = matcher.loss(images, labels, real)
    value = float(loss.detach())
    if not math.isfinite(value):
        return value, images.detach()
    loss.backward()
    grad = images.grad
    if grad is not None:
        for idx in chunked(torch.arange(len(labels), device=device), chunk_size):
            prior.generate(state, idx).backward(grad[idx])
    return value, images.detach()


def learning_rates_for(
    prior: Prior, matcher: Matcher, state: LatentState, overrides: dict[str, float]
) -> dict[str, float]:
    """The rate of every learnable tensor of ``state``: the prior's base × the matcher's scale,
    with overrides (`Prior.learning_rates`); ``"*"`` stands for tensors the prior does not list."""
    lrs = prior.learning_rates(matcher.lr_scale, overrides)
    unknown = sorted(set(lrs) - set(state.params) - {ANY_TENSOR})
    if unknown:
        raise InvalidOptionError(
            f"Prior '{prior.name}' has no learnable tensor {unknown}; expected some of {sorted(state.params)} (--lr NAME=VALUE)"
        )
    return {k: lrs.get(k, lrs.get(ANY_TENSOR, DEFAULT_BASE_LR * matcher.lr_scale)) for k in state.params}


class Distiller:
    """Runs one RunSpec's distillation on loaded data, checkpointing into ``run_dir``."""

    def __init__(
        self,
        spec: RunSpec,
        data: RealData,
        run_dir: Path,
        device: torch.device | str = "cpu",
        dsa: Any = None,
        checkpoint_every: int = 50,
        chunk_size: int | None = None,
        progress: ProgressArg = True,
        checkpoint_seconds: float = CHECKPOINT_SECONDS,
        cache_dir: str | None = None,
        prior: Prior | None = None,
        matcher: Matcher | None = None,
        tensorboard: bool = False,
    ) -> None:
        """``prior``/``matcher`` instances may be passed directly (programmatic use, tests);
        by default they are created from the spec through the registry. ``tensorboard`` also logs
        the per-iteration metrics as TensorBoard events under ``run_dir/tensorboard``."""
        tune_allocator()
        self.spec = spec
        self.data = data
        self.run_dir = Path(run_dir)
        self.device = torch.device(device)
        self.dsa = dsa
        self.checkpoint_every = max(1, checkpoint_every)
        self.checkpoint_seconds = checkpoint_seconds
        #: None: the prior's `generation_chunk` once it is set up, else DEFAULT_CHUNK
        self.chunk_option = chunk_size
        self.chunk_size = max(1, chunk_size or DEFAULT_CHUNK)
        self.progress = progress
        self.cache_dir = cache_dir
        self.tensorboard = tensorboard
        self.prior: Prior = prior or registry.create("prior", spec.prior, **spec.plugin_options("prior"))
        self.matcher: Matcher = matcher or registry.create("matcher", spec.matcher, **spec.plugin_options("matcher"))
        self.labels = class_labels(data.num_classes, spec.ipc).to(self.device)

    # ------------------------------------------------------------------ set-up and checkpoints

    def _init_state(self) -> LatentState:
        seed_everything(derive_seed(self.spec.seed, "init"))
        gen = generator(self.spec.seed, "real-init")
        real = torch.cat([self.data.sample_class(c, self.spec.ipc, gen) for c in range(self.data.num_classes)])
        with registry.plugin_code("prior", self.spec.prior, type(self.prior), "setup"):
            self.prior.setup(self.data, self.device)
        if self.chunk_option is None:
            self.chunk_size = max(1, self.prior.generation_chunk() or DEFAULT_CHUNK)
        state = self.prior.init_state(real.to(self.device), self.labels, gen)
        for tensor in state.params.values():
            tensor.requires_grad_(True)
        return state

    def _optimizer(self, state: LatentState) -> torch.optim.Optimizer:
        lrs = learning_rates_for(self.prior, self.matcher, state, self.spec.lrs)
        groups: list[dict[str, Any]] = [
            {"params": [state.params[k]], "lr": lrs[k], "name": f"prior.{k}"} for k in sorted(state.params)
        ]
        groups += [dict(g, name=g.get("name", f"matcher.{i}")) for i, g in enumerate(self.matcher.parameters())]
        return torch.optim.SGD(groups, lr=groups[0]["lr"], momentum=SYNTHETIC_MOMENTUM)

    @property
    def checkpoint_path(self) -> Path:
        return self.run_dir / CHECKPOINT_FILE

    def _matcher_tensors(self) -> list[Tensor]:
        return [p for g in self.matcher.parameters() for p in g["params"]]

    def _save_checkpoint(
        self, iteration: int, state: LatentState, opt: torch.optim.Optimizer, losses: list[float]
    ) -> None:
        tensors = list(state.params.values()) + self._matcher_tensors()
        if not all(torch.isfinite(t).all() for t in tensors):
            log.warning("not checkpointing iteration %d: parameters are not finite", iteration)
            return
        payload = {
            "run_id": self.spec.run_id,
            "iteration": iteration,
            "params": {k: v.detach().cpu() for k, v in state.params.items()},
            "buffers": {k: v.detach().cpu() for k, v in state.buffers.items()},
            "matcher_params": [t.detach().cpu() for t in self._matcher_tensors()],
            "matcher_state": self.matcher.state_dict(),
            "optimizer": opt.state_dict(),
            "losses": losses,
        }
        write_atomic(self.checkpoint_path, lambda tmp: torch.save(payload, tmp))

    def _load_checkpoint(self, state: LatentState, opt: torch.optim.Optimizer) -> tuple[int, list[float]]:
        path = self.checkpoint_path
        if not path.exists():
            return 0, []
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
            if payload["run_id"] != self.spec.run_id:
                raise ValueError(f"it belongs to run {payload['run_id']}, not {self.spec.run_id}")
            with torch.no_grad():
                for k, v in payload["params"].items():
                    state.params[k].copy_(v)
                for k, v in payload["buffers"].items():
                    state.buffers[k].copy_(v)
                for t, v in zip(self._matcher_tensors(), payload["matcher_params"], strict=True):
                    t.copy_(v)
            self.matcher.load_state_dict(payload["matcher_state"])
            opt.load_state_dict(payload["optimizer"])
        except Exception as err:  # noqa: BLE001 - any unreadable checkpoint is handled the same way
            corrupt = path.with_suffix(".pt.corrupt")
            path.replace(corrupt)
            log.warning(
                "checkpoint %s is unreadable (%s); moved to %s and restarting from iteration 0", path, err, corrupt
            )
            raise CorruptFileError(f"Checkpoint {path} is unreadable ({err}); moved aside to {corrupt}") from err
        return int(payload["iteration"]), list(payload["losses"])

    # ----------------------------------------------------------------------------------- loop

    def run(self, resume: bool = True, on_iteration: Callable[[int, float], None] | None = None) -> DistillResult:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        state = self._init_state()
        self._setup_matcher()
        opt = self._optimizer(state)
        start, losses = 0, []
        if resume:
            try:
                start, losses = self._load_checkpoint(state, opt)
            except CorruptFileError:
                state = self._init_state()
                opt = self._optimizer(state)
        iterations = self.spec.iterations if self.matcher.distils else 0
        t0 = saved_at = time.perf_counter()
        # no bar for a matcher that does not distil (random real): it has no iterations to show
        shown = self.progress if iterations else None
        with (
            PeakMemory(self.device) as mem,
            RunMetrics(self.run_dir, start, self.tensorboard) as metrics,
            progress_task(shown, self.spec.label, iterations, completed=start) as (bar, task),
        ):
            for it in range(start, iterations):
                began = time.perf_counter()
                value = self._iteration(it, state, opt)
                losses.append(value)
                metrics.record(
                    it, value, time.perf_counter() - began, mem.peak_so_far(), self.matcher.iteration_metrics()
                )
                bar.update(task, advance=1, loss=value)
                if on_iteration is not None:
                    on_iteration(it, value)
                overdue = time.perf_counter() - saved_at >= self.checkpoint_seconds
                if (it + 1) % self.checkpoint_every == 0 or it + 1 == iterations or overdue:
                    metrics.sync()
                    self._save_checkpoint(it + 1, state, opt, losses)
                    saved_at = time.perf_counter()
        seconds = time.perf_counter() - t0
        done = iterations - start
        return DistillResult(
            synthetic=self._synthetic_set(state, losses),
            seconds=seconds,
            seconds_per_iteration=seconds / done if done else None,
            peak_memory_bytes=mem.peak_bytes,
            losses=losses,
            resumed_from=start,
            metrics=summarise(read_metrics(self.run_dir)),
        )

    def _setup_matcher(self) -> None:
        with registry.plugin_code("matcher", self.spec.matcher, type(self.matcher), "setup"):
            self.matcher.setup(
                MatchContext(
                    data=self.data,
                    ipc=self.spec.ipc,
                    device=self.device,
                    dsa=self.dsa,
                    cache_dir=self.cache_dir,
                    progress=self.progress,
                )
            )

    def _iteration(self, it: int, state: LatentState, opt: torch.optim.Optimizer) -> float:
        """Distillation iteration ``it`` (the matcher's steps on one draw of real batches); its last loss."""
        seed_everything(derive_seed(self.spec.seed, "iteration", it))
        real = RealSampler(self.data, generator(self.spec.seed, "real", it), self.device)
        self.matcher.begin_iteration(it)
        for step in range(self.matcher.steps_per_iteration):
            opt.zero_grad(set_to_none=True)
            value, images = split_backward_step(self.prior, self.matcher, state, self.labels, real, self.chunk_size)
            if not math.isfinite(value) and it == 0 and step == 0:
                # nothing was updated yet: no learning rate can be the cause
                raise NonFiniteLossError(
                    f"{self.spec.label}: the loss is {value} on the initial images, before any update: the "
                    f"matcher '{self.matcher.name}' or the prior '{self.prior.name}' computes a non-finite loss "
                    f"at IPC {self.spec.ipc} with these options (a plugin author reproduces it with "
                    f"ddbench.testing.check_matcher(..., ipc={self.spec.ipc}))"
                )
            if not math.isfinite(value):
                raise NonFiniteLossError(
                    f"{self.spec.label}: the loss became {value} at iteration {it} (step {step}). "
                    f"The last good checkpoint is kept in {self.checkpoint_path}. Lower the learning "
                    "rates (--lr NAME=VALUE) and run again; --resume continues from the checkpoint."
                )
            opt.step()
            self.matcher.after_step(images, self.labels, real)
        return value

    def _synthetic_set(self, state: LatentState, losses: list[float]) -> SyntheticSet:
        """The distilled set: the prior's images of ``state``, its latents and what evaluation needs."""
        images = generate_all(self.prior, state, len(self.labels), self.chunk_size, self.device)
        return SyntheticSet(
            images=images.detach().cpu(),
            labels=self.labels.cpu(),
            latents={k: v.detach().cpu() for k, v in state.tensors().items()},
            metadata={
                "spec": self.spec.to_dict(),
                "run_id": self.spec.run_id,
                "dataset": self.data.name,
                "class_names": self.data.class_names,
                "mean": list(self.data.mean),
                "std": list(self.data.std),
                "channels": self.data.channels,
                "resolution": self.data.resolution,
                "matcher": self.matcher.synthetic_metadata(),
                "evaluation": self.matcher.evaluation_overrides(),
                "final_loss": losses[-1] if losses else None,
            },
        )
