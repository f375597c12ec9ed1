"""Train one evaluator × seed on a synthetic set and record the score: shared by ``ddbench run``
(`ddbench.pipeline`) and ``ddbench evaluate`` (`ddbench.scoring`), so both store the same record."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ddbench.errors import InvalidOptionError
from ddbench.evaluate import EvalResult, evaluate_synthetic
from ddbench.interfaces import RealData
from ddbench.progress import ProgressArg
from ddbench.protocols import EvalProtocol
from ddbench.soft_labels import SoftLabels
from ddbench.store import ResultsStore


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
    """`evaluate_synthetic`, then, with a ``store``, the score of ``run_id`` under the protocol
    ``key`` (e.g. ``dc[epochs=300]``). ``labels`` are soft (N, K) exactly when ``soft`` is given;
    its loss trains them and its settings go into the score's protocol record."""
    if store is not None and run_id is None:
        raise InvalidOptionError("evaluate_and_record: a score stored needs its run_id")
    result = evaluate_synthetic(
        images,
        labels,
        data,
        evaluator,
        protocol,
        seed=seed,
        device=device,
        epochs=epochs,
        lr=lr,
        report=report,
        progress=progress,
        loss_fn=soft.loss_fn() if soft else None,
    )
    if store is not None:
        record: dict[str, Any] = {**result.protocol, "name": key, "report": report}
        if soft is not None:
            record["soft_labels"] = soft.to_dict()
        store.add_score(
            run_id,
            evaluator,
            seed,
            record,
            result.accuracy,
            result.accuracy_max,
            result.train_seconds,
            result.eval_seconds,
            result.peak_memory_bytes,
        )
    return result


__all__ = ["evaluate_and_record"]
