"""torch.compile with a way out: a ``compile`` option's check, and a call that falls back to eager.

A plugin that compiles part of its work wraps the compiled function in `CompiledOrEager`, so a
machine without a C++ compiler (or an op the compiler does not support) runs eager instead of
failing; `check_compile` gives every plugin's ``compile`` option the same accepted values.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Generic, TypeVar

from ddbench.errors import InvalidOptionError

log = logging.getLogger(__name__)

T = TypeVar("T")


def check_compile(compile: bool | str, name: str = "compile") -> None:
    if compile not in (True, False, "auto"):
        raise InvalidOptionError(f"Expected {name} true, false or auto but got '{compile}'")


class CompiledOrEager(Generic[T]):
    """Calls ``compiled`` until it first fails (no C++ compiler, an unsupported op), then ``eager``.

    The failure is logged once; a failure of the eager function itself propagates.
    """

    def __init__(self, eager: Callable[..., T], compiled: Callable[..., T] | None, what: str) -> None:
        self.eager = eager
        self.compiled = compiled
        self.what = what

    def __call__(self, *args: object) -> T:
        if self.compiled is not None:
            try:
                return self.compiled(*args)
            except Exception as err:  # noqa: BLE001 - any compiler failure: the eager path is exact
                log.warning("torch.compile failed for %s (%s); continuing in eager mode", self.what, err)
                self.compiled = None
        return self.eager(*args)
