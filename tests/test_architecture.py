"""The core knows no method: ``ddbench/`` never imports the built-in plugins' package and names a
built-in plugin only where it is a default (or in documentation: docstrings, comments, help text).

What the core needs of a plugin it reads from class attributes the plugin declares (see
`ddbench.interfaces`), so a third-party plugin gets the same treatment as a built-in one.
"""

from __future__ import annotations

import ast
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]
CORE = ROOT / "ddbench"
PLUGIN_FAMILIES = ("datasets", "priors", "matchers", "evaluators", "executors")

#: built-in plugins the core may name as a default value (a parameter's default, a click option's
#: ``default=``, a dataclass field's default, a ``DEFAULT_*`` constant, ``.get(key, default)``): what a
#: user gets without typing a name
DEFAULTS: dict[str, str] = {
    "fashion-mnist": "the default dataset, embedded on any machine",
    "pixel": "the default prior",
    "dm": "the default matcher",
    "convnet": "the default evaluator (and MatchContext.build_network's default network)",
    "local": "the default executor",
    "dc": "the default evaluation protocol, named after the DC paper (ddbench/protocols.py), not the matcher",
}
#: (core module, name) → why it may appear there anyway. Keep this small.
ALLOWED: dict[tuple[str, str], str] = {
    ("protocols.py", "dc"): "defines the DC paper's evaluation protocol, not the matcher",
    ("protocols.py", "glad"): "defines the GLaD paper's evaluation protocol, not the prior",
    ("distill.py", "real"): "names the engine's RNG stream of real images, not the matcher",
    ("external.py", "dc"): "the file format of the DC/DSA/DM reference code, which `ddbench evaluate` reads",
    ("external.py", "mtt"): "the file format of the MTT reference code, which `ddbench evaluate` reads",
}
#: `--evaluators unseen` and the datasets `ddbench run` tries without --dataset: defaults the paper
#: itself defines (its unseen architectures, its datasets), in this module only
PAPER_DEFAULTS_MODULE = "grid.py"


def builtin_plugin_names() -> dict[str, str]:
    """Every plugin this project registers (pyproject.toml's entry points) → its family."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]
    return {name: family for family in PLUGIN_FAMILIES for name in project.get(f"ddbench.{family}", {})}


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the string nodes that are docstrings (documentation, not code)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if (
                isinstance(first, ast.Expr)
                and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str)
            ):
                found.add(id(first.value))
    return found


def _help_texts(tree: ast.AST) -> set[int]:
    """ids of the string nodes inside ``help=``/``epilog=`` arguments (a command's documentation)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg in ("help", "epilog"):
            found.update(id(n) for n in ast.walk(node.value))
    return found


def _default_positions(tree: ast.AST) -> set[int]:
    """ids of the nodes inside a default value (see `DEFAULTS`)."""
    roots: list[ast.AST] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.arguments):
            roots += [d for d in [*node.defaults, *node.kw_defaults] if d is not None]
        elif isinstance(node, ast.keyword) and node.arg in ("default", "default_factory"):
            roots.append(node.value)
        elif isinstance(node, ast.ClassDef):
            roots += [s.value for s in node.body if isinstance(s, ast.AnnAssign) and s.value is not None]
        elif isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id.startswith("DEFAULT") for t in node.targets
        ):
            roots.append(node.value)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "get"
            and len(node.args) == 2
        ):
            roots.append(node.args[1])
    return {id(n) for root in roots for n in ast.walk(root)}


