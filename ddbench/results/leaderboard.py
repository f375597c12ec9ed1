"""Leaderboard tables from the results store, in the shapes of the LD3M paper's tables.

`leaderboard_table` turns `ResultsStore.scores_frame()` into plain data, ``(columns, rows)``; the
formatters (`to_rich`, `to_markdown`, `to_latex`, `to_csv`, and `render` to print any of them) turn
that data into text, as cliff separates a command from its output format::

    >>> import pandas as pd
    >>> frame = pd.DataFrame({"dataset": ["cifar10"] * 2, "prior": ["pixel"] * 2, "matcher": ["dm"] * 2,
    ...                       "evaluator": ["convnet"] * 2, "seed": [0, 1], "accuracy": [0.25, 0.27]})
    >>> columns, rows = leaderboard_table(frame)
    >>> columns
    ('prior', 'matcher', 'cifar10')
    >>> rows[0][2].text()
    '26.0 ± 1.0'
"""

from __future__ import annotations

import csv
import dataclasses
import difflib
import functools
import io
import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import pandas as pd
from rich.console import Console
from rich.table import Table
from rich.text import Text
from tabulate import tabulate

from ddbench.engine.spec import SPEC_VERSION, spec_version
from ddbench.errors import InvalidOptionError

#: the row and column keys whose values sort by `display_orders` (others: alphabetically)
ORDERED_FIELDS = ("dataset", "prior", "matcher", "evaluator")

AVG_COLUMN = "avg"
# Row keys that set the experiment rather than the method: bests are marked within each of their values
CONDITION_KEYS = ("dataset", "ipc", "res", "evaluator", "protocol", "report")
VALUES = ("accuracy", "accuracy_max")
FORMATS = ("rich", "markdown", "latex", "csv")
MISSING = "—"

#: columns that may tell apart scores that land in the same cell, named when that happens
_IDENTITY_HINTS = ("dataset", "prior", "matcher", "ipc", "res", "protocol", "report", "evaluator", "run_id")


#: a cell filled by a run with other settings than its table's (e.g. a smoke run in a suite's cell)
OTHER_SETTINGS = "†"
#: a cell whose run does not measure what its row says (`ddbench.results.baselines`)
NOT_MEANINGFUL = "‡"
#: a cell averaged over other evaluators than most of its column's (e.g. convnet only among rows
#: scored on five architectures): its number answers another question
OTHER_EVALUATORS = "§"
#: a cell with fewer evaluation seeds than its run asked for (still running, or seeds that failed)
PARTIAL = "*"


@dataclasses.dataclass(frozen=True)
class CellMark:
    """Why a cell is not the table's own number: ``symbol`` is shown in the cell, ``note`` says why
    (on hover in HTML, below the table elsewhere). A marked cell never counts as the best."""

    symbol: str
    note: str


@dataclasses.dataclass(frozen=True)
class Cell:
    """One aggregated cell; ``mean`` and ``std`` are fractions (0..1), ``n`` counts the scores."""

    mean: float
    std: float
    n: int
    best: bool = False
    marks: tuple[CellMark, ...] = ()

    def text(self) -> str:
        """``mean ± std`` in percent with one decimal, the papers' notation."""
        return f"{100 * self.mean:.1f} ± {100 * self.std:.1f}"

    @property
    def symbols(self) -> str:
        """The marks' symbols, each once (``†‡``); empty for an unmarked cell."""
        return "".join(dict.fromkeys(m.symbol for m in self.marks))


@dataclasses.dataclass(frozen=True)
class PaperCell(Cell):
    """A published number (``--compare paper``); ``n`` is 0 because the paper gives no count."""


@dataclasses.dataclass(frozen=True)
class Delta:
    """Our mean minus the paper's, a fraction; shown in signed percentage points (``+1.2``)."""

    value: float
    best: bool = False  # never marked: a difference is not a score
    marks: tuple[CellMark, ...] = ()  # those of our cell

    def text(self) -> str:
        return f"{100 * self.value:+.1f}"

    @property
    def symbols(self) -> str:
        return "".join(dict.fromkeys(m.symbol for m in self.marks))


