"""Which stored run fills each cell of a suite's table: the suite's own run, else the newest one that
differs only in settings a cell may be filled with (its cells then marked)."""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from ddbench.engine.spec import RunSpec
from ddbench.results.baselines import run_problem
from ddbench.results.leaderboard import (
    NOT_MEANINGFUL,
    OTHER_SETTINGS,
    CellMark,
)
from ddbench.results.report.rows import run_keys


def _protocol_key(spec: Mapping[str, Any]) -> str:
    # RunSpec.protocol_key of a stored spec dict (which may come from another ddbench version)
    from ddbench.engine.soft_labels import stored_protocol_key

    return stored_protocol_key(spec)


def _normalised(value: Any) -> Any:
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def _value_fits(expected: Any, stored: Any) -> bool:
    """Equality, where a suite's unexpanded ``${VAR}`` matches whatever the run had there."""
    if isinstance(expected, str) and "${" in expected:
        parts = re.split(r"(\$\{[^}]*\})", expected)
        pattern = "".join(".*" if part.startswith("${") else re.escape(part) for part in parts)
        return isinstance(stored, str) and re.fullmatch(pattern, stored) is not None
    return _normalised(expected) == _normalised(stored)


def _same_cell(expected: Mapping[str, Any], stored: Mapping[str, Any]) -> bool:
    """Whether a stored run is the suite's run up to iterations, seeds, learning rates, matcher
    options and evaluation settings (e.g. the same suite run with ``--budget smoke``)."""
    for key in ("dataset", "prior", "matcher", "ipc", "res"):
        if _normalised(expected.get(key)) != _normalised(stored.get(key)):
            return False
    want, have = dict(expected.get("prior_options") or {}), dict(stored.get("prior_options") or {})
    return set(want) == set(have) and all(_value_fits(want[k], have[k]) for k in want)


#: settings a suite's cell may be filled with other values of (`_same_cell`), as `_settings_diff` names them
_CELL_SETTINGS = (
    "iterations",
    "seed",
    "eval_epochs",
    "eval_seeds",
    "lrs",
    "matcher_options",
    "train_per_class",
    "test_size",
)


def _settings_diff(suite_spec: Mapping[str, Any], stored: Mapping[str, Any]) -> list[str]:
    """``["iterations 20 (suite: 1000)", "matcher_options.batch_real 64 (suite: 128)", …]``: where a
    stored run's settings differ from the suite's (tables of options key by key)."""
    parts = []
    for key in _CELL_SETTINGS:
        want, have = _normalised(suite_spec.get(key)), _normalised(stored.get(key))
        if want == have:
            continue
        if isinstance(want, dict) and isinstance(have, dict):
            for option in sorted(set(want) | set(have)):
                if want.get(option) != have.get(option):
                    parts.append(f"{key}.{option} {have.get(option, 'default')} (suite: {want.get(option, 'default')})")
        else:
            parts.append(f"{key} {have} (suite: {want})")
    return parts


@dataclasses.dataclass(frozen=True)
class ChosenRun:
    run_id: str
    keys: dict[str, Any]
    evaluators: tuple[str, ...]
    protocol: str
    dataset: str
    #: why its cells are not the suite's own numbers (other settings, not meaningful)
    marks: tuple[CellMark, ...] = ()
    #: evaluation seeds the run asked of each evaluator (fewer scored: `PARTIAL`)
    seeds: int = 0


def _run_marks(run_id: str, stored_spec: Mapping[str, Any], differs: Sequence[str]) -> tuple[CellMark, ...]:
    marks = []
    if differs:
        marks.append(
            CellMark(OTHER_SETTINGS, f"run {run_id[:8]} has other settings than the suite's: {'; '.join(differs)}")
        )
    problem = run_problem(stored_spec)
    if problem:
        marks.append(CellMark(NOT_MEANINGFUL, f"run {run_id[:8]} is not meaningful: {problem}"))
    return tuple(marks)


def choose_runs(
    suite_runs: Sequence[tuple[RunSpec, Mapping[str, str]]],
    runs: pd.DataFrame,
    paper: str | None,
    fields: Sequence[str],
) -> tuple[list[ChosenRun], list[str], list[str]]:
    """For each suite run, the stored run that fills its cell: the same run id, else a run that
    differs only in iterations/seeds/evaluation settings (the newest finished one), its cells then
    marked (`_run_marks`). Returns the choices, notes on choices made, and the suite runs with no
    stored run."""
    stored = [
        {**record, "spec": json.loads(record["spec_json"])}
        for record in runs.sort_values("created_at", ascending=False).to_dict("records")
    ]
    by_id = {r["run_id"]: r for r in stored}
    chosen: list[ChosenRun] = []
    notes: list[str] = []
    not_run: list[str] = []
    unfinished: list[str] = []
    for spec, labels in suite_runs:
        keys = run_keys(spec.to_dict(), labels, paper, fields)
        exact = by_id.get(spec.run_id)
        if exact is not None:
            if exact["status"] != "done":
                unfinished.append(_unfinished(spec, labels, exact))
            marks = _run_marks(spec.run_id, exact["spec"], ())
            chosen.append(
                ChosenRun(
                    spec.run_id, keys, spec.evaluators, spec.protocol_key(), spec.dataset, marks, len(spec.eval_seeds)
                )
            )
            continue
        fits = [r for r in stored if _same_cell(spec.to_dict(), r["spec"])]
        if not fits:
            not_run.append(_suite_label(spec, labels))
            continue
        fits.sort(key=lambda r: (r["status"] == "done", str(r["created_at"])), reverse=True)
        pick = fits[0]
        if pick["status"] != "done":
            unfinished.append(_unfinished(spec, labels, pick))
        differs = _settings_diff(spec.to_dict(), pick["spec"])
        # other finished candidates are worth a note; a failed attempt left in the store is not
        others = ", ".join(r["run_id"] for r in fits[1:] if r["status"] == "done")
        if others:
            notes.append(f"{spec.label}: used run {pick['run_id']} (the newest finished); also stored: {others}")
        marks = _run_marks(pick["run_id"], pick["spec"], differs)
        chosen.append(
            ChosenRun(
                pick["run_id"],
                keys,
                spec.evaluators,
                _protocol_key(pick["spec"]),
                spec.dataset,
                marks,
                len(pick["spec"].get("eval_seeds") or spec.eval_seeds),
            )
        )
    if unfinished:
        notes.append(f"Not finished ({len(unfinished)}): {'; '.join(unfinished)}")
    return chosen, notes, not_run


def _suite_label(spec: RunSpec, labels: Mapping[str, str]) -> str:
    """How notes name a suite run: its label and the suite's labels for it (``prior=ld3m-random``)."""
    return f"{spec.label} {' '.join(f'{k}={v}' for k, v in labels.items())}".strip()


def _unfinished(spec: RunSpec, labels: Mapping[str, str], record: Mapping[str, Any]) -> str:
    """A suite run whose stored run has not finished: running (or killed while it ran), or failed."""
    label = _suite_label(spec, labels)
    if record["status"] == "failed":
        error = str(record.get("error") or "").strip().splitlines()
        return f"{label}: failed ({error[0] if error else 'no error recorded'}; `ddbench runs --status failed`)"
    return f"{label}: running, or stopped while running (`ddbench run` again resumes it)"
