"""The LD3M paper's published tables, shipped as data (``ddbench/data/paper_tables.json``), for
``ddbench leaderboard --compare paper``.

Numbers are transcribed from the paper's Tables 1–4, 6 and 7: test accuracy in percent, mean and
std over 5 evaluation runs. `paper_table` gives one table; `PaperTable.cells` keys its numbers like
our leaderboard (the row's key values, the column), as fractions::

    >>> table = paper_table("table4")
    >>> table.row_keys, table.columns[-1], table.aggregate_column
    (('matcher', 'prior'), 'average', 'average')
    >>> table.cells[(("dc", "pixel"), "alexnet")]
    (0.259, 0.002)

Some paper rows are not separate plugins of ours; `PAPER_ROW_SPECS` says how our specs express
each of them (prior options, a generator), and `paper_row_name` applies it to a run. Suite files
may name rows explicitly instead (``[grid.labels]``), which wins.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import inspect
import json
from importlib import resources
from pathlib import PurePath
from typing import Any, Mapping

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
        return {**{k: v for k, v in self.settings.items() if k in ("dataset", "matcher")}, **dict(zip(self.row_keys, row))}

    def frame(self) -> pd.DataFrame:
        """One line per published cell: the row keys, ``column``, ``mean`` and ``std`` (fractions)."""
        records = [
            {**dict(zip(self.row_keys, row)), "column": column, "mean": mean, "std": std}
            for (row, column), (mean, std) in self.cells.items()
        ]
        return pd.DataFrame.from_records(records, columns=[*self.row_keys, "column", "mean", "std"])


@functools.cache
def _raw_tables() -> dict[str, Any]:
    text = resources.files("ddbench").joinpath("data/paper_tables.json").read_text(encoding="utf-8")
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


#: Paper row names that are not plain plugin names, per table and row key. Rows of tables 1–3 (and
#: table 6's ``glad``/table 7's ``glad``) are named by our prior names; table 3's ``generator`` column
#: is `generator_name` (``-`` for pixels). Checked in order; the first rule that holds names the row.
PAPER_ROW_SPECS: dict[str, dict[str, tuple[PaperRowSpec, ...]]] = {
    "table4": {
        "prior": (
            PaperRowSpec("pixel", "pixel"),
            PaperRowSpec("glad-random", "glad", {"generator": "random"}),  # randomly initialised generator
            PaperRowSpec("glad-trained", "glad", {"generator": "trained"}),  # a generator trained on CIFAR-10
            PaperRowSpec("ld3m-trained", "ld3m", {"generator": "trained"}),  # an LDM trained on CIFAR-10
        )
    },
    "table6": {
        "prior": (
            PaperRowSpec("glad", "glad"),
            PaperRowSpec("ld3m-no-diffusion", "ld3m", {"diffusion": "off"}),  # decoder only, images = D(Z)
            PaperRowSpec("ld3m", "ld3m", {"diffusion": "on"}),
        )
    },
    "table7": {
        "variant": (
            PaperRowSpec("glad", "glad"),
            PaperRowSpec("ld3m-learn-c", "ld3m", {"learn": "c"}),  # only the class conditioning learnable
            PaperRowSpec("ld3m-learn-zc-no-eq12", "ld3m", {"learn": "zc", "residual": "none"}),  # plain Eq. 10
            PaperRowSpec("ld3m-learn-zc-eq12", "ld3m", {"learn": "zc", "residual": "mean"}),  # the paper's LD3M
        )
    },
}

#: generator weights whose path names one of these are named after it (first match wins)
KNOWN_GENERATOR_DATA = (("ffhq", "ffhq"), ("cin256", "imagenet"), ("imagenet", "imagenet"), ("cifar", "cifar10"))
#: prior options that say where the generator's weights are
WEIGHT_OPTIONS = ("weights", "model_dir")
#: priors that have a generator (random unless weights are given); others have none ("-")
GENERATIVE_PRIORS = ("glad", "ld3m")


def generator_name(prior: str, options: Mapping[str, Any]) -> str:
    """Which generator a run used, in the paper's words (Table 3's column).

    ``-`` for a prior without one (pixels), ``random`` for a generator without weights (randomly
    initialised), else the data the weights were trained on when their path names it (``ffhq``,
    ``imagenet`` — ``cin256`` is the class-conditional ImageNet LDM —, ``cifar10``), else the
    file's stem. The path is a heuristic; a suite's ``labels.generator`` names a row explicitly.
    """
    declared = options.get("generator")
    if isinstance(declared, str) and declared != "auto":
        return declared  # a prior that names its generator in its resolved options says it best
    path = next((options[k] for k in WEIGHT_OPTIONS if options.get(k)), None)
    if path is None:
        return "random" if prior in GENERATIVE_PRIORS else "-"
    text = str(path).lower()
    for where in (PurePath(text).name, text):  # the file's own name first, then its folders
        for needle, name in KNOWN_GENERATOR_DATA:
            if needle in where:
                return name
    return PurePath(str(path)).stem or str(path)


@functools.cache
def _option_defaults(prior: str) -> dict[str, Any]:
    """A prior plugin's ``__init__`` defaults; {} when it is not installed (then given options only)."""
    from ddbench import registry  # imports the plugin (and torch): only when options must be read

    try:
        cls = registry.get_plugin_class("prior", prior)
    except Exception:  # noqa: BLE001 - an uninstalled third-party prior: compare given options only
        return {}
    return {
        name: p.default
        for name, p in inspect.signature(cls).parameters.items()
        if p.default is not inspect.Parameter.empty
    }


def effective_options(prior: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """The run's prior options with the plugin's defaults filled in."""
    return {**_option_defaults(prior), **options}


def _holds(rule: PaperRowSpec, prior: str, options: Mapping[str, Any]) -> bool:
    if rule.prior != prior:
        return False
    if not rule.options:
        return True
    # plugin defaults only when an option other than the derived generator is asked about
    effective = effective_options(prior, options) if set(rule.options) - {"generator"} else dict(options)
    for key, wanted in rule.options.items():
        if key == "generator":
            have = generator_name(prior, options)
            if not (have == wanted or (wanted == "trained" and have not in ("random", "untrained", "-"))):
                return False
        elif effective.get(key) != wanted:
            return False
    return True


def paper_row_name(table: str, field: str, prior: str, options: Mapping[str, Any]) -> str | None:
    """The paper's name for a run's ``field`` (``prior`` or ``variant``) in ``table``, by
    `PAPER_ROW_SPECS`; ``None`` where the table has no rule for that field or none holds."""
    for rule in PAPER_ROW_SPECS.get(table, {}).get(field, ()):
        if _holds(rule, prior, options):
            return rule.name
    return None


__all__ = [
    "PaperTable",
    "PaperRowSpec",
    "PAPER_ROW_SPECS",
    "paper_table",
    "paper_table_names",
    "paper_row_name",
    "generator_name",
    "effective_options",
]
