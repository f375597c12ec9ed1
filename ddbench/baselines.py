"""Whether a run measures what its row says.

A matcher that does not distil (`ddbench.interfaces.Matcher.distils` False: the random-real
baseline) keeps its prior's initial images. That is a real-image baseline only under a prior that
starts from real images (`ddbench.interfaces.Prior.starts_from_real`); under one that starts from
random latents it scores a generator's random samples while its row reads "real".
`ddbench run` refuses such runs (`split_meaningful`); reports mark their cells (`run_problem`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ddbench import registry
from ddbench.paper import effective_options
from ddbench.spec import RunSpec


def _plugin_class(family: str, name: str) -> type | None:
    try:
        return registry.get_plugin_class(family, name)
    except Exception:  # noqa: BLE001 - an uninstalled plugin (a store from elsewhere): nothing to say
        return None


def baseline_problem(prior: str, prior_options: Mapping[str, Any], matcher: str) -> str | None:
    """Why ``matcher`` under ``prior`` with these (effective) options is no real-image baseline, as
    one sentence; None when the run is meaningful (it distils, or it starts from real images)."""
    matcher_cls = _plugin_class("matcher", matcher)
    if matcher_cls is None or getattr(matcher_cls, "distils", True):
        return None
    prior_cls = _plugin_class("prior", prior)
    declared = getattr(prior_cls, "starts_from_real", True) if prior_cls is not None else True
    if declared is True:
        return None
    keeps = f"'{matcher}' keeps the prior's initial images without distilling"
    if declared is False:
        return f"{keeps}, and prior '{prior}' never starts from real images, so the run scores its random samples, not real images"
    options = effective_options(prior, prior_options)  # the plugin's defaults for options not given
    wrong = {key: options.get(key) for key, wanted in declared.items() if options.get(key) != wanted}
    if not wrong:
        return None
    needed = ", ".join(f"{key}={value}" for key, value in declared.items())
    have = ", ".join(f"{key}={value}" for key, value in wrong.items())
    return f"{keeps}, and prior '{prior}' starts from real images only with {needed} (this run: {have})"


def run_problem(spec: RunSpec | Mapping[str, Any]) -> str | None:
    """`baseline_problem` of a run: a `RunSpec` or a stored spec dict, with its effective options
    where it was resolved (``identity``), else the options given."""
    if isinstance(spec, RunSpec):
        return baseline_problem(spec.prior, spec.plugin_options("prior"), spec.matcher)
    identity = spec.get("identity") or {}
    prior_record = identity.get("prior") if isinstance(identity, Mapping) else None
    options = prior_record.get("options") if isinstance(prior_record, Mapping) else None
    prior = spec["prior"]["name"] if isinstance(spec.get("prior"), Mapping) else str(spec.get("prior"))
    matcher = spec["matcher"]["name"] if isinstance(spec.get("matcher"), Mapping) else str(spec.get("matcher"))
    return baseline_problem(prior, options if options is not None else spec.get("prior_options") or {}, matcher)


def split_meaningful(specs: Iterable[RunSpec]) -> tuple[list[RunSpec], list[tuple[RunSpec, str]]]:
    """The runs that measure what they say, and the others with the reason."""
    kept: list[RunSpec] = []
    dropped: list[tuple[RunSpec, str]] = []
    for spec in specs:
        problem = run_problem(spec)
        if problem is None:
            kept.append(spec)
        else:
            dropped.append((spec, problem))
    return kept, dropped


def fix_hint(prior: str) -> str:
    """How to get a real-image baseline from ``prior``: the option values it needs, if any."""
    declared = getattr(_plugin_class("prior", prior), "starts_from_real", True)
    if isinstance(declared, Mapping):
        return "pass " + " ".join(f"--prior-opt {prior}.{key}={value}" for key, value in declared.items())
    return "run the baseline under a prior that starts from real images (`ddbench plugins` lists them)"


__all__ = ["baseline_problem", "run_problem", "split_meaningful", "fix_hint"]
