"""Paper-shaped leaderboards of suites, the comparison with the paper, and the HTML report.

`suite_table` lays a suite's stored scores out as its paper table (rows, columns, the "All"
column); `compare_with_paper` puts the published numbers and the difference beside each column;
`store_tables` covers a whole store; `html_report` writes one self-contained page with every
table and every run's image grid (inline CSS, images as ``data:`` URIs, nothing fetched).

How cells are computed (the aggregation itself is `ddbench.leaderboard.aggregate`):

* per architecture, mean ± std (ddof=0) over evaluation seeds;
* a cell over several architectures (Table 1/2/3: the unseen ones) is the mean of the
  architectures' means ± the mean of their stds, and is shown only when every architecture of the
  suite was scored — the paper's convention: Table 4's average column and Tables 2/3/6's "All" agree
  with it to the printed precision;
* "All"/"average" is the same mean over the row's other columns, shown only when every one exists.
"""

from __future__ import annotations

import dataclasses
import html
import json
import re
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

import pandas as pd

from ddbench import __version__
from ddbench.baselines import run_problem
from ddbench.errors import InvalidOptionError
from ddbench.leaderboard import (
    AVG_COLUMN,
    MISSING,
    NOT_MEANINGFUL,
    OTHER_SETTINGS,
    Cell,
    CellMark,
    Delta,
    LeaderboardTable,
    PaperCell,
    leaderboard_table,
    mark_best,
    mark_notes,
    plain_value,
)
from ddbench.paper import PaperTable, effective_options, generator_name, label_options, paper_row_name, paper_table
from ddbench.report_grids import GRIDS_CSS, figure_id, grid_data_uri, grid_sections_html, resolve_run_dir
from ddbench.spec import RunSpec

#: row keys a layout may use (`run_keys`)
ROW_KEYS = ("prior", "matcher", "generator", "variant", "dataset", "ipc", "res", "iterations")


class LayoutLike(Protocol):
    """What `suite_table` reads of a suite's layout (`ddbench.suites.SuiteLayout`)."""

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


# ------------------------------------------------------------------------------- row keys


def prior_label(prior: str, options: Mapping[str, Any], labels: Mapping[str, Any] | None = None) -> str:
    """A prior and the options that make it a variant: ``ld3m``, ``ld3m[diffusion=off]``,
    ``glad[generator=ffhq]``. Options equal to the plugin's default and housekeeping options
    (checkpointing, CUDA ops, class ids, source paths) are left out; weights appear as the generator."""
    shown: dict[str, Any] = {}
    if options:
        defaults = effective_options(prior, {})
        hidden, path_options = label_options(prior, labels)  # as the prior declares (`Plugin.housekeeping_options`)
        shown = {
            k: v for k, v in sorted(options.items()) if k not in hidden and (k not in defaults or defaults[k] != v)
        }
        if any(options.get(k) for k in path_options):
            shown["generator"] = generator_name(prior, options, labels)
    if not shown:
        return prior
    return f"{prior}[{','.join(f'{k}={v}' for k, v in shown.items())}]"


def run_keys(
    spec: Mapping[str, Any],
    labels: Mapping[str, str] | None = None,
    paper: str | None = None,
    fields: Sequence[str] = ROW_KEYS,
) -> dict[str, Any]:
    """Row-key values of a run, for ``fields`` (some of `ROW_KEYS`).

    ``prior``/``variant`` are the paper's row names when ``paper`` has a rule for them
    (`ddbench.paper.row_specs`), the plain prior name for other paper tables, and
    `prior_label` otherwise; ``labels`` (a suite entry's ``[grid.labels]``) win over all of it.
    Only the fields asked for are computed (reading plugin defaults imports the plugin).
    """
    labels = dict(labels or {})
    prior = str(spec["prior"]["name"] if isinstance(spec["prior"], Mapping) else spec["prior"])
    options = dict(spec.get("prior_options") or {})
    # what a resolved run recorded of its prior (`ddbench.identity.plugin_labels`): no plugin import
    recorded = ((spec.get("identity") or {}).get("prior") or {}).get("labels")
    makers = {
        "prior": lambda: (
            (paper_row_name(paper, "prior", prior, options) if paper else None)
            or (prior if paper else prior_label(prior, options, recorded))
        ),
        "variant": lambda: (
            (paper_row_name(paper, "variant", prior, options) if paper else None)
            or prior_label(prior, options, recorded)
        ),
        "matcher": lambda: str(spec["matcher"]["name"] if isinstance(spec["matcher"], Mapping) else spec["matcher"]),
        "generator": lambda: generator_name(prior, options, recorded),
        "dataset": lambda: spec.get("dataset"),
        "ipc": lambda: spec.get("ipc"),
        "res": lambda: spec.get("res"),
        "iterations": lambda: spec.get("iterations"),
    }
    return {field: labels[field] if field in labels else makers[field]() for field in fields}