@dataclasses.dataclass(frozen=True)
class TextCell:
    """A cell shown as ``shown``: a unitless ``value`` (the DD-Ranking score of ``--reference``,
    ``0.512``), or no number but what would fill the cell (the command of a missing baseline)."""

    shown: str
    value: float | None = None
    best: bool = False
    marks: tuple[CellMark, ...] = ()
    symbols: str = ""

    def text(self) -> str:
        return self.shown

    __str__ = text


#: what a value column of a `LeaderboardTable` may hold besides ``None`` (missing)
VALUE_TYPES = (Cell, Delta, TextCell)


@dataclasses.dataclass(frozen=True)
class LeaderboardTable:
    """Column names, then one tuple per row: its ``n_keys`` key values, then a `Cell` or ``None`` per
    value column. Unpacks as ``columns, rows = table`` (cliff's ``(columns, rows)``)."""

    columns: tuple[str, ...]
    rows: list[tuple[Any, ...]]
    n_keys: int

    def __iter__(self) -> Iterator[Any]:
        return iter((self.columns, self.rows))

    @property
    def value_columns(self) -> tuple[str, ...]:
        return self.columns[self.n_keys :]


# ------------------------------------------------------------------------------ aggregation


def display_orders(frame: pd.DataFrame) -> dict[str, dict[str, float]]:
    """Where each dataset, prior, matcher and evaluator of ``frame`` sorts, as its runs recorded it
    (``spec_json``): a plugin's `display_order` (the paper's order for the built-ins), and evaluators
    in the order the runs asked for them. Read from the store only: no plugin is imported."""
    orders: dict[str, dict[str, float]] = {field: {} for field in ORDERED_FIELDS}
    if "spec_json" not in frame.columns:
        return orders
    for text in frame["spec_json"].dropna().unique():
        try:
            spec = json.loads(text)
        except (TypeError, ValueError):
            continue
        identity = spec.get("identity") or {}
        for field in ("dataset", "prior", "matcher"):
            record = identity.get(field) or {}
            order = (record.get("labels") or {}).get("display_order")
            if order is not None:
                orders[field].setdefault(str(record.get("name", spec.get(field))), order)
        for rank, name in enumerate(spec.get("evaluators") or ()):
            orders["evaluator"].setdefault(str(name), rank)
    return orders


def _order_key(field: str, value: Any, orders: Mapping[str, Mapping[str, float]] | None = None) -> tuple[Any, ...]:
    """Names with a display order first, by it (variants such as ``glad-random`` or
    ``ld3m[diffusion=off]`` after their base), then other names alphabetically, numbers numerically,
    missing values last."""
    if value is None:
        return (3,)
    if isinstance(value, (int, float)):
        return (1, value, "")
    text = str(value)
    known = (orders or {}).get(field, {})
    base = next((name for name in known if text == name or text.startswith((name + "-", name + "[", name + " "))), None)
    if base is not None:
        return (0, known[base], text)
    return (2, 0, text)


