"""Plugin discovery through stevedore entry points, one namespace per family.

Names are listed from package metadata without importing anything; a plugin's module is imported
only when it is requested, and an import failure is raised with its original traceback.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib.metadata
import inspect
import sys
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from stevedore import DriverManager

from ddbench.errors import DDBenchError, InvalidOptionError, PluginError, PluginLoadError, UnknownPluginError

if TYPE_CHECKING:
    from ddbench.interfaces import IdentityContext

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


def static_description(info: PluginInfo) -> str:
    """The ``description`` a plugin class declares, read from its source without importing it (a
    listing must not load torch or a model library); ``""`` when the source does not say it plainly."""
    module, _, qualname = info.target.partition(":")
    return declared_string(module, qualname.rpartition(".")[2], "description") or ""


def declared_string(module: str, class_name: str, attribute: str, hops: int = 3) -> str | None:
    """``attribute = "..."`` in the body of ``class_name`` in ``module``'s source, following
    ``from X import class_name`` re-exports (a package's ``__init__``) up to ``hops`` times; ``""``
    when the class is there without such a literal, None when its source is not found."""
    import ast
    import importlib.util

    try:
        spec = importlib.util.find_spec(module)
        tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8")) if spec and spec.origin else None
    except (ImportError, OSError, SyntaxError, ValueError):
        return None
    for node in ast.walk(tree) if tree is not None else ():
        if isinstance(node, ast.ClassDef) and node.name == class_name:
            for statement in node.body:
                value = getattr(statement, "value", None)
                targets = (
                    statement.targets if isinstance(statement, ast.Assign) else [getattr(statement, "target", None)]
                )
                named = any(isinstance(t, ast.Name) and t.id == attribute for t in targets)
                if named and isinstance(value, ast.Constant) and isinstance(value.value, str):
                    return value.value
            return ""
    for node in ast.walk(tree) if tree is not None and hops > 0 else ():
        if (
            isinstance(node, ast.ImportFrom)
            and node.module
            and node.level == 0
            and any(a.name == class_name for a in node.names)
        ):
            return declared_string(node.module, class_name, attribute, hops - 1)
    return None


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
    "executor": "ddbench.running.executor:Executor",
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
            f"{module}.{attr}; every {family} plugin must subclass it (see docs/plugins.md in ddbench's repository)"
        )


def _distribution_of(family: str, name: str, cls: type) -> str:
    """``ddbench-dct 0.3`` for the distribution that registered (or ships) a plugin class."""
    try:
        info = plugin_info(family, name)
        return f"{info.distribution} {info.version}"
    except UnknownPluginError:  # built directly, not through an entry point (tests, notebooks)
        pass
    top = cls.__module__.split(".")[0]
    for dist in importlib.metadata.packages_distributions().get(top, []):
        return f"{dist} {importlib.metadata.version(dist)}"
    return f"module {cls.__module__}"


def _where_it_failed(err: BaseException, cls: type) -> str:
    """``dct.py:42 in setup``: the innermost frame inside the plugin's own package (else the innermost)."""
    frames = traceback.extract_tb(err.__traceback__)
    if not frames:
        return "?"
    top_file = getattr(sys.modules.get(cls.__module__.split(".")[0]), "__file__", None)
    own = [f for f in frames if top_file and Path(f.filename).is_relative_to(Path(top_file).parent)]
    frame = (own or frames)[-1]
    return f"{Path(frame.filename).name}:{frame.lineno} in {frame.name}"


@contextlib.contextmanager
def plugin_code(family: str, name: str, cls: type, step: str) -> Iterator[None]:
    """Run a plugin's own code (``__init__``, ``setup``, ``effective_options``): an exception that
    is not a ddbench error (those carry the user's fix already) becomes one `PluginError` naming the
    plugin, its distribution, the step and the line of the plugin's code where it failed."""
    try:
        yield
    except InvalidOptionError as err:
        if type(err) is not InvalidOptionError or f"'{name}'" in str(err):
            raise
        # the plugin's own "Expected X but got Y": say whose option it is
        raise InvalidOptionError(f"{family.capitalize()} '{name}': {err}") from None
    except DDBenchError:
        raise
    except Exception as err:
        raise PluginError(
            f"The {family} plugin '{name}' ({_distribution_of(family, name, cls)}) failed in {step}: "
            f"{type(err).__name__}: {err} (at {_where_it_failed(err, cls)}); this is a bug in that plugin, "
            "please report it to its authors"
        ) from err


def effective_options(family: str, name: str, plugin: Any, context: IdentityContext) -> dict[str, Any]:
    """``plugin.effective_options(context)``, a failure framed as the plugin's
    own (`plugin_code`): what a run of ``plugin`` is identified by, and what it is built from."""
    with plugin_code(family, name, type(plugin), "effective_options"):
        return plugin.effective_options(context)


def option_defaults(cls: type) -> dict[str, Any]:
    """A plugin class's ``__init__`` defaults: what a variant label leaves out."""
    return {
        name: p.default
        for name, p in inspect.signature(cls).parameters.items()
        if p.default is not inspect.Parameter.empty
    }


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
    from ddbench.util._coerce import coerce_options

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
    return instantiate(family, name, cls, options)


def instantiate(family: str, name: str, cls: type, options: dict[str, Any]) -> Any:
    """``cls(**options)`` run as plugin code (`plugin_code`), with `Plugin.options` holding every
    option and its default, and a name if the class gives none (`create`, the contract kit)."""
    bound = inspect.signature(cls).bind(**options)
    with plugin_code(family, name, cls, "__init__"):
        instance = cls(**options)
    bound.apply_defaults()
    instance._options = dict(bound.arguments)
    if not getattr(instance, "name", ""):
        instance.name = name
    return instance