def _protocol_key(spec: Mapping[str, Any]) -> str:
    # RunSpec.protocol_key of a stored spec dict (which may come from another ddbench version)
    from ddbench.soft_labels import stored_protocol_key

    return stored_protocol_key(spec)


# --------------------------------------------------------------------- finding a suite's runs


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
class _Chosen:
    run_id: str
    keys: dict[str, Any]
    evaluators: tuple[str, ...]
    protocol: str
    dataset: str
    #: why its cells are not the suite's own numbers (other settings, not meaningful)
    marks: tuple[CellMark, ...] = ()


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


def _choose_runs(
    suite_runs: Sequence[tuple[RunSpec, Mapping[str, str]]],
    runs: pd.DataFrame,
    paper: str | None,
    fields: Sequence[str],
) -> tuple[list[_Chosen], list[str], list[str]]:
    """For each suite run, the stored run that fills its cell: the same run id, else a run that
    differs only in iterations/seeds/evaluation settings (the newest finished one), its cells then
    marked (`_run_marks`). Returns the choices, notes on choices made, and the suite runs with no
    stored run."""
    stored = [
        {**record, "spec": json.loads(record["spec_json"])}
        for record in runs.sort_values("created_at", ascending=False).to_dict("records")
    ]
    by_id = {r["run_id"]: r for r in stored}
    chosen: list[_Chosen] = []
    notes: list[str] = []
    not_run: list[str] = []
    for spec, labels in suite_runs:
        keys = run_keys(spec.to_dict(), labels, paper, fields)
        exact = by_id.get(spec.run_id)
        if exact is not None:
            marks = _run_marks(spec.run_id, exact["spec"], ())
            chosen.append(_Chosen(spec.run_id, keys, spec.evaluators, spec.protocol_key(), spec.dataset, marks))
            continue
        fits = [r for r in stored if _same_cell(spec.to_dict(), r["spec"])]
        if not fits:
            not_run.append(f"{spec.label} {' '.join(f'{k}={v}' for k, v in labels.items())}".strip())
            continue
        fits.sort(key=lambda r: (r["status"] == "done", str(r["created_at"])), reverse=True)
        pick = fits[0]
        differs = _settings_diff(spec.to_dict(), pick["spec"])
        # other finished candidates are worth a note; a failed attempt left in the store is not
        others = ", ".join(r["run_id"] for r in fits[1:] if r["status"] == "done")
        if others:
            notes.append(f"{spec.label}: used run {pick['run_id']} (the newest finished); also stored: {others}")
        marks = _run_marks(pick["run_id"], pick["spec"], differs)
        chosen.append(_Chosen(pick["run_id"], keys, spec.evaluators, _protocol_key(pick["spec"]), spec.dataset, marks))
    return chosen, notes, not_run


# ------------------------------------------------------------------------------ suite table


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
    suite's (spec, labels) pairs (`ddbench.suites.Suite.expand`). Rows and columns of the paper's
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
    chosen, notes, not_run = _choose_runs(suite_runs, runs, layout.paper_table, rows)
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
        marks=_cell_marks(chosen, rows, layout.columns),
    )
    notes = [_cell_note(layout, suite_runs, frame), *notes]
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


def _runs_by_row(chosen: Sequence[_Chosen], rows: Sequence[str], scored: set[str]) -> dict[tuple[Any, ...], list[str]]:
    """The scored runs of each row; the grids follow the table's rows, within a row the suite's order
    (its datasets)."""
    row_runs: dict[tuple[Any, ...], list[str]] = {}
    for choice in chosen:
        if choice.run_id in scored:
            row_runs.setdefault(_row_of(choice, rows), []).append(choice.run_id)
    return row_runs