def plain_value(value: Any) -> Any:
    """numpy/pandas scalars → Python values, NA → None: a table's key values as its rows hold them."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    return value.item() if hasattr(value, "item") else value


def _coerce(values: Iterable[Any], column: pd.Series) -> list[Any]:
    # Filters typed on a command line arrive as strings; compare them with numbers as numbers.
    out = []
    for value in values:
        if isinstance(value, str) and pd.api.types.is_numeric_dtype(column.dtype):
            try:
                value = int(value) if re.fullmatch(r"[+-]?\d+", value.strip()) else float(value)
            except ValueError:
                raise InvalidOptionError(f"Expected a number to filter '{column.name}' but got '{value}'") from None
        out.append(value)
    return out


def apply_filters(frame: pd.DataFrame, filters: Mapping[str, Any] | None) -> pd.DataFrame:
    """Keep the rows whose column equals the filter value (or one of a list of values; ``None`` = NULL)."""
    for name, wanted in (filters or {}).items():
        if name not in frame.columns:
            close = difflib.get_close_matches(name, list(frame.columns), n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise InvalidOptionError(
                f"Cannot filter on unknown column '{name}'.{hint} Columns: {', '.join(frame.columns)}"
            )
        column = frame[name]
        values = _coerce(list(wanted) if isinstance(wanted, (list, tuple, set, frozenset)) else [wanted], column)
        mask = column.isin([v for v in values if v is not None])
        if any(v is None for v in values):
            mask |= column.isna()
        if not mask.any() and len(frame):
            recorded = sorted({str(plain_value(v)) for v in column.unique()})
            raise InvalidOptionError(
                f"No scores with {name}={', '.join(map(str, values))}; recorded values: {', '.join(recorded)}"
            )
        frame = frame[mask]
    return frame


def _check_unambiguous(data: pd.DataFrame, identity: list[str]) -> None:
    """Two scores of the same evaluator and seed in one cell would average different experiments."""
    duplicated = data[data.duplicated(identity, keep=False)]
    if duplicated.empty:
        return
    grouped = duplicated.groupby(identity, dropna=False)
    varying = {
        column: sorted({str(plain_value(v)) for v in duplicated[column].unique()})
        for column in _IDENTITY_HINTS
        if column in duplicated.columns
        and column not in identity
        and bool(grouped[column].nunique(dropna=False).gt(1).any())
    }
    detail = "; ".join(f"{c} in {{{', '.join(v)}}}" for c, v in varying.items()) or "identical keys"
    example = next(iter(varying), "ipc")
    raise InvalidOptionError(
        f"Scores of the same {'/'.join(identity)} differ in {detail}, so a cell would mix different "
        f"experiments. Add '{example}' to the rows (ddbench leaderboard --rows {','.join([*identity[:-2], example])}) "
        f"or keep one value (e.g. --{example} {varying.get(example, ['...'])[0]} where the leaderboard has that option; "
        f"filters={{'{example}': ...}} in Python)."
    )


def grouping_rows(frame: pd.DataFrame, rows: Sequence[str], columns: str) -> tuple[str, ...]:
    """``rows`` plus every experimental condition (`CONDITION_KEYS`: ipc, res, protocol, …) that takes
    several values in ``frame``, so that a store of IPC 1 and IPC 10 runs renders grouped by IPC
    instead of refusing to mix them (the default leaderboard)."""
    keys = list(rows)
    for key in CONDITION_KEYS:
        if key in keys or key == columns or key == "evaluator" or key not in frame.columns:
            continue
        if frame[key].nunique(dropna=False) > 1:
            keys.append(key)
    return tuple(keys)


@functools.lru_cache(maxsize=4096)
def _stored_spec_version(spec_json: str) -> int:
    """A stored spec's version; the current one where the spec does not say (not written by RunSpec)."""
    try:
        return spec_version(json.loads(spec_json)) or SPEC_VERSION
    except (TypeError, ValueError, AttributeError):
        return SPEC_VERSION


def mark_old_specs(frame: pd.DataFrame, rows: Sequence[str]) -> pd.DataFrame:
    """Scores of runs stored under another spec version get `` (spec vN)`` after their first row key,
    so that they are shown as such and never share a cell with current runs: an older one (whose run
    ids hashed the typed options, not what ran) or a newer one (written by a later ddbench)."""
    if not rows or frame.empty or "spec_json" not in frame.columns:
        return frame
    versions = frame["spec_json"].map(
        lambda text: _stored_spec_version(text) if isinstance(text, str) else SPEC_VERSION
    )
    other = versions != SPEC_VERSION
    if not other.any():
        return frame
    frame = frame.copy()
    key = rows[0]
    frame[key] = frame[key].astype(object)
    frame.loc[other, key] = [f"{value} (spec v{v})" for value, v in zip(frame.loc[other, key], versions[other])]
    return frame


