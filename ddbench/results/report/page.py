"""The HTML report: one self-contained page with every table, its notes and its runs' image grids
(inline CSS, images as ``data:`` URIs, nothing fetched)."""

from __future__ import annotations

import html
import re
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from ddbench import __version__
from ddbench.results.leaderboard import (
    NOT_MEANINGFUL,
    OTHER_EVALUATORS,
    OTHER_SETTINGS,
    PARTIAL,
    mark_notes,
)
from ddbench.results.report.grids import GRIDS_CSS, grid_sections_html
from ddbench.results.report.table_html import marks_html, row_anchor, table_html
from ddbench.results.report.tables import ReportTable

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


def html_report(
    tables: Sequence[ReportTable],
    runs: pd.DataFrame,
    store_dir: Path,
    title: str = "ddbench report",
    plots_html: str = "",
) -> str:
    """One self-contained HTML page: every table, then each table's image grids (``data:`` URIs),
    then ``plots_html`` (`ddbench.results.plots.plots_section_html`) when given.

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
            f"{NOT_MEANINGFUL} not meaningful; {OTHER_EVALUATORS} averaged over other evaluators than its column, "
            f"not ranked; {PARTIAL} fewer seeds than asked, not ranked)</summary><ul>{items}</ul></details>"
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
