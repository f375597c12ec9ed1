"""Suites: versioned TOML files that name a set of runs (a paper table, a CPU benchmark) and its layout.

A suite lives in ``ddbench/running/suites/<name>.toml`` (package data of ``ddbench``, beside this module)
and is expanded by the same code as `ddbench run` options (`ddbench.running.grid.build_specs`)::

    name = "table2"
    version = 1                      # bump whenever the runs it expands to change
    description = "..."

    [defaults]                       # optional: keys shared by every [[grid]] entry
    protocol = "glad"

    [grid]                           # or several [[grid]] entries; the suite is their union
    datasets = ["imagenet-a", "imagenet-b"]
    priors = ["pixel", "glad", "ld3m"]
    matchers = ["dc", "dm"]
    ipcs = [10]
    evaluators = ["unseen"]
    seeds = 5
    res = 128
    [grid.matcher_options]           # like --algo-opt: KEY for every matcher, NAME.KEY for one
    mtt.build_experts = true
    [grid.labels]                    # optional: leaderboard row labels of this entry's runs
    generator = "imagenet"

    [layout]                         # how `ddbench leaderboard --suite` shows it
    paper_table = "table2"           # key of the paper's table (omit for suites not in the paper)
    rows = ["prior", "matcher"]
    columns = "dataset"              # or "evaluator"
    all_column = true                # add the paper's "All" mean column
    title = "..."

Grid keys are the fields of `ddbench.running.grid.SpecGrid` (the `ddbench run` options). String values of
plugin options may name environment variables (``"${DDBENCH_MODELS}/glad/imagenet256.pkl"``), so a
suite can point at model weights without fixing where they live.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ddbench import registry
from ddbench.engine.spec import BUDGETS, RunSpec
from ddbench.errors import InvalidOptionError
from ddbench.results.report.rows import ROW_KEYS
from ddbench.running.grid import SpecGrid, build_specs, flatten_scoped, validate_plugin_options
from ddbench.util.fileio import safe_name

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

SUITE_SUFFIX = ".toml"
LAYOUT_COLUMNS = ("dataset", "evaluator")
#: `--dataset/--prior/--algo/--ipc` given with `--suite` select among the suite's runs
FILTER_KEYS = {"datasets": "dataset", "priors": "prior", "matchers": "matcher", "ipcs": "ipc"}
#: keys a budget preset sets, in SpecGrid terms (a budget given on the command line replaces them)
_BUDGET_GRID_KEYS = {"iterations": "iterations", "eval_epochs": "eval_epochs", "eval_seeds": "seeds"}
#: dict-valued keys whose command-line values are merged into a suite's own
_MERGED_KEYS = ("prior_options", "matcher_options", "lrs")
_ENV_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


#: the packaged suites: ``*.toml`` package data beside this module
SUITES_DIR = Path(__file__).resolve().parent


def suite_dirs() -> list[Path]:
    """Where suites are looked up by name: the suites that ship with ddbench."""
    return [SUITES_DIR]


def available_suites() -> list[str]:
    """Names of the packaged suites, sorted."""
    return sorted({p.stem for d in suite_dirs() for p in d.glob(f"*{SUITE_SUFFIX}")})


@dataclasses.dataclass(frozen=True)
class SuiteLayout:
    """How the leaderboard shows a suite (the ``[layout]`` table)."""

    rows: tuple[str, ...] = ("prior", "matcher")
    columns: str = "dataset"
    all_column: bool = False
    title: str = ""
    #: key of the paper's table this suite reproduces (e.g. "table1"); None when not in the paper
    paper_table: str | None = None

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], where: str) -> SuiteLayout:
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise InvalidOptionError(f"{where}: unknown [layout] keys {unknown}; expected some of {known}")
        rows = data.get("rows", list(cls.rows))
        if not isinstance(rows, list) or not rows or not all(isinstance(r, str) for r in rows):
            raise InvalidOptionError(f"{where}: expected [layout] rows as a non-empty list of names but got {rows!r}")
        unknown_rows = [r for r in rows if r not in ROW_KEYS]
        if unknown_rows:
            raise InvalidOptionError(
                f"{where}: unknown [layout] rows {unknown_rows}; expected some of {list(ROW_KEYS)}"
            )
        columns = data.get("columns", cls.columns)
        if columns not in LAYOUT_COLUMNS:
            raise InvalidOptionError(
                f"{where}: expected [layout] columns to be one of {list(LAYOUT_COLUMNS)} but got {columns!r}"
            )
        all_column = data.get("all_column", False)
        if not isinstance(all_column, bool):
            raise InvalidOptionError(f"{where}: expected [layout] all_column as true or false but got {all_column!r}")
        paper_table = data.get("paper_table")
        if paper_table is not None and not isinstance(paper_table, str):
            raise InvalidOptionError(
                f"{where}: expected [layout] paper_table as the name of one of the paper's tables "
                f'(e.g. "table1") but got {paper_table!r}'
            )
        return cls(
            rows=tuple(rows),
            columns=columns,
            all_column=all_column,
            title=str(data.get("title", "")),
            paper_table=paper_table,
        )


@dataclasses.dataclass(frozen=True)
class SuiteEntry:
    """One ``[grid]`` / ``[[grid]]`` table, merged with ``[defaults]``."""

    grid: dict[str, Any]
    labels: dict[str, str]


@dataclasses.dataclass(frozen=True)
class SuiteRun:
    """One run of an expanded suite: its spec and the row labels of the grid entry it came from."""

    spec: RunSpec
    labels: dict[str, str]


@dataclasses.dataclass(frozen=True)
class Suite:
    name: str
    version: int
    description: str
    entries: tuple[SuiteEntry, ...]
    layout: SuiteLayout
    path: Path

    def expand(
        self,
        overrides: Mapping[str, Any] | None = None,
        filters: Mapping[str, Iterable[Any]] | None = None,
        require_env: bool = True,
        validate: bool = True,
    ) -> list[SuiteRun]:
        """Every run of the suite, in file order, duplicates (same run id) dropped.

        ``overrides`` are SpecGrid keys that replace the suite's values (e.g. ``{"iterations": 2}``);
        a ``budget`` among them also drops the suite's own values for the keys the budget sets, so
        ``--budget smoke`` really is a smoke run. ``filters`` (datasets, priors, matchers, ipcs)
        keep only matching runs. ``require_env=False`` leaves unset ``${VAR}`` references as they
        are (for `--dry-run`) instead of failing.
        """
        overrides = dict(overrides or {})
        filters = _check_overrides(overrides, filters)
        runs: list[SuiteRun] = []
        seen: set[str] = set()
        offered: dict[str, dict[Any, None]] = {}  # per filter key, the values the suite's runs have
        used_options: set[str] = set()
        installed = {family: registry.plugin_names(family) for family in ("prior", "matcher")}
        for index, entry in enumerate(self.entries):
            where = f"suite '{self.name}' ({self.path}) grid entry {index + 1}"
            values = _entry_values(entry, overrides, installed, require_env, where, used_options)
            grid = SpecGrid.from_mapping(values, where)
            try:
                specs = build_specs(grid, validate=False)
            except InvalidOptionError as err:
                raise InvalidOptionError(f"{where}: {err}") from None  # the file and entry, not only the key
            for spec in specs:
                for key in filters:
                    offered.setdefault(key, {})[getattr(spec, FILTER_KEYS[key])] = None
                if any(getattr(spec, FILTER_KEYS[k]) not in wanted for k, wanted in filters.items()):
                    continue
                if spec.run_id not in seen:
                    seen.add(spec.run_id)
                    runs.append(SuiteRun(spec=spec, labels=dict(entry.labels)))
        for key in ("prior_options", "matcher_options"):
            unused = sorted(set(overrides.get(key, {})) - used_options)
            if unused:
                raise InvalidOptionError(
                    f"Options {unused} are scoped to plugins that suite '{self.name}' does not use"
                )
        if not runs:
            raise InvalidOptionError(
                f"Suite '{self.name}' has no run matching {filters}; {_filter_hint(filters, offered)}"
            )
        if validate:
            validate_plugin_options(run.spec for run in runs)
        return runs

    def specs(
        self,
        overrides: Mapping[str, Any] | None = None,
        filters: Mapping[str, Iterable[Any]] | None = None,
        require_env: bool = True,
        validate: bool = True,
    ) -> list[RunSpec]:
        """The suite's RunSpecs (see `expand`)."""
        return [run.spec for run in self.expand(overrides, filters, require_env, validate)]

    def labels_by_run(self, **kwargs: Any) -> dict[str, dict[str, str]]:
        """run id → the row labels of its grid entry (e.g. ``{"generator": "ffhq"}``), for leaderboards."""
        return {run.spec.run_id: run.labels for run in self.expand(**kwargs)}