def names_in_code(path: Path, names: set[str]) -> list[tuple[int, str, bool]]:
    """(line, name, as a default) for each string in the code of ``path`` that is a plugin name, a
    scoped option (``mtt.build_experts``) or a variant label (``ld3m[...]``); docstrings and help
    texts are documentation and left out."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = _docstrings(tree) | _help_texts(tree)
    defaults = _default_positions(tree)
    hits = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
            for name in names:
                if node.value == name or node.value.startswith((f"{name}.", f"{name}[")):
                    hits.append((node.lineno, name, id(node) in defaults))
    return sorted(hits)


def core_modules() -> list[Path]:
    return sorted(CORE.rglob("*.py"))


def test_the_core_never_imports_the_builtin_plugins():
    offenders = []
    for path in core_modules():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            modules = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            offenders += [
                f"{path.relative_to(ROOT)}:{node.lineno} imports {m}"
                for m in modules
                if m.split(".")[0] == "ddbench_plugins"
            ]
    assert not offenders, "the core reaches plugins through the registry only:\n" + "\n".join(offenders)


def test_the_core_names_no_builtin_plugin_outside_defaults():
    builtins = builtin_plugin_names()
    paper_defaults = {n for n, family in builtins.items() if family in ("datasets", "evaluators")}
    offenders = []
    for path in core_modules():
        for line, name, as_default in names_in_code(path, set(builtins)):
            if (as_default and name in DEFAULTS) or (path.name, name) in ALLOWED:
                continue
            if path.name == PAPER_DEFAULTS_MODULE and name in paper_defaults:
                continue
            offenders.append(f"{path.relative_to(ROOT)}:{line} names the {builtins[name][:-1]} '{name}'")
    assert not offenders, (
        "the core reads what it needs of a plugin from the attributes the plugin declares "
        "(ddbench.interfaces), never by its name:\n" + "\n".join(offenders)
    )


def test_the_scanner_finds_a_name_in_code_but_not_in_docs_or_defaults(tmp_path):
    """The check above can fail: a comparison with a plugin's name is found, its docstring is not,
    and a default is told apart."""
    module = tmp_path / "sample.py"
    module.write_text(
        '"""Mentions mtt in prose."""\n\n'
        'def f(spec, prior="pixel"):\n'
        '    """And dm here."""\n'
        '    return spec.matcher == "mtt" or "ld3m[x=1]"\n'
    )
    assert names_in_code(module, {"mtt", "dm", "ld3m", "pixel"}) == [
        (3, "pixel", True),
        (5, "ld3m", False),
        (5, "mtt", False),
    ]


def test_every_allowed_name_is_a_builtin_plugin():
    builtins = builtin_plugin_names()
    stale = sorted({*DEFAULTS, *(name for _, name in ALLOWED)} - set(builtins))
    assert not stale, f"{stale} are allowed but no built-in plugin has that name: drop them"


#: the longest function the core may have (lines from ``def`` to its last line, docstring included)
MAX_FUNCTION_LINES = 60


def long_functions(path: Path, limit: int = MAX_FUNCTION_LINES) -> list[tuple[str, int]]:
    """(name, lines) of each function or method in ``path`` longer than ``limit`` lines (decorators
    left out, so a click command counts from its ``def``)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            lines = node.end_lineno - node.lineno + 1  # type: ignore[operator]
            if lines > limit:
                found.append((node.name, lines))
    return found


def test_no_core_function_is_over_60_lines():
    offenders = [
        f"{path.relative_to(ROOT)}: {name} has {lines} lines"
        for path in core_modules()
        for name, lines in long_functions(path)
    ]
    assert not offenders, (
        f"split functions over {MAX_FUNCTION_LINES} lines into helpers with one job each:\n" + "\n".join(offenders)
    )


def test_the_length_check_counts_a_click_command_from_its_def(tmp_path):
    module = tmp_path / "sample.py"
    body = "".join(f"    x{i} = {i}\n" for i in range(60))
    module.write_text(f"import click\n\n\n@click.command()\n@click.option('--n')\ndef cmd(n):\n{body}")
    assert long_functions(module) == [("cmd", 61)]
    assert long_functions(module, limit=61) == []


def _module_names(base: Path, package: str) -> dict[str, Path]:
    """Dotted name → file of every module under ``base``, installed as ``package``."""
    names = {}
    for path in base.rglob("*.py"):
        parts = [package, *path.relative_to(base).with_suffix("").parts]
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def import_cycles(modules: dict[str, Path]) -> list[list[str]]:
    """The groups of ``modules`` that import each other in a circle, counting imports inside
    functions too (a local import hides a cycle from Python, not from the reader)."""
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                deps.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                deps.update([node.module, *(f"{node.module}.{a.name}" for a in node.names)])
        graph[name] = {d for d in deps if d in modules and d != name}
    cycles: list[list[str]] = []
    for name in sorted(graph):
        reach = _reachable(graph, name)
        if name in reach and not any(name in c for c in cycles):
            # the modules `name` reaches that reach back to it
            cycles.append(sorted(m for m in reach if name in _reachable(graph, m)))
    return cycles


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    """The modules ``start`` imports, directly or through others."""
    seen, todo = set(), [start]
    while todo:
        for dep in graph[todo.pop()] - seen:
            seen.add(dep)
            todo.append(dep)
    return seen


def test_no_plugin_modules_import_each_other_in_a_circle():
    cycles = import_cycles(_module_names(ROOT / "plugins", "ddbench_plugins"))
    assert not cycles, "move what both sides need into a module of its own:\n" + "\n".join(map(str, cycles))


def test_the_cycle_check_finds_a_cycle_through_a_local_import(tmp_path):
    (tmp_path / "a.py").write_text("import pkg.b\n")
    (tmp_path / "b.py").write_text("def f():\n    from pkg.a import x\n")
    (tmp_path / "c.py").write_text("import pkg.a\n")
    assert import_cycles(_module_names(tmp_path, "pkg")) == [["pkg.a", "pkg.b"]]
