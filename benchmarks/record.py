"""One way for benchmark scripts to keep their figures: a JSON file per script under one directory,
with the command that produced it, the commit and the machine (ddbench.results.provenance).

    from record import emit, table
    emit("ld3m_z_signal", [table(["generator", "MSE"], rows, title="…")], settings={...})

`emit` prints each table as Markdown and writes ``{"tables": [...], **extra}`` as the record's
figures; `write_record` writes any figures as they are. The directory is ``$DDBENCH_BENCH_OUT``
or ``bench-out/benchmarks``; ``benchmarks/tables.py`` turns records kept in ``benchmarks/results/``
into the tables of ``benchmarks/README.md``.
"""

from __future__ import annotations

import datetime
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ddbench.results import provenance
from ddbench.util import fileio

#: the layout `tables.py` reads; bump when a field's meaning changes
RECORD_VERSION = 1


def output_dir() -> Path:
    return Path(os.environ.get("DDBENCH_BENCH_OUT", "bench-out/benchmarks"))


def cpu_model() -> str | None:
    """The CPU's model name (``/proc/cpuinfo``), or None where the platform does not say."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def machine_line(host: dict[str, Any], versions: dict[str, Any]) -> str:
    """One line naming the machine: accelerator or CPU model, CPUs, torch version."""
    parts = [host["cuda_device"]] if host.get("cuda_device") else []
    parts.append(f"{host.get('cpu_model') or host.get('machine') or 'CPU'}, {host.get('cpu_count')} CPUs")
    if versions.get("torch"):
        parts.append(f"torch {versions['torch']}")
    return "; ".join(parts)


def table(
    columns: Sequence[str], rows: Sequence[Sequence[Any]], title: str | None = None, note: str | None = None
) -> dict[str, Any]:
    """One figure table as a record holds it: cells as the script formatted them (strings)."""
    width = len(columns)
    if any(len(row) != width for row in rows):
        raise ValueError(f"Expected rows of {width} cells ({list(columns)}) but got {[len(r) for r in rows]}")
    return {
        "title": title,
        "columns": [str(c) for c in columns],
        "rows": [["" if cell is None else str(cell) for cell in row] for row in rows],
        "note": note,
    }


def markdown(figure: dict[str, Any]) -> str:
    """A `table` as a GitHub Markdown table (``|`` in cells escaped)."""

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    lines = [line(figure["columns"]), "| " + " | ".join("---" for _ in figure["columns"]) + " |"]
    return "\n".join(lines + [line(row) for row in figure["rows"]])


def write_record(name: str, figures: dict[str, Any], command: str | None = None) -> Path:
    """Write ``figures`` with their provenance to ``output_dir()/name.json`` (atomically);
    ``command`` defaults to this process's ``python`` command line."""
    found = provenance.collect()
    host = {**found.host, "cpu_model": cpu_model()}
    record = {
        "record_version": RECORD_VERSION,
        "benchmark": name,
        "command": command or shlex.join(["python", *sys.argv]),
        "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "commit": found.git_commit,
        "machine": machine_line(host, found.versions),
        "host": host,
        "versions": found.versions,
        "figures": figures,
    }
    path = output_dir() / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    fileio.write_json_atomic(path, record)
    print(f"figures → {path}")
    return path


def emit(name: str, tables: Sequence[dict[str, Any]], **extra: Any) -> Path:
    """Print each table (title, Markdown, note) and write them, with ``extra`` figures, as a record."""
    for figure in tables:
        if figure.get("title"):
            print(f"\n### {figure['title']}\n")
        print(markdown(figure))
        if figure.get("note"):
            print(f"\n{figure['note']}")
    print(f"\ncommand: {shlex.join(['python', *sys.argv])}")
    return write_record(name, {"tables": list(tables), **extra})
