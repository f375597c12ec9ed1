"""Regenerate the figure tables of ``benchmarks/README.md`` from the JSON records in ``benchmarks/results/``.

Each generated section of the README sits between two markers naming a record,

    <!-- figures: bench_dm_fmnist-ipc1-draws -->
    …generated: the record's tables, each followed by its command, commit and machine…
    <!-- /figures -->

and is rewritten from ``benchmarks/results/<name>.json`` (written by `record.write_record`), so the
README holds no hand-copied figures. Records marked ``"transcribed": true`` hold figures copied
from an earlier README (measured before the scripts wrote records) and say so under their table.

    python benchmarks/tables.py            # rewrite the README's generated sections
    python benchmarks/tables.py --check    # exit 1 if they differ from the records (CI, tests)
    python benchmarks/tables.py --keep bench-out/benchmarks/ld3m_memory.json ld3m_memory
        # copy a fresh record into benchmarks/results/ under a name, then add its markers to the README
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from pathlib import Path
from typing import Any

from record import markdown

HERE = Path(__file__).resolve().parent
README = HERE / "README.md"
RESULTS = HERE / "results"
SECTION = re.compile(r"(<!-- figures: (?P<name>[\w.-]+) -->\n)(?P<body>.*?)(<!-- /figures -->)", re.DOTALL)


def provenance_line(record: dict[str, Any]) -> str:
    """Where the figures came from: command, commit (short) and date, machine."""
    full = record.get("commit") or "unknown commit"
    commit = full[:12] + (" with uncommitted changes" if full.endswith("-dirty") else "")
    date = (record.get("finished") or record.get("commit_date") or "")[:10]
    machine = record.get("machine") or "machine not recorded"
    if record.get("transcribed"):
        return (
            f"<sub>Transcribed from this README as of commit {commit} ({date}), measured before the scripts "
            f"wrote records: `{record['command']}` on {machine}.</sub>"
        )
    return f"<sub>`{record['command']}` at commit {commit} ({date}) on {machine}.</sub>"


def render_record(record: dict[str, Any]) -> str:
    """A record's tables as Markdown, each with its title, note and provenance line."""
    parts = []
    for figure in record["figures"]["tables"]:
        if figure.get("title"):
            parts.append(f"**{figure['title']}**")
        parts.append(markdown(figure))
        if figure.get("note"):
            parts.append(figure["note"])
        parts.append(provenance_line(record))
    return "\n\n".join(parts) + "\n"


def load_record(name: str, results: Path = RESULTS) -> dict[str, Any]:
    path = results / f"{name}.json"
    if not path.exists():
        raise SystemExit(f"{README.name} names the record {name!r}, but {path} does not exist")
    return json.loads(path.read_text(encoding="utf-8"))


def render_readme(text: str, results: Path = RESULTS) -> str:
    """``text`` with every generated section rewritten from its record."""
    return SECTION.sub(lambda m: m.group(1) + render_record(load_record(m.group("name"), results)) + m.group(4), text)


def sections(text: str) -> list[str]:
    """The record names the README's generated sections use, in order."""
    return [m.group("name") for m in SECTION.finditer(text)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check that the README is up to date")
    parser.add_argument("--keep", nargs=2, metavar=("RECORD", "NAME"), help="copy RECORD to results/NAME.json first")
    parser.add_argument("--readme", type=Path, default=README)
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.keep:
        source, name = Path(args.keep[0]), args.keep[1]
        json.loads(source.read_text(encoding="utf-8"))["figures"]["tables"]  # a record with tables, or fail here
        args.results.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, args.results / f"{name}.json")
        print(f"kept {source} as {args.results / f'{name}.json'}; its README markers: <!-- figures: {name} -->")
    text = args.readme.read_text(encoding="utf-8")
    rendered = render_readme(text, args.results)
    unused = sorted({p.stem for p in args.results.glob("*.json")} - set(sections(text)))
    if unused:
        print(f"records no README section shows: {', '.join(unused)}", file=sys.stderr)
    if rendered == text:
        print(f"{args.readme}: {len(sections(text))} generated sections, up to date")
        return 0
    if args.check:
        print(f"{args.readme} differs from its records; run `python benchmarks/tables.py`", file=sys.stderr)
        return 1
    args.readme.write_text(rendered, encoding="utf-8")
    print(f"{args.readme}: rewrote {len(sections(text))} generated sections")
    return 0


if __name__ == "__main__":
    sys.exit(main())
