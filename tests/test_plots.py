"""Plots (issue 18, item 1): accuracy against IPC, per architecture, loss curves and cost, as PNG
files with their data (`ddbench plot`) and embedded in the HTML report; a one-line hint without matplotlib."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from ddbench.cli.main import cli
from ddbench.engine.metrics import METRICS_FILE
from ddbench.results.store import ResultsStore, store_path

pytest.importorskip("matplotlib")

from ddbench.results import plots  # after the skip: the module draws with matplotlib

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
#: (run id, matcher, ipc): accuracy per (evaluator, seed) follows from these numbers
RUNS = [("dm1", "dm", 1), ("dm10", "dm", 10), ("dc1", "dc", 1), ("dc10", "dc", 10), ("mtt1", "mtt", 1)]
EVALUATORS = ("convnet", "alexnet")


def _accuracy(matcher: str, ipc: int, evaluator: str, seed: int) -> float:
    base = {"dm": 0.40, "dc": 0.50, "mtt": 0.55}[matcher] + (0.2 if ipc == 10 else 0.0)
    return base - (0.1 if evaluator == "alexnet" else 0.0) + 0.02 * seed


def _losses(matcher: str) -> list[float]:
    scale = {"dm": 100.0, "dc": 10.0, "mtt": 1.0}[matcher]
    return [scale / (i + 1) ** 2 for i in range(5)]


@pytest.fixture
def out(tmp_path: Path) -> Path:
    """A store of five runs (dm and dc at IPC 1 and 10, mtt at IPC 1), two evaluators × two seeds, metrics.jsonl each."""
    out = tmp_path / "out"
    with ResultsStore(store_path(out)) as store:
        for run_id, matcher, ipc in RUNS:
            run_dir = out / "runs" / run_id
            run_dir.mkdir(parents=True)
            spec = {"dataset": "fashion-mnist", "prior": "pixel", "matcher": matcher, "ipc": ipc, "iterations": 5,
                    "evaluators": list(EVALUATORS), "eval_seeds": [0, 1]}  # fmt: skip
            store.start_run(run_id, spec, str(run_dir))
            store.finish_run(run_id, 10.0 * ipc, (200 + 50 * ipc) * 2**20, 2.0 * ipc)
            lines = [
                {"iteration": i, "loss": loss, "seconds": 2.0 * ipc, "peak_memory_bytes": 2**28}
                for i, loss in enumerate(_losses(matcher))
            ]
            if matcher == "mtt":
                for i, line in enumerate(lines):
                    line["lr"] = 0.01 + 0.001 * i
            (run_dir / METRICS_FILE).write_text("".join(json.dumps(line) + "\n" for line in lines))
            for evaluator in EVALUATORS:
                for seed in (0, 1):
                    store.add_score(
                        run_id,
                        evaluator,
                        seed,
                        {"name": "dc"},
                        _accuracy(matcher, ipc, evaluator, seed),
                        None,
                        1.0,
                        1.0,
                        None,
                    )
    return out


def _frames(out: Path):
    with ResultsStore(store_path(out), read_only=True) as store:
        return store.scores_frame(), store.runs_frame()


def _visible_axes(plot: plots.Plot) -> list:
    return [ax for ax in plot.figure.axes if ax.get_visible()]


def test_accuracy_against_ipc_has_one_line_per_method(out):
    scores, runs = _frames(out)
    plot = plots.accuracy_vs_ipc(scores, runs)
    assert plot.title == "Test accuracy vs images per class (convnet)"  # the most scored evaluator
    (ax,) = _visible_axes(plot)
    assert sorted(ax.get_legend_handles_labels()[1]) == ["pixel + dc", "pixel + dm", "pixel + mtt"]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("images per class (IPC)", "test accuracy (%)")
    line = plot.series["fashion-mnist"]["pixel + dm"]
    assert line["x"] == [1, 10]
    assert line["y"] == pytest.approx([100 * (0.40 + 0.01), 100 * (0.60 + 0.01)])  # mean over seeds 0 and 1
    assert line["err"] == pytest.approx([1.0, 1.0])  # population std of ±1 point
    drawn = {tuple(line.get_xdata()) for line in ax.get_lines() if len(line.get_xdata()) == 2}
    assert (1, 10) in drawn


def test_accuracy_per_architecture_has_a_bar_per_method_and_evaluator(out):
    scores, runs = _frames(out)
    plot = plots.accuracy_per_architecture(scores, runs)
    assert set(plot.series) == {"fashion-mnist, IPC 1", "fashion-mnist, IPC 10"}
    ipc1 = plot.series["fashion-mnist, IPC 1"]
    assert set(ipc1) == {"pixel + dm", "pixel + dc", "pixel + mtt"}
    assert ipc1["pixel + dc"]["x"] == ["convnet", "alexnet"]  # the specs' order of evaluators
    assert ipc1["pixel + dc"]["y"] == pytest.approx([51.0, 41.0])
    ax = next(a for a in _visible_axes(plot) if a.get_title() == "fashion-mnist, IPC 1")
    heights = sorted(round(p.get_height(), 6) for p in ax.patches)
    assert heights == sorted(round(v, 6) for line in ipc1.values() for v in line["y"])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["convnet", "alexnet"]
    assert ax.get_xlabel() == "evaluation architecture" and "%" in ax.get_ylabel()


def test_loss_curves_have_a_panel_per_matcher_and_per_matcher_scalar(out):
    _, runs = _frames(out)
    plot = plots.loss_curves(runs, out)
    assert sorted(list(plot.series)[:3]) == ["dc loss", "dm loss", "mtt loss"]  # the runs' order
    assert list(plot.series)[3:] == ["lr (reported by the matcher)"]
    assert plot.series["dm loss"]["pixel + dm · IPC 10"]["y"] == _losses("dm")
    assert plot.series["lr (reported by the matcher)"]["pixel + mtt · IPC 1"]["y"] == pytest.approx(
        [0.01, 0.011, 0.012, 0.013, 0.014]
    )
    dm = next(a for a in _visible_axes(plot) if a.get_title() == "dm loss")
    assert dm.get_yscale() == "log"  # 100 → 4 spans more than a factor 10
    assert [tuple(line.get_ydata()) for line in dm.get_lines()] == [tuple(_losses("dm"))] * 2
    assert dm.get_xlabel() == "iteration"


def test_cost_shows_seconds_per_iteration_wall_time_and_memory_with_units(out):
    _, runs = _frames(out)
    plot = plots.cost(runs)
    axes = _visible_axes(plot)
    assert [a.get_xlabel() for a in axes] == [
        "seconds per iteration (s)",
        "distillation wall time (min)",
        "peak memory (MiB)",
    ]
    assert plot.series["seconds per iteration"]["dc"]["y"] == pytest.approx([20.0, 2.0])
    assert plot.series["wall time"]["dm"]["y"] == pytest.approx([100 / 60, 10 / 60])
    assert plot.series["peak memory"]["mtt"]["y"] == pytest.approx([250.0])
    assert sorted(t.get_text() for t in plot.figure.legends[0].get_texts()) == ["dc", "dm", "mtt"]


def test_every_plot_has_titles_axis_labels_and_a_legend(out):
    scores, runs = _frames(out)
    built, notes = plots.build_plots(scores, runs, out)
    assert [p.kind for p in built] == list(plots.PLOT_KINDS) and notes == []
    for plot in built:
        assert plot.figure.get_suptitle() == plot.title
        axes = _visible_axes(plot)
        assert plot.figure.legends or any(ax.get_legend() is not None for ax in axes), plot.kind
        for ax in axes:
            assert ax.get_title() and ax.get_xlabel(), (plot.kind, ax.get_title())
            assert "(" in ax.get_xlabel() + ax.get_ylabel() or ax.get_xlabel() in (
                "iteration",
                "evaluation architecture",
            ), plot.kind


def test_plot_command_writes_pngs_with_their_data(out, tmp_path):
    target = tmp_path / "figures"
    result = CliRunner().invoke(cli, ["plot", "--out", str(out), "--output", str(target)])
    assert result.exit_code == 0, result.output
    printed = [line for line in result.stdout.splitlines() if line.endswith(".png")]
    assert printed == [str(target / f"{kind}.png") for kind in plots.PLOT_KINDS]
    for kind in plots.PLOT_KINDS:
        assert (target / f"{kind}.png").read_bytes().startswith(PNG_MAGIC)
        sidecar = json.loads((target / f"{kind}.json").read_text())
        assert sidecar["kind"] == kind and sidecar["series"]
    ipc = json.loads((target / "ipc.json").read_text())
    assert ipc["series"]["fashion-mnist"]["pixel + dc"]["x"] == [1, 10]

    only_loss = CliRunner().invoke(
        cli, ["plot", "--out", str(out), "--output", str(tmp_path / "loss"), "--kind", "loss"]
    )
    assert only_loss.exit_code == 0 and sorted(p.name for p in (tmp_path / "loss").iterdir()) == [
        "loss.json",
        "loss.png",
    ]


def test_a_store_without_scores_or_metrics_says_what_is_missing(tmp_path):
    out = tmp_path / "empty"
    with ResultsStore(store_path(out)) as store:
        store.start_run(
            "r", {"dataset": "fashion-mnist", "prior": "pixel", "matcher": "dm", "ipc": 1}, str(out / "runs" / "r")
        )
    scores, runs = _frames(out)
    built, notes = plots.build_plots(scores, runs, out)
    assert built == [] and len(notes) == 4 and "metrics.jsonl" in notes[2]


def test_report_embeds_the_plots_and_stays_self_contained(out):
    from ddbench.results.report import external_references

    result = CliRunner().invoke(cli, ["leaderboard", "--out", str(out), "--format", "html"])
    assert result.exit_code == 0, result.output
    page = (out / "report.html").read_text()
    assert '<h2 id="plots">Plots</h2>' in page
    for kind in plots.PLOT_KINDS:
        assert re.search(f'<figure class="plot" id="plot-{kind}"[^>]*><img src="data:image/png;base64,', page), kind
    assert external_references(page) == []


def test_without_matplotlib_the_report_and_the_command_say_how_to_install_it(out, monkeypatch):
    monkeypatch.setattr(plots, "matplotlib_available", lambda: False)
    scores, runs = _frames(out)
    section = plots.plots_section_html(scores, runs, out)
    assert "pip install &#x27;ddbench[plots]&#x27;" in section and "<img" not in section
    result = CliRunner().invoke(cli, ["plot", "--out", str(out)])
    assert result.exit_code != 0
    assert "Plots need matplotlib, which is not installed; pip install 'ddbench[plots]'" in str(result.exception)
