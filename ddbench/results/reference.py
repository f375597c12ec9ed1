"""Scores relative to real data: ``ddbench leaderboard --reference`` (DD-Ranking's HLR, IOR and score).

Every row (dataset, prior, matcher, IPC, evaluator, protocol) gets, beside its accuracy:

* **HLR**, hard label recovery = Acc(full data, hard labels) − Acc(the set, hard labels): the gap to
  the full-data baseline (`ddbench.running.full_baseline`; lower is better). A soft-label row uses the same
  set's hard-label score (its protocol without ``soft=…``).
* **IOR**, improvement over random = Acc(the set) − Acc(random real images at the same IPC), both under
  the row's protocol, soft labels included (a teacher labels the random images too; higher is better).
* the **DD-Ranking score** (DD-Ranking's label-robust score): α = w·IOR − (1 − w)·HLR with accuracies as
  fractions, normalised to [0, 1] as (e^α − e^−1) / (e − e^−1); w = 0.5 as on DD-Ranking's leaderboard.

As in DD-Ranking (github.com/NUS-HPC-AI-Lab/DD-Ranking), with two differences: ddbench computes the
three from the means over seeds (DD-Ranking averages per evaluation run; the means of HLR and IOR are
the same, the score differs only through the exponential's curvature), and its full-data baseline
trains a stated number of epochs (recorded in its protocol key, e.g. ``dc[epochs=2]``; the most
epochs stored are used) where DD-Ranking trains the protocol's. The random-real reference pools every
stored random-real run at that dataset, IPC, evaluator and protocol: a run of a matcher that keeps its
prior's initial images (`Matcher.distils` False: ``real``) under a prior without a generator (its
recorded generator label ``-``: pixels), whose initial images are the random real ones. A missing
reference is a cell that names the command that fills it. The references are columns, not rows.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pandas as pd

from ddbench.engine.soft_labels import SoftLabels, hard_protocol_key, key_epochs, protocol_name, soft_part
from ddbench.engine.spec import BUDGETS, RunSpec, recorded_labels
from ddbench.results.leaderboard import (
    Cell,
    Delta,
    LeaderboardTable,
    TextCell,
    _order_key,
    aggregate,
    apply_filters,
    plain_value,
)
from ddbench.results.paper import UNRECORDED, generator_name
from ddbench.results.report.rows import with_prior_variants
from ddbench.results.store import FULL_DATA

#: the generator label of a prior without a generator (`Prior.generator_label`): its images are pixels
NO_GENERATOR = "-"
DEFAULT_WEIGHT = 0.5
#: the keys rows are matched on; res and test_size are shown only where a row has one
ROW_KEYS = ("dataset", "res", "test_size", "prior", "matcher", "ipc", "evaluator", "protocol")
VALUE_COLUMNS = ("accuracy", "full data", "random real", "HLR (gap to full)", "IOR (over random)", "DD-Ranking score")
DEFINITIONS = (
    "HLR = full-data accuracy − the set's hard-label accuracy (lower is better); IOR = the set's accuracy − random "
    "real images' at the same IPC and protocol (higher is better); DD-Ranking score = (e^α − e^−1) / (e − e^−1), "
    "α = {w:g}·IOR − {v:g}·HLR (fractions), from the means over seeds. Differences in percentage points."
)


def ddranking_score(hlr: float, ior: float, weight: float = DEFAULT_WEIGHT) -> float:
    """DD-Ranking's combined score of HLR and IOR (fractions), in [0, 1] for differences in [−1, 1].

    >>> round(ddranking_score(0.0, 0.0), 4)
    0.2689
    >>> round(ddranking_score(hlr=1.0, ior=-1.0), 4), round(ddranking_score(hlr=-1.0, ior=1.0), 4)
    (0.0, 1.0)
    """
    alpha = weight * ior - (1.0 - weight) * hlr
    return (math.exp(alpha) - math.exp(-1.0)) / (math.e - math.exp(-1.0))


@functools.lru_cache(maxsize=4096)
def _spec(spec_json: str) -> dict[str, Any]:
    try:
        value = json.loads(spec_json)
    except (TypeError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _prepared(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    specs = frame["spec_json"].map(lambda text: _spec(text) if isinstance(text, str) else {})
    frame["test_size"] = specs.map(lambda spec: spec.get("test_size")).astype("object")
    frame["protocol_name"] = frame["protocol"].map(protocol_name)
    return frame


def _cell(values: pd.Series) -> Cell:
    return Cell(float(values.mean()), float(values.std(ddof=0)), int(values.count()))


def _full_data(frame: pd.DataFrame) -> tuple[dict[tuple[Any, ...], Cell], dict[tuple[Any, ...], str]]:
    """The full-data cell per (dataset, res, test_size, evaluator, protocol name): the stored key
    with the most epochs; and a note per cell on what it is."""
    full = frame[(frame["prior"] == FULL_DATA) & (frame["matcher"] == FULL_DATA)]
    cells: dict[tuple[Any, ...], Cell] = {}
    notes: dict[tuple[Any, ...], str] = {}
    groups = ["dataset", "res", "test_size", "evaluator", "protocol_name"]
    for group, part in full.groupby(groups, dropna=False, sort=False):
        key = tuple(plain_value(v) for v in group)
        chosen = max(part["protocol"].unique(), key=lambda k: key_epochs(k) or 0)
        scores = part[part["protocol"] == chosen]
        cells[key] = _cell(scores["accuracy"])
        spec = _spec(scores["spec_json"].iloc[0])
        n_train = (spec.get("full_data") or {}).get("n_train", "?")
        per_class = spec.get("train_per_class")
        trained = (
            f"the first {per_class} per class, {n_train} images" if per_class else f"all {n_train} training images"
        )
        notes[key] = f"full data, {key[0]} {key[3]}: {chosen} on {trained}, {len(scores)} seed(s)"
    return cells, notes


@functools.cache
def _keeps_initial_images(matcher: str) -> bool:
    """Whether ``matcher`` declares that it does not distil (`Matcher.distils`): its runs keep the
    prior's initial images. False for a matcher that is not installed (an external set, full data)."""
    from ddbench import registry

    try:
        cls = registry.get_plugin_class("matcher", matcher)
    except Exception:  # noqa: BLE001 - an uninstalled matcher (a store from elsewhere): not a baseline
        return False
    return not getattr(cls, "distils", True)