def _check_overrides(overrides: Mapping[str, Any], filters: Mapping[str, Iterable[Any]] | None) -> dict[str, list[Any]]:
    """Raise InvalidOptionError for overrides or filters a suite cannot take; the filters in use."""
    unknown = sorted(set(overrides) - set(SpecGrid.keys()))
    if unknown:
        raise InvalidOptionError(f"Unknown suite overrides {unknown}; expected some of {SpecGrid.keys()}")
    kept = {k: list(v) for k, v in (filters or {}).items() if v}
    bad = sorted(set(kept) - set(FILTER_KEYS))
    if bad:
        raise InvalidOptionError(f"Suites can be filtered by {sorted(FILTER_KEYS)}, not {bad}")
    return kept


def _entry_values(
    entry: SuiteEntry,
    overrides: Mapping[str, Any],
    installed: Mapping[str, list[str]],
    require_env: bool,
    where: str,
    used_options: set[str],
) -> dict[str, Any]:
    """A grid entry's SpecGrid values with ``overrides`` applied and its plugin options kept for the
    plugins it runs (``${VAR}`` expanded); adds the options kept to ``used_options``."""
    values = dict(entry.grid)
    if overrides.get("budget"):
        for budget_key in BUDGETS[overrides["budget"]]:
            values.pop(_BUDGET_GRID_KEYS.get(budget_key, budget_key), None)
    for key, value in overrides.items():
        # options add to the entry's own (flattened below); everything else replaces
        values[key] = {**values.get(key, {}), **value} if key in _MERGED_KEYS else value
    for key, plugins_key, family in (
        ("prior_options", "priors", "prior"),
        ("matcher_options", "matchers", "matcher"),
    ):
        names = values.get(plugins_key) or getattr(SpecGrid(), plugins_key)
        names = names if isinstance(names, list) else [names]
        kept = {}
        for option, option_value in flatten_scoped(values.get(key, {}), installed[family]).items():
            scope = option.rpartition(".")[0]
            if scope and scope not in installed[family]:
                raise InvalidOptionError(
                    f"{where}: option '{option}' is scoped to '{scope}', which is not an installed {family}"
                )
            if scope and scope not in names:
                continue  # [defaults] and command-line options reach only the entries with that plugin
            used_options.add(option)
            kept[option] = option_value
        values[key] = _expand_env(kept, require_env, where)
    return values