def mark_soft_labels(frame: pd.DataFrame, rows: Sequence[str], columns: str) -> pd.DataFrame:
    """Where the protocol is not a row or column key, scores trained on soft labels get
    `` (soft=…)`` after their first row key (e.g. ``pixel (soft=kl,T=4,teacher=convnet:2ep)``), so
    that soft- and hard-label numbers are never shown, or compared, unmarked."""
    if not rows or frame.empty or "protocol" in (*rows, columns) or "protocol" not in frame.columns:
        return frame
    from ddbench.engine.soft_labels import soft_part

    soft = frame["protocol"].map(lambda key: soft_part(key) if isinstance(key, str) else None)
    if soft.isna().all():
        return frame
    frame = frame.copy()
    key = rows[0]
    frame[key] = frame[key].astype(object)
    marked = soft.notna()
    frame.loc[marked, key] = [f"{value} ({part})" for value, part in zip(frame.loc[marked, key], soft[marked])]
    return frame


def aggregate(
    frame: pd.DataFrame,
    rows: Sequence[str] = ("prior", "matcher"),
    columns: str = "dataset",
    filters: Mapping[str, Any] | None = None,
    value: str = "accuracy",
) -> pd.DataFrame:
    """Mean, std and count of ``value`` per (rows…, columns) cell, one line per cell.

    Per evaluator, mean ± std are taken over seeds with ``ddof=0`` (the population std, as the
    papers' tables report). A cell that spans several evaluators (columns other than
    ``evaluator``, e.g. Table 1's average over unseen architectures) is the mean of the evaluators'
    means ± the mean of their stds, the convention of the paper's average columns (Table 4, pixel
    DC: stds 0.2, 0.5, 0.5, 0.3 → 0.4); ``n`` then counts all scores in the cell, and
    ``evaluators`` names the evaluators it averages (``"alexnet, convnet"``).
    """
    if value not in VALUES:
        raise InvalidOptionError(f"Expected value one of {VALUES} but got '{value}'")
    keys = [*rows, columns]
    if len(set(keys)) != len(keys):
        raise InvalidOptionError(
            f"Expected distinct row and column fields but got rows={tuple(rows)}, columns='{columns}'"
        )
    needed = [*keys, "evaluator", "seed", value]
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise InvalidOptionError(
            f"The scores frame lacks columns {missing}; expected ResultsStore.scores_frame() with columns {list(frame.columns)}"
        )
    data = apply_filters(frame, filters)
    data = mark_old_specs(data[data[value].notna()], rows)
    data = mark_soft_labels(data, rows, columns)
    per_arch_keys = keys if "evaluator" in keys else [*keys, "evaluator"]
    _check_unambiguous(data, [*per_arch_keys, "seed"])
    if data.empty:
        return pd.DataFrame({**{k: [] for k in keys}, "mean": [], "std": [], "n": [], "evaluators": []})
    by_arch = data.groupby(per_arch_keys, dropna=False, sort=False)[value]
    per_arch = pd.DataFrame({"mean": by_arch.mean(), "std": by_arch.std(ddof=0), "n": by_arch.count()})
    per_arch = per_arch.reset_index()
    per_arch["evaluator"] = per_arch["evaluator"].astype(str)
    cells = per_arch.groupby(keys, dropna=False, sort=False).agg(
        mean=("mean", "mean"), std=("std", "mean"), n=("n", "sum"), evaluators=("evaluator", _evaluator_set)
    )
    return cells.reset_index()


def _evaluator_set(evaluators: pd.Series) -> str:
    return ", ".join(sorted(set(evaluators)))


