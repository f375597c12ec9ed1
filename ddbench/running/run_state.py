"""Is a run already done? The one answer the sweep's plan and the run itself share.

A run is *distilled* when the store says its distillation finished, and *complete* when, besides,
every (evaluator, seed) its spec asks for is scored under its protocol. `plan_sweep` reads the store
once for all specs; `run_spec` reads it again under the run's lock, and both ask `StoreSnapshot.state`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ddbench.engine.spec import RunSpec


@dataclasses.dataclass(frozen=True)
class StoredState:
    """What the store holds of one spec."""

    #: the run's row: ``done``, ``running``, ``failed``, or None (never started)
    status: str | None
    #: (evaluator, seed) pairs the spec asks for that have no score yet, in the spec's order
    missing: tuple[tuple[str, int], ...]

    @property
    def distilled(self) -> bool:
        return self.status == "done"

    @property
    def complete(self) -> bool:
        return self.distilled and not self.missing


@dataclasses.dataclass(frozen=True)
class StoreSnapshot:
    """The store's run statuses and scored (run, evaluator, seed, protocol) keys, read once."""

    statuses: dict[str, str]
    scored: frozenset[tuple[str, str, int, str]]

    @classmethod
    def read(cls, store: Any) -> StoreSnapshot:
        """From a `ddbench.results.store.ResultsStore`; None (no store yet) gives an empty snapshot."""
        if store is None:
            return cls({}, frozenset())
        runs, scores = store.runs_frame(), store.scores_frame()
        statuses = dict(zip(runs["run_id"], runs["status"])) if not runs.empty else {}
        keys = (
            zip(scores["run_id"], scores["evaluator"], scores["seed"].astype(int), scores["protocol"])
            if not scores.empty
            else ()
        )
        return cls(statuses, frozenset((r, e, int(s), p) for r, e, s, p in keys))

    def state(self, spec: RunSpec) -> StoredState:
        wanted = [(e, s) for e in spec.evaluators for s in spec.eval_seeds]
        protocol = spec.protocol_key()
        missing = tuple(pair for pair in wanted if (spec.run_id, *pair, protocol) not in self.scored)
        return StoredState(self.statuses.get(spec.run_id), missing)


__all__ = ["StoredState", "StoreSnapshot"]
