"""Options → RunSpecs: the one expansion shared by `ddbench run` options and suite files.

A `SpecGrid` holds what `ddbench run` accepts (datasets × priors × matchers × IPCs and the settings
every run shares); `build_specs` checks the names, applies the budget preset, scopes plugin options
(``KEY`` for every plugin, ``NAME.KEY`` for plugin NAME only) and validates them by instantiating
each plugin once — so a typo fails before any data is loaded.
"""

from __future__ import annotations

import dataclasses
import difflib
import itertools
import json
import math
from collections.abc import Iterable, Mapping
from typing import Any

from ddbench import registry
from ddbench.engine.protocols import get_protocol
from ddbench.engine.spec import BUDGETS, REPORTS, RunSpec
from ddbench.errors import DDBenchError, InvalidOptionError, UnknownPluginError

#: the paper's datasets, tried in this order when `ddbench run` gets no --dataset
PAPER_DATASETS = (
    "imagenet-a", "imagenet-b", "imagenet-c", "imagenet-d", "imagenet-e",
    "imagenette", "imagewoof", "imagenet-birds", "imagenet-fruits", "imagenet-cats", "cifar10",
)  # fmt: skip
DEFAULT_DATASET = "fashion-mnist"
#: `--evaluators unseen` (the paper's cross-architecture columns)
UNSEEN_EVALUATORS = ("alexnet", "vgg11", "resnet18", "vit")


def split_values(values: Iterable[str]) -> list[str]:
    """``--x a,b --x c`` → [a, b, c]."""
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


def parse_key_values(values: Iterable[str], option: str) -> dict[str, Any]:
    """``--prior-opt T=10 --prior-opt residual=mean`` → {"T": 10, "residual": "mean"} (values as JSON when they parse)."""
    result: dict[str, Any] = {}
    for item in values:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise InvalidOptionError(f"Expected {option} KEY=VALUE but got '{item}'")
        try:
            result[key] = json.loads(raw)
        except json.JSONDecodeError:
            result[key] = raw
    return result


def parse_lrs(values: Mapping[str, Any], where: str) -> dict[str, float]:
    """Learning-rate overrides as floats; a value that is not a finite number above 0 is one clear
    error (SGD takes NaN, infinity and 0 without a word, and the run would finish with nothing learned)."""
    lrs = {}
    for key, value in values.items():
        try:
            if isinstance(value, bool):
                raise ValueError
            lrs[key] = float(value)
        except (TypeError, ValueError):
            raise InvalidOptionError(f"{where}: learning rate {key} expects a number but got {value!r}") from None
        if not math.isfinite(lrs[key]) or lrs[key] <= 0:
            raise InvalidOptionError(f"{where}: learning rate {key} must be a finite number above 0, not {value!r}")
    return lrs


def expand_evaluators(names: Iterable[str]) -> list[str]:
    """``unseen`` → the four unseen architectures; duplicates dropped, order kept."""
    return list(
        dict.fromkeys(itertools.chain.from_iterable(UNSEEN_EVALUATORS if e == "unseen" else (e,) for e in names))
    )


def options_for(name: str, options: Mapping[str, Any], names: list[str]) -> dict[str, Any]:
    """Options for one plugin: ``KEY`` applies to every plugin given, ``NAME.KEY`` to ``NAME`` only."""
    chosen = {}
    for key, value in options.items():
        scope, dot, bare = key.rpartition(".")
        if not dot:
            chosen[key] = value
        elif scope == name:
            chosen[bare] = value
        elif scope not in names:
            raise InvalidOptionError(f"Option '{key}' is scoped to '{scope}', which is not among {names}")
    return chosen


def budget_options(family: str, name: str, budget: str | None) -> dict[str, Any]:
    """The options preset ``budget`` gives plugin ``name`` (`Plugin.budget_options`); {} for none."""
    if not budget:
        return {}
    try:
        cls = registry.get_plugin_class(family, name)
    except DDBenchError:
        return {}  # an unknown name fails in check_names, with its own message
    return dict(cls.budget_options.get(budget, {}))