@functools.lru_cache(maxsize=4096)
def _keeps_and_generator(matcher: str, prior: str, spec_json: str) -> tuple[bool, str]:
    """Whether a run kept its prior's initial images and the generator label of its prior, as the
    run recorded them (`ddbench.running.identity.plugin_labels`); for a run from before labels, what the
    installed plugins declare (the only place the results side imports a plugin, for old stores)."""
    spec = _spec(spec_json)
    matcher_labels, prior_labels = recorded_labels(spec, "matcher"), recorded_labels(spec, "prior")
    if matcher_labels and "distils" in matcher_labels:
        keeps = not matcher_labels["distils"]
    else:
        keeps = _keeps_initial_images(matcher)
    if not keeps:
        return False, ""
    if prior_labels and prior_labels.get("generator"):
        return True, generator_name(prior, {}, prior_labels)
    return True, _declared_generator(prior, json.dumps(spec.get("prior_options") or {}, sort_keys=True))


@functools.cache
def _declared_generator(prior: str, options_json: str) -> str:
    """The generator label the installed ``prior`` gives these options (`Prior.generator_label`)."""
    from ddbench import registry

    try:
        cls = registry.get_plugin_class("prior", prior)
    except Exception:  # noqa: BLE001 - an uninstalled prior (a store from elsewhere): unknown
        return UNRECORDED
    return cls.generator_label(json.loads(options_json)) if hasattr(cls, "generator_label") else NO_GENERATOR


def _is_random_real(frame: pd.DataFrame) -> pd.Series:
    """The scores of random real images: runs that keep the initial images of a prior without a generator."""
    pixels = [
        isinstance(matcher, str)
        and _keeps_and_generator(matcher, str(prior), text if isinstance(text, str) else "") == (True, NO_GENERATOR)
        for matcher, prior, text in zip(frame["matcher"], frame["prior"], frame["spec_json"])
    ]
    return pd.Series(pixels, index=frame.index, dtype=bool)


