"""A suite's stored scores laid out as its paper table, and the whole store as one table per setting.

How cells are computed (the aggregation itself is `ddbench.results.leaderboard.aggregate`):

* per architecture, mean ± std (ddof=0) over evaluation seeds;
* a cell over several architectures (Table 1/2/3: the unseen ones) is the mean of the
  architectures' means ± the mean of their stds, and is shown only when every architecture of the
  suite was scored — the paper's convention: Table 4's average column and Tables 2/3/6's "All" agree
  with it to the printed precision;
* "All"/"average" is the same mean over the row's other columns, shown only when every one exists.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import pandas as pd

from ddbench.engine.spec import RunSpec
from ddbench.errors import InvalidOptionError
from ddbench.results.baselines import run_problem
from ddbench.results.leaderboard import (
    AVG_COLUMN,
    NOT_MEANINGFUL,
    OTHER_EVALUATORS,
    OTHER_SETTINGS,
    PARTIAL,
    CellMark,
    LeaderboardTable,
    leaderboard_table,
    mark_notes,
    plain_value,
)
from ddbench.results.paper import PaperTable, paper_table
from ddbench.results.report.compare import compare_with_paper
from ddbench.results.report.rows import ROW_KEYS, run_keys, spec_prior_label
from ddbench.results.report.runs import ChosenRun, choose_runs


class LayoutLike(Protocol):
    """What `suite_table` reads of a suite's layout (`ddbench.running.suites.SuiteLayout`)."""

    rows: Sequence[str]
    columns: str
    all_column: bool
    title: str
    paper_table: str | None


@dataclasses.dataclass
class ReportTable:
    """One table of a report: the table, its title, notes on how it was made, and its runs."""

    key: str
    title: str
    table: LeaderboardTable
    notes: list[str] = dataclasses.field(default_factory=list)
    #: stored runs behind the table, in row order (their image grids go into the HTML report)
    run_ids: list[str] = dataclasses.field(default_factory=list)
    #: the stored runs behind each row (by its key values), for links from rows to image grids
    row_runs: dict[tuple[Any, ...], list[str]] = dataclasses.field(default_factory=dict)
    #: the marks each run puts on its cells (other settings, not meaningful), for its grid's caption
    run_marks: dict[str, tuple[CellMark, ...]] = dataclasses.field(default_factory=dict)
    #: runs of the suite with no stored run yet (labels)
    not_run: list[str] = dataclasses.field(default_factory=list)


def _layout_paper(layout: LayoutLike) -> PaperTable | None:
    return paper_table(layout.paper_table) if layout.paper_table else None


_COMPARE_HINT = "use --compare paper with a suite of the paper's tables (table1 … table4)"


def _check_row_keys(rows: Sequence[str]) -> None:
    unknown = [k for k in rows if k not in ROW_KEYS]
    if unknown:
        raise InvalidOptionError(f"Unknown layout row keys {unknown}; expected some of {list(ROW_KEYS)}")


def suite_table(
    scores: pd.DataFrame,
    runs: pd.DataFrame,
    suite_runs: Sequence[tuple[RunSpec, Mapping[str, str]]],
    layout: LayoutLike,
    name: str,
    compare: bool = False,
    filters: Mapping[str, Any] | None = None,
    value: str = "accuracy",
) -> ReportTable:
    """A suite's stored scores in its layout (see the module docstring for how cells are made).

    ``scores``/``runs`` are `ResultsStore.scores_frame()`/`runs_frame()`; ``suite_runs`` are the
    suite's (spec, labels) pairs (`ddbench.running.suites.Suite.expand`). Rows and columns of the paper's
    table (or of the suite) appear even without scores, their cells missing. ``compare`` adds the
    paper's number and our difference beside each column (needs ``layout.paper_table``).
    """
    rows = list(layout.rows)
    _check_row_keys(rows)
    paper = _layout_paper(layout)
    if compare and paper is None:
        raise InvalidOptionError(
            f"Suite '{name}' has no paper table to compare with ([layout] paper_table); {_COMPARE_HINT}"
        )
    chosen, notes, not_run = choose_runs(suite_runs, runs, layout.paper_table, rows)
    frame = _chosen_scores(scores, chosen, layout.columns)
    row_values, column_values = _layout_lines(layout, paper, suite_runs, rows)
    aggregate_label = _aggregate_label(paper, layout.columns)
    table = leaderboard_table(
        frame,
        rows=rows,
        columns=layout.columns,
        filters=filters,
        value=value,
        average=layout.all_column,
        column_values=column_values,
        row_values=row_values,
        average_label=aggregate_label,
        average_first=bool(paper and paper.columns and paper.columns[0] == aggregate_label),
        marks=_cell_marks(chosen, rows, layout.columns, frame),
    )
    notes = [_cell_note(layout, suite_runs, frame), *notes, *_unscored_evaluators_note(chosen, frame)]
    if compare and paper is not None:
        table = compare_with_paper(table, paper, aggregate_label)
        notes.append(
            f"'paper': {paper.name} of the LD3M paper ({paper.caption}); 'Δ' = ours − paper, percentage points."
        )
    notes += mark_notes(table)
    row_runs = _runs_by_row(chosen, rows, set(frame["run_id"]))
    return ReportTable(
        key=name,
        title=layout.title or name,
        table=table,
        notes=notes,
        run_ids=_in_row_order(table, row_runs),
        row_runs=row_runs,
        run_marks={c.run_id: c.marks for c in chosen if c.marks},
        not_run=not_run,
    )