def check_names(family: str, names: Iterable[str]) -> None:
    installed = registry.plugin_names(family)
    for name in names:
        if name not in installed:
            raise UnknownPluginError(registry.unknown_name_message(family, name, installed))


@dataclasses.dataclass
class SpecGrid:
    """What `ddbench run` accepts, as data; a suite file's ``[grid]`` table uses the same keys."""

    datasets: list[str] = dataclasses.field(default_factory=list)
    priors: list[str] = dataclasses.field(default_factory=lambda: ["pixel"])
    matchers: list[str] = dataclasses.field(default_factory=lambda: ["dm"])
    ipcs: list[int] = dataclasses.field(default_factory=lambda: [1])
    evaluators: list[str] = dataclasses.field(default_factory=lambda: ["convnet"])
    #: number of evaluation seeds (0..N-1); None = the budget's or RunSpec's default
    seeds: int | None = None
    #: the distillation seed (`--seed`)
    seed: int = 0
    iterations: int | None = None
    eval_epochs: int | None = None
    protocol: str = "dc"
    report: str = "final"
    res: int | None = None
    lrs: dict[str, float] = dataclasses.field(default_factory=dict)
    #: ``KEY`` or ``NAME.KEY`` → value, as `--prior-opt` / `--algo-opt`
    prior_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    matcher_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    dsa: bool = True
    budget: str | None = None
    #: data slices (as the smoke budget sets them): the first N training images per class, N test images
    train_per_class: int | None = None
    test_size: int | None = None

    @classmethod
    def keys(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], where: str) -> SpecGrid:
        """A grid from plain data (a suite's TOML table); scalars are accepted where lists are expected."""
        known = cls.keys()
        values: dict[str, Any] = {}
        for key, value in data.items():
            if key not in known:
                close = difflib.get_close_matches(key, known, n=1)
                hint = f" Did you mean '{close[0]}'?" if close else ""
                raise InvalidOptionError(f"{where}: unknown key '{key}'.{hint} Expected some of: {', '.join(known)}")
            values[key] = value
        for key in ("datasets", "priors", "matchers", "ipcs", "evaluators"):
            if key in values and not isinstance(values[key], list):
                values[key] = [values[key]]
        for key in ("datasets", "priors", "matchers", "evaluators"):
            if key in values and not all(isinstance(v, str) for v in values[key]):
                raise InvalidOptionError(f"{where}: expected '{key}' as names (strings) but got {values[key]!r}")
        for key in ("ipcs",):
            if key in values and not all(isinstance(v, int) and not isinstance(v, bool) for v in values[key]):
                raise InvalidOptionError(f"{where}: expected '{key}' as whole numbers but got {values[key]!r}")
            if key in values and min(values[key], default=1) < 1:
                raise InvalidOptionError(f"{where}: expected '{key}' ≥ 1 but got {values[key]!r}")
        for key in ("seeds", "seed", "iterations", "eval_epochs", "res", "train_per_class", "test_size"):
            value = values.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise InvalidOptionError(f"{where}: expected '{key}' as a whole number but got {value!r}")
            # the bounds of the matching `ddbench run` options (--seeds 0 is refused there too)
            low = _MINIMUM.get(key)
            if value is not None and low is not None and value < low:
                raise InvalidOptionError(f"{where}: expected '{key}' ≥ {low} but got {value}")
        for key in ("lrs", "prior_options", "matcher_options"):
            if key in values and not isinstance(values[key], Mapping):
                raise InvalidOptionError(f"{where}: expected '{key}' as a table (KEY = value) but got {values[key]!r}")
        if "lrs" in values:
            values["lrs"] = parse_lrs(values["lrs"], where)
        # TOML reads `ld3m.T = 10` as {"ld3m": {"T": 10}}: flatten plugin-named tables back to "ld3m.T"
        for key, names in (
            ("prior_options", values.get("priors", ["pixel"])),
            ("matcher_options", values.get("matchers", ["dm"])),
        ):
            if key in values:
                values[key] = flatten_scoped(values[key], names)
        if "dsa" in values and not isinstance(values["dsa"], bool):
            raise InvalidOptionError(f"{where}: expected 'dsa' as true or false but got {values['dsa']!r}")
        for key, choices in (("budget", sorted(BUDGETS)), ("report", list(REPORTS)), ("protocol", None)):
            value = values.get(key)
            if value is None:
                continue
            if not isinstance(value, str):
                raise InvalidOptionError(f"{where}: expected '{key}' as a name (a string) but got {value!r}")
            if choices is not None and value not in choices:
                raise InvalidOptionError(f"{where}: unknown {key} '{value}'; expected one of {choices}")
        return cls(**values)


