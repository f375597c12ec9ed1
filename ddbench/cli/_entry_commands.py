"""Commands other packages register under an entry-point group, offered without importing them.

`ddbench --help`, `ddbench prior --help` and tab completion list these commands on every keypress; a
command's module may import torch or diffusers (seconds, hundreds of MB), so listings read the name
from package metadata and the one-line help from the command function's docstring in its source
file (parsed, never executed). The module is imported only when the command runs or its own
``--help`` is shown.
"""

from __future__ import annotations

import ast
import importlib.machinery
import importlib.metadata
import importlib.util
import traceback
from pathlib import Path
from typing import Any

import click
from click.shell_completion import CompletionItem


class EntryPointGroup(click.Group):
    """A click group that also offers the commands other packages register under ``entry_point_group``.

    One broken plugin never breaks the rest of the CLI: it is listed, and fails loudly when run.
    """

    def __init__(self, *args: Any, entry_point_group: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.entry_point_group = entry_point_group

    def _entry_points(self) -> dict[str, importlib.metadata.EntryPoint]:
        return {ep.name: ep for ep in importlib.metadata.entry_points(group=self.entry_point_group)}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self._entry_points()))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        """The command itself, to run it or show its help (imports an entry point's module)."""
        command = super().get_command(ctx, name)
        if command is not None:
            return command
        ep = self._entry_points().get(name)
        if ep is None:
            return None
        try:
            return ep.load()
        except Exception as err:  # noqa: BLE001 - shown in help, raised in full when run
            return _broken_command(name, ep.value, err)

    def _listed_command(self, ctx: click.Context, name: str) -> click.Command | None:
        """The command as a listing shows it: an entry point's is a stand-in with its short help."""
        command = super().get_command(ctx, name)
        if command is not None:
            return command
        ep = self._entry_points().get(name)
        # help=, not short_help=: click shortens it to the listing's width as it does a built-in's
        return None if ep is None else click.Command(name, help=entry_point_short_help(ep))

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # click's own loop, over stand-ins instead of imported commands
        commands = [
            (name, cmd)
            for name in self.list_commands(ctx)
            if (cmd := self._listed_command(ctx, name)) is not None and not cmd.hidden
        ]
        if commands:
            limit = formatter.width - 6 - max(len(name) for name, _ in commands)
            with formatter.section("Commands"):
                formatter.write_dl([(name, cmd.get_short_help_str(limit)) for name, cmd in commands])

    def shell_complete(self, ctx: click.Context, incomplete: str) -> list[CompletionItem]:
        items = [
            CompletionItem(name, help=cmd.get_short_help_str())
            for name in self.list_commands(ctx)
            if name.startswith(incomplete) and (cmd := self._listed_command(ctx, name)) is not None and not cmd.hidden
        ]
        return items + click.Command.shell_complete(self, ctx, incomplete)


def _broken_command(name: str, target: str, err: Exception) -> click.Command:
    """Stands in for a command whose module failed to import: fails loudly when run."""
    summary = f"{type(err).__name__}: {err}"

    def fail() -> None:
        traceback.print_exception(err)
        raise click.ClickException(f"The command '{name}' ({target}) failed to import: {summary}")

    return click.Command(name, callback=fail, short_help=f"[failed to import: {summary}]"[:120])


def _module_source(module: str) -> Path | None:
    """The ``.py`` file of a dotted module, found without importing it or its parent packages
    (a parent's ``__init__`` may import the heavy code this module is kept apart from)."""
    parts = module.split(".")
    spec = importlib.util.find_spec(parts[0])  # a top-level name is located, not imported
    for i in range(1, len(parts)):
        if spec is None or not spec.submodule_search_locations:
            return None
        spec = importlib.machinery.PathFinder.find_spec(".".join(parts[: i + 1]), list(spec.submodule_search_locations))
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return None
    return Path(spec.origin)


def entry_point_short_help(ep: importlib.metadata.EntryPoint) -> str:
    """The first paragraph of the command function's docstring (or its ``short_help=``), read from
    source; a bracketed note when the module cannot be found or read."""
    module, _, attr = ep.value.partition(":")
    try:
        path = _module_source(module)
    except (ImportError, ValueError) as err:
        return f"[cannot locate {module}: {err}]"
    if path is None:
        return f"[module {module} not found]"
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except (OSError, SyntaxError, UnicodeDecodeError) as err:
        return f"[cannot read {path}: {type(err).__name__}]"
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == attr.split(".")[0]:
            for decorator in node.decorator_list:
                for keyword in getattr(decorator, "keywords", []):
                    if keyword.arg == "short_help" and isinstance(keyword.value, ast.Constant):
                        return str(keyword.value.value)
            return (ast.get_docstring(node) or "").split("\n\n")[0]
    return ""


__all__ = ["EntryPointGroup", "entry_point_short_help"]
