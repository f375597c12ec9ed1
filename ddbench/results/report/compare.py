"""A table beside the paper's: the published number and our difference next to each column."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ddbench.errors import InvalidOptionError
from ddbench.results.leaderboard import (
    Cell,
    Delta,
    LeaderboardTable,
    PaperCell,
    mark_best,
)
from ddbench.results.paper import PaperTable


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
