"""Tab completion of plugin and suite names from package metadata (nothing is imported)."""

from __future__ import annotations

from collections.abc import Callable

import click
from click.shell_completion import CompletionItem

from ddbench import registry

Completer = Callable[[click.Context, click.Parameter, str], list[CompletionItem]]


def _complete_last(names: Callable[[], list[str]]) -> Completer:
    """Completes the last item of a comma-separated value (``--algo dc,m`` → ``dc,mtt``)."""

    def complete(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
        head, comma, last = incomplete.rpartition(",")
        return [CompletionItem(head + comma + name) for name in names() if name.startswith(last)]

    return complete


def plugin_names(family: str, *extra: str) -> Completer:
    """Installed plugin names of ``family`` (from entry points), plus ``extra`` words such as ``unseen``."""
    return _complete_last(lambda: [*registry.plugin_names(family), *extra])


def suite_names() -> Completer:
    """The packaged suites (a path completes as a file would not; give one in full)."""

    def names() -> list[str]:
        from ddbench.running.suites import available_suites

        return available_suites()

    return _complete_last(names)


__all__ = ["plugin_names", "suite_names"]
