"""The full-data baseline: each evaluator trained on the whole real training split, scored into the store.

It is the upper reference of the leaderboard's ``--reference`` columns (DD-Ranking's HLR, the gap
to full data; `ddbench.results.reference`). Each (dataset, evaluator, protocol, epochs, seed) is trained
once: its network is `ddbench.engine.full_data`'s cached one (the same that a seed-0 soft-label teacher of
those settings uses) and its test accuracy is an ordinary score of a run with prior and matcher
``full-data``, keyed ``<protocol>[epochs=E]``: the epochs are a stated setting, recorded with the
number, since training on full data for a protocol's 1000 epochs is out of reach on a CPU.

The run id hashes the dataset's identity (its fingerprint or content digest, resolution, training
images) and the test images scored on; its spec records the training set and the settings.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from ddbench.engine.full_data import FullDataKey, cache_path, data_identity, full_data_model, real_test_accuracy
from ddbench.engine.protocols import get_protocol
from ddbench.engine.soft_labels import protocol_key
from ddbench.engine.spec import SPEC_VERSION, cache_dir_under
from ddbench.interfaces import RealData
from ddbench.results.store import FULL_DATA, ResultsStore
from ddbench.util.progress import ProgressArg

#: bump when the baseline's run identity changes
BASELINE_VERSION = 1

Say = Callable[[str], None]


def baseline_run_id(data: RealData, identity: str, test_size: int | None) -> str:
    payload = {
        "v": SPEC_VERSION,
        "full_data": BASELINE_VERSION,
        "dataset": data.name,
        "resolution": data.resolution,
        "data": identity,
        "n_train": len(data.train_labels),
        "test_size": test_size,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def _spec(data: RealData, identity: str, res: int | None, test_size: int | None, train_per_class: int | None,
          evaluators: Sequence[str], seeds: Sequence[int], protocol: str, epochs: int) -> dict[str, Any]:  # fmt: skip
    per_class = torch.bincount(data.train_labels, minlength=data.num_classes)
    return {
        "dataset": data.name,
        "prior": FULL_DATA,
        "matcher": FULL_DATA,
        "ipc": int(per_class.max()),  # the images per class it trains on
        "res": res,
        "evaluators": list(evaluators),
        "eval_seeds": list(seeds),
        "protocol": protocol,
        "eval_epochs": epochs,
        "report": "final",
        "test_size": test_size,
        "train_per_class": train_per_class,
        "full_data": {"data": identity, "n_train": len(data.train_labels), "version": BASELINE_VERSION},
        "spec_version": SPEC_VERSION,
    }


def run_full_data_baseline(
    data: RealData,
    store: ResultsStore,
    out: str | Path,
    *,
    evaluators: Sequence[str] = ("convnet",),
    seeds: Sequence[int] = (0,),
    protocol: str = "dc",
    epochs: int,
    fingerprint: str | None = None,
    res: int | None = None,
    test_size: int | None = None,
    train_per_class: int | None = None,
    device: torch.device | str = "cpu",
    progress: ProgressArg = None,
    say: Say = lambda _: None,
) -> pd.DataFrame:
    """Score every evaluator × seed trained on ``data``'s training split into ``store`` (those it has
    are skipped; networks come from ``out/cache``). ``data`` is already sliced as ``test_size`` and
    ``train_per_class`` say. Returns one row per score: run_id, evaluator, seed, protocol, accuracy, reused."""
    identity = data_identity(data, fingerprint)
    run_id = baseline_run_id(data, identity, test_size)
    key = protocol_key(protocol, epochs, None)
    existing = store.get_run(run_id)
    if existing is None or existing.get("status") != "done":
        store.start_run(
            run_id, _spec(data, identity, res, test_size, train_per_class, evaluators, seeds, protocol, epochs), None
        )
        store.finish_run(run_id, 0.0, None, None)
    scores = store.scores_frame()
    mine = scores[(scores["run_id"] == run_id) & (scores["protocol"] == key)]
    stored = {(r.evaluator, int(r.seed)): float(r.accuracy) for r in mine.itertuples()}
    rows = []
    for evaluator in evaluators:
        for seed in seeds:
            if (evaluator, seed) in stored:
                rows.append((evaluator, seed, stored[(evaluator, seed)], True))
                say(f"  {evaluator} seed {seed}: {100 * stored[(evaluator, seed)]:.2f} % (stored)")
                continue
            model_key = FullDataKey.of(data, fingerprint, evaluator, protocol, epochs, seed)
            model = full_data_model(data, model_key, cache_dir_under(out), device, progress, say)
            accuracy = real_test_accuracy(model, data, device)
            record = _score_record(protocol, epochs, key, model_key, train_per_class)
            store.add_score(run_id, evaluator, seed, record, accuracy, None, None, None, None)
            rows.append((evaluator, seed, accuracy, False))
            say(f"  {evaluator} seed {seed}: {100 * accuracy:.2f} %")
    return pd.DataFrame(
        [
            {"run_id": run_id, "evaluator": e, "seed": s, "protocol": key, "accuracy": a, "reused": r}
            for e, s, a, r in rows
        ],
        columns=["run_id", "evaluator", "seed", "protocol", "accuracy", "reused"],
    )


def _score_record(
    protocol: str, epochs: int, key: str, model_key: FullDataKey, train_per_class: int | None
) -> dict[str, Any]:
    """The protocol record a full-data score is stored with: the protocol trained and the network."""
    return {
        **get_protocol(protocol).with_overrides(epochs=epochs).as_dict(),
        "name": key,
        "report": "final",
        "full_data": {
            "n_train": model_key.n_train,
            "train_per_class": train_per_class,
            "network": cache_path("", model_key).as_posix(),
        },
    }


__all__ = ["run_full_data_baseline", "baseline_run_id"]
