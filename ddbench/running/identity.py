"""Run identity: a spec resolved to what it will run, before it runs.

A `RunSpec` as typed names plugins and the options the user gave. `resolve_spec` builds each plugin
(constructs it only: no ``setup``, no data, no model loaded) and records in ``spec.identity``:

* each plugin's **effective options** (`Plugin.effective_options`: defaults applied, ``auto``
  resolved for the target device), which the engine then builds the plugin from;
* each plugin's **behaviour version** (`Plugin.version`, else its distribution's version);
* for options that name model files (`Plugin.path_options`), the **content digest** of the weights
  and config files there (the path is kept as a label);
* the dataset's **fingerprint** (`DatasetPlugin.fingerprint`: a digest of the files it reads);
* the **learning rates** the prior will use for this matcher (its base rates × the matcher's scale);
* **labels** for reports (display order, generator): recorded, never hashed, so the results side
  reads them from the store instead of importing plugins.

`RunSpec.run_id` hashes that record (less labels, neutral options and the device), so typing a
default gives the same id as leaving it out, and a changed default, version, model or data gives a
new one. Resolution happens once, where specs become runs (`ddbench run`, `run_sweep`, `run_spec`);
a resolved spec is never resolved again, so it may be planned on one machine and run on another.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from typing import Any

import torch

from ddbench import registry
from ddbench.engine.spec import RunEnv, RunSpec
from ddbench.errors import DataNotFoundError, DDBenchError, InvalidOptionError
from ddbench.interfaces import IdentityContext
from ddbench.util.fingerprint import path_digest


def target_device(name: str) -> torch.device:
    """The device a run will use, without requiring it here (``auto``: CUDA when this machine has it)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(name)
    except (RuntimeError, ValueError):
        raise InvalidOptionError(f"Expected --device cpu, cuda, cuda:N or auto but got '{name}'") from None


def plugin_version(family: str, name: str, cls: type) -> str:
    """``v3`` for a plugin that declares ``version = 3``, else its distribution and version."""
    declared = getattr(cls, "version", None)
    if declared is not None:
        return f"v{declared}"
    info = registry.plugin_info(family, name)
    return f"{info.distribution}=={info.version}"