def _aggregate_label(paper: PaperTable | None, columns: str) -> str:
    """The name of the average column: the paper's, else "all" over datasets, "avg" over evaluators."""
    return (paper.aggregate_column if paper else None) or ("all" if columns == "dataset" else AVG_COLUMN)


def _runs_by_row(
    chosen: Sequence[ChosenRun], rows: Sequence[str], scored: set[str]
) -> dict[tuple[Any, ...], list[str]]:
    """The scored runs of each row; the grids follow the table's rows, within a row the suite's order
    (its datasets)."""
    row_runs: dict[tuple[Any, ...], list[str]] = {}
    for choice in chosen:
        if choice.run_id in scored:
            row_runs.setdefault(_row_of(choice, rows), []).append(choice.run_id)
    return row_runs


def _chosen_scores(scores: pd.DataFrame, chosen: Sequence[ChosenRun], columns: str) -> pd.DataFrame:
    """The scores of the chosen runs, keyed by the suite's row labels."""
    selected = []
    for choice in chosen:
        part = scores[
            (scores["run_id"] == choice.run_id)
            & scores["evaluator"].isin(choice.evaluators)
            & (scores["protocol"] == choice.protocol)
        ].copy()
        if part.empty:
            continue
        if columns != "evaluator" and not set(choice.evaluators) <= set(part["evaluator"]):
            continue  # an average over some of the architectures is not the table's number
        for key, val in choice.keys.items():
            part[key] = val
        selected.append(part)
    return pd.concat(selected, ignore_index=True) if selected else scores.iloc[0:0].assign(**{k: [] for k in ROW_KEYS})


def _layout_lines(
    layout: LayoutLike,
    paper: PaperTable | None,
    suite_runs: Sequence[tuple[RunSpec, Mapping[str, str]]],
    rows: Sequence[str],
) -> tuple[list[tuple[Any, ...]], list[Any]]:
    """The table's fixed rows and columns: the paper's first, then what the suite adds."""
    suite_rows = [tuple(run_keys(s.to_dict(), labels, layout.paper_table, rows).values()) for s, labels in suite_runs]
    row_values: list[tuple[Any, ...]] = []
    if paper is not None and all(any(k in paper.row_dict(r) for r in paper.rows) for k in rows):
        row_values = [tuple(paper.row_dict(r).get(k) for k in rows) for r in paper.rows]
        row_values = [r for r in row_values if None not in r]
    row_values += suite_rows
    if paper is not None:
        return row_values, list(paper.value_columns)
    column_values = list(dict.fromkeys(
        e for s, _ in suite_runs for e in (s.evaluators if layout.columns == "evaluator" else (s.dataset,))
    ))  # fmt: skip
    return row_values, column_values


def _cell_marks(
    chosen: Sequence[ChosenRun], rows: Sequence[str], columns: str, frame: pd.DataFrame
) -> dict[tuple[tuple[Any, ...], Any], tuple[CellMark, ...]]:
    """Each chosen run's marks on its cells: one cell of a dataset column, the whole row otherwise
    (one column per evaluator); and `PARTIAL` on a cell with fewer seeds than its run asked for."""
    marks: dict[tuple[tuple[Any, ...], Any], tuple[CellMark, ...]] = {}
    for choice in chosen:
        cell = (_row_of(choice, rows), choice.dataset if columns == "dataset" else None)
        marks[cell] = marks.get(cell, ()) + choice.marks
    for choice, evaluator, scored in _partial_evaluators(chosen, frame):
        cell = (_row_of(choice, rows), choice.dataset if columns == "dataset" else evaluator)
        note = (
            f"run {choice.run_id[:8]} has {scored} of {choice.seeds} seeds of {evaluator} (still running, or the "
            f"others failed: ddbench show {choice.run_id})"
        )
        marks[cell] = (*marks.get(cell, ()), CellMark(PARTIAL, note))
    return marks


def _partial_evaluators(chosen: Sequence[ChosenRun], frame: pd.DataFrame) -> list[tuple[ChosenRun, str, int]]:
    """(run, evaluator, seeds scored) wherever a chosen run has fewer seeds of an evaluator than asked."""
    if frame.empty:
        return []
    scored = frame.groupby(["run_id", "evaluator"])["seed"].nunique().to_dict()
    return [
        (choice, evaluator, scored[(choice.run_id, evaluator)])
        for choice in chosen
        for evaluator in choice.evaluators
        if 0 < scored.get((choice.run_id, evaluator), 0) < choice.seeds
    ]


