"""`ddbench runs` and `ddbench show`: the runs of a store, and one run in full.

Both read the frames of a store opened read-only (`ResultsStore.runs_frame`, `scores_frame`) and
the run's own ``synthetic.json``; they build ``(columns, rows)`` or key/value sections, and
`runs_table` / `show_renderables` turn those into rich tables. Nothing here imports torch or a plugin.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rich.console import Group, RenderableType
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from ddbench.engine.metrics import METRICS_FILE
from ddbench.util.units import format_bytes, format_percent, format_seconds

#: how `runs` colours a status
STATUS_STYLES = {"done": "green", "running": "yellow", "failed": "red"}

RUNS_COLUMNS = (
    "run id",
    "dataset",
    "prior",
    "matcher",
    "ipc",
    "status",
    "accuracy %",
    "distil",
    "s/it",
    "finished",
    "error",
)


def _value(x: Any) -> Any:
    """None for SQL NULL, NaN and pandas' NA, else the value."""
    if x is None:
        return None
    try:
        if x != x:  # NaN (and NA, whose comparison raises below)
            return None
    except TypeError:
        return None
    return x


def _json(text: Any) -> dict[str, Any]:
    text = _value(text)
    if not text:
        return {}
    try:
        data = json.loads(text)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _first_line(text: Any, limit: int = 160) -> str:
    text = str(_value(text) or "").strip()
    line = text.splitlines()[0] if text else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _accuracy_summary(scores: Any, evaluator_order: Sequence[str] = (), seeds: int = 0) -> str:
    """Mean ± std (%) over the run's scores per evaluator, in the spec's order: ``convnet 61.2 ± 0.4 · vit …``;
    an evaluator with fewer than the ``seeds`` the run asks for says how many it has (``vit 43.0 (1/5 seeds)``)."""
    if scores is None or len(scores) == 0:
        return "—"
    order = {name: i for i, name in enumerate(evaluator_order)}
    groups = sorted(scores.groupby("evaluator", sort=False), key=lambda item: (order.get(item[0], len(order)), item[0]))
    parts = []
    for evaluator, group in groups:
        values = [float(v) for v in group["accuracy"]]
        partial = f" ({len(values)}/{seeds} seeds)" if len(values) < seeds else ""
        parts.append(f"{evaluator} {_mean_std(values)}{partial}")
    return " · ".join(parts)


def _mean_std(values: Sequence[float]) -> str:
    """Percent, population std over seeds (as the leaderboard: ddof=0)."""
    mean = statistics.fmean(values)
    std = statistics.pstdev(values) if len(values) > 1 else 0.0
    return f"{100 * mean:.1f} ± {100 * std:.1f}"


def runs_rows(
    runs: Any, scores: Any, filters: Mapping[str, Sequence[Any]] | None = None, status: Sequence[str] = ()
) -> tuple[tuple[str, ...], list[list[str]]]:
    """``(columns, rows)`` of `ddbench runs`: one row per run, oldest first, filtered by column values."""
    rows: list[list[str]] = []
    if runs is None or runs.empty:
        return RUNS_COLUMNS, rows
    selected = runs
    for column, wanted in (filters or {}).items():
        if wanted:
            selected = selected[selected[column].isin(list(wanted))]
    if status:
        selected = selected[selected["status"].isin(list(status))]
    by_run = (
        {run_id: group for run_id, group in scores.groupby("run_id", sort=False)}
        if scores is not None and not scores.empty
        else {}
    )
    for run in selected.to_dict("records"):
        spi = _value(run.get("seconds_per_iteration"))
        spec = _json(run.get("spec_json"))
        rows.append([
            run["run_id"], run["dataset"], run["prior"], run["matcher"], str(run["ipc"]), run["status"],
            _accuracy_summary(
                by_run.get(run["run_id"]), spec.get("evaluators") or (), len(spec.get("eval_seeds") or ())
            ),
            format_seconds(_value(run.get("distill_seconds"))),
            "—" if spi is None else f"{spi:.3g}",
            str(_value(run.get("finished_at")) or "—").replace("T", " ").replace("+00:00", "Z"),
            _first_line(run.get("error")) if run["status"] == "failed" else "",
        ])  # fmt: skip
    if not any(row[-1] for row in rows):  # no failed run: no empty error column
        return RUNS_COLUMNS[:-1], [row[:-1] for row in rows]
    return RUNS_COLUMNS, rows


def runs_table(columns: Sequence[str], rows: Sequence[Sequence[str]], title: str | None = None) -> Table:
    """The rows of `runs_rows` as a rich table; statuses coloured, errors folded to the cell width."""
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column, overflow="fold", no_wrap=column in ("run id", "status"))
    status_at = list(columns).index("status")
    for row in rows:
        cells: list[Any] = [escape(c) for c in row]
        cells[status_at] = Text(row[status_at], style=STATUS_STYLES.get(row[status_at], ""))
        table.add_row(*cells)
    return table


# ------------------------------------------------------------------------------------ show


