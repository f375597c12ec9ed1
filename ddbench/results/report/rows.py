"""The row keys of a run in a report: its prior's variant label and the paper's row names."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from ddbench.engine.spec import recorded_labels
from ddbench.results.paper import effective_options, generator_name, label_options, paper_row_name

#: row keys a layout may use (`run_keys`)
ROW_KEYS = ("prior", "matcher", "generator", "variant", "dataset", "ipc", "res", "iterations")


def prior_label(
    prior: str,
    options: Mapping[str, Any],
    labels: Mapping[str, Any] | None = None,
    lrs: Mapping[str, float] | None = None,
) -> str:
    """A prior and the options that make it a variant: ``ld3m``, ``ld3m[diffusion=off]``,
    ``glad[generator=ffhq]``, ``ld3m[lr.c=0.1,lr.z=0.1]``. Options equal to the plugin's default and
    housekeeping options (checkpointing, CUDA ops, class ids, source paths) are left out; weights
    appear as the generator; learning rates the run was given (``lrs``, `RunSpec.lrs`) appear as
    ``lr.NAME``. All of that is read from what the run recorded of its prior (``labels``,
    `ddbench.running.identity.plugin_labels`), never from the plugin: a run that recorded nothing shows
    every option it was given."""
    shown: dict[str, Any] = {}
    if options:
        defaults = effective_options(prior, {}, labels)
        hidden, path_options = label_options(prior, labels)  # as the prior declared (`Plugin.housekeeping_options`)
        shown = {
            k: v for k, v in sorted(options.items()) if k not in hidden and (k not in defaults or defaults[k] != v)
        }
        if any(options.get(k) for k in path_options):
            shown["generator"] = generator_name(prior, options, labels)
    shown.update({f"lr.{name}": value for name, value in sorted((lrs or {}).items())})
    if not shown:
        return prior
    return f"{prior}[{','.join(f'{k}={v}' for k, v in shown.items())}]"


def spec_prior_label(prior: str, spec: Mapping[str, Any]) -> str:
    """`prior_label` of a run from its stored spec: the options it was given, what it recorded of its
    prior and the learning rates it was given."""
    return prior_label(prior, spec.get("prior_options") or {}, recorded_labels(spec), spec.get("lrs"))


def with_prior_variants(scores: pd.DataFrame) -> pd.DataFrame:
    """``scores`` with each prior named as its run's variant (`prior_label`, e.g.
    ``ld3m[generator=random]``), read from the stored spec, so that variants of one prior are rows of
    their own instead of scores that cannot share a cell."""
    if scores.empty or "spec_json" not in scores.columns:
        return scores
    labels: dict[tuple[str, str], str] = {}
    for prior, text in set(zip(scores["prior"].astype(str), scores["spec_json"].fillna(""))):
        try:
            spec = json.loads(text) if text else {}
        except ValueError:
            spec = {}
        labels[(prior, text)] = spec_prior_label(prior, spec if isinstance(spec, dict) else {})
    relabelled = scores.copy()
    relabelled["prior"] = [labels[(str(p), t)] for p, t in zip(scores["prior"], scores["spec_json"].fillna(""))]
    return relabelled


def run_keys(
    spec: Mapping[str, Any],
    labels: Mapping[str, str] | None = None,
    paper: str | None = None,
    fields: Sequence[str] = ROW_KEYS,
) -> dict[str, Any]:
    """Row-key values of a run, for ``fields`` (some of `ROW_KEYS`).

    ``prior``/``variant`` are the paper's row names when ``paper`` has a rule for them
    (`ddbench.results.paper.row_specs`), the plain prior name for other paper tables, and
    `prior_label` otherwise; ``labels`` (a suite entry's ``[grid.labels]``) win over all of it.
    Everything is read from the spec and what it recorded (no plugin is imported).
    """
    labels = dict(labels or {})
    prior = str(spec["prior"]["name"] if isinstance(spec["prior"], Mapping) else spec["prior"])
    options = dict(spec.get("prior_options") or {})
    # what a resolved run recorded of its prior (`ddbench.running.identity.plugin_labels`): no plugin import
    recorded = recorded_labels(spec)
    makers = {
        "prior": lambda: (
            (paper_row_name(paper, "prior", prior, options, recorded) if paper else None)
            or (prior if paper else spec_prior_label(prior, spec))
        ),
        "variant": lambda: (
            (paper_row_name(paper, "variant", prior, options, recorded) if paper else None)
            or spec_prior_label(prior, spec)
        ),
        "matcher": lambda: str(spec["matcher"]["name"] if isinstance(spec["matcher"], Mapping) else spec["matcher"]),
        "generator": lambda: generator_name(prior, options, recorded),
        "dataset": lambda: spec.get("dataset"),
        "ipc": lambda: spec.get("ipc"),
        "res": lambda: spec.get("res"),
        "iterations": lambda: spec.get("iterations"),
    }
    return {field: labels[field] if field in labels else makers[field]() for field in fields}