def _unscored_evaluators_note(chosen: Sequence[ChosenRun], frame: pd.DataFrame) -> list[str]:
    """A note on runs that have scores but none yet for some of their evaluators (their cells are
    '—' for a reason: still being evaluated, or those evaluations failed)."""
    scored = set(zip(frame["run_id"], frame["evaluator"])) if not frame.empty else set()
    lacking = []
    for choice in chosen:
        missing = [e for e in choice.evaluators if (choice.run_id, e) not in scored]
        if missing and len(missing) < len(choice.evaluators):
            lacking.append(f"run {choice.run_id[:8]} has no {', '.join(missing)} score yet")
    if not lacking:
        return []
    return [f"Being evaluated (or those evaluations failed: ddbench show RUN_ID): {'; '.join(lacking)}"]


def _row_of(choice: ChosenRun, rows: Sequence[str]) -> tuple[Any, ...]:
    return tuple(choice.keys[k] for k in rows)


def _in_row_order(table: LeaderboardTable, row_runs: Mapping[tuple[Any, ...], Sequence[str]]) -> list[str]:
    """The runs of ``row_runs`` in the order of the table's rows, each once."""
    return list(dict.fromkeys(r for row in table.rows for r in row_runs.get(tuple(row[: table.n_keys]), ())))


def _cell_note(layout: LayoutLike, suite_runs: Sequence[tuple[RunSpec, Mapping[str, str]]], frame: pd.DataFrame) -> str:
    evaluators = list(dict.fromkeys(e for s, _ in suite_runs for e in s.evaluators))
    seeds = frame.groupby(["run_id", "evaluator"])["seed"].nunique() if not frame.empty else pd.Series(dtype=int)
    counts = f"{seeds.min()}" if seeds.min() == seeds.max() else f"{seeds.min()}–{seeds.max()}"
    what = f"accuracy %, mean ± std (ddof=0) over evaluation seeds ({counts if len(seeds) else 'none yet'})"
    if layout.columns == "dataset" and len(evaluators) > 1:
        what += (
            f"; each cell is the mean over {', '.join(evaluators)} (mean of their means ± mean of their stds), "
            "missing unless all were scored"
        )
    if layout.all_column:
        what += "; the aggregate column is the mean over the row's other columns, missing unless all exist"
    return (
        what
        + f"; best per column in bold (cells marked {OTHER_SETTINGS}, {NOT_MEANINGFUL}, {OTHER_EVALUATORS} or {PARTIAL} "
        "do not compete); — = missing."
    )


STORE_TABLE_NOTE = (
    "accuracy %, mean ± std (ddof=0) over evaluation seeds per evaluator; avg = mean over the evaluators "
    f"(± mean std), missing unless all were scored; best per column in bold (cells marked {NOT_MEANINGFUL} do not "
    "compete); — = missing."
)


def store_tables(scores: pd.DataFrame, runs: pd.DataFrame, value: str = "accuracy") -> list[ReportTable]:
    """Every stored score, one table per (IPC, resolution, protocol, report): one row per run
    (dataset, prior variant, matcher, iterations, run id), one column per evaluator and their average.
    Runs are rows because two runs of one method (e.g. a smoke and a full run) are different results."""
    if scores.empty:
        return []
    specs = {r["run_id"]: json.loads(r["spec_json"]) for r in runs.to_dict("records")}
    frame = scores.copy()
    frame["prior"] = [spec_prior_label(p, specs.get(rid, {})) for p, rid in zip(frame["prior"], frame["run_id"])]
    frame["iterations"] = [specs.get(rid, {}).get("iterations") for rid in frame["run_id"]]
    frame["run"] = frame["run_id"].str[:8]
    row_keys = ("dataset", "prior", "matcher", "iterations", "run")
    groups = ["ipc", "res", "protocol", "report"]
    tables: list[ReportTable] = []
    for key, part in frame.groupby(groups, dropna=False, sort=True):
        settings = dict(zip(groups, key))
        res = "default" if pd.isna(settings["res"]) else f"{settings['res']} px"
        title = f"IPC {settings['ipc']}, resolution {res}, protocol {settings['protocol']}" + (
            ", best-over-training accuracy" if settings["report"] == "max" else ""
        )
        first = part.drop_duplicates("run_id")
        row_runs = {
            tuple(plain_value(record[k]) for k in row_keys): [record["run_id"]] for record in first.to_dict("records")
        }
        run_marks = {
            run_ids[0]: (CellMark(NOT_MEANINGFUL, f"run {run_ids[0][:8]} is not meaningful: {problem}"),)
            for run_ids in row_runs.values()
            if (problem := run_problem(specs.get(run_ids[0], {"prior": "", "matcher": ""})))
        }
        marks = {(row, None): run_marks[run_ids[0]] for row, run_ids in row_runs.items() if run_ids[0] in run_marks}
        table = leaderboard_table(part, rows=row_keys, columns="evaluator", value=value, marks=marks)
        tables.append(
            ReportTable(
                key=re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-"),
                title=title,
                table=table,
                notes=[STORE_TABLE_NOTE, *mark_notes(table)],
                run_ids=_in_row_order(table, row_runs),
                row_runs=row_runs,
                run_marks=run_marks,
            )
        )  # fmt: skip
    return tables
