"""Plots of a results store: accuracy against IPC, accuracy per architecture, loss curves and cost.

Each plot is drawn from the store's frames (`ResultsStore.scores_frame`, `runs_frame`) and, for loss
curves, the runs' ``metrics.jsonl`` (`ddbench.engine.metrics`). A `Plot` holds the matplotlib figure and
the data it draws (``series``: panel → line label → x, y, err), which `write_plots` saves beside the
PNG as JSON. `plots_section_html` is the HTML report's "Plots" section, images as ``data:`` URIs.

matplotlib is an optional extra (``pip install 'ddbench[plots]'``): it is imported only when a plot
is drawn, without pyplot (no GUI backend, no global figure list), so ``ddbench --help`` stays fast.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import importlib.util
import io
import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from ddbench.engine.metrics import CORE_KEYS, read_metrics
from ddbench.errors import InvalidOptionError
from ddbench.results.report.grids import resolve_run_dir
from ddbench.results.report.rows import spec_prior_label
from ddbench.util.fileio import write_atomic

PLOT_KINDS = ("ipc", "arch", "loss", "cost")
MATPLOTLIB_INSTALL = "pip install 'ddbench[plots]' (or pip install matplotlib)"
#: inches per panel; a figure is at most this many panels wide, and never narrower than its title needs
PANEL_SIZE = (4.6, 3.4)
MIN_WIDTH = 6.4
MAX_COLUMNS = 3
DPI = 100

#: panel title → line label → {"x": [...], "y": [...], "err": [...]}
Series = dict[str, dict[str, dict[str, list[Any]]]]


@dataclasses.dataclass
class Plot:
    """One figure: ``kind`` (one of `PLOT_KINDS`), its title, the figure and the data it draws."""

    kind: str
    title: str
    figure: Any  # matplotlib.figure.Figure
    series: Series
    caption: str = ""


def matplotlib_available() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


def require_matplotlib() -> None:
    """One clear error when matplotlib is missing, naming the install command."""
    if not matplotlib_available():
        raise InvalidOptionError(f"Plots need matplotlib, which is not installed; {MATPLOTLIB_INSTALL}")


# ------------------------------------------------------------------------------------ labels


def _spec(run: Mapping[str, Any]) -> dict[str, Any]:
    try:
        spec = json.loads(run.get("spec_json") or "{}")
    except (TypeError, ValueError):
        return {}
    return spec if isinstance(spec, dict) else {}


def method_labels(runs: pd.DataFrame) -> dict[str, str]:
    """run id → ``pixel + dm``; with the iteration count or protocol appended where runs of one method
    differ in them (a smoke and a full run are different results)."""
    info = {}
    for run in runs.to_dict("records"):
        spec = _spec(run)
        base = f"{spec_prior_label(run['prior'], spec)} + {run['matcher']}"
        info[run["run_id"]] = (base, spec.get("iterations"))
    iterations_per_method: dict[str, set[Any]] = {}
    for base, iterations in info.values():
        iterations_per_method.setdefault(base, set()).add(iterations)
    return {
        run_id: base + (f" ({iterations} it.)" if len(iterations_per_method[base]) > 1 else "")
        for run_id, (base, iterations) in info.items()
    }


def _run_labels(runs: pd.DataFrame) -> dict[str, str]:
    """run id → ``pixel + dm · IPC 10`` (with the dataset when there are several; the run id when two clash)."""
    methods = method_labels(runs)
    several_datasets = runs["dataset"].nunique() > 1
    labels = {
        r["run_id"]: (f"{r['dataset']} · " if several_datasets else "") + f"{methods[r['run_id']]} · IPC {r['ipc']}"
        for r in runs.to_dict("records")
    }
    counts = pd.Series(list(labels.values())).value_counts()
    return {run_id: label + (f" · {run_id[:6]}" if counts[label] > 1 else "") for run_id, label in labels.items()}


def _palette(labels: Sequence[str]) -> dict[str, Any]:
    """One colour per label, the same in every panel of a figure."""
    from matplotlib import colormaps

    unique = list(dict.fromkeys(labels))
    cmap = colormaps["tab10" if len(unique) <= 10 else "tab20"]
    return {label: cmap(i % cmap.N) for i, label in enumerate(unique)}


# ------------------------------------------------------------------------------------ figure


def _figure(panels: int, title: str) -> tuple[Any, list[Any]]:
    from matplotlib.figure import Figure

    columns = min(MAX_COLUMNS, max(1, panels))
    rows = math.ceil(max(1, panels) / columns)
    figure = Figure(
        figsize=(max(MIN_WIDTH, PANEL_SIZE[0] * columns), PANEL_SIZE[1] * rows + 0.5), dpi=DPI, layout="constrained"
    )
    axes = figure.subplots(rows, columns, squeeze=False).ravel().tolist()
    for extra in axes[panels:]:
        extra.set_visible(False)
    figure.suptitle(title, fontsize=13, fontweight="bold")
    return figure, axes[:panels]


def figure_png(plot: Plot) -> bytes:
    buffer = io.BytesIO()
    plot.figure.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def _evaluator_order(scores: pd.DataFrame, runs: pd.DataFrame) -> list[str]:
    """The scored evaluators in the order the runs' specs list them (then by name)."""
    listed = list(dict.fromkeys(e for run in runs.to_dict("records") for e in _spec(run).get("evaluators") or ()))
    scored = set(scores["evaluator"])
    return [e for e in listed if e in scored] + sorted(scored - set(listed))


