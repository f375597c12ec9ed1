"""The LD3M paper's published tables, shipped as data (``ddbench/results/data/paper_tables.json``), for
``ddbench leaderboard --compare paper``.

Numbers are transcribed from the paper's Tables 1–4, 6 and 7: test accuracy in percent, mean and
std over 5 evaluation runs. `paper_table` gives one table; `PaperTable.cells` keys its numbers like
our leaderboard (the row's key values, the column), as fractions::

    >>> table = paper_table("table4")
    >>> table.row_keys, table.columns[-1], table.aggregate_column
    (('matcher', 'prior'), 'average', 'average')
    >>> table.cells[(("dc", "pixel"), "alexnet")]
    (0.259, 0.002)

Some paper rows are not separate plugins of ours; each table's ``row_specs`` in the data say how
our specs express them (prior options, a generator), and `paper_row_name` applies them to a run.
Suite files may name rows explicitly instead (``[grid.labels]``), which wins.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
from collections.abc import Mapping
from importlib import resources
from typing import Any

import pandas as pd

from ddbench.errors import InvalidOptionError

#: the columns the paper uses for "mean over the other columns"
AGGREGATE_COLUMNS = ("all", "average")
#: keys of a paper table that fix a setting for every row (not row keys)
SETTING_KEYS = ("ipc", "res", "dataset", "matcher")


@dataclasses.dataclass(frozen=True)
class PaperTable:
    """One published table. ``cells`` maps ``(row key values, column)`` → ``(mean, std)`` as fractions."""

    name: str
    caption: str
    #: the row keys in the paper's order, e.g. ("prior", "matcher") or ("prior", "generator")
    row_keys: tuple[str, ...]
    #: row key values in the paper's row order
    rows: tuple[tuple[str, ...], ...]
    #: value columns in the paper's order, including its aggregate column ("all" / "average")
    columns: tuple[str, ...]
    #: settings shared by every row (ipc, res, and dataset or matcher where the table fixes one)
    settings: Mapping[str, Any]
    cells: Mapping[tuple[tuple[str, ...], str], tuple[float, float]]

    @property
    def aggregate_column(self) -> str | None:
        """The paper's mean column ("all" or "average"), or None."""
        return next((c for c in self.columns if c in AGGREGATE_COLUMNS), None)

    @property
    def value_columns(self) -> tuple[str, ...]:
        """The columns other than the aggregate one (datasets or evaluators)."""
        return tuple(c for c in self.columns if c not in AGGREGATE_COLUMNS)

    def row_dict(self, row: tuple[str, ...]) -> dict[str, Any]:
        """A paper row's keys, plus the table-wide settings that can serve as row keys (e.g. matcher)."""
        return {
            **{k: v for k, v in self.settings.items() if k in ("dataset", "matcher")},
            **dict(zip(self.row_keys, row)),
        }

    def frame(self) -> pd.DataFrame:
        """One line per published cell: the row keys, ``column``, ``mean`` and ``std`` (fractions)."""
        records = [
            {**dict(zip(self.row_keys, row)), "column": column, "mean": mean, "std": std}
            for (row, column), (mean, std) in self.cells.items()
        ]
        return pd.DataFrame.from_records(records, columns=[*self.row_keys, "column", "mean", "std"])


@functools.cache
def _raw_tables() -> dict[str, Any]:
    text = resources.files("ddbench.results").joinpath("data/paper_tables.json").read_text(encoding="utf-8")
    return json.loads(text)


def paper_table_names() -> list[str]:
    """Keys of the shipped tables (``table1`` … ``table7``)."""
    return sorted(k for k in _raw_tables() if not k.startswith("_"))


