"""Unpickle one entry of a network pickle without importing the code of the others.

A StyleGAN-XL snapshot is a pickled dict ``{G, D, G_ema, augment_pipe, training_set_kwargs, …}``
whose networks are `torch_utils.persistence` objects: each is rebuilt by executing the module source
stored in the pickle, and the discriminator's pulls in its projector / feature networks (timm, CLIP).
To load only ``G_ema``, every global outside a few safe modules (torch, numpy, the standard library
helpers pickle needs) is replaced during unpickling by a *deferred* placeholder that records how it
was constructed — the calls, ``__new__`` arguments, ``__setstate__`` state, appended items and set
items. After loading, `materialise` replays that record only for the entry asked for, importing its
modules and running the pickle's own reconstruction functions (e.g. the source tree's
``persistence._reconstruct_persistent_obj``) then. Everything else is dropped unbuilt.

Like any pickle, a network pickle can run arbitrary code when the chosen entry is materialised:
load only files you trust.
"""

from __future__ import annotations

import importlib
import pickle
import types
from typing import IO, Any

#: modules whose globals are resolved immediately: tensor/array rebuilding and pickle's own helpers
EAGER_ROOTS = frozenset({"torch", "numpy", "builtins", "collections", "copyreg", "_codecs", "copy", "functools"})


_OPAQUE = (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType, types.MethodType)


class Deferred:
    """A placeholder object: how a not-yet-imported global was used while unpickling."""

    _ddb_target: tuple[str, str] = ("", "")

    def __new__(cls, *args: Any, **kwargs: Any) -> Deferred:
        obj = object.__new__(cls)
        obj.__dict__["_ddb"] = {
            "new_args": args,
            "new_kwargs": kwargs,
            "called": False,
            "state": [],
            "appends": [],
            "items": [],
        }
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # reached only through a call (pickle's REDUCE), not through NEWOBJ (``cls.__new__`` alone)
        self.__dict__["_ddb"]["called"] = True

    def __setstate__(self, state: Any) -> None:
        self._record()["state"].append(state)

    def append(self, item: Any) -> None:
        self._record()["appends"].append(item)

    def extend(self, items: Any) -> None:
        self._record()["appends"].extend(items)

    def __setitem__(self, key: Any, value: Any) -> None:
        self._record()["items"].append((key, value))

    def _record(self) -> dict[str, Any]:
        # objects made by copyreg._reconstructor (object.__new__) skip our __new__
        return self.__dict__.setdefault(
            "_ddb", {"new_args": (), "new_kwargs": {}, "called": False, "state": [], "appends": [], "items": []}
        )

    def __repr__(self) -> str:
        module, name = self._ddb_target
        return f"<deferred {module}.{name}>"


class SelectiveUnpickler(pickle.Unpickler):
    """Resolves safe globals now and defers every other one (see the module docstring)."""

    def __init__(self, file: IO[bytes]) -> None:
        super().__init__(file)
        self._classes: dict[tuple[str, str], type] = {}
        self.deferred_modules: set[str] = set()

    def find_class(self, module: str, name: str) -> Any:
        if module == "torch.storage" and name == "_load_from_bytes":
            return _load_storage_on_cpu
        if module.split(".")[0] in EAGER_ROOTS:
            return super().find_class(module, name)
        key = (module, name)
        if key not in self._classes:
            self.deferred_modules.add(module)
            self._classes[key] = type(f"Deferred_{name}", (Deferred,), {"_ddb_target": key})
        return self._classes[key]


def _load_storage_on_cpu(data: bytes) -> Any:
    # tensors pickled by pickle.dump carry torch.save bytes; map them to the CPU as StyleGAN's loader does
    import io

    import torch

    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=False)


def load_deferred(file: IO[bytes]) -> tuple[Any, set[str]]:
    """The unpickled object with deferred placeholders, and the modules that were deferred."""
    unpickler = SelectiveUnpickler(file)
    return unpickler.load(), unpickler.deferred_modules


def _resolve_global(module: str, name: str) -> Any:
    obj: Any = importlib.import_module(module)
    for part in name.split("."):
        obj = getattr(obj, part)
    return obj


def materialise(obj: Any, memo: dict[int, Any] | None = None) -> Any:
    """Build every deferred object reachable from ``obj``, importing its modules now.

    Shared references stay shared; dicts and lists are updated in place.
    """
    memo = {} if memo is None else memo
    key = id(obj)
    if key in memo:
        return memo[key]
    if isinstance(obj, Deferred):
        return _build(obj, memo)
    if isinstance(obj, dict):
        memo[key] = obj
        for k in list(obj):
            obj[k] = materialise(obj[k], memo)
        return obj
    if isinstance(obj, list):
        memo[key] = obj
        obj[:] = [materialise(item, memo) for item in obj]
        return obj
    if type(obj) is tuple:
        out = tuple(materialise(item, memo) for item in obj)
        memo[key] = out
        return out
    if type(obj) in (set, frozenset):
        out = type(obj)(materialise(item, memo) for item in obj)
        memo[key] = out
        return out
    if isinstance(getattr(obj, "__dict__", None), dict) and not isinstance(obj, _OPAQUE):
        # an eagerly built object (e.g. a torch container module) may hold deferred children
        memo[key] = obj
        materialise(obj.__dict__, memo)
    return obj


def _build(obj: Deferred, memo: dict[int, Any]) -> Any:
    module, name = obj._ddb_target
    record = obj._record()
    target = _resolve_global(module, name)
    args = materialise(record["new_args"], memo)
    kwargs = materialise(record["new_kwargs"], memo)
    built = (
        target(*args, **kwargs)
        if record["called"] or not isinstance(target, type)
        else target.__new__(target, *args, **kwargs)
    )
    memo[id(obj)] = built
    for state in record["state"]:
        state = materialise(state, memo)
        setstate = getattr(built, "__setstate__", None)
        if callable(setstate):
            setstate(state)
        else:  # pickle's default BUILD: instance dict, optionally with slot state
            slots = None
            if isinstance(state, tuple) and len(state) == 2:
                state, slots = state
            if state:
                built.__dict__.update(state)
            for k, v in (slots or {}).items():
                setattr(built, k, v)
    for item in record["appends"]:
        built.append(materialise(item, memo))
    for k, v in record["items"]:
        built[materialise(k, memo)] = materialise(v, memo)
    return built