def leaderboard_table(
    frame: pd.DataFrame,
    rows: Sequence[str] | str = ("prior", "matcher"),
    columns: str = "dataset",
    filters: Mapping[str, Any] | None = None,
    value: str = "accuracy",
    average: bool | None = None,
    *,
    column_values: Sequence[Any] | None = None,
    row_values: Sequence[tuple[Any, ...]] | None = None,
    average_label: str = AVG_COLUMN,
    average_first: bool = False,
    marks: Mapping[tuple[tuple[Any, ...], Any], Sequence[CellMark]] | None = None,
) -> LeaderboardTable:
    """A table of mean ± std cells: one row per combination of ``rows``, one column per ``columns`` value.

    ``columns="evaluator"`` gives one column per architecture plus an ``avg`` column (Table 4's
    shape); ``average`` adds or removes that column for any ``columns``. The average is the mean of
    the row's column means ± the mean of their stds, and is missing (—) unless the row has every
    column, so that rows are compared over the same columns. The best mean of each column (at the
    displayed precision, so visible ties are all marked) has ``best=True``; where rows include
    experimental conditions (`CONDITION_KEYS`, e.g. ``ipc``) the best is marked per condition.
    See `aggregate` for how seeds and evaluators are combined.

    A fixed layout (a paper table) passes ``column_values`` and ``row_values``: those columns and
    rows come first, in that order, and appear even without scores (all cells missing), so the
    average needs every listed column; anything else found follows in the default order.
    ``average_label`` names the average column and ``average_first`` puts it before the others
    (the paper's "All").

    ``marks`` maps ``(row values, column value)`` to the `CellMark` s of that cell, or
    ``(row values, None)`` to those of every cell of the row; an average carries the marks of its
    cells, and marked cells are never marked best.
    """
    row_keys = [rows] if isinstance(rows, str) else list(rows)
    cells = aggregate(frame, row_keys, columns, filters, value)
    with_average = (columns == "evaluator") if average is None else average
    all_marks = _merge_marks(marks or {}, evaluator_set_marks(cells, row_keys, columns))
    found = _cells_by_row(cells, row_keys, columns, all_marks)
    orders = display_orders(frame)
    fixed_columns = list(dict.fromkeys(column_values or ()))
    extra_columns = sorted(
        {c for row in found.values() for c in row} - set(fixed_columns), key=lambda v: _order_key(columns, v, orders)
    )
    column_values = [*fixed_columns, *extra_columns]
    row_ids = _row_order(found, row_values, row_keys, orders)
    found_or_empty = {r: found.get(r, {}) for r in row_ids}

    grid: list[list[Cell | None]] = [[found_or_empty[r].get(c) for c in column_values] for r in row_ids]
    header = [str(c) for c in column_values]
    if with_average and column_values:
        _add_average(header, grid, average_label, average_first)
    # methods compete under the same conditions: IPC 1 and IPC 10 rows each get their own best
    condition = [i for i, k in enumerate(row_keys) if k in CONDITION_KEYS]
    mark_best(grid, [tuple(r[i] for i in condition) for r in row_ids])
    return LeaderboardTable(
        columns=(*row_keys, *header),
        rows=[(*row_id, *line) for row_id, line in zip(row_ids, grid)],
        n_keys=len(row_keys),
    )


def evaluator_set_marks(
    cells: pd.DataFrame, row_keys: Sequence[str], columns: str
) -> dict[tuple[tuple[Any, ...], Any], tuple[CellMark, ...]]:
    """`OTHER_EVALUATORS` marks for the cells of `aggregate` that average other evaluators than the
    most common set in their column (within their experimental condition, `CONDITION_KEYS`): a
    convnet-only number next to five-architecture averages is not comparable, so it is marked and
    does not compete for best. Nothing is marked where evaluators are a row or column key."""
    if "evaluator" in (*row_keys, columns) or cells.empty:
        return {}
    condition = [k for k in row_keys if k in CONDITION_KEYS]
    marks: dict[tuple[tuple[Any, ...], Any], tuple[CellMark, ...]] = {}
    for _, group in cells.groupby([*condition, columns], dropna=False, sort=False):
        counts = group["evaluators"].value_counts(sort=False)
        if len(counts) < 2:
            continue
        common = max(counts.index, key=lambda s: (counts[s], s.count(","), s))
        for record in group[group["evaluators"] != common].to_dict("records"):
            row_id = tuple(plain_value(record[k]) for k in row_keys)
            note = f"averaged over {record['evaluators']}; most of its column over {common}"
            marks[(row_id, plain_value(record[columns]))] = (CellMark(OTHER_EVALUATORS, note),)
    return marks


def _merge_marks(
    *mappings: Mapping[tuple[tuple[Any, ...], Any], Sequence[CellMark]],
) -> dict[tuple[tuple[Any, ...], Any], tuple[CellMark, ...]]:
    merged: dict[tuple[tuple[Any, ...], Any], tuple[CellMark, ...]] = {}
    for mapping in mappings:
        for key, cell_marks in mapping.items():
            merged[key] = (*merged.get(key, ()), *cell_marks)
    return merged