def _accuracy_points(scores: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Mean and std (ddof=0, over seeds and runs) of accuracy in percent per ``keys``."""
    frame = scores.assign(percent=scores["accuracy"].astype(float) * 100)
    grouped = frame.groupby(keys, sort=False)["percent"]
    return pd.DataFrame(
        {"mean": grouped.mean(), "std": grouped.std(ddof=0).fillna(0.0), "n": grouped.size()}
    ).reset_index()


def _with_methods(scores: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    methods = method_labels(runs)
    frame = scores[scores["run_id"].isin(methods)].copy()
    frame["method"] = frame["run_id"].map(methods)
    if frame["protocol"].nunique() > 1 or (frame["report"] == "max").any():
        frame["method"] += " [" + frame["protocol"] + frame["report"].map({"max": ", max"}).fillna("") + "]"
    return frame


# ---------------------------------------------------------------------------------- the plots


def accuracy_vs_ipc(scores: pd.DataFrame, runs: pd.DataFrame, evaluator: str | None = None) -> Plot | None:
    """Test accuracy (%) against images per class, one line per method, one panel per dataset, for
    one evaluator (default: the one scored most often, the first a spec lists among equals)."""
    if scores.empty:
        return None
    if evaluator is None:
        counts = scores["evaluator"].value_counts()
        evaluator = next(e for e in _evaluator_order(scores, runs) if counts[e] == counts.max())
    frame = _with_methods(scores[scores["evaluator"] == evaluator], runs)
    if frame.empty:
        return None
    points = _accuracy_points(frame, ["dataset", "method", "ipc"]).sort_values(["dataset", "method", "ipc"])
    datasets = list(dict.fromkeys(points["dataset"]))
    title = f"Test accuracy vs images per class ({evaluator})"
    figure, axes = _figure(len(datasets), title)
    colours = _palette(sorted(points["method"].unique()))
    series: Series = {}
    for ax, dataset in zip(axes, datasets):
        panel = series.setdefault(str(dataset), {})
        for method, line in points[points["dataset"] == dataset].groupby("method", sort=True):
            x, y, err = line["ipc"].astype(int).tolist(), line["mean"].tolist(), line["std"].tolist()
            ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=method, color=colours[method])
            panel[str(method)] = {"x": x, "y": y, "err": err}
        ipcs = sorted(points.loc[points["dataset"] == dataset, "ipc"].astype(int).unique())
        if len(ipcs) > 1 and ipcs[-1] / ipcs[0] >= 10:
            ax.set_xscale("log")  # IPC 1, 10, 50: evenly spaced
        ax.set_xticks(ipcs, [str(i) for i in ipcs])
        ax.minorticks_off()
        ax.set(title=str(dataset), xlabel="images per class (IPC)", ylabel="test accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, title="method", title_fontsize=8)
    caption = f"Mean ± std (ddof=0) over evaluation seeds of {evaluator}; one line per prior + matcher."
    return Plot("ipc", title, figure, series, caption)


def accuracy_per_architecture(scores: pd.DataFrame, runs: pd.DataFrame) -> Plot | None:
    """Test accuracy (%) per evaluation architecture, one bar per method, one panel per dataset and
    IPC: the cross-architecture view of the paper's Tables 1 and 4."""
    frame = _with_methods(scores, runs) if not scores.empty else scores
    if frame.empty:
        return None
    evaluators = _evaluator_order(frame, runs)
    points = _accuracy_points(frame, ["dataset", "ipc", "method", "evaluator"])
    panels = list(dict.fromkeys(zip(points["dataset"], points["ipc"])))
    title = "Test accuracy per evaluation architecture"
    figure, axes = _figure(len(panels), title)
    colours = _palette(sorted(points["method"].unique()))
    series: Series = {}
    for ax, (dataset, ipc) in zip(axes, panels):
        part = points[(points["dataset"] == dataset) & (points["ipc"] == ipc)]
        methods = sorted(part["method"].unique())
        shown = [e for e in evaluators if e in set(part["evaluator"])]
        width = 0.8 / max(1, len(methods))
        panel = series.setdefault(f"{dataset}, IPC {ipc}", {})
        for i, method in enumerate(methods):
            rows = part[part["method"] == method].set_index("evaluator")
            present = [e for e in shown if e in rows.index]
            x = [shown.index(e) + (i - (len(methods) - 1) / 2) * width for e in present]
            y, err = [float(rows.loc[e, "mean"]) for e in present], [float(rows.loc[e, "std"]) for e in present]
            ax.bar(x, y, width=width, yerr=err, capsize=2, label=method, color=colours[method])
            panel[str(method)] = {"x": present, "y": y, "err": err}
        ax.set_xticks(range(len(shown)), shown)
        ax.set(title=f"{dataset}, IPC {ipc}", xlabel="evaluation architecture", ylabel="test accuracy (%)")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8, title="method", title_fontsize=8)
    caption = (
        "Mean ± std (ddof=0) over evaluation seeds; each architecture is trained from scratch on the distilled set."
    )
    return Plot("arch", title, figure, series, caption)


