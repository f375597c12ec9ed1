"""The README stays a front door (small, with the commands CI runs) and no link in the docs is dead.

The manual lives in ``docs/``; a moved or renamed page must not leave a link (or an ``#anchor``)
pointing nowhere.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
README_LIMIT_BYTES = 8192

#: ``[text](target)`` and ``![alt](target)``, with an optional ``"title"``
_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_INLINE_CODE = re.compile(r"`[^`]*`")


def markdown_pages() -> list[Path]:
    return [README, *sorted((ROOT / "docs").rglob("*.md"))]


def prose_lines(text: str) -> list[str]:
    """Lines outside fenced code blocks, with inline code removed: links inside code are examples."""
    lines, in_fence = [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            in_fence = not in_fence
            continue
        if not in_fence:
            lines.append(_INLINE_CODE.sub("", line))
    return lines


def heading_anchors(text: str) -> set[str]:
    """GitHub's anchors: the heading lower-cased, punctuation dropped, spaces → hyphens."""
    anchors = set()
    for line in prose_lines(text):
        match = re.match(r"#{1,6}\s+(.*)", line)
        if match:
            title = re.sub(r"[^\w\- ]", "", match.group(1).strip().lower())
            anchors.add(title.replace(" ", "-"))
    return anchors


def dead_links(page: Path) -> list[str]:
    """Every relative link of `page` whose file (or #anchor in it) does not exist."""
    text = page.read_text(encoding="utf-8")
    dead = []
    for line in prose_lines(text):
        for target in _LINK.findall(line):
            if re.match(r"[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):  # http:, mailto:, data:
                continue
            path_part, _, anchor = target.partition("#")
            linked = (page.parent / path_part).resolve() if path_part else page
            if not linked.exists():
                dead.append(f"{target} (no file {linked})")
            elif (
                anchor and linked.suffix == ".md" and anchor not in heading_anchors(linked.read_text(encoding="utf-8"))
            ):
                dead.append(f"{target} (no heading #{anchor} in {linked.name})")
    return dead


def test_the_readme_is_at_most_8_kb():
    size = len(README.read_bytes())
    assert size <= README_LIMIT_BYTES, f"README.md is {size} bytes; move detail into docs/ (limit {README_LIMIT_BYTES})"


def test_the_readme_keeps_the_two_commands_that_open_it():
    text = README.read_text(encoding="utf-8")
    assert "bash setup.sh demo" in text and "bash setup.sh test" in text


def test_every_docs_page_is_linked_from_the_docs_index():
    index = (ROOT / "docs" / "README.md").read_text(encoding="utf-8")
    pages = [p.name for p in (ROOT / "docs").glob("*.md") if p.name != "README.md"]
    assert pages, "docs/ holds the manual's pages"
    assert [p for p in pages if f"({p})" not in index] == []


def test_no_relative_link_in_the_readme_or_docs_is_dead():
    dead = {str(page.relative_to(ROOT)): dead_links(page) for page in markdown_pages()}
    assert {page: links for page, links in dead.items() if links} == {}


def test_the_link_check_finds_a_missing_file_and_a_missing_anchor(tmp_path):
    (tmp_path / "there.md").write_text("# A page\n\n## Its section\n")
    page = tmp_path / "page.md"
    page.write_text(
        "[ok](there.md) [ok](there.md#its-section) ![img](gone.png) [bad](there.md#no-such) "
        "`[in code](nowhere.md)` [web](https://example.org/x)\n```\n[fenced](nowhere.md)\n```\n"
    )
    assert dead_links(page) == [
        f"gone.png (no file {tmp_path / 'gone.png'})",
        "there.md#no-such (no heading #no-such in there.md)",
    ]


def test_every_benchmark_script_is_listed_in_the_benchmarks_readme():
    """The benchmarks README's script table is how a reader finds what measures what."""
    rows = [
        line.split(" | ")[0] for line in (ROOT / "benchmarks" / "README.md").read_text(encoding="utf-8").splitlines()
    ]
    listed = {name for row in rows if row.startswith("| `") for name in re.findall(r"`([\w.]+\.(?:py|sh))`", row)}
    scripts = {p.name for p in (ROOT / "benchmarks").iterdir() if p.suffix in (".py", ".sh")}
    assert sorted(scripts - listed) == []