def _expand_env(options: Mapping[str, Any], require: bool, where: str) -> dict[str, Any]:
    """``${VAR}`` in string option values → the environment's value."""
    missing: list[str] = []

    def substitute(match: re.Match[str]) -> str:
        value = os.environ.get(match.group(1))
        if value is None:
            missing.append(match.group(1))
            return match.group(0)
        return value

    def walk(value: Any) -> Any:
        if isinstance(value, str):
            return _ENV_VAR.sub(substitute, value)
        if isinstance(value, Mapping):
            return {k: walk(v) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v) for v in value]
        return value

    expanded = walk(options)
    if missing and require:
        names = ", ".join(sorted(set(missing)))
        raise InvalidOptionError(
            f"{where} needs the environment variable(s) {names} (paths of model weights); "
            f"export them (e.g. export {sorted(set(missing))[0]}=/path/to/models) or try --dry-run to list the runs"
        )
    return expanded


def _filter_hint(filters: Mapping[str, Iterable[Any]], offered: Mapping[str, Mapping[Any, None]]) -> str:
    """What the suite has for each filter that matched nothing, with a close name where one is."""
    hints = []
    for key, wanted in filters.items():
        values = list(offered.get(key, {}))
        missing = [w for w in wanted if w not in values]
        if not missing:
            continue
        names = [v for v in values if isinstance(v, str)]  # a close number is no typo
        close = difflib.get_close_matches(missing[0], names, n=1) if isinstance(missing[0], str) else []
        guess = f"did you mean '{close[0]}'? " if close else ""
        hints.append(f"{guess}its {key}: {', '.join(map(str, values))}")
    return "; ".join(hints) or "drop or change the filters"


