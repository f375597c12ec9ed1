"""The evaluation engine: train one evaluator from scratch on a synthetic set, test on real data.

The learning rate is, by precedence: an explicit ``lr`` (MTT's distilled lr) → the evaluator's
``protocol_lrs[protocol]`` (GLaD's VGG11 1e-4) → the protocol's own.

``report="final"`` (default) scores the network after the last epoch. ``report="max"`` also tests
every ~10% of training and records the best of those rounds as ``accuracy_max`` — GLaD's code
reports that number (model selection on the test set), so use it only to compare with published
tables; ``accuracy`` stays the final score either way.

`evaluate_seeds` evaluates several seeds of one evaluator. Batched (by default on a GPU, see
`resolve_batched`) and where the evaluator allows it (`Evaluator.batching_obstacle`), the seeds
train as one batched model and are tested in one pass (`ddbench.engine.seed_batching`): each seed with the
initialisation, data order and DSA draws of its sequential run, so its score differs from that
run's only by floating-point summation order. A network that cannot be batched is evaluated seed
after seed, and the run's log says so once.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from ddbench import registry
from ddbench.engine.memory import PeakMemory
from ddbench.engine.protocols import EvalProtocol, get_protocol
from ddbench.engine.seed_batching import StackedNetworks, stacked_test_accuracies, train_stacked
from ddbench.engine.spec import REPORTS
from ddbench.engine.training import test_accuracy, train_classifier
from ddbench.errors import InvalidOptionError
from ddbench.interfaces import Evaluator, RealData
from ddbench.util.progress import ProgressArg

log = logging.getLogger(__name__)

#: with report="max", the number of test rounds spread evenly over training
MAX_ROUNDS = 10


@dataclasses.dataclass
class EvalResult:
    evaluator: str
    seed: int
    protocol: dict[str, Any]  # the protocol actually used (overrides and effective lr applied)
    accuracy: float  # after the last epoch
    accuracy_max: float | None  # best test round (report="max" only), else None
    train_seconds: float  # training only, test rounds excluded
    eval_seconds: float  # every test pass
    peak_memory_bytes: int
    #: trained in one batched model with the other seeds of its `evaluate_seeds` call (its seconds
    #: are then the batch's divided by the number of seeds, its peak memory the batch's)
    batched: bool = False

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _check_synthetic(images: Tensor, labels: Tensor, data: RealData) -> None:
    expected = (data.channels, data.resolution, data.resolution)
    if images.dim() != 4 or tuple(images.shape[1:]) != expected:
        raise InvalidOptionError(
            f"Expected synthetic images of shape (N, {', '.join(map(str, expected))}) for dataset '{data.name}' "
            f"but got {tuple(images.shape)}; evaluate a set distilled from this dataset at its resolution"
        )
    if labels.shape[0] != images.shape[0]:
        raise InvalidOptionError(f"Expected {images.shape[0]} labels but got {labels.shape[0]}")
    if labels.dim() == 1 and labels.numel() and not 0 <= int(labels.min()) <= int(labels.max()) < data.num_classes:
        raise InvalidOptionError(
            f"Expected labels in [0, {data.num_classes}) for dataset '{data.name}' but got "
            f"[{int(labels.min())}, {int(labels.max())}]"
        )


def round_epochs(epochs: int, rounds: int = MAX_ROUNDS) -> set[int]:
    """0-based epochs after which report="max" tests, every ~epochs/rounds; the final test
    after the last epoch is always one more round."""
    every = max(1, epochs // rounds)
    return {e for e in range(epochs - 1) if (e + 1) % every == 0}


def _prepare(
    images: Tensor,
    labels: Tensor,
    data: RealData,
    evaluator: str,
    protocol: str | EvalProtocol,
    epochs: int | None,
    lr: float | None,
    report: str,
    evaluator_options: dict[str, Any] | None,
) -> tuple[Evaluator, EvalProtocol]:
    """The checked evaluator plugin and the protocol with its overrides and effective lr applied."""
    if report not in REPORTS:
        raise InvalidOptionError(f"Expected report in {REPORTS} but got '{report}'")
    _check_synthetic(images, labels, data)
    proto = get_protocol(protocol) if isinstance(protocol, str) else protocol
    plugin = registry.create("evaluator", evaluator, **(evaluator_options or {}))
    plugin.check_input(data.channels, data.resolution)
    effective_lr = lr if lr is not None else plugin.protocol_lrs.get(proto.name, proto.lr)
    return plugin, proto.with_overrides(epochs=epochs, lr=float(effective_lr))


def evaluate_synthetic(
    images: Tensor,
    labels: Tensor,
    data: RealData,
    evaluator: str,
    protocol: str | EvalProtocol,
    seed: int,
    device: torch.device | str,
    epochs: int | None = None,
    lr: float | None = None,
    report: str = "final",
    progress: ProgressArg = None,
    evaluator_options: dict[str, Any] | None = None,
    loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
) -> EvalResult:
    """Train ``evaluator`` from scratch on normalised synthetic ``images`` and test on ``data``'s test split.

    ``evaluator_options`` are the evaluator plugin's constructor options (e.g. ``{"width": 64}``).
    ``loss_fn(logits, labels)`` replaces cross-entropy (soft-label losses, `ddbench.running.scoring.SoftLabels`).
    """
    plugin, proto = _prepare(images, labels, data, evaluator, protocol, epochs, lr, report, evaluator_options)
    device = torch.device(device)

    torch.manual_seed(seed)  # the network's init (and any dropout) is reproducible per seed
    model = plugin.build(data.channels, data.num_classes, data.resolution).to(device)
    tester = _TestRounds(
        lambda: [test_accuracy(model, data.test_images, data.test_labels, data.normalise, device=device)],
        round_epochs(proto.epochs) if report == "max" else set(),
    )
    with PeakMemory(device) as mem:
        start = time.perf_counter()
        train_classifier(
            model,
            images,
            labels,
            proto,
            seed=seed,
            device=device,
            progress=progress,
            on_epoch_end=tester.on_epoch_end if tester.rounds else None,
            description=f"eval {evaluator} seed {seed}",
            loss_fn=loss_fn,
        )
        train_seconds = time.perf_counter() - start - tester.seconds
        (accuracy,) = tester.test()
    best = tester.keep_best([accuracy]) if report == "max" else tester.best
    return EvalResult(
        evaluator=evaluator,
        seed=seed,
        protocol=proto.as_dict(),
        accuracy=accuracy,
        accuracy_max=None if best is None else best[0],
        train_seconds=train_seconds,
        eval_seconds=tester.seconds,
        peak_memory_bytes=int(mem.peak_bytes),
    )


class _TestRounds:
    """The test passes of one training run: timed, and the best accuracies of report="max" rounds."""

    def __init__(self, test_all: Callable[[], list[float]], rounds: set[int]) -> None:
        self.test_all = test_all  # one accuracy per trained network (seed)
        self.rounds = rounds  # 0-based epochs after which a round tests
        self.seconds = 0.0
        self.best: list[float] | None = None

    def test(self) -> list[float]:
        start = time.perf_counter()
        accuracies = self.test_all()
        self.seconds += time.perf_counter() - start
        return accuracies

    def keep_best(self, accuracies: list[float]) -> list[float]:
        self.best = accuracies if self.best is None else [max(a, b) for a, b in zip(self.best, accuracies)]
        return self.best

    def on_epoch_end(self, epoch: int, _losses: Any) -> None:
        if epoch in self.rounds:
            self.keep_best(self.test())


#: (evaluator, reason) pairs whose fallback to sequential seeds was already logged by this process
_FALLBACKS_SAID: set[tuple[str, str]] = set()


def resolve_batched(batched: bool | None, device: torch.device | str) -> bool:
    """Whether `evaluate_seeds` batches seeds: as asked, else (``None``) on a GPU only. On a CPU the
    batched model costs as much CPU time as the seeds one after another, or more, since its grouped
    convolutions are no faster than separate ones (benchmarks/README.md, "Batched evaluation")."""
    return batched if batched is not None else torch.device(device).type != "cpu"


def evaluate_seeds(
    images: Tensor,
    labels: Tensor,
    data: RealData,
    evaluator: str,
    protocol: str | EvalProtocol,
    seeds: Sequence[int],
    device: torch.device | str,
    epochs: int | None = None,
    lr: float | None = None,
    report: str = "final",
    progress: ProgressArg = None,
    evaluator_options: dict[str, Any] | None = None,
    loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
    batched: bool | None = None,
) -> list[EvalResult]:
    """`evaluate_synthetic` for each of ``seeds``, in order, as one batched model where possible.

    Batched (``batched=True``, or ``None`` on a GPU: `resolve_batched`) with more than one seed, the
    seeds train together when the evaluator allows it (`Evaluator.batching_obstacle`); otherwise
    one after another.
    """
    seeds = [int(seed) for seed in seeds]
    if len(set(seeds)) != len(seeds):
        raise InvalidOptionError(f"Expected distinct seeds but got {seeds}")
    plugin, proto = _prepare(images, labels, data, evaluator, protocol, epochs, lr, report, evaluator_options)
    batched = resolve_batched(batched, device)
    obstacle = plugin.batching_obstacle() if batched and len(seeds) > 1 else None
    if obstacle is not None and (evaluator, obstacle) not in _FALLBACKS_SAID:
        _FALLBACKS_SAID.add((evaluator, obstacle))
        log.warning("evaluator %s trains its seeds one after another, not batched: %s", evaluator, obstacle)
    if not batched or len(seeds) < 2 or obstacle is not None:
        options = dict(device=device, epochs=epochs, lr=lr, report=report, progress=progress,
                       evaluator_options=evaluator_options, loss_fn=loss_fn)  # fmt: skip
        return [evaluate_synthetic(images, labels, data, evaluator, protocol, seed=seed, **options) for seed in seeds]
    return _evaluate_batched(
        images, labels, data, evaluator, plugin, proto, seeds, torch.device(device), report, progress, loss_fn
    )


def _evaluate_batched(
    images: Tensor,
    labels: Tensor,
    data: RealData,
    evaluator: str,
    plugin: Evaluator,
    proto: EvalProtocol,
    seeds: list[int],
    device: torch.device,
    report: str,
    progress: ProgressArg,
    loss_fn: Callable[[Tensor, Tensor], Tensor] | None,
) -> list[EvalResult]:
    networks = []
    for seed in seeds:
        torch.manual_seed(seed)  # each seed's init, exactly as its sequential run builds it
        networks.append(plugin.build(data.channels, data.num_classes, data.resolution).to(device))
    stack = StackedNetworks(networks)
    del networks
    tester = _TestRounds(
        lambda: stacked_test_accuracies(stack, data.test_images, data.test_labels, data.normalise, device=device),
        round_epochs(proto.epochs) if report == "max" else set(),
    )
    with PeakMemory(device) as mem:
        start = time.perf_counter()
        train_stacked(
            stack,
            images,
            labels,
            proto,
            seeds=seeds,
            device=device,
            progress=progress,
            on_epoch_end=tester.on_epoch_end if tester.rounds else None,
            description=f"eval {evaluator} seeds {', '.join(map(str, seeds))}",
            loss_fn=loss_fn,
        )
        train_seconds = time.perf_counter() - start - tester.seconds
        accuracies = tester.test()
    best = tester.keep_best(accuracies) if report == "max" else tester.best
    eval_seconds = tester.seconds
    share = len(seeds)
    return [
        EvalResult(
            evaluator=evaluator,
            seed=seed,
            protocol=proto.as_dict(),
            accuracy=accuracy,
            accuracy_max=None if best is None else best[index],
            train_seconds=train_seconds / share,
            eval_seconds=eval_seconds / share,
            peak_memory_bytes=int(mem.peak_bytes),
            batched=True,
        )
        for index, (seed, accuracy) in enumerate(zip(seeds, accuracies))
    ]