def _add_average(header: list[str], grid: list[list[Cell | None]], label: str, first: bool) -> None:
    """Add the average column ``label`` (`average_cell` of each row) first or last."""
    header.insert(0 if first else len(header), label)
    for line in grid:
        mean_cell = average_cell(line)
        line.insert(0 if first else len(line), mean_cell)


def _cells_by_row(
    cells: pd.DataFrame,
    row_keys: Sequence[str],
    columns: str,
    marks: Mapping[tuple[tuple[Any, ...], Any], Sequence[CellMark]],
) -> dict[tuple[Any, ...], dict[Any, Cell]]:
    """`aggregate`'s cells as row values → column value → `Cell`, each with its marks (`leaderboard_table`)."""
    found: dict[tuple[Any, ...], dict[Any, Cell]] = {}
    for record in cells.to_dict("records"):
        row_id = tuple(plain_value(record[k]) for k in row_keys)
        column = plain_value(record[columns])
        cell_marks = tuple(marks.get((row_id, column), ())) + tuple(marks.get((row_id, None), ()))
        found.setdefault(row_id, {})[column] = Cell(
            float(record["mean"]), float(record["std"]), int(record["n"]), marks=tuple(dict.fromkeys(cell_marks))
        )
    return found


def _row_order(
    found: Mapping[tuple[Any, ...], Any],
    row_values: Sequence[tuple[Any, ...]] | None,
    row_keys: Sequence[str],
    orders: Mapping[str, Mapping[str, float]],
) -> list[tuple[Any, ...]]:
    """The table's rows: the fixed ``row_values`` first, then the other rows found, in display order."""
    fixed_rows = list(dict.fromkeys(tuple(r) for r in (row_values or ())))
    for r in fixed_rows:
        if len(r) != len(row_keys):
            raise InvalidOptionError(f"Expected row values with {len(row_keys)} keys {tuple(row_keys)} but got {r}")
    extra_rows = sorted(
        set(found) - set(fixed_rows), key=lambda r: tuple(_order_key(k, v, orders) for k, v in zip(row_keys, r))
    )
    return [*fixed_rows, *extra_rows]


def average_cell(cells: Sequence[Cell | None]) -> Cell | None:
    """Mean of the means ± mean of the stds (the paper's "All"/average columns), or ``None`` unless
    every cell is present, so that rows are compared over the same columns."""
    if not cells or any(c is None for c in cells):
        return None
    present = [c for c in cells if c is not None]
    return Cell(
        sum(c.mean for c in present) / len(present),
        sum(c.std for c in present) / len(present),
        sum(c.n for c in present),
        marks=tuple(dict.fromkeys(m for c in present for m in c.marks)),
    )


def mark_best(grid: list[list[Cell | None]], groups: Sequence[Any] | None = None) -> None:
    """Mark, in place, the best mean of each column (ties at the displayed precision all marked);
    ``groups`` gives each row's group, and rows compete only within theirs (default: one group).
    Cells with a `CellMark` (other settings, not meaningful) do not compete."""
    if not grid:
        return
    groups = list(groups) if groups is not None else [None] * len(grid)
    for group in dict.fromkeys(groups):
        lines = [line for line, g in zip(grid, groups) if g == group]
        for j in range(len(grid[0])):
            competing = [line for line in lines if line[j] is not None and not line[j].marks]  # type: ignore[union-attr]
            shown = [round(100 * line[j].mean, 1) for line in competing]  # type: ignore[union-attr]
            if not shown:
                continue
            top = max(shown)
            for line in competing:
                cell = line[j]
                if cell is not None and round(100 * cell.mean, 1) == top:
                    line[j] = dataclasses.replace(cell, best=True)


# ------------------------------------------------------------------------------- formatters


def _key_text(value: Any) -> str:
    return MISSING if value is None else str(value)


def cell_text(value: Any) -> str:
    """One cell as plain text: ``mean ± std`` with its marks' symbols, a row key, or — when missing."""
    if isinstance(value, VALUE_TYPES):
        return value.text() + value.symbols
    return _key_text(value)