def _plain(value: Any) -> Any:
    """JSON-safe copy (tuples become lists), as the spec is stored and hashed as JSON."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def _path_key(label: str, option: str, value: Any) -> str | None:
    """The content digest that stands for a model path in the run id (None for no path)."""
    if value is None or value == "":
        return None
    try:
        return path_digest(str(value))
    except FileNotFoundError:
        # the run fails at set-up with the plugin's own message; planning (--dry-run) must not
        return f"missing:{value}"
    except OSError as err:
        raise InvalidOptionError(f"{label}: cannot read option {option}={value!r} ({err})") from None


def plugin_labels(cls: type, effective: dict[str, Any], defaults: dict[str, Any] | None = None) -> dict[str, Any]:
    """What reports show of a plugin, recorded with the run so they read it from the store
    (never hashed): its display order, its option defaults (``defaults``: what they resolve to in
    this run's context, so that ``auto`` resolved as by default is no variant) and the options a
    variant label leaves out, for a prior which generator made the images and whether it starts
    from real images, for a matcher whether it distils."""
    labels: dict[str, Any] = {
        "display_order": getattr(cls, "display_order", None),
        "defaults": {**_plain(registry.option_defaults(cls)), **(defaults or {})},
        "hidden_options": sorted({*cls.neutral_options, *cls.path_options, *cls.housekeeping_options}),
        "path_options": list(cls.path_options),
    }
    if hasattr(cls, "generator_label"):
        labels["generator"] = cls.generator_label(effective)
    for flag in ("starts_from_real", "distils"):  # `baselines.run_problem`, `reference`'s random real images
        if hasattr(cls, flag):
            labels[flag] = _plain(getattr(cls, flag))
    return labels


class Resolver:
    """Resolves specs for one environment; plugins, digests and fingerprints are computed once each."""

    def __init__(self, env: RunEnv) -> None:
        self.env = env
        self.device = target_device(env.device)
        self._plugins: dict[str, tuple[dict[str, Any], Any]] = {}
        self._datasets: dict[tuple[str, int | None], tuple[dict[str, Any], int | None]] = {}

    def _plugin(
        self, family: str, name: str, options: dict[str, Any], context: IdentityContext
    ) -> tuple[dict[str, Any], Any]:
        """A plugin's identity record and the instance it came from."""
        key = json.dumps([family, name, options, dataclasses.astuple(context)], sort_keys=True, default=str)
        if key not in self._plugins:
            plugin = registry.create(family, name, **options)
            label = f"{family.capitalize()} '{name}'"
            effective = _plain(registry.effective_options(family, name, plugin, context))
            neutral = set(plugin.neutral_options)
            paths = {k: _path_key(label, k, effective.get(k)) for k in plugin.path_options if k in effective}
            record = {
                "name": name,
                "version": plugin_version(family, name, type(plugin)),
                "options": effective,
                # what the run id hashes: model paths by their content, neutral options left out
                "key": {k: paths.get(k, v) for k, v in effective.items() if k not in neutral},
                "labels": plugin_labels(
                    type(plugin), effective, self._default_options(family, name, context) if options else effective
                ),
            }
            self._plugins[key] = (record, plugin)
        return self._plugins[key]

    def _default_options(self, family: str, name: str, context: IdentityContext) -> dict[str, Any] | None:
        """The effective options of the plugin built with no options in ``context``; None where it
        cannot be built so (an option without a default)."""
        try:
            return self._plugin(family, name, {}, context)[0]["options"]
        except DDBenchError:
            return None

    def _dataset(self, name: str, res: int | None) -> tuple[dict[str, Any], int | None]:
        """The dataset's identity record and the resolution a run will load it at."""
        if (name, res) not in self._datasets:
            plugin = registry.create("dataset", name)
            resolution = plugin.resolution_for(res)  # an unsupported --res fails here, --dry-run too
            context = IdentityContext(dataset=name, resolution=resolution, ipc=1, device=self.device)
            effective = _plain(registry.effective_options("dataset", name, plugin, context))
            try:
                fingerprint, found_at = plugin.fingerprint(self.env.data_root, res), plugin.locate(self.env.data_root)
            except (DataNotFoundError, NotImplementedError):
                # the run itself fails at loading with the dataset's message; planning must not
                fingerprint, found_at = None, None
            neutral = set(plugin.neutral_options)
            record = {
                "name": name,
                "version": plugin_version("dataset", name, type(plugin)),
                "options": effective,
                "key": {**{k: v for k, v in effective.items() if k not in neutral}, "fingerprint": fingerprint},
                "found_at": found_at,  # a label: the same files elsewhere are the same data
                "labels": plugin_labels(type(plugin), effective),
            }
            self._datasets[(name, res)] = (record, resolution)
        return self._datasets[(name, res)]

    def resolve(self, spec: RunSpec) -> RunSpec:
        if spec.identity is not None:
            return spec
        dataset, resolution = self._dataset(spec.dataset, spec.res)
        context = IdentityContext(dataset=spec.dataset, resolution=resolution, ipc=spec.ipc, device=self.device)
        prior, prior_plugin = self._plugin("prior", spec.prior, spec.prior_options, context)
        matcher, matcher_plugin = self._plugin("matcher", spec.matcher, spec.matcher_options, context)
        identity = {
            "dataset": dataset,
            "prior": prior,
            "matcher": matcher,
            "lrs": _plain(prior_plugin.learning_rates(matcher_plugin.lr_scale, spec.lrs)),
            "device": str(self.device),
        }
        return dataclasses.replace(spec, identity=identity)


def resolve_spec(spec: RunSpec, env: RunEnv) -> RunSpec:
    """``spec`` with its identity recorded (unchanged when it already has one)."""
    return spec if spec.identity is not None else Resolver(env).resolve(spec)


def resolve_specs(specs: Iterable[RunSpec], env: RunEnv) -> list[RunSpec]:
    """Every spec resolved (see `resolve_spec`), sharing plugin builds and data fingerprints."""
    resolver = Resolver(env)
    return [resolver.resolve(spec) for spec in specs]


__all__ = ["resolve_spec", "resolve_specs", "target_device", "plugin_version", "Resolver"]
