"""The image grids of the HTML report: thumbnails of each run's ``grid.png``, per IPC, in table order.

Each table's runs are shown as one section per IPC, in the order of the table's rows; a thumbnail
is the run's own ``grid.png`` (`ddbench.engine.image_grid`) embedded as a ``data:`` URI and shown small.
Clicking it (or a row's grid link in the table) opens it at full size over the page with CSS
``:target`` alone, so the page stays a single file without script.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

#: image grids wider than this are scaled down, so a report of many runs stays a few MB
GRID_MAX_WIDTH = 1200
GRID_FILE = "grid.png"
#: thumbnails: a wide strip (IPC 1: one row of classes) and a block (classes × images)
STRIP_THUMB_WIDTH = 280
BLOCK_THUMB_WIDTH = 170
#: a grid at least this many times wider than tall is shown as a strip
STRIP_ASPECT = 2.5
#: grids narrower than their thumbnail (tiny images) are shown enlarged by up to this factor
GRID_MAX_ZOOM = 4

GRIDS_CSS = """
.table-grids { display: flex; flex-wrap: wrap; gap: 0 1.6em; align-items: flex-start; }
.table-side { width: min-content; min-width: 24em; max-width: 100%; }
.grids-side { flex: 1 1 40em; min-width: 0; }
.grids-side h3:first-child { margin-top: .8em; }
.grids { display: flex; flex-wrap: wrap; gap: .7em; align-items: flex-start; }
figure.grid { margin: 0; border: 1px solid #ddd; padding: .35em; background: #fff; }
figure.grid img { display: block; }
figure.grid > a { display: block; cursor: zoom-in; }
figcaption { font-size: .8em; color: #333; margin-top: .25em; line-height: 1.3; }
figcaption a { color: inherit; } figcaption .runid { color: #777; }
figure.grid .close { display: none; float: right; font-size: 1.3em; line-height: 1; text-decoration: none; color: #333; }
figure.grid:target { position: fixed; inset: 2vh 2vw; z-index: 10; overflow: auto; padding: .8em;
  box-shadow: 0 0 0 100vmax rgba(0, 0, 0, .6); }
figure.grid:target > a { cursor: default; }
figure.grid:target img { width: auto; height: auto; max-width: 100%; image-rendering: pixelated; }
figure.grid:target .close { display: inline; }
.missing-grid { border: 2px dashed #c66; color: #a33; padding: 1em; max-width: 26em; white-space: normal; }
sup.mark { color: #a15c00; font-weight: 700; cursor: help; }
"""


def resolve_run_dir(run_dir: str | None, store_dir: Path) -> Path | None:
    """A stored run directory, which may be relative to where `ddbench run` was started: as
    recorded, else under the store's parent, else the ``runs/…`` part under the store's folder."""
    if not run_dir:
        return None
    path = Path(run_dir)
    candidates = [path, store_dir.parent / path]
    if "runs" in path.parts:
        candidates.append(store_dir.joinpath(*path.parts[path.parts.index("runs") :]))
    return next((c for c in candidates if c.is_dir()), path)


def grid_data_uri(path: Path, max_width: int = GRID_MAX_WIDTH) -> tuple[str, int, int]:
    """A PNG as a ``data:`` URI, scaled down to ``max_width`` pixels, with its width and height."""
    from PIL import Image

    with Image.open(path) as image:
        image.load()
        if image.width > max_width:
            height = max(1, round(image.height * max_width / image.width))
            image = image.resize((max_width, height), Image.Resampling.LANCZOS)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG", optimize=True)
        size = image.size
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii"), size[0], size[1]


def thumbnail_size(width: int, height: int) -> tuple[int, int]:
    """The size a grid of ``width`` × ``height`` pixels is shown at in the page (before a click)."""
    box = STRIP_THUMB_WIDTH if width >= STRIP_ASPECT * height else BLOCK_THUMB_WIDTH
    scale = box / width if width > box else min(GRID_MAX_ZOOM, box // max(1, width))
    return max(1, round(width * scale)), max(1, round(height * scale))


def figure_id(run_id: str) -> str:
    return f"run-{run_id}"


def figure_html(run: Mapping[str, Any], store_dir: Path, label: str, back: str | None, marks: str = "") -> str:
    """One run's thumbnail with its caption: ``label`` (the table row's keys), a link ``back`` to the
    row, the run's iterations and id, and ``marks`` (HTML of the row's cell marks)."""
    run_id = str(run["run_id"])
    spec = json.loads(run["spec_json"])
    anchor = figure_id(run_id)
    label_html = f'<a href="#{html.escape(back)}">{html.escape(label)}</a>' if back else html.escape(label)
    status = "" if run.get("status") == "done" else f" ({html.escape(str(run.get('status')))})"
    caption = (
        f"{label_html}{marks} · {html.escape(str(spec.get('iterations')))} it."
        f' · <span class="runid" title="run {html.escape(run_id)}">{html.escape(run_id[:8])}</span>{status}'
    )
    run_dir = resolve_run_dir(run.get("run_dir"), store_dir)
    grid = run_dir / GRID_FILE if run_dir is not None else None
    if grid is not None and grid.is_file():
        try:
            uri, width, height = grid_data_uri(grid)
            shown_w, shown_h = thumbnail_size(width, height)
            body = (
                f'<a href="#{anchor}" title="full size">'
                f'<img src="{uri}" width="{shown_w}" height="{shown_h}" alt="image grid of run {html.escape(run_id)}"></a>'
            )
        except OSError as err:  # a truncated or foreign file: say so instead of a broken image
            body = f'<div class="missing-grid">grid.png unreadable ({html.escape(str(err))}): {html.escape(str(grid))}</div>'
    else:
        where = html.escape(str(grid) if grid is not None else "no run directory recorded")
        body = f'<div class="missing-grid">image grid missing: {where}</div>'
    close = f'<a class="close" href="#{html.escape(back or "")}" title="close">×</a>'
    return f'<figure class="grid" id="{anchor}">{close}{body}<figcaption>{caption}</figcaption></figure>'


def grid_sections_html(
    section_key: str,
    run_ids: Sequence[str],
    runs_by_id: Mapping[str, Mapping[str, Any]],
    store_dir: Path,
    shown: set[str],
    label_of: Callable[[str], str],
    row_anchor_of: Callable[[str], str | None],
    marks_of: Callable[[str], str],
) -> list[str]:
    """HTML of a table's grids: one section per IPC (ascending), runs in ``run_ids`` order. Runs
    already in ``shown`` (an earlier table) get a link to their grid instead; ``shown`` is updated."""
    by_ipc: dict[Any, list[str]] = {}
    for run_id in run_ids:
        if run_id in runs_by_id:
            by_ipc.setdefault(runs_by_id[run_id].get("ipc"), []).append(run_id)
    if not by_ipc:
        return ['<p class="note">No stored runs.</p>']
    parts = []
    for ipc in sorted(by_ipc, key=lambda v: (v is None, v if isinstance(v, (int, float)) else 0)):
        items = []
        for run_id in by_ipc[ipc]:
            if run_id in shown:
                items.append(
                    f'<p class="note"><a href="#{figure_id(run_id)}">{html.escape(label_of(run_id))}: grid above</a></p>'
                )
                continue
            shown.add(run_id)
            items.append(
                figure_html(runs_by_id[run_id], store_dir, label_of(run_id), row_anchor_of(run_id), marks_of(run_id))
            )
        layout = "one row of classes" if ipc == 1 else "a row per class"
        parts.append(
            f'<section id="{html.escape(section_key)}-ipc-{html.escape(str(ipc))}">'
            f"<h3>Image grids, IPC {html.escape(str(ipc))} ({len(items)}; {layout}, in table order; click to enlarge)</h3>"
            f'<div class="grids">{"".join(items)}</div></section>'
        )
    return parts


__all__ = [
    "GRIDS_CSS",
    "resolve_run_dir",
    "grid_data_uri",
    "thumbnail_size",
    "figure_html",
    "figure_id",
    "grid_sections_html",
]