def loss_curves(runs: pd.DataFrame, store_dir: Path) -> Plot | None:
    """The distillation loss per iteration, one line per run, one panel per matcher (their losses are
    different quantities), and one panel per scalar a matcher reports (e.g. a learned lr)."""
    labels = _run_labels(runs) if not runs.empty else {}
    curves: dict[str, list[dict[str, Any]]] = {}
    for run in runs.to_dict("records"):
        run_dir = resolve_run_dir(run.get("run_dir"), store_dir)
        records = read_metrics(run_dir) if run_dir is not None else []
        if records:
            curves[run["run_id"]] = records
    if not curves:
        return None
    matcher_of = dict(zip(runs["run_id"], runs["matcher"]))
    panels: list[tuple[str, str, list[str]]] = []  # (matcher or scalar, key in the records, runs)
    for matcher in dict.fromkeys(matcher_of[r] for r in curves):
        panels.append((str(matcher), "loss", [r for r in curves if matcher_of[r] == matcher]))
    extra_keys = dict.fromkeys(
        k for records in curves.values() for record in records for k in record if k not in CORE_KEYS
    )
    for key in extra_keys:
        panels.append((key, key, [r for r in curves if any(key in record for record in curves[r])]))
    title = "Distillation loss per iteration"
    figure, axes = _figure(len(panels), title)
    colours = _palette([labels[r] for r in curves])
    series: Series = {}
    for ax, (name, key, run_ids) in zip(axes, panels):
        is_loss = key == "loss"
        panel_title = f"{name} loss" if is_loss else f"{name} (reported by the matcher)"
        panel = series.setdefault(panel_title, {})
        positive = True
        for run_id in run_ids:
            points = [(r["iteration"], r[key]) for r in curves[run_id] if isinstance(r.get(key), (int, float))]
            x, y = [p[0] for p in points], [float(p[1]) for p in points]
            positive = positive and all(v > 0 for v in y)
            ax.plot(x, y, label=labels[run_id], color=colours[labels[run_id]], marker="." if len(x) < 30 else None)
            panel[labels[run_id]] = {"x": x, "y": y}
        values = [v for line in panel.values() for v in line["y"]]
        log_scale = is_loss and positive and bool(values) and max(values) / min(values) > 10
        if log_scale:
            ax.set_yscale("log")
        ylabel = f"{name}{' loss' if is_loss else ''} (no unit{', log scale' if log_scale else ''})"
        ax.set(title=panel_title, xlabel="iteration", ylabel=ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, title="run", title_fontsize=8)
    caption = "From each run's metrics.jsonl. Losses of different matchers are different quantities, so each has its own panel."
    return Plot("loss", title, figure, series, caption)


