"""A leaderboard table as HTML: best cells bold, marked cells with their reasons, links to image grids."""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

from ddbench.results.leaderboard import (
    MISSING,
    Cell,
    CellMark,
    Delta,
    LeaderboardTable,
    PaperCell,
)
from ddbench.results.report.grids import figure_id


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
