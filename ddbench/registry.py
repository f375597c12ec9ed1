"""Plugin discovery through stevedore entry points, one namespace per family.

Names are listed from package metadata without importing anything; a plugin's module is imported
only when it is requested, and an import failure is raised with its original traceback.
"""

from __future__ import annotations

import difflib
import importlib.metadata
import inspect
from dataclasses import dataclass
from typing import Any, TypeVar

from stevedore import DriverManager

from ddbench.errors import InvalidOptionError, PluginLoadError, UnknownPluginError

FAMILIES: dict[str, str] = {
    "dataset": "ddbench.datasets",
    "prior": "ddbench.priors",
    "matcher": "ddbench.matchers",
    "evaluator": "ddbench.evaluators",
    "executor": "ddbench.executors",
}

T = TypeVar("T")


@dataclass(frozen=True)
class PluginInfo:
    family: str
    name: str
    target: str  # "module:attr"
    distribution: str
    version: str


def _namespace(family: str) -> str:
    try:
        return FAMILIES[family]
    except KeyError:
        raise UnknownPluginError(f"Unknown plugin family '{family}'; expected one of {sorted(FAMILIES)}") from None


def list_plugins(family: str) -> list[PluginInfo]:
    """Every installed plugin of a family, sorted by name, without importing any of them."""
    found: dict[str, PluginInfo] = {}
    for ep in importlib.metadata.entry_points(group=_namespace(family)):
        dist = getattr(ep, "dist", None)
        found.setdefault(
            ep.name,
            PluginInfo(
                family=family,
                name=ep.name,
                target=ep.value,
                distribution=dist.metadata["Name"] if dist is not None else "?",
                version=dist.version if dist is not None else "?",
            ),
        )
    return [found[name] for name in sorted(found)]


def plugin_names(family: str) -> list[str]:
    return [info.name for info in list_plugins(family)]


def unknown_name_message(family: str, name: str, installed: list[str]) -> str:
    close = difflib.get_close_matches(name, installed, n=1, cutoff=0.5)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    listing = ", ".join(installed) if installed else "none"
    return f"Unknown {family} '{name}'.{hint} Installed {family}s: {listing}."


def _raise_load_failure(manager: Any, entry_point: Any, err: Exception) -> None:
    raise PluginLoadError(
        f"The {entry_point.group} plugin '{entry_point.name}' ({entry_point.value}) failed to import: "
        f"{type(err).__name__}: {err}"
    ) from err


#: the class every plugin of a family subclasses ("module:attr", imported only when checked)
BASE_CLASSES: dict[str, str] = {
    "dataset": "ddbench.interfaces:DatasetPlugin",
    "prior": "ddbench.interfaces:Prior",
    "matcher": "ddbench.interfaces:Matcher",
    "evaluator": "ddbench.interfaces:Evaluator",
    "executor": "ddbench.executor:Executor",
}


def plugin_info(family: str, name: str) -> PluginInfo:
    """The entry point of ``name`` in ``family``: its target, distribution and version."""
    for info in list_plugins(family):
        if info.name == name:
            return info
    raise UnknownPluginError(unknown_name_message(family, name, plugin_names(family)))


def _check_base_class(family: str, name: str, cls: Any) -> None:
    module, _, attr = BASE_CLASSES[family].partition(":")
    base = getattr(importlib.import_module(module), attr)
    if not (isinstance(cls, type) and issubclass(cls, base)):
        info = plugin_info(family, name)
        raise PluginLoadError(
            f"The {family} plugin '{name}' ({info.target}, from {info.distribution} {info.version}) is "
            f"{'the class ' + cls.__qualname__ if isinstance(cls, type) else repr(cls)}, which does not subclass "
            f"{module}.{attr}; every {family} plugin must subclass it (see 'Writing a plugin' in the README)"
        )


def get_plugin_class(family: str, name: str) -> type:
    """Import and return the class registered as ``name`` in ``family``."""
    namespace = _namespace(family)
    installed = plugin_names(family)
    if name not in installed:
        raise UnknownPluginError(unknown_name_message(family, name, installed))
    manager = DriverManager(
        namespace=namespace,
        name=name,
        invoke_on_load=False,
        on_load_failure_callback=_raise_load_failure,
    )
    _check_base_class(family, name, manager.driver)
    return manager.driver


def create(family: str, name: str, **options: Any) -> Any:
    """Instantiate a plugin; its options are its ``__init__`` keyword arguments (unknown keys are errors),
    converted to their annotated types first (``"64"`` → 64 for an ``int``; ``"lots"`` is an error)."""
    from ddbench._coerce import coerce_options

    cls = get_plugin_class(family, name)
    signature = inspect.signature(cls)
    try:
        signature.bind(**options)
    except TypeError as err:
        accepted = [p for p in signature.parameters if p not in ("self", "args", "kwargs")]
        raise InvalidOptionError(
            f"{family} '{name}' does not accept options {sorted(options)}: {err}. Accepted options: {accepted or 'none'}"
        ) from None
    options = coerce_options(f"{family.capitalize()} '{name}'", cls, options)
    bound = signature.bind(**options)
    instance = cls(**options)
    bound.apply_defaults()
    instance._options = dict(bound.arguments)
    if not getattr(instance, "name", ""):
        instance.name = name
    return instance
