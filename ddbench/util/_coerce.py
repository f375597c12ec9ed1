"""Plugin options checked and converted against the annotations of the plugin's ``__init__``.

Options arrive from a command line (``--algo-opt batch_real=64``, parsed as JSON where it parses) or
a suite file, so ``"64"``, ``64`` and ``64.0`` all mean an ``int`` option's 64, and ``"lots"`` is an
error that names the plugin, the option and the type it expects, before any data is loaded.
Annotations this module does not understand are passed through unchecked.
"""

from __future__ import annotations

import collections.abc
import inspect
import re
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any

from ddbench.errors import InvalidOptionError

_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


class _Mismatch(Exception):
    """The value does not fit the annotation (caught and reported with the option's name)."""


def annotations_of(cls: type) -> dict[str, Any]:
    """``__init__``'s parameter annotations as types; {} when they cannot be evaluated."""
    try:
        return typing.get_type_hints(cls.__init__)
    except Exception:  # noqa: BLE001 - an unresolvable annotation means "not checked", never a crash
        return {}


def _describe(tp: Any) -> str:
    if tp is type(None):
        return "null"
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        return " or ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(tp))
    if origin is not None:
        args = typing.get_args(tp)
        inner = _describe(args[0]) if args else "values"
        return f"a list of {inner}"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


def _to_int(value: Any) -> int:
    if isinstance(value, bool):
        raise _Mismatch
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\s*", value):
        return int(value)
    raise _Mismatch


def _to_float(value: Any) -> float:
    if isinstance(value, bool):
        raise _Mismatch
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            raise _Mismatch from None
    raise _Mismatch


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise _Mismatch


def _to_str(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)  # `model_dir=2024` arrives as the JSON number 2024
    raise _Mismatch


_SCALARS: dict[Any, Callable[[Any], Any]] = {int: _to_int, float: _to_float, bool: _to_bool, str: _to_str}
_SEQUENCES = (list, tuple, collections.abc.Sequence, typing.Sequence)


def _exact(value: Any, tp: Any) -> bool:
    """Whether ``value`` already is of the scalar type ``tp`` (so a union keeps it unconverted)."""
    if tp is type(None):
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp in (int, float):
        return (
            isinstance(value, (int, float)) and not isinstance(value, bool) and (tp is float or isinstance(value, int))
        )
    return tp is str and isinstance(value, str)


def coerce(value: Any, tp: Any) -> Any:
    """``value`` converted to the annotation ``tp``; raises _Mismatch when it cannot be."""
    if tp is Any or tp is inspect.Parameter.empty:
        return value
    if tp is type(None):
        if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null")):
            return None
        raise _Mismatch
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        if value in typing.get_args(tp):
            return value
        raise _Mismatch
    if origin in (typing.Union, types.UnionType):
        members = typing.get_args(tp)
        for member in members:  # a value that already fits a member is kept as it is
            if _exact(value, member):
                return value
        for member in members:
            try:
                return coerce(value, member)
            except _Mismatch:
                continue
        raise _Mismatch
    if origin in _SEQUENCES or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise _Mismatch
        args = typing.get_args(tp)
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            args = (args[0],)
        converted = [coerce(v, args[0]) for v in value] if len(args) == 1 else list(value)
        return tuple(converted) if origin is tuple or tp is tuple else converted
    if tp in _SCALARS:
        return _SCALARS[tp](value)
    return value  # a type this module does not know: the plugin checks it


def coerce_options(label: str, cls: type, options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` converted to the annotated types of ``cls.__init__``; a value that does not fit
    raises one InvalidOptionError naming ``label`` (e.g. "matcher 'dm'"), the option and the type."""
    hints = annotations_of(cls)
    result = dict(options)
    for key, value in options.items():
        if key not in hints:
            continue
        try:
            result[key] = coerce(value, hints[key])
        except _Mismatch:
            raise InvalidOptionError(
                f"{label}: option {key} expects {_describe(hints[key])} but got {value!r}"
            ) from None
    return result


__all__ = ["coerce_options", "annotations_of"]