@functools.cache
def paper_table(name: str) -> PaperTable:
    """The published table ``name``; an unknown name is an error listing the shipped ones."""
    raw = _raw_tables().get(name)
    if raw is None or name.startswith("_"):
        names = paper_table_names()
        close = difflib.get_close_matches(name, names, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise InvalidOptionError(f"Unknown paper table '{name}'.{hint} Shipped tables: {', '.join(names)}")
    rows_raw = raw["rows"]
    row_keys = tuple(k for k in rows_raw[0] if k != "cells")
    rows: list[tuple[str, ...]] = []
    cells: dict[tuple[tuple[str, ...], str], tuple[float, float]] = {}
    for entry in rows_raw:
        row = tuple(str(entry[k]) for k in row_keys)
        rows.append(row)
        for column, cell in entry["cells"].items():
            if cell is not None:  # a cell the paper leaves empty stays missing
                cells[(row, column)] = (cell["mean"] / 100, cell["std"] / 100)
    return PaperTable(
        name=name,
        caption=str(raw.get("caption", "")),
        row_keys=row_keys,
        rows=tuple(rows),
        columns=tuple(raw["columns"]),
        settings={k: raw[k] for k in SETTING_KEYS if k in raw},
        cells=cells,
    )


# ------------------------------------------------------------------------ paper names → specs


@dataclasses.dataclass(frozen=True)
class PaperRowSpec:
    """How one of our runs expresses a paper row: its prior and the options that must hold.

    ``options`` compare with the run's *effective* prior options (the plugin's defaults filled in);
    the pseudo-option ``generator`` is `generator_name` of the run: ``"random"``, or ``"trained"``
    for any pretrained weights, or the name of the data they were trained on.
    """

    name: str
    prior: str
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@functools.cache
def row_specs(table: str, field: str) -> tuple[PaperRowSpec, ...]:
    """How our runs express ``table``'s rows named by ``field`` (``prior`` or ``variant``) where they
    are not plain plugin names (the table's ``row_specs`` in the shipped data); () where it has none.
    Checked in order; the first rule that holds names the row."""
    raw = (_raw_tables().get(table) or {}).get("row_specs", {}).get(field, ())
    return tuple(PaperRowSpec(r["name"], r["prior"], r.get("options", {})) for r in raw)


#: the generator of a run that recorded none (a run from before `ddbench.running.identity.plugin_labels`)
UNRECORDED = "?"


def generator_name(prior: str, options: Mapping[str, Any], labels: Mapping[str, Any] | None = None) -> str:
    """Which generator a run used, in the paper's words (Table 3's column), as the run recorded it
    (``labels``, from its resolved spec: `Prior.generator_label`, ``-`` for pixels, ``random``,
    ``trained``, ``imagenet``, ...); `UNRECORDED` for a run that recorded none (no plugin is imported)."""
    if labels and labels.get("generator"):
        return str(labels["generator"])
    return UNRECORDED


def label_options(prior: str, labels: Mapping[str, Any] | None = None) -> tuple[frozenset[str], tuple[str, ...]]:
    """The options a prior's variant label leaves out (neutral, path and housekeeping options) and
    its path options (where the generator's weights are), as the run recorded them (``labels``);
    none for a run that recorded none."""
    if labels and "hidden_options" in labels:
        return frozenset(labels["hidden_options"]), tuple(labels.get("path_options", ()))
    return frozenset(), ()


def effective_options(
    prior: str, options: Mapping[str, Any], labels: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The run's prior options with the plugin's defaults filled in, as the run recorded them
    (``labels``); the options given for a run that recorded none."""
    return {**((labels or {}).get("defaults") or {}), **options}


def _holds(rule: PaperRowSpec, prior: str, options: Mapping[str, Any], labels: Mapping[str, Any] | None) -> bool:
    if rule.prior != prior:
        return False
    if not rule.options:
        return True
    # plugin defaults only when an option other than the derived generator is asked about
    effective = effective_options(prior, options, labels) if set(rule.options) - {"generator"} else dict(options)
    for key, wanted in rule.options.items():
        if key == "generator":
            have = generator_name(prior, options, labels)
            if not (have == wanted or (wanted == "trained" and have not in ("random", "untrained", "-"))):
                return False
        elif effective.get(key) != wanted:
            return False
    return True


def paper_row_name(
    table: str, field: str, prior: str, options: Mapping[str, Any], labels: Mapping[str, Any] | None = None
) -> str | None:
    """The paper's name for a run's ``field`` (``prior`` or ``variant``) in ``table``, by
    `row_specs`, from the run's options and what it recorded of its prior (``labels``); ``None``
    where the table has no rule for that field or none holds."""
    for rule in row_specs(table, field):
        if _holds(rule, prior, options, labels):
            return rule.name
    return None


__all__ = [
    "PaperTable",
    "PaperRowSpec",
    "row_specs",
    "paper_table",
    "paper_table_names",
    "paper_row_name",
    "generator_name",
    "effective_options",
    "label_options",
    "UNRECORDED",
]
