"""The core knows no method: ``ddbench/`` never imports the built-in plugins' package and names a
built-in plugin only where it is a default (or in documentation: docstrings, comments, help text).

What the core needs of a plugin it reads from class attributes the plugin declares (see
`ddbench.interfaces`), so a third-party plugin gets the same treatment as a built-in one.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
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
    "dc": "the default evaluation protocol, named after the DC paper (ddbench/engine/protocols.py), not the matcher",
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


# ------------------------------------------------------------------------------------- layers

#: the core's layers (ddbench/*/) → the layers and top-level modules each may import, at module level
#: or inside a function; docs/layout.md states the same rules. The top-level modules other than
#: `testing` are the plugin API: errors, interfaces, registry and the package itself.
API = {"ddbench", "ddbench.errors", "ddbench.interfaces", "ddbench.registry"}
LAYERS: dict[str, set[str]] = {
    "util": {"ddbench.util", "ddbench.errors"},
    "engine": {"ddbench.engine", "ddbench.util", *API},
    "results": {"ddbench.results", "ddbench.engine", "ddbench.util", *API},
    "running": {"ddbench.running", "ddbench.engine", "ddbench.results", "ddbench.util", *API},
    "cli": {"ddbench.cli", "ddbench.running", "ddbench.engine", "ddbench.results", "ddbench.util", *API},
}
#: the API's own modules import only each other and util (`testing` may use the engine and running:
#: it runs a plugin through them)
API_MAY_IMPORT = {"ddbench.util", *API}
#: what the results layer may take from the engine: plain data that imports no torch
RESULTS_FROM_ENGINE = {"ddbench.engine.spec", "ddbench.engine.soft_labels", "ddbench.engine.metrics"}


def _is_module(dotted: str) -> bool:
    path = ROOT.joinpath(*dotted.split("."))
    return path.with_suffix(".py").is_file() or path.is_dir()


def core_imports(path: Path) -> set[str]:
    """The ddbench modules ``path`` imports, at module level or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from ddbench.results import report` imports the module ddbench.results.report,
            # `from ddbench import __version__` the package itself
            found.update(
                f"{node.module}.{a.name}" if _is_module(f"{node.module}.{a.name}") else node.module for a in node.names
            )
    return {m for m in found if m == "ddbench" or m.startswith("ddbench.")}


def _allowed(module: str, allowed: set[str]) -> bool:
    return any(module == a or (a != "ddbench" and module.startswith(f"{a}.")) for a in allowed)


def _layer_offenders() -> list[str]:
    offenders = []
    for path in core_modules():
        parts = path.relative_to(CORE).parts
        if len(parts) == 1 and path.name in ("testing.py", "__init__.py", "__main__.py"):
            continue  # the package's entry points and the contract checks, which run plugins through the layers
        layer = parts[0] if len(parts) > 1 else None
        allowed = LAYERS[layer] if layer else API_MAY_IMPORT
        for module in sorted(core_imports(path)):
            if not _allowed(module, allowed):
                offenders.append(f"{path.relative_to(ROOT)} ({layer or 'the plugin API'}) imports {module}")
            elif layer == "results" and module.startswith("ddbench.engine.") and module not in RESULTS_FROM_ENGINE:
                offenders.append(f"{path.relative_to(ROOT)} (results) imports {module}: not plain data")
    return offenders


def test_each_layer_imports_only_the_layers_below_it():
    offenders = _layer_offenders()
    assert not offenders, "see docs/layout.md for what each layer may import:\n" + "\n".join(offenders)


def test_nothing_but_python_dash_m_imports_the_cli():
    offenders = [
        f"{path.relative_to(ROOT)} imports {module}"
        for base in (CORE, ROOT / "plugins")
        for path in sorted(base.rglob("*.py"))
        if not (base == CORE and path.relative_to(CORE).parts[0] in ("cli", "__main__.py"))
        for module in core_imports(path)
        if module == "ddbench.cli" or module.startswith("ddbench.cli.")
    ]
    assert not offenders, "the CLI is the top layer: move what others need out of it\n" + "\n".join(offenders)


def test_the_results_layer_and_the_util_layer_import_no_torch():
    """A leaderboard or report of a store needs neither torch nor a plugin (issue 15)."""
    modules = sorted(name for layer in ("results", "util") for name in _module_names(CORE / layer, f"ddbench.{layer}"))
    probe = (
        "import importlib, json, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'ddbench_plugins'))))\n"
    )
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []


def test_the_layer_check_finds_an_upward_import(tmp_path):
    """The rule above can fail: an engine module that imports the store is found."""
    module = tmp_path / "distill.py"
    module.write_text("def f():\n    from ddbench.results.store import ResultsStore\n")
    imports = core_imports(module)
    assert imports == {"ddbench.results.store"} and not _allowed("ddbench.results.store", LAYERS["engine"])