def random_real_matchers() -> list[str]:
    """The installed matchers that keep their prior's initial images (`ddbench run --algo NAME` makes
    random-real runs with them)."""
    from ddbench import registry

    return [name for name in registry.plugin_names("matcher") if _keeps_initial_images(name)]


def _random_real(frame: pd.DataFrame) -> dict[tuple[Any, ...], Cell]:
    """Random real images per (dataset, res, test_size, ipc, evaluator, protocol), pooled over runs."""
    rand = frame[_is_random_real(frame)]
    groups = ["dataset", "res", "test_size", "ipc", "evaluator", "protocol"]
    return {
        tuple(plain_value(v) for v in group): _cell(part["accuracy"])
        for group, part in rand.groupby(groups, dropna=False, sort=False)
    }


def _soft_options(record: Mapping[str, Any] | None) -> str:
    soft = (record or {}).get("soft_labels")
    if not soft:
        return ""
    labels = SoftLabels.from_dict(soft)
    if labels.teacher is None:
        return ""
    options = f" --soft-labels teacher:{labels.teacher.arch} --teacher-epochs {labels.teacher.epochs}"
    return options + (f" --soft-loss kl --temperature {labels.temperature:g}" if labels.loss == "kl" else "")


def _test_size_option(test_size: Any, command: str) -> str:
    if test_size is None:
        return ""
    if command == "run":
        return (
            " --budget smoke"
            if test_size == BUDGETS["smoke"].get("test_size")
            else f" (on the first {test_size} test images)"
        )
    return f" --test-size {test_size}"


def _full_hint(row: Mapping[str, Any]) -> TextCell:
    name = protocol_name(row["protocol"])
    return TextCell(
        f"ddbench baseline --dataset {row['dataset']} --evaluators {row['evaluator']}"
        + (f" --protocol {name}" if name != RunSpec.protocol else "")  # the default protocol goes unsaid
        + (f" --res {row['res']}" if row["res"] is not None else "")
        + _test_size_option(row["test_size"], "baseline")
    )


def _random_hint(row: Mapping[str, Any], record: Mapping[str, Any] | None) -> TextCell:
    key = row["protocol"]
    if soft_part(key) and not _soft_options(record):
        return TextCell("n/a: the set's own soft labels")
    name, epochs = protocol_name(key), key_epochs(key)
    return TextCell(
        f"ddbench run --dataset {row['dataset']} --algo {_baseline_matcher()} --ipc {row['ipc']} --evaluators {row['evaluator']}"
        + (f" --protocol {name}" if name != RunSpec.protocol else "")  # the default protocol goes unsaid
        + (f" --eval-epochs {epochs}" if epochs is not None else "")
        + (f" --res {row['res']}" if row["res"] is not None else "")
        + _soft_options(record)
        + _test_size_option(row["test_size"], "run")
    )


def _baseline_matcher() -> str:
    matchers = random_real_matchers()
    return matchers[0] if matchers else "NAME"  # NAME: no installed matcher keeps the initial images


def _hard_hint(row: Mapping[str, Any]) -> TextCell:
    matcher = str(row["matcher"])
    if matcher.startswith("external:"):
        return TextCell(f"ddbench evaluate PATH --name {matcher.removeprefix('external:')} --soft-loss argmax")
    return TextCell("its hard-label score: the same ddbench run without --soft-labels")


