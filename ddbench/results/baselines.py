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
from ddbench.engine.spec import RunSpec, recorded_labels


def _plugin_class(family: str, name: str) -> type | None:
    try:
        return registry.get_plugin_class(family, name)
    except Exception:  # noqa: BLE001 - an uninstalled plugin (a store from elsewhere): nothing to say
        return None


def _problem(
    prior: str, options: Mapping[str, Any], matcher: str, distils: bool, declared: bool | Mapping[str, Any]
) -> str | None:
    """Why ``matcher`` (which ``distils`` or not) under ``prior`` (which ``declared`` when it starts from
    real images: `Prior.starts_from_real`) with these effective options is no real-image baseline."""
    if distils or declared is True:
        return None
    keeps = f"'{matcher}' keeps the prior's initial images without distilling"
    if declared is False:
        return f"{keeps}, and prior '{prior}' never starts from real images, so the run scores its random samples, not real images"
    wrong = {key: options.get(key) for key, wanted in declared.items() if options.get(key) != wanted}
    if not wrong:
        return None
    needed = ", ".join(f"{key}={value}" for key, value in declared.items())
    have = ", ".join(f"{key}={value}" for key, value in wrong.items())
    return f"{keeps}, and prior '{prior}' starts from real images only with {needed} (this run: {have})"


def baseline_problem(prior: str, prior_options: Mapping[str, Any], matcher: str) -> str | None:
    """Why ``matcher`` under ``prior`` with these (effective) options is no real-image baseline, as
    one sentence, by what the installed plugins declare; None when the run is meaningful (it
    distils, or it starts from real images)."""
    matcher_cls = _plugin_class("matcher", matcher)
    if matcher_cls is None:
        return None
    prior_cls = _plugin_class("prior", prior)
    declared = getattr(prior_cls, "starts_from_real", True) if prior_cls is not None else True
    options = {**(registry.option_defaults(prior_cls) if prior_cls is not None else {}), **prior_options}
    return _problem(prior, options, matcher, getattr(matcher_cls, "distils", True), declared)


def run_problem(spec: RunSpec | Mapping[str, Any]) -> str | None:
    """`baseline_problem` of a run: a `RunSpec` (by the installed plugins), or a stored spec dict by
    what it recorded of its plugins (`ddbench.running.identity.plugin_labels`, never importing one: a run
    that recorded nothing has nothing to say)."""
    if isinstance(spec, RunSpec):
        return baseline_problem(spec.prior, spec.plugin_options("prior"), spec.matcher)
    prior_labels, matcher_labels = recorded_labels(spec, "prior"), recorded_labels(spec, "matcher")
    if not prior_labels or not matcher_labels or "distils" not in matcher_labels:
        return None
    identity = spec.get("identity") or {}
    prior_record = identity.get("prior") if isinstance(identity, Mapping) else None
    options = prior_record.get("options") if isinstance(prior_record, Mapping) else None
    prior = spec["prior"]["name"] if isinstance(spec.get("prior"), Mapping) else str(spec.get("prior"))
    matcher = spec["matcher"]["name"] if isinstance(spec.get("matcher"), Mapping) else str(spec.get("matcher"))
    options = {
        **(prior_labels.get("defaults") or {}),
        **(options if options is not None else spec.get("prior_options") or {}),
    }
    declared = prior_labels.get("starts_from_real", True)
    return _problem(prior, options, matcher, bool(matcher_labels["distils"]), declared)


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
