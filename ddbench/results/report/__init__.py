"""Reports of stored results: paper-shaped suite tables, the comparison with the paper, and the HTML page.

One job per module:

* `ddbench.results.report.rows`: a run's row keys (its prior's variant label, the paper's row names);
* `ddbench.results.report.runs`: which stored run fills each cell of a suite's table;
* `ddbench.results.report.tables`: `suite_table` lays a suite's stored scores out as its paper table (rows,
  columns, the "All" column), `store_tables` covers a whole store;
* `ddbench.results.report.compare`: `compare_with_paper` puts the published numbers and the difference
  beside each column;
* `ddbench.results.report.table_html`: one table as HTML;
* `ddbench.results.report.grids`: the runs' image grids, embedded;
* `ddbench.results.report.page`: `html_report` writes one self-contained page with every table and every
  run's image grid (inline CSS, images as ``data:`` URIs, nothing fetched).

This package re-exports what the CLI and `ddbench.results.plots` use.
"""

from __future__ import annotations

from ddbench.results.report.compare import compare_with_paper
from ddbench.results.report.grids import grid_data_uri, resolve_run_dir
from ddbench.results.report.page import external_references, html_report
from ddbench.results.report.rows import ROW_KEYS, prior_label, recorded_labels, run_keys, with_prior_variants
from ddbench.results.report.table_html import marks_html, row_anchor, table_html
from ddbench.results.report.tables import LayoutLike, ReportTable, store_tables, suite_table

__all__ = [
    "with_prior_variants",
    "ReportTable",
    "LayoutLike",
    "suite_table",
    "compare_with_paper",
    "store_tables",
    "html_report",
    "table_html",
    "external_references",
    "prior_label",
    "recorded_labels",
    "run_keys",
    "resolve_run_dir",
    "grid_data_uri",
    "marks_html",
    "row_anchor",
    "ROW_KEYS",
]