def _options(options: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={json.dumps(v) if isinstance(v, (dict, list)) else v}" for k, v in sorted(options.items()))


def _plugin_line(name: str, record: Mapping[str, Any] | None, typed: Mapping[str, Any]) -> str:
    """``dm v1 (batch_real=12, net=convnet)``: the effective options when the spec was resolved, else as typed."""
    record = record or {}
    options = record.get("options", typed) or {}
    version = record.get("version")
    text = name + (f" {version}" if version else "")
    return text + (f" ({_options(options)})" if options else "")


def spec_rows(spec: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The spec as a short key/value table (the identity record's effective options when present)."""
    identity = spec.get("identity") or {}
    dataset = identity.get("dataset") or {}
    fingerprint = (dataset.get("key") or {}).get("fingerprint")
    rows = [
        (
            "dataset",
            _plugin_line(spec.get("dataset", "?"), dataset, {}) + (f" at {spec['res']} px" if spec.get("res") else ""),
        ),
    ]
    if fingerprint or dataset.get("found_at"):
        rows.append(
            ("data", " ".join(p for p in (dataset.get("found_at"), f"[{fingerprint}]" if fingerprint else None) if p))
        )
    rows += [
        ("prior", _plugin_line(spec.get("prior", "?"), identity.get("prior"), spec.get("prior_options") or {})),
        ("matcher", _plugin_line(spec.get("matcher", "?"), identity.get("matcher"), spec.get("matcher_options") or {})),
        ("ipc", str(spec.get("ipc"))),
    ]
    external = spec.get("external")
    if isinstance(external, dict):  # a set scored by `ddbench evaluate`: where it came from, not how it was distilled
        extras = [f"range {external.get('range')}", *([f"resized {external['resize']}"] if external.get("resize") else []),
                  *([f"learned lr {external['lr']:g}"] if external.get("lr") is not None else [])]  # fmt: skip
        rows += [("source", f"{external.get('format')} set {external.get('source')}" + (f" (experiment {external['experiment']})" if external.get("experiment") is not None else "")),
                 ("content", f"sha256 {external.get('content_sha256')}; {', '.join(extras)}")]  # fmt: skip
    else:
        rows.append(
            (
                "iterations",
                f"{spec.get('iterations')} (seed {spec.get('seed')}, DSA {'on' if spec.get('dsa', True) else 'off'})",
            )
        )
    lrs = identity.get("lrs") or spec.get("lrs")
    if lrs:
        rows.append(("learning rates", _options(lrs)))
    epochs = spec.get("eval_epochs")
    protocol = (
        spec.get("protocol", "?")
        + (f", {epochs} epochs" if epochs else "")
        + (", best epoch (max)" if spec.get("report") == "max" else "")
    )
    seeds = spec.get("eval_seeds") or []
    rows.append(
        ("evaluation", f"{', '.join(spec.get('evaluators') or [])} × {len(seeds)} seed(s); protocol {protocol}")
    )
    subset = [f"{spec['train_per_class']} train images per class" if spec.get("train_per_class") else None,
              f"first {spec['test_size']} test images" if spec.get("test_size") else None]  # fmt: skip
    if any(subset):
        rows.append(("subset", ", ".join(s for s in subset if s)))
    if identity.get("device"):
        rows.append(("device", str(identity["device"])))
    return rows


def score_rows(scores: Any, evaluator_order: Sequence[str] = ()) -> tuple[tuple[str, ...], list[list[str]]]:
    """Per evaluator and protocol: accuracy % mean ± std over seeds, each seed's, train time and peak memory."""
    columns = ("evaluator", "protocol", "accuracy %", "per seed %", "train / seed", "peak memory")
    rows: list[list[str]] = []
    if scores is None or scores.empty:
        return columns, rows
    order = {name: i for i, name in enumerate(evaluator_order)}
    groups = sorted(
        scores.groupby(["evaluator", "protocol"], sort=False),
        key=lambda item: (order.get(item[0][0], len(order)), item[0]),
    )
    for (evaluator, protocol), group in groups:
        group = group.sort_values("seed")
        accuracies = [float(a) for a in group["accuracy"]]
        train = [t for t in (_value(v) for v in group["train_seconds"]) if t is not None]
        peaks = [p for p in (_value(v) for v in group["peak_memory_bytes"]) if p is not None]
        report = " (max)" if "max" in set(group["report"]) else ""
        rows.append([
            evaluator, protocol, _mean_std(accuracies) + report,
            "  ".join(f"s{seed}: {format_percent(a)}" for seed, a in zip(group["seed"], accuracies)),
            format_seconds(statistics.fmean(train)) if train else "—",
            format_bytes(max(peaks)) if peaks else "—",
        ])  # fmt: skip
    return columns, rows


def _final_loss(run_dir: Path | None) -> float | None:
    if run_dir is None:
        return None
    try:
        value = json.loads((run_dir / "synthetic.json").read_text(encoding="utf-8")).get("final_loss")
    except (OSError, ValueError, AttributeError):
        return None
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def _loss_line(summary: Mapping[str, Any], run_dir: Path | None) -> str:
    """``0.01234 (first 1.5, min 0.0121 over 200 iterations)`` from the store's metrics summary;
    runs stored before it only have the final loss in their synthetic.json."""
    loss = summary.get("loss_final") if summary else _final_loss(run_dir)
    if not isinstance(loss, (int, float)):
        return "—"
    first, lowest, count = summary.get("loss_first"), summary.get("loss_min"), summary.get("iterations")
    if isinstance(first, (int, float)) and isinstance(lowest, (int, float)) and count:
        return f"{loss:.6g} (first {first:.4g}, min {lowest:.4g} over {count} iterations)"
    return f"{loss:.6g}"


def cost_rows(run: Mapping[str, Any], scores: Any) -> list[tuple[str, str]]:
    """Wall times, s/it, peak memory, the loss and the matcher's last reported scalars of a run."""
    spi = _value(run.get("seconds_per_iteration"))
    run_dir = Path(run["run_dir"]) if _value(run.get("run_dir")) else None
    summary = _json(run.get("metrics_json"))
    rows = [
        ("distillation", f"{format_seconds(_value(run.get('distill_seconds')))} wall, " + ("— s/it" if spi is None else f"{spi:.3g} s/it")
         + f", peak memory {format_bytes(_value(run.get('distill_peak_memory_bytes')))}"),
        ("final loss", _loss_line(summary, run_dir)),
    ]  # fmt: skip
    rows += [
        (f"final {name}", f"{value:.6g}")
        for name, value in (summary.get("final") or {}).items()
        if isinstance(value, (int, float))
    ]
    if scores is not None and not scores.empty:
        seconds = [s for s in (_value(a) for a in scores["train_seconds"]) if s is not None]
        seconds += [s for s in (_value(a) for a in scores["eval_seconds"]) if s is not None]
        rows.append(
            ("evaluation", f"{format_seconds(sum(seconds))} wall over {len(scores)} model(s) (training and testing)")
        )
    return rows


def provenance_rows(run: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Versions of what shaped the result, the ddbench commit, the host and when it ran."""
    versions = _json(run.get("versions_json"))
    host = _json(run.get("host_json"))
    libraries = ", ".join(f"{k} {v}" for k, v in versions.items() if k != "plugins" and v)
    machine = ", ".join(p for p in (host.get("hostname"), f"{host['cpu_count']} CPUs" if host.get("cpu_count") else None,
                                    host.get("cuda_device"), host.get("platform")) if p)  # fmt: skip
    when = " → ".join(str(_value(run.get(k)) or "…").replace("T", " ") for k in ("created_at", "finished_at"))
    return [("versions", libraries or "—"), ("commit", str(_value(run.get("git_commit")) or "— (not a git checkout)")),
            ("host", machine or "—"), ("ran", when)]  # fmt: skip


def _key_values(title: str, rows: Sequence[tuple[str, str]]) -> Table:
    table = Table(title=title, title_justify="left", show_header=False, box=None, padding=(0, 2, 0, 0))
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    for key, value in rows:
        table.add_row(key, escape(value))
    return table


def show_renderables(run: Mapping[str, Any], scores: Any) -> list[RenderableType]:
    """`ddbench show RUN_ID`: header, spec, scores, cost, provenance, error and the image grid's path."""
    spec = _json(run.get("spec_json"))
    status = str(run.get("status"))
    header = Text.assemble(("run ", "bold"), (str(run["run_id"]), "bold"), "  ", (status, STATUS_STYLES.get(status, "")),
                           f"  {run['dataset']} · {run['prior']} + {run['matcher']} · IPC {run['ipc']}")  # fmt: skip
    parts: list[RenderableType] = [header, Text(""), _key_values("spec", spec_rows(spec))]
    columns, rows = score_rows(scores, spec.get("evaluators") or ())
    if rows:
        table = Table(title="accuracy on the test split", title_justify="left")
        for column in columns:
            table.add_column(
                column, justify="right" if column in ("accuracy %", "train / seed", "peak memory") else "left"
            )
        for row in rows:
            table.add_row(*(escape(c) for c in row))
        parts += [Text(""), table]
    else:
        parts += [Text(""), Text("no scores stored yet", style="yellow")]
    parts += [
        Text(""),
        _key_values("cost", cost_rows(run, scores)),
        Text(""),
        _key_values("provenance", provenance_rows(run)),
    ]
    if _value(run.get("error")):
        parts += [Text(""), Text.assemble(("error: ", "bold red"), str(run["error"]))]
    run_dir = _value(run.get("run_dir"))
    if run_dir:
        grid = Path(run_dir) / "grid.png"
        parts += [
            Text(""),
            Text.assemble(("image grid: ", "bold"), str(grid), ("" if grid.exists() else " (missing)", "yellow")),
        ]
        metrics = Path(run_dir) / METRICS_FILE
        if metrics.exists():
            parts.append(
                Text.assemble(
                    ("per-iteration metrics: ", "bold"), str(metrics), " (`ddbench plot --kind loss` draws them)"
                )
            )
    return [Group(*parts)]


__all__ = [
    "runs_rows",
    "runs_table",
    "spec_rows",
    "score_rows",
    "cost_rows",
    "provenance_rows",
    "show_renderables",
    "RUNS_COLUMNS",
]