def _scaled(values: Sequence[float], units: Sequence[tuple[str, float]]) -> tuple[list[float], str]:
    """Values in the largest unit that keeps the biggest one ≥ 1 (``units``: name, size; smallest first)."""
    top = max(values) if values else 0
    name, size = units[0]
    for candidate, candidate_size in units:
        if top >= candidate_size:
            name, size = candidate, candidate_size
    return [v / size for v in values], name


def cost(runs: pd.DataFrame) -> Plot | None:
    """Distillation cost per run: seconds per iteration, wall time and peak memory, coloured by matcher."""
    if runs.empty:
        return None
    done = runs[runs["seconds_per_iteration"].notna() & (runs["status"] == "done")]
    if done.empty:
        return None
    labels = _run_labels(done)
    done = done.assign(label=done["run_id"].map(labels)).sort_values(["matcher", "label"], ascending=False)
    wall, wall_unit = _scaled(
        done["distill_seconds"].fillna(0).astype(float).tolist(), [("s", 1), ("min", 60), ("h", 3600)]
    )
    memory = done["distill_peak_memory_bytes"].astype("Float64").fillna(0).astype(float).tolist()
    memory, memory_unit = _scaled(memory, [("MiB", 2**20), ("GiB", 2**30)])
    quantities = [
        ("seconds per iteration", "seconds per iteration (s)", done["seconds_per_iteration"].astype(float).tolist()),
        ("wall time", f"distillation wall time ({wall_unit})", wall),
        ("peak memory", f"peak memory ({memory_unit})", memory),
    ]
    title = "Distillation cost per run"
    figure, axes = _figure(len(quantities), title)
    figure.set_size_inches(PANEL_SIZE[0] * len(quantities), max(PANEL_SIZE[1], 1.2 + 0.32 * len(done)))
    colours = _palette(sorted(done["matcher"].unique()))
    series: Series = {}
    names = done["label"].tolist()
    matchers = done["matcher"].tolist()
    for index, (ax, (name, xlabel, values)) in enumerate(zip(axes, quantities)):
        ax.barh(names, values, color=[colours[m] for m in matchers])
        panel = series.setdefault(name, {})
        for matcher in dict.fromkeys(matchers):
            chosen = [i for i, m in enumerate(matchers) if m == matcher]
            panel[str(matcher)] = {"x": [names[i] for i in chosen], "y": [values[i] for i in chosen]}
        ax.set(title=name, xlabel=xlabel, ylabel="run" if index == 0 else "")
        if index:
            ax.set_yticklabels([])
        ax.grid(axis="x", alpha=0.3)
    from matplotlib.patches import Patch

    # one legend for the three panels, below them, where it hides no bar
    figure.legend(handles=[Patch(color=colours[m], label=m) for m in sorted(colours)], loc="outside lower center",
                  ncols=len(colours), fontsize=9, title="matcher", title_fontsize=9)  # fmt: skip
    caption = ("Distillation only (evaluation excluded). Peak memory: the CUDA allocator's peak on a GPU, "
               "the process's resident memory on a CPU.")  # fmt: skip
    return Plot("cost", title, figure, series, caption)