def _chosen_scores(scores: pd.DataFrame, chosen: Sequence[_Chosen], columns: str) -> pd.DataFrame:
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
    chosen: Sequence[_Chosen], rows: Sequence[str], columns: str
) -> dict[tuple[tuple[Any, ...], Any], tuple[CellMark, ...]]:
    """Each chosen run's marks on its cells: one cell of a dataset column, the whole row otherwise
    (one column per evaluator)."""
    marks: dict[tuple[tuple[Any, ...], Any], tuple[CellMark, ...]] = {}
    for choice in chosen:
        cell = (_row_of(choice, rows), choice.dataset if columns == "dataset" else None)
        marks[cell] = marks.get(cell, ()) + choice.marks
    return marks


def _row_of(choice: _Chosen, rows: Sequence[str]) -> tuple[Any, ...]:
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
        + f"; best per column in bold (cells marked {OTHER_SETTINGS} or {NOT_MEANINGFUL} do not compete); — = missing."
    )


# ------------------------------------------------------------------------ --compare paper


def compare_with_paper(
    table: LeaderboardTable, paper: PaperTable, aggregate_label: str | None = None
) -> LeaderboardTable:
    """Beside each value column ``c``: ``c paper`` (the published mean ± std) and ``c Δ`` (our mean
    minus the paper's, in percentage points; missing where either is). Our best marks are kept; the
    paper's column marks its own best. A row matches the paper row that agrees on every key they share."""
    row_keys = table.columns[: table.n_keys]
    uncovered = [k for k in paper.row_keys if k not in row_keys and k not in paper.settings]
    if uncovered:
        raise InvalidOptionError(
            f"Cannot match rows with {paper.name}: its rows are keyed by {list(paper.row_keys)} but the table's "
            f"by {list(row_keys)}; add {uncovered} to the layout's rows"
        )

    def paper_row(values: Sequence[Any]) -> tuple[str, ...] | None:
        ours = dict(zip(row_keys, values))
        for row in paper.rows:
            theirs = paper.row_dict(row)
            if all(str(ours[k]) == str(theirs[k]) for k in row_keys if k in theirs):
                return row
        return None

    columns = list(table.value_columns)
    header: list[str] = []
    for column in columns:
        header += [column, f"{column} paper", f"{column} Δ"]
    paper_grid: list[list[Cell | None]] = []
    for line in table.rows:
        row = paper_row(line[: table.n_keys])
        cells: list[Cell | None] = []
        for column in columns:
            key = paper.aggregate_column if column == aggregate_label and paper.aggregate_column else column
            published = paper.cells.get((row, key)) if row is not None else None
            cells.append(PaperCell(published[0], published[1], 0) if published else None)
        paper_grid.append(cells)
    mark_best(paper_grid)
    out_rows = []
    for line, published in zip(table.rows, paper_grid):
        values: list[Any] = list(line[: table.n_keys])
        for ours, theirs in zip(line[table.n_keys :], published):
            delta = (
                Delta(ours.mean - theirs.mean, marks=ours.marks)
                if isinstance(ours, Cell) and theirs is not None
                else None
            )
            values += [ours, theirs, delta]
        out_rows.append(tuple(values))
    return LeaderboardTable(columns=(*row_keys, *header), rows=out_rows, n_keys=table.n_keys)


# ---------------------------------------------------------------------------- whole store


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
    frame["prior"] = [
        prior_label(p, specs.get(rid, {}).get("prior_options") or {}) for p, rid in zip(frame["prior"], frame["run_id"])
    ]
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


# ------------------------------------------------------------------------------------ HTML

_CSS = (
    """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2em; color: #1d1d1f; }
h1 { font-size: 1.6em; margin-bottom: .2em; } h2 { margin-top: 2em; border-bottom: 1px solid #ddd; }
.meta, .note { color: #555; font-size: .9em; }
table { border-collapse: collapse; margin: .8em 0; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #ccc; padding: .25em .6em; white-space: nowrap; }
th { background: #f2f2f5; } td.num { text-align: right; } td.key { text-align: left; }
td.best { font-weight: 700; background: #e8f4e8; } td.missing { color: #999; text-align: center; }
td.paper { color: #345; background: #f6f8fb; } td.delta { color: #555; }
td.marked { color: #6b5a3a; } td.grid-links a { text-decoration: none; }
tr:target td { background: #fff6d6; }
details.marks { color: #555; font-size: .9em; margin: .3em 0; } details.marks li { margin: .1em 0; }
h3 { margin: 1.2em 0 .4em; font-size: 1.05em; }
"""
    + GRIDS_CSS
)