def to_rich(table: LeaderboardTable, title: str | None = None) -> Table:
    """A rich table; best cells bold, missing cells dim."""
    ns = sorted({v.n for row in table.rows for v in row if isinstance(v, Cell) and not isinstance(v, PaperCell)})
    n_text = f"{ns[0]}" if len(ns) == 1 else f"{ns[0]}–{ns[-1]}" if ns else "0"
    out = Table(title=title, caption=f"accuracy %, mean ± std (ddof=0), n = {n_text}")
    value_columns = range(table.n_keys, len(table.columns))
    for i, name in enumerate(table.columns):
        out.add_column(name, justify="right" if i in value_columns else "left")
    for row in table.rows:
        out.add_row(
            *(
                Text(v.text() + v.symbols, style="bold" if v.best else "")
                if isinstance(v, VALUE_TYPES)
                else Text(MISSING, style="dim")
                if v is None and i in value_columns
                else Text(_key_text(v))
                for i, v in enumerate(row)
            )
        )
    return out


_MARKDOWN_SPECIAL = {"|": "\\|", "<": "&lt;", ">": "&gt;", "&": "&amp;"}


def markdown_escape(text: str) -> str:
    r"""Text as one Markdown table cell: ``|`` cannot split the cell and HTML (``<script>``) is shown,
    never run as markup::

        >>> markdown_escape("a|b <script>")
        'a\\|b &lt;script&gt;'
    """
    return "".join(_MARKDOWN_SPECIAL.get(c, c) for c in text).replace("\n", " ")


def to_markdown(table: LeaderboardTable) -> str:
    """A GitHub-flavoured Markdown table; best cells in ``**bold**``; labels escaped (`markdown_escape`)."""

    def cell(v: Any) -> str:
        if isinstance(v, VALUE_TYPES):
            return f"**{v.text()}**{v.symbols}" if v.best else cell_text(v)
        return markdown_escape(cell_text(v))

    return tabulate(
        [[cell(v) for v in row] for row in table.rows],
        headers=[markdown_escape(c) for c in table.columns],
        tablefmt="github",
        disable_numparse=True,
    )


_LATEX_SPECIAL = {c: "\\" + c for c in "&%$#_{}"} | {"~": r"\textasciitilde{}", "^": r"\^{}", "\\": r"\textbackslash{}"}


def _latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(c, c) for c in text)


_LATEX_MARKS = {OTHER_SETTINGS: r"\dag", NOT_MEANINGFUL: r"\ddag", OTHER_EVALUATORS: r"\S", PARTIAL: "*"}


def _latex_marks(symbols: str) -> str:
    return f"\\textsuperscript{{{''.join(_LATEX_MARKS.get(c, _latex_escape(c)) for c in symbols)}}}" if symbols else ""


def mark_notes(table: LeaderboardTable) -> list[str]:
    """One line per distinct `CellMark` in the table, ``"† note"``, in the order they first appear."""
    marks = dict.fromkeys(m for row in table.rows for v in row if isinstance(v, VALUE_TYPES) for m in v.marks)
    return [f"{m.symbol} {m.note}" for m in marks]


def to_latex(table: LeaderboardTable) -> str:
    """A LaTeX tabular with booktabs rules (``\\usepackage{booktabs}``); best cells in ``\\textbf``,
    ± as ``$\\pm$``, missing cells as an em dash (---)."""

    def cell(v: Any) -> str:
        if isinstance(v, Cell):
            text = f"{100 * v.mean:.1f} $\\pm$ {100 * v.std:.1f}"
            return (f"\\textbf{{{text}}}" if v.best else text) + _latex_marks(v.symbols)
        if isinstance(v, Delta):
            return f"${v.text()}$" + _latex_marks(v.symbols)
        return "---" if v is None else _latex_escape(str(v))

    value_columns = range(table.n_keys, len(table.columns))
    headers = [_latex_escape(c) for c in table.columns]
    if not table.rows:  # tabulate drops the column spec of a table without rows
        spec = "l" * len(headers)
        return f"\\begin{{tabular}}{{{spec}}}\n\\toprule\n {' & '.join(headers)} \\\\\n\\midrule\n\\bottomrule\n\\end{{tabular}}"
    text = tabulate(
        [[cell(v) for v in row] for row in table.rows],
        headers=headers,
        tablefmt="latex_raw",
        disable_numparse=True,
        colalign=["right" if i in value_columns else "left" for i in range(len(table.columns))] or None,
    )
    return _booktabs(text)