#: why a kind has nothing to draw
_EMPTY = {
    "ipc": "no scores yet",
    "arch": "no scores yet",
    "loss": "no run has a metrics.jsonl (runs made before ddbench recorded per-iteration metrics have none)",
    "cost": "no finished run that distilled (s/it recorded)",
}


def build_plots(
    scores: pd.DataFrame, runs: pd.DataFrame, store_dir: Path, kinds: Sequence[str] = PLOT_KINDS
) -> tuple[list[Plot], list[str]]:
    """The plots of ``kinds`` that have data, and one note per kind that has none."""
    unknown = [k for k in kinds if k not in PLOT_KINDS]
    if unknown:
        raise InvalidOptionError(f"Unknown plot kind(s) {unknown}; expected some of {list(PLOT_KINDS)} or all")
    require_matplotlib()
    makers: dict[str, Callable[[], Plot | None]] = {
        "ipc": lambda: accuracy_vs_ipc(scores, runs),
        "arch": lambda: accuracy_per_architecture(scores, runs),
        "loss": lambda: loss_curves(runs, store_dir),
        "cost": lambda: cost(runs),
    }
    plots, notes = [], []
    for kind in kinds:
        plot = makers[kind]()
        if plot is None:
            notes.append(f"{kind}: nothing to plot ({_EMPTY[kind]})")
        else:
            plots.append(plot)
    return plots, notes


def write_plots(plots: Sequence[Plot], directory: Path) -> list[Path]:
    """``KIND.png`` and ``KIND.json`` (the plotted data) per plot; returns the PNG paths."""
    paths = []
    for plot in plots:
        png = directory / f"{plot.kind}.png"
        data = figure_png(plot)
        write_atomic(png, lambda tmp, data=data: tmp.write_bytes(data))
        sidecar = {"kind": plot.kind, "title": plot.title, "caption": plot.caption, "series": plot.series}
        text = json.dumps(sidecar, indent=1, default=str)
        write_atomic(png.with_suffix(".json"), lambda tmp, text=text: tmp.write_text(text, encoding="utf-8"))
        paths.append(png)
    return paths


def plots_section_html(scores: pd.DataFrame, runs: pd.DataFrame, store_dir: Path) -> str:
    """The report's "Plots" section: every plot as an embedded PNG, or one line on installing matplotlib."""
    parts = ['<h2 id="plots">Plots</h2>']
    if not matplotlib_available():
        parts.append(
            f'<p class="note">Plots need matplotlib, which is not installed: {html.escape(MATPLOTLIB_INSTALL)}</p>'
        )
        return "\n".join(parts)
    plots, notes = build_plots(scores, runs, store_dir)
    for plot in plots:
        uri = "data:image/png;base64," + base64.b64encode(figure_png(plot)).decode("ascii")
        # inline style: the section fits any report page, scaled down to its width
        parts.append(
            f'<figure class="plot" id="plot-{plot.kind}" style="margin: 1em 0; max-width: 100%">'
            f'<img src="{uri}" alt="{html.escape(plot.title)}" style="display: block; max-width: 100%; height: auto">'
            f"<figcaption>{html.escape(plot.caption)}</figcaption></figure>"
        )
    parts += [f'<p class="note">{html.escape(note)}</p>' for note in notes]
    return "\n".join(parts)


__all__ = [
    "PLOT_KINDS", "Plot", "accuracy_vs_ipc", "accuracy_per_architecture", "loss_curves", "cost", "build_plots",
    "write_plots", "figure_png", "plots_section_html", "method_labels", "matplotlib_available", "require_matplotlib",
]  # fmt: skip
