"""Train an evaluator's seeds on a synthetic set and record their scores: shared by ``ddbench run``
(`ddbench.running.pipeline`) and ``ddbench evaluate`` (`ddbench.running.scoring`), so both store the same record."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from ddbench.engine.evaluate import EvalResult, evaluate_seeds
from ddbench.engine.protocols import EvalProtocol
from ddbench.engine.soft_labels import SoftLabels
from ddbench.errors import InvalidOptionError
from ddbench.interfaces import RealData
from ddbench.results.store import ResultsStore
from ddbench.util.progress import ProgressArg


def evaluate_and_record(
    images: Tensor,
    labels: Tensor,
    data: RealData,
    evaluator: str,
    protocol: str | EvalProtocol,
    seed: int,
    *,
    key: str,
    device: torch.device | str,
    epochs: int | None = None,
    lr: float | None = None,
    report: str = "final",
    soft: SoftLabels | None = None,
    store: ResultsStore | None = None,
    run_id: str | None = None,
    progress: ProgressArg = None,
) -> EvalResult:
    """`evaluate_and_record_seeds` for one seed."""
    return evaluate_and_record_seeds(
        images, labels, data, evaluator, protocol, [seed], key=key, device=device, epochs=epochs, lr=lr,
        report=report, soft=soft, store=store, run_id=run_id, progress=progress,
    )[0]  # fmt: skip


def evaluate_and_record_seeds(
    images: Tensor,
    labels: Tensor,
    data: RealData,
    evaluator: str,
    protocol: str | EvalProtocol,
    seeds: Sequence[int],
    *,
    key: str,
    device: torch.device | str,
    epochs: int | None = None,
    lr: float | None = None,
    report: str = "final",
    soft: SoftLabels | None = None,
    store: ResultsStore | None = None,
    run_id: str | None = None,
    progress: ProgressArg = None,
    batched: bool | None = None,
) -> list[EvalResult]:
    """`evaluate_seeds` (one batched model where it may: ``batched``), then, with a ``store``, each
    seed's score of ``run_id`` under the protocol ``key`` (e.g. ``dc[epochs=300]``). ``labels`` are
    soft (N, K) exactly when ``soft`` is given; its loss trains them and its settings go into the
    score's protocol record. Whether seeds ran batched is not recorded: it changes a score only by
    floating-point summation order."""
    if store is not None and run_id is None:
        raise InvalidOptionError("evaluate_and_record: a score stored needs its run_id")
    results = evaluate_seeds(
        images,
        labels,
        data,
        evaluator,
        protocol,
        seeds,
        device=device,
        epochs=epochs,
        lr=lr,
        report=report,
        progress=progress,
        loss_fn=soft.loss_fn() if soft else None,
        batched=batched,
    )
    if store is not None:
        for result in results:
            record: dict[str, Any] = {**result.protocol, "name": key, "report": report}
            if soft is not None:
                record["soft_labels"] = soft.to_dict()
            store.add_score(
                run_id,
                evaluator,
                result.seed,
                record,
                result.accuracy,
                result.accuracy_max,
                result.train_seconds,
                result.eval_seconds,
                result.peak_memory_bytes,
            )
    return results


__all__ = ["evaluate_and_record", "evaluate_and_record_seeds"]