def _cell_html(value: Any, is_value_column: bool) -> str:
    if isinstance(value, (Cell, Delta)):
        classes = ["num"]
        if isinstance(value, PaperCell):
            classes.append("paper")
        if isinstance(value, Delta):
            classes.append("delta")
        text = html.escape(value.text())
        if value.best:
            classes.append("best")
            text = f"<strong>{text}</strong>"
        if value.marks:
            classes.append("marked")
            text += marks_html(value.marks)
        return f'<td class="{" ".join(classes)}">{text}</td>'
    if value is None and is_value_column:
        return f'<td class="missing" title="missing">{MISSING}</td>'
    return f'<td class="key">{html.escape(MISSING if value is None else str(value))}</td>'


def marks_html(marks: Sequence[CellMark]) -> str:
    """Each mark's symbol as a superscript whose tooltip says why (``title``)."""
    by_symbol: dict[str, list[str]] = {}
    for mark in marks:
        by_symbol.setdefault(mark.symbol, []).append(mark.note)
    return "".join(
        f'<sup class="mark" title="{html.escape(chr(10).join(notes), quote=True)}">{html.escape(symbol)}</sup>'
        for symbol, notes in by_symbol.items()
    )


def _compare_groups(table: LeaderboardTable) -> list[str] | None:
    """The value columns' names when they come as (``c``, ``c paper``, ``c Δ``) triples, else None."""
    values = list(table.value_columns)
    if not values or len(values) % 3:
        return None
    names = values[0::3]
    if all(
        values[i + 1] == f"{n} paper" and values[i + 2] == f"{n} Δ" for i, n in zip(range(0, len(values), 3), names)
    ):
        return names
    return None


def row_anchor(table_key: str, index: int) -> str:
    """The ``id`` of a table's row ``index`` in the HTML report."""
    return f"{table_key}-row-{index + 1}"


def table_html(
    table: LeaderboardTable, key: str | None = None, row_runs: Mapping[tuple[Any, ...], Sequence[str]] | None = None
) -> str:
    """A leaderboard table as an HTML ``<table>``; best cells bold, missing cells as —, marked cells
    with their mark (`marks_html`). A comparison with the paper gets a two-row header: each column
    over its "ours | paper | Δ". With ``key``, rows get ids (`row_anchor`); with ``row_runs``, a
    last column links each row to its runs' image grids."""
    groups = _compare_groups(table)
    keys = table.columns[: table.n_keys]
    links = row_runs is not None
    if groups is None:
        head = (
            "<tr>"
            + "".join(f"<th>{html.escape(str(c))}</th>" for c in table.columns)
            + ("<th>grid</th>" if links else "")
            + "</tr>"
        )
    else:
        head = (
            "<tr>" + "".join(f'<th rowspan="2">{html.escape(str(k))}</th>' for k in keys)
            + "".join(f'<th colspan="3">{html.escape(g)}</th>' for g in groups)
            + ('<th rowspan="2">grid</th>' if links else "") + "</tr>\n<tr>"
            + "<th>ours</th><th>paper</th><th>Δ</th>" * len(groups) + "</tr>"
        )  # fmt: skip
    lines = []
    for index, row in enumerate(table.rows):
        row_id = f' id="{html.escape(row_anchor(key, index))}"' if key else ""
        cells = "".join(_cell_html(v, i >= table.n_keys) for i, v in enumerate(row))
        if row_runs is not None:
            cells += _grid_links_html(row_runs.get(tuple(row[: table.n_keys]), ()))
        lines.append(f"<tr{row_id}>{cells}</tr>")
    body = "\n".join(lines)
    return f"<table>\n<thead>{head}</thead>\n<tbody>\n{body}\n</tbody>\n</table>"


def _grid_links_html(run_ids: Sequence[str]) -> str:
    if not run_ids:
        return '<td class="grid-links"></td>'
    links = " ".join(
        f'<a href="#{figure_id(r)}" title="image grid of run {html.escape(r)}">{"▦" if len(run_ids) == 1 else i + 1}</a>'
        for i, r in enumerate(run_ids)
    )
    return f'<td class="grid-links">{links}</td>'