def _find_suite_file(name_or_path: str | os.PathLike[str]) -> Path:
    text = str(name_or_path)
    path = Path(text).expanduser()
    if path.suffix == SUITE_SUFFIX or os.sep in text or path.is_file():
        if path.is_dir():
            raise InvalidOptionError(f"Suite file {path} is a directory; pass a suite .toml file or a suite's name")
        if not path.is_file():
            raise InvalidOptionError(f"Suite file {path} does not exist")
        return path
    for directory in suite_dirs():
        candidate = directory / f"{text}{SUITE_SUFFIX}"
        if candidate.is_file():
            return candidate
    names = available_suites()
    close = difflib.get_close_matches(text, names, n=1, cutoff=0.4)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    raise InvalidOptionError(
        f"Unknown suite '{text}'.{hint} Available suites: {', '.join(names) or 'none'} "
        f"(or pass the path of a suite .toml file)"
    )


def load_suite(name_or_path: str | os.PathLike[str]) -> Suite:
    """A packaged suite by name (``table1``) or a suite file by path; errors name what is available."""
    path = _find_suite_file(name_or_path)
    try:
        with path.open("rb") as handle:
            raw = tomllib.load(handle)
    except tomllib.TOMLDecodeError as err:
        raise InvalidOptionError(f"Suite file {path} is not valid TOML: {err}") from None
    except UnicodeDecodeError as err:
        raise InvalidOptionError(f"Suite file {path} is not UTF-8 text (TOML must be): {err}") from None
    where = f"suite file {path}"
    known = {"name", "version", "description", "defaults", "grid", "layout"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise InvalidOptionError(f"{where}: unknown top-level keys {unknown}; expected some of {sorted(known)}")
    name = raw.get("name", safe_name(path.stem))
    if not isinstance(name, str) or safe_name(name) != name:
        # the name names files (report-NAME.html): a path in it could write outside --out
        raise InvalidOptionError(
            f"{where}: expected 'name' as a plain name (letters, digits, '.', '_', '+', '-') but got {name!r}; "
            f"e.g. name = {safe_name(str(name), path.stem)!r}"
        )
    version = raw.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise InvalidOptionError(f"{where}: expected 'version' as a whole number ≥ 1 but got {version!r}")
    defaults = raw.get("defaults", {})
    if not isinstance(defaults, Mapping):
        raise InvalidOptionError(f"{where}: expected [defaults] as a table (KEY = value) but got {defaults!r}")
    layout = raw.get("layout", {})
    if not isinstance(layout, Mapping):
        raise InvalidOptionError(f"{where}: expected [layout] as a table (KEY = value) but got {layout!r}")
    grids = raw.get("grid")
    if isinstance(grids, Mapping):
        grids = [grids]
    if not isinstance(grids, list) or not grids or not all(isinstance(g, Mapping) for g in grids):
        raise InvalidOptionError(f"{where}: expected a [grid] table or [[grid]] entries")
    entries = []
    for index, table in enumerate(grids):
        merged = {**defaults, **table}
        labels = merged.pop("labels", {})
        if not isinstance(labels, Mapping) or not all(isinstance(v, str) for v in labels.values()):
            raise InvalidOptionError(
                f"{where}: grid entry {index + 1}: expected labels as a table of strings but got {labels!r}"
            )
        # check the keys now, so a typo in a suite file fails at load time, not at expansion
        SpecGrid.from_mapping(merged, f"{where}: grid entry {index + 1}")
        entries.append(SuiteEntry(grid=merged, labels=dict(labels)))
    return Suite(
        name=str(name),
        version=version,
        description=str(raw.get("description", "")).strip(),
        entries=tuple(entries),
        layout=SuiteLayout.from_mapping(layout, where),
        path=path,
    )


__all__ = ["Suite", "SuiteLayout", "SuiteRun", "load_suite", "available_suites", "suite_dirs"]