def reference_table(
    frame: pd.DataFrame, filters: Mapping[str, Any] | None = None, weight: float = DEFAULT_WEIGHT
) -> tuple[LeaderboardTable, list[str]]:
    """One row per (dataset, prior, matcher, IPC, evaluator, protocol) of ``frame`` (a
    `ResultsStore.scores_frame`) that passes ``filters``: its accuracy, the two references, HLR, IOR
    and the DD-Ranking score (weight ``weight`` on IOR); and the notes that say which references."""
    if not 0.0 <= weight <= 1.0:
        from ddbench.errors import InvalidOptionError

        raise InvalidOptionError(f"Expected the DD-Ranking weight in [0, 1] but got {weight}")
    every = _prepared(frame)
    full, full_notes = _full_data(every)
    random_real = _random_real(every)
    shown = apply_filters(every, filters)
    # the references are columns, not rows
    references = ((shown["prior"] == FULL_DATA) & (shown["matcher"] == FULL_DATA)) | _is_random_real(shown)
    # variants of one prior (ld3m[generator=random] / [generator=trained]) are rows of their own
    shown = with_prior_variants(shown[~references])
    cells = aggregate(shown, rows=[k for k in ROW_KEYS if k != "evaluator"], columns="evaluator")
    records = {r: shown[shown["protocol"] == r]["protocol_json"].iloc[0] for r in shown["protocol"].unique()}
    by_key = {
        tuple(plain_value(rec[k]) for k in ROW_KEYS): Cell(float(rec["mean"]), float(rec["std"]), int(rec["n"]))
        for rec in cells.to_dict("records")
    }
    order = sorted(by_key, key=lambda r: tuple(_order_key(k, v) for k, v in zip(ROW_KEYS, r)))
    used_notes: dict[str, None] = {}
    found_random = False
    lines = []
    for row_id in order:
        row = dict(zip(ROW_KEYS, row_id))
        full_id = (row["dataset"], row["res"], row["test_size"], row["evaluator"], protocol_name(row["protocol"]))
        if full_id in full:
            used_notes[full_notes[full_id]] = None
        random_cell = random_real.get(
            (row["dataset"], row["res"], row["test_size"], row["ipc"], row["evaluator"], row["protocol"])
        )
        found_random = found_random or random_cell is not None
        record = json.loads(records[row["protocol"]]) if isinstance(records.get(row["protocol"]), str) else None
        lines.append((row_id, _row_values(row, by_key, full.get(full_id), random_cell, record, weight)))
    return _table(lines), _notes(weight, used_notes, found_random)


def _row_values(
    row: Mapping[str, Any],
    by_key: Mapping[tuple[Any, ...], Cell],
    full_cell: Cell | None,
    random_cell: Cell | None,
    record: Mapping[str, Any] | None,
    weight: float,
) -> list[Any]:
    """A row's value columns (`VALUE_COLUMNS`); a missing reference's cell names its command, and the
    differences it would give stay empty."""
    row_id = tuple(row.values())
    syn = by_key[row_id]
    hard_key = hard_protocol_key(row["protocol"])
    syn_hard = syn if hard_key == row["protocol"] else by_key.get((*row_id[:-1], hard_key))
    hlr: Delta | TextCell | None = None
    if full_cell is not None:
        hlr = Delta(full_cell.mean - syn_hard.mean) if syn_hard is not None else _hard_hint(row)
    ior = Delta(syn.mean - random_cell.mean) if random_cell is not None else None
    score = ddranking_score(hlr.value, ior.value, weight) if isinstance(hlr, Delta) and ior is not None else None
    score_cell = None if score is None else TextCell(f"{score:.3f}", score)
    return [syn, full_cell or _full_hint(row), random_cell or _random_hint(row, record), hlr, ior, score_cell]


def _table(lines: Sequence[tuple[tuple[Any, ...], list[Any]]]) -> LeaderboardTable:
    """The table of (row id, values) lines; res and test_size are columns only where some row has one."""
    keys = [
        k for i, k in enumerate(ROW_KEYS) if k not in ("res", "test_size") or any(r[i] is not None for r, _ in lines)
    ]
    index = [ROW_KEYS.index(k) for k in keys]
    return LeaderboardTable(
        columns=(*keys, *VALUE_COLUMNS),
        rows=[(*(row_id[i] for i in index), *values) for row_id, values in lines],
        n_keys=len(keys),
    )


def _notes(weight: float, used_notes: Iterable[str], found_random: bool) -> list[str]:
    """What the columns are and which references filled them."""
    notes = [DEFINITIONS.format(w=weight, v=1.0 - weight), *used_notes]
    if found_random:
        notes.append(
            "random real: every stored run that keeps the real initial images of a prior without a generator "
            f"({', '.join(random_real_matchers())} under pixels) at the row's dataset, IPC, evaluator and protocol, "
            "pooled over runs and seeds"
        )
    return notes


__all__ = ["reference_table", "ddranking_score", "random_real_matchers", "DEFAULT_WEIGHT"]