def _booktabs(text: str) -> str:
    """tabulate's three ``\\hline`` rules as booktabs' ``\\toprule``, ``\\midrule`` and ``\\bottomrule``
    (papers use booktabs; tabulate's own booktabs format would escape our ``$\\pm$`` and ``\\textbf``)."""
    lines = text.split("\n")
    rules = [i for i, line in enumerate(lines) if line == "\\hline"]
    for i, rule in zip(rules, ("\\toprule", "\\midrule", "\\bottomrule")):
        lines[i] = rule
    return "\n".join(lines)


def to_csv(table: LeaderboardTable) -> str:
    """CSV for other tools: numbers, not formatted cells.

    Each value column becomes ``<name>_mean``, ``<name>_std`` (percent, two decimals) and
    ``<name>_n``; a missing cell is empty. Best-cell marks are presentation and are left out.
    """
    value_columns = range(table.n_keys, len(table.columns))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    header: list[str] = []
    for i, name in enumerate(table.columns):
        header.extend([f"{name}_mean", f"{name}_std", f"{name}_n"] if i in value_columns else [name])
    writer.writerow(header)
    for row in table.rows:
        line: list[str] = []
        for i, v in enumerate(row):
            if i not in value_columns:
                line.append("" if v is None else str(v))
            elif v is None:
                line.extend(["", "", ""])
            elif isinstance(v, Delta):
                line.extend([f"{100 * v.value:+.2f}", "", ""])
            elif isinstance(v, TextCell):
                line.extend(["" if v.value is None else f"{v.value:.4f}", "", ""])
            else:
                line.extend([f"{100 * v.mean:.2f}", f"{100 * v.std:.2f}", "" if isinstance(v, PaperCell) else str(v.n)])
        writer.writerow(line)
    return buffer.getvalue()


_TEXT_FORMATTERS = {"markdown": to_markdown, "latex": to_latex, "csv": to_csv}


def _check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        close = difflib.get_close_matches(fmt, FORMATS, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise InvalidOptionError(f"Unknown leaderboard format '{fmt}'.{hint} Available: {', '.join(FORMATS)}.")


def format_table(table: LeaderboardTable, fmt: str, title: str | None = None, width: int = 160) -> str:
    """The table as text in one of `FORMATS` (``rich`` as plain text, without colour)."""
    _check_format(fmt)
    if fmt in _TEXT_FORMATTERS:
        return _TEXT_FORMATTERS[fmt](table)
    console = Console(file=io.StringIO(), width=width, color_system=None, force_terminal=False)
    console.print(to_rich(table, title))
    return console.file.getvalue()  # type: ignore[attr-defined]


def render(
    table: LeaderboardTable, fmt: str = "rich", console: Console | None = None, title: str | None = None
) -> None:
    """Print the table in one of `FORMATS` to ``console`` (default: stdout)."""
    _check_format(fmt)
    console = console or Console()
    if fmt == "rich":
        console.print(to_rich(table, title))
    else:
        # console.out: no markup, wrapping or highlighting, so Markdown/LaTeX/CSV come out verbatim
        console.out(_TEXT_FORMATTERS[fmt](table), highlight=False)


__all__ = [
    "Cell",
    "CellMark",
    "OTHER_SETTINGS",
    "NOT_MEANINGFUL",
    "OTHER_EVALUATORS",
    "PARTIAL",
    "mark_notes",
    "PaperCell",
    "Delta",
    "TextCell",
    "mark_soft_labels",
    "average_cell",
    "mark_best",
    "LeaderboardTable",
    "aggregate",
    "apply_filters",
    "plain_value",
    "leaderboard_table",
    "grouping_rows",
    "markdown_escape",
    "format_table",
    "render",
    "to_rich",
    "to_markdown",
    "to_latex",
    "to_csv",
    "FORMATS",
]
