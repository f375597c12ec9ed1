"""Help, completion and `python -m ddbench` answer at once: no torch, no diffusers (issue 18, item 4)."""

from __future__ import annotations

import importlib.metadata
import io
import json
import os
import subprocess
import sys
import time

import pytest

from ddbench.cli._entry_commands import entry_point_short_help

HELP_COMMANDS = [
    [],
    ["run"],
    ["leaderboard"],
    ["show"],
    ["runs"],
    ["plot"],
    ["plugins"],
    ["experts"],
    ["prior"],
    ["prior", "train"],
    ["prior", "convert-ldm"],
]

# runs `ddbench ARGS` in a fresh interpreter, then reports which heavy modules got imported
_PROBE = """
import json, sys
from ddbench.cli.main import main
code = 0  # help returns normally (click standalone_mode=False)
try:
    main(sys.argv[1:])
except SystemExit as exit:
    code = exit.code
print(json.dumps({"code": code, "heavy": sorted(m for m in ("torch", "diffusers", "torchvision", "pandas") if m in sys.modules)}), file=sys.stderr)
"""


def _probe(args: list[str], env: dict[str, str] | None = None) -> tuple[dict, str]:
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )
    return json.loads(proc.stderr.strip().splitlines()[-1]), proc.stdout


@pytest.mark.parametrize("command", HELP_COMMANDS, ids=lambda c: " ".join(c) or "ddbench")
def test_help_imports_no_torch(command):
    result, out = _probe([*command, "--help"])
    assert result == {"code": 0, "heavy": []}, (command, result)
    assert "Usage:" in out


def test_help_is_fast():
    # the real figure here is ~0.2 s (was 2-10 s, importing torch); 5 s leaves room for a loaded machine
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "ddbench", "--help"], capture_output=True, text=True, timeout=60)
    elapsed = time.perf_counter() - start
    assert proc.returncode == 0 and "Usage: ddbench" in proc.stdout
    assert elapsed < 5, f"`ddbench --help` took {elapsed:.1f} s"
    for name in ("experts", "leaderboard", "prior", "run", "runs", "show"):
        assert f"\n  {name} " in proc.stdout


def _complete(words: str) -> tuple[list[str], list[str]]:
    words_list = words.split(" ")
    result, out = _probe(
        [], env={"_DDBENCH_COMPLETE": "bash_complete", "COMP_WORDS": words, "COMP_CWORD": str(len(words_list) - 1)}
    )
    # bash_complete prints "type,value" lines
    return [line.split(",", 1)[1] for line in out.splitlines() if line.startswith("plain,")], result["heavy"]


def test_completion_offers_commands_and_plugin_names_without_torch():
    names, heavy = _complete("ddbench ")
    assert {"run", "runs", "show", "leaderboard", "experts", "prior"} <= set(names) and heavy == []
    names, heavy = _complete("ddbench run --prior ")
    assert {"pixel", "glad", "ld3m"} <= set(names) and heavy == []
    names, _ = _complete("ddbench run --algo dc,m")
    assert names == ["dc,mtt"]  # the last item of a comma-separated list
    names, _ = _complete("ddbench run --evaluators ")
    assert {"convnet", "vit", "unseen"} <= set(names)
    names, _ = _complete("ddbench run --dataset imagenet-")
    assert "imagenet-a" in names and "fashion-mnist" not in names
    names, _ = _complete("ddbench run --suite fmnist")
    assert "fmnist-cpu" in names
    names, heavy = _complete("ddbench prior ")
    assert set(names) >= {"train", "convert-ldm"} and heavy == []


def test_python_dash_m_ddbench():
    proc = subprocess.run([sys.executable, "-m", "ddbench", "--version"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "ddbench" in proc.stdout


def test_entry_point_help_is_read_from_source():
    experts = importlib.metadata.EntryPoint("experts", "ddbench_plugins.matchers.mtt.cli:experts", "ddbench.commands")
    assert entry_point_short_help(experts).startswith("Train MTT expert trajectories")
    missing = importlib.metadata.EntryPoint("gone", "no_such_package_xyz.cli:gone", "ddbench.commands")
    assert entry_point_short_help(missing) == "[module no_such_package_xyz.cli not found]"


def test_no_tty_output_is_not_wrapped(monkeypatch):
    from ddbench.util._console import stderr_console

    monkeypatch.setattr(sys, "stderr", io.StringIO())  # a log file or a pipe: not a terminal
    console = stderr_console()
    command = "ddbench run " + " ".join(f"--prior-opt key{i}=value{i}" for i in range(20))
    console.print(f"shorter: {command}")
    assert sys.stderr.getvalue() == f"shorter: {command}\n"


def test_no_tty_tables_keep_whole_run_ids(monkeypatch):
    """`--dry-run 2>plan.txt`: rich's 80 columns cut a 16-character run id to '2d445…'."""
    from rich.table import Table

    from ddbench.util._console import stderr_console

    monkeypatch.setattr(sys, "stderr", io.StringIO())
    monkeypatch.delenv("COLUMNS", raising=False)
    table = Table()
    for column in ("#", "run id", "dataset", "prior", "matcher", "ipc", "iterations", "evaluators × seeds", "state"):
        table.add_column(column)
    table.add_row("1", "2d445d3f7cb819cc", "fashion-mnist", "pixel", "dm", "1", "500", "5 × 5", "evaluate")
    stderr_console().print(table)
    assert "2d445d3f7cb819cc" in sys.stderr.getvalue()