#: the smallest value of whole-number grid keys (as `ddbench run` enforces on its options)
_MINIMUM = {"seeds": 1, "iterations": 0, "eval_epochs": 1, "res": 1, "train_per_class": 1, "test_size": 1}


def flatten_scoped(options: Mapping[str, Any], names: list[str]) -> dict[str, Any]:
    """``{"ld3m": {"T": 10}}`` (how TOML reads ``ld3m.T = 10``) → ``{"ld3m.T": 10}`` for plugins in ``names``."""
    flat: dict[str, Any] = {}
    for key, value in options.items():
        if key in names and isinstance(value, Mapping):
            flat.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            flat[key] = value
    return flat


def build_specs(grid: SpecGrid, validate: bool = True) -> list[RunSpec]:
    """The cross product datasets × priors × matchers × IPCs of a grid, as RunSpecs.

    ``grid.datasets`` must be filled in (`ddbench run` picks the paper's datasets on disk first).
    Budget presets set defaults that the grid's explicit values override, plugin options included
    (`Plugin.budget_options`).
    """
    if not grid.datasets:
        raise InvalidOptionError("Expected at least one dataset (--dataset NAME)")
    if grid.seeds is not None and grid.seeds < 1:
        raise InvalidOptionError(f"Expected seeds ≥ 1 (--seeds) but got {grid.seeds}")
    evaluators = expand_evaluators(grid.evaluators)
    check_names("dataset", grid.datasets)
    check_names("prior", grid.priors)
    check_names("matcher", grid.matchers)
    check_names("evaluator", evaluators)
    get_protocol(grid.protocol)  # an unknown name fails here, before any data loads (--dry-run too)
    budget = dict(BUDGETS[grid.budget]) if grid.budget else {}
    explicit = {
        "iterations": grid.iterations,
        "eval_epochs": grid.eval_epochs,
        "eval_seeds": tuple(range(grid.seeds)) if grid.seeds else None,
        "train_per_class": grid.train_per_class,
        "test_size": grid.test_size,
    }
    settings = {**budget, **{k: v for k, v in explicit.items() if v is not None}}
    common = dict(
        res=grid.res,
        seed=grid.seed,
        evaluators=tuple(evaluators),
        protocol=grid.protocol,
        report=grid.report,
        dsa=grid.dsa,
        lrs=parse_lrs(grid.lrs, "lrs"),
        **settings,
    )
    specs = [
        RunSpec(
            dataset=d,
            prior=p,
            matcher=m,
            ipc=i,
            prior_options={
                **budget_options("prior", p, grid.budget),
                **options_for(p, grid.prior_options, grid.priors),
            },
            matcher_options={
                **budget_options("matcher", m, grid.budget),
                **options_for(m, grid.matcher_options, grid.matchers),
            },
            **common,
        )  # fmt: skip
        # a value given twice (--ipc 1,1) is one run, not the same run twice
        for d, p, m, i in itertools.product(
            *(dict.fromkeys(v) for v in (grid.datasets, grid.priors, grid.matchers, grid.ipcs))
        )
    ]
    if validate:
        validate_plugin_options(specs)
    return specs


def validate_plugin_options(specs: Iterable[RunSpec]) -> None:
    """Fail fast on bad plugin options, before any data is loaded or any run starts."""
    seen: set[tuple[str, str, str]] = set()
    for spec in specs:
        for family, name, options in (
            ("prior", spec.prior, spec.prior_options),
            ("matcher", spec.matcher, spec.matcher_options),
        ):
            key = (family, name, json.dumps(options, sort_keys=True))
            if key not in seen:
                seen.add(key)
                registry.create(family, name, **options)