def html_report(
    tables: Sequence[ReportTable],
    runs: pd.DataFrame,
    store_dir: Path,
    title: str = "ddbench report",
    plots_html: str = "",
) -> str:
    """One self-contained HTML page: every table, then each table's image grids (``data:`` URIs),
    then ``plots_html`` (`ddbench.plots.plots_section_html`) when given.

    Nothing is fetched: styles are inline, there is no script, and images are embedded; a missing
    grid is a visible note. ``store_dir`` is the folder of ``results.sqlite`` (to find run dirs).
    """
    by_id = {r["run_id"]: r for r in runs.to_dict("records")}
    generated = datetime.now(timezone.utc).isoformat(timespec="seconds")
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="meta">ddbench {html.escape(__version__)} · store {html.escape(str(store_dir.resolve()))} · generated {generated}</p>',
    ]
    if not tables:
        parts.append('<p class="note">The store has no scores yet; run <code>ddbench run</code> first.</p>')
    contents = "".join(f'<li><a href="#{html.escape(t.key)}">{html.escape(t.title)}</a></li>' for t in tables)
    if len(tables) > 1:
        parts.append(f"<ul>{contents}</ul>")
    shown: set[str] = set()
    for table in tables:
        parts.append(f'<h2 id="{html.escape(table.key)}">{html.escape(table.title)}</h2>')
        # the table with its notes, and beside it (below, on a narrow screen) its image grids
        parts.append('<div class="table-grids"><div class="table-side">')
        parts.append(table_html(table.table, table.key, table.row_runs or None))  # no grid column without runs
        parts += _notes_html(table)
        parts.append('</div><div class="grids-side">')
        parts += _table_grids_html(table, by_id, store_dir, shown)
        parts.append("</div></div>")
    if plots_html:
        parts.append(plots_html)
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _notes_html(table: ReportTable) -> list[str]:
    """The table's notes; those of its cell marks (one per marked run) folded into one line."""
    marked = mark_notes(table.table)
    parts = [f'<p class="note">{html.escape(note)}</p>' for note in table.notes if note not in marked]
    if marked:
        symbols = "".join(dict.fromkeys(note.split(" ", 1)[0] for note in marked))
        items = "".join(f"<li>{html.escape(note)}</li>" for note in marked)
        parts.append(
            f'<details class="marks"><summary>{html.escape(symbols)}: {len(marked)} run(s) marked in their cells '
            f"(hover a mark for its reason; {OTHER_SETTINGS} other settings than the table's, not ranked; "
            f"{NOT_MEANINGFUL} not meaningful)</summary><ul>{items}</ul></details>"
        )
    if table.not_run:
        parts.append(f'<p class="note">Not run yet ({len(table.not_run)}): {html.escape("; ".join(table.not_run))}</p>')
    return parts


def _table_grids_html(
    table: ReportTable, by_id: Mapping[str, Mapping[str, Any]], store_dir: Path, shown: set[str]
) -> list[str]:
    """The table's image grids, per IPC, in row order; captions name the row and link back to it."""
    keys = table.table.columns[: table.table.n_keys]
    row_of: dict[str, tuple[int, tuple[Any, ...]]] = {}
    for index, row in enumerate(table.table.rows):
        for run_id in table.row_runs.get(tuple(row[: table.table.n_keys]), ()):
            row_of.setdefault(run_id, (index, row))

    def label(run_id: str) -> str:
        if run_id not in row_of:
            return run_id[:8]
        values = row_of[run_id][1][: table.table.n_keys]
        return " · ".join(str(v) for k, v in zip(keys, values) if k not in ("ipc", "run") and v is not None)

    def back(run_id: str) -> str | None:
        return row_anchor(table.key, row_of[run_id][0]) if run_id in row_of else None

    def marks(run_id: str) -> str:
        return marks_html(table.run_marks.get(run_id, ()))

    return grid_sections_html(table.key, table.run_ids, by_id, store_dir, shown, label, back, marks)


def external_references(page: str) -> list[str]:
    """URLs a page would fetch (``src``/``href``/CSS ``url()`` that are not ``data:`` or ``#``
    anchors); empty for a self-contained report."""
    found = re.findall(r"""(?:src|href)\s*=\s*["']([^"']*)["']|url\(\s*["']?([^"')]*)""", page, flags=re.IGNORECASE)
    urls = [a or b for a, b in found]
    return [u for u in urls if not u.startswith(("data:", "#"))]


__all__ = [
    "ReportTable",
    "LayoutLike",
    "suite_table",
    "compare_with_paper",
    "store_tables",
    "html_report",
    "table_html",
    "external_references",
    "prior_label",
    "run_keys",
    "resolve_run_dir",
    "grid_data_uri",
    "marks_html",
    "row_anchor",
]
