"""Leaderboard aggregation (mean ± std over seeds) and its formatters."""

from __future__ import annotations

import doctest
import io
import json
from pathlib import Path

import pandas as pd
import pytest
from rich.console import Console

from ddbench import registry
from ddbench.errors import DDBenchError, InvalidOptionError
from ddbench.results import leaderboard
from ddbench.results.leaderboard import Cell, format_table, leaderboard_table, render, to_rich
from ddbench.results.provenance import Provenance
from ddbench.results.store import ResultsStore, store_path


def _display_order(family: str, name: str) -> int | None:
    """The plugin's declared display order, as `ddbench.running.identity` records it with a run."""
    try:
        return registry.get_plugin_class(family, name.split("-")[0] if family == "prior" else name).display_order
    except DDBenchError:
        return None


def recorded_spec(dataset: str, prior: str, matcher: str, evaluators: list[str]) -> str:
    """The spec_json a resolved run stores: its plugins' display orders among its identity labels."""
    identity = {
        field: {"name": name, "labels": {"display_order": _display_order(field, name)}}
        for field, name in (("dataset", dataset), ("prior", prior), ("matcher", matcher))
    }
    return json.dumps(
        {"dataset": dataset, "prior": prior, "matcher": matcher, "evaluators": evaluators, "identity": identity}
    )


#: the evaluators runs ask for (`--evaluators convnet,unseen`), which orders evaluator columns
EVALUATORS = ["convnet", "alexnet", "vgg11", "resnet18", "vit"]


def scores(*cells: tuple[str, str, str, str, list[float]], **extra: object) -> pd.DataFrame:
    """A scores frame as the store gives it: one (prior, matcher, dataset, evaluator, accuracies by
    seed) per cell, each run's spec_json recording its plugins' display orders."""
    records = [
        {
            "run_id": f"{prior}-{matcher}-{dataset}",
            "dataset": dataset,
            "prior": prior,
            "matcher": matcher,
            "ipc": 1,
            "res": None,
            "evaluator": evaluator,
            "seed": seed,
            "protocol": "dc",
            "report": "final",
            "accuracy": acc,
            "accuracy_max": None,
            "spec_json": recorded_spec(dataset, prior, matcher, EVALUATORS),
            **extra,
        }  # fmt: skip
        for prior, matcher, dataset, evaluator, accs in cells
        for seed, acc in enumerate(accs)
    ]
    return pd.DataFrame.from_records(records)


def cell_texts(table: leaderboard.LeaderboardTable) -> list[list[str]]:
    return [[v.text() if isinstance(v, Cell) else ("—" if v is None else str(v)) for v in row] for row in table.rows]


def test_mean_and_population_std_over_seeds() -> None:
    table = leaderboard_table(scores(("pixel", "dc", "cifar10", "convnet", [0.20, 0.22, 0.24])))
    assert table.columns == ("prior", "matcher", "cifar10")
    (row,) = table.rows
    cell = row[2]
    assert cell.n == 3 and cell.mean == pytest.approx(0.22)
    # ddof=0: sqrt(((0.02)² + 0 + (0.02)²) / 3) = 1.63 %, where ddof=1 would give 2.0 %
    assert cell.text() == "22.0 ± 1.6"
    columns, rows = table  # unpacks as cliff's (columns, rows)
    assert columns == table.columns and rows == table.rows


def test_cell_over_several_evaluators_averages_means_and_stds() -> None:
    frame = scores(
        ("ld3m", "dm", "imagenette", "alexnet", [0.30, 0.34]),  # 32.0 ± 2.0
        ("ld3m", "dm", "imagenette", "vit", [0.20, 0.20, 0.20]),  # 20.0 ± 0.0
    )
    (row,) = leaderboard_table(frame).rows
    assert row[2].text() == "26.0 ± 1.0" and row[2].n == 5


def test_best_cell_per_column_and_missing_cells() -> None:
    frame = scores(
        ("pixel", "dc", "cifar10", "convnet", [0.20]),
        ("ld3m", "dc", "cifar10", "convnet", [0.3004]),
        ("glad", "dc", "cifar10", "convnet", [0.2996]),  # 30.0 at the shown precision: a tie
        ("pixel", "dc", "fashion-mnist", "convnet", [0.80]),
        ("ld3m", "dc", "fashion-mnist", "convnet", [0.70]),
    )
    table = leaderboard_table(frame)
    assert table.columns == ("prior", "matcher", "fashion-mnist", "cifar10")
    assert cell_texts(table) == [
        ["pixel", "dc", "80.0 ± 0.0", "20.0 ± 0.0"],
        ["glad", "dc", "—", "30.0 ± 0.0"],
        ["ld3m", "dc", "70.0 ± 0.0", "30.0 ± 0.0"],
    ]
    best = [[isinstance(v, Cell) and v.best for v in row[2:]] for row in table.rows]
    assert best == [[True, False], [False, True], [False, True]]


def test_rows_follow_the_display_order_the_runs_recorded() -> None:
    cells = [
        (prior, matcher)
        for prior in ("zeta", "ld3m", "glad-random", "pixel", "glad", "alpha")
        for matcher in ("mtt", "custom", "dm", "dc")
    ]
    frame = scores(*((p, m, "cifar10", "convnet", [0.5]) for p, m in cells))
    keys = [row[:2] for row in leaderboard_table(frame).rows]
    priors = list(dict.fromkeys(prior for prior, _ in keys))
    assert priors == ["pixel", "glad", "glad-random", "ld3m", "alpha", "zeta"]
    assert [m for p, m in keys if p == "pixel"] == ["dc", "dm", "mtt", "custom"]
    # without recorded orders (a store from before, a hand-made frame): alphabetical
    plain = leaderboard_table(frame.drop(columns=["spec_json"]))
    assert list(dict.fromkeys(row[0] for row in plain.rows)) == [
        "alpha",
        "glad",
        "glad-random",
        "ld3m",
        "pixel",
        "zeta",
    ]


def test_evaluator_columns_follow_the_order_runs_asked_for() -> None:
    frame = scores(
        *(("pixel", "dc", "cifar10", e, [0.5]) for e in ("alexnet", "vgg11")),
        spec_json=recorded_spec("cifar10", "pixel", "dc", ["vgg11", "alexnet"]),
    )
    assert leaderboard_table(frame, rows=("prior",), columns="evaluator").columns == (
        "prior",
        "vgg11",
        "alexnet",
        "avg",
    )


def test_evaluator_columns_with_average() -> None:
    frame = scores(
        ("pixel", "dc", "cifar10", "alexnet", [0.259, 0.259]),
        ("pixel", "dc", "cifar10", "vit", [0.229, 0.231]),  # 23.0 ± 0.1
        ("ld3m", "dc", "cifar10", "vit", [0.29, 0.29]),  # no alexnet: no average
    )
    table = leaderboard_table(frame, rows=("prior",), columns="evaluator", filters={"matcher": "dc"})
    assert table.columns == ("prior", "alexnet", "vit", "avg")
    assert cell_texts(table) == [
        ["pixel", "25.9 ± 0.0", "23.0 ± 0.1", "24.4 ± 0.1"],
        ["ld3m", "—", "29.0 ± 0.0", "—"],
    ]
    assert table.rows[0][3].n == 4
    # the average is optional in either direction
    assert "avg" not in leaderboard_table(frame, rows=("prior",), columns="evaluator", average=False).columns
    assert leaderboard_table(frame, columns="dataset", average=True).columns[-1] == "avg"


def test_filters_lists_strings_and_errors() -> None:
    frame = pd.concat(
        [
            scores(("pixel", "dc", "cifar10", "convnet", [0.5])),
            scores(("pixel", "dc", "cifar10", "convnet", [0.9]), ipc=10),
        ]
    )
    frame["run_id"] = frame["run_id"] + frame["ipc"].astype(str)
    one = leaderboard_table(frame, filters={"ipc": "1"})  # as typed on a command line
    assert cell_texts(one) == [["pixel", "dc", "50.0 ± 0.0"]]
    ten = leaderboard_table(frame, filters={"ipc": [10], "prior": ["pixel", "glad"]})
    assert cell_texts(ten) == [["pixel", "dc", "90.0 ± 0.0"]]
    assert cell_texts(leaderboard_table(frame, filters={"ipc": 1, "res": None})) == [["pixel", "dc", "50.0 ± 0.0"]]
    with pytest.raises(InvalidOptionError, match="Did you mean 'ipc'"):
        leaderboard_table(frame, filters={"ipcs": 1})
    with pytest.raises(InvalidOptionError, match="No scores with ipc=3; recorded values: 1, 10"):
        leaderboard_table(frame, filters={"ipc": 3})
    # without a filter, ipc 1 and 10 would share a cell: refused, naming the difference
    with pytest.raises(InvalidOptionError, match=r"ipc in \{1, 10\}.*filter"):
        leaderboard_table(frame)


def test_different_protocols_are_not_mixed() -> None:
    frame = pd.concat(
        [
            scores(("pixel", "dm", "cifar10", "convnet", [0.5])),
            scores(("pixel", "dm", "cifar10", "convnet", [0.6]), protocol="glad"),
        ]
    )
    with pytest.raises(InvalidOptionError, match="protocol in {dc, glad}"):
        leaderboard_table(frame)
    assert cell_texts(leaderboard_table(frame, filters={"protocol": "glad"})) == [["pixel", "dm", "60.0 ± 0.0"]]


def test_accuracy_max_skips_missing_values() -> None:
    frame = scores(("pixel", "dm", "cifar10", "convnet", [0.5, 0.6]))
    frame["accuracy_max"] = [0.55, None]
    (row,) = leaderboard_table(frame, value="accuracy_max").rows
    assert row[2].text() == "55.0 ± 0.0" and row[2].n == 1
    with pytest.raises(InvalidOptionError, match="accuracy"):
        leaderboard_table(frame, value="train_seconds")


@pytest.fixture()
def tiny() -> leaderboard.LeaderboardTable:
    return leaderboard_table(
        scores(
            ("pixel", "dc", "cifar10", "convnet", [0.20, 0.22]),
            ("ld3m", "dc", "cifar10", "convnet", [0.30, 0.34]),
            ("ld3m", "dc", "my_data", "convnet", [0.50]),
        )
    )


def test_markdown_golden(tiny: leaderboard.LeaderboardTable) -> None:
    assert format_table(tiny, "markdown") == (
        "| prior   | matcher   | cifar10        | my_data        |\n"
        "|---------|-----------|----------------|----------------|\n"
        "| pixel   | dc        | 21.0 ± 1.0     | —              |\n"
        "| ld3m    | dc        | **32.0 ± 2.0** | **50.0 ± 0.0** |"
    )


def test_latex_golden(tiny: leaderboard.LeaderboardTable) -> None:
    assert (
        format_table(tiny, "latex")
        == r"""\begin{tabular}{llrr}
\toprule
 prior   & matcher   &                 cifar10 &                my\_data \\
\midrule
 pixel   & dc        &          21.0 $\pm$ 1.0 &                     --- \\
 ld3m    & dc        & \textbf{32.0 $\pm$ 2.0} & \textbf{50.0 $\pm$ 0.0} \\
\bottomrule
\end{tabular}"""
    )


def test_csv_golden(tiny: leaderboard.LeaderboardTable) -> None:
    assert format_table(tiny, "csv") == (
        "prior,matcher,cifar10_mean,cifar10_std,cifar10_n,my_data_mean,my_data_std,my_data_n\n"
        "pixel,dc,21.00,1.00,2,,,\n"
        "ld3m,dc,32.00,2.00,2,50.00,0.00,1\n"
    )


def test_rich_table_marks_best_in_bold(tiny: leaderboard.LeaderboardTable) -> None:
    rich_table = to_rich(tiny, title="CIFAR-10")
    cifar = rich_table.columns[2]
    cells = list(cifar.cells)
    assert [str(c) for c in cells] == ["21.0 ± 1.0", "32.0 ± 2.0"]
    assert [c.style for c in cells] == ["", "bold"]
    assert str(list(rich_table.columns[3].cells)[0]) == "—"

    console = Console(file=io.StringIO(), width=100, color_system=None)
    render(tiny, "rich", console=console)
    text = console.file.getvalue()
    assert "32.0 ± 2.0" in text and "—" in text and "ddof=0" in text


def test_render_prints_text_formats_verbatim(tiny: leaderboard.LeaderboardTable) -> None:
    for fmt in ("markdown", "latex", "csv"):
        console = Console(file=io.StringIO(), width=20, color_system=None)  # narrower than the table
        render(tiny, fmt, console=console)
        assert console.file.getvalue().rstrip("\n") == format_table(tiny, fmt).rstrip("\n")
    with pytest.raises(InvalidOptionError, match="Did you mean 'latex'"):
        render(tiny, "latx")


def test_empty_frame_gives_empty_table() -> None:
    empty = pd.DataFrame(columns=["dataset", "prior", "matcher", "evaluator", "seed", "accuracy"])
    table = leaderboard_table(empty)
    assert table.columns == ("prior", "matcher") and table.rows == []
    assert format_table(table, "csv") == "prior,matcher\n"
    assert format_table(table, "latex").startswith("\\begin{tabular}{ll}")
    assert "\\toprule" in format_table(table, "latex") and "\\hline" not in format_table(table, "latex")  # booktabs


def test_from_a_real_store(tmp_path: Path) -> None:
    spec = {"dataset": "fashion-mnist", "prior": "pixel", "matcher": "dm", "ipc": 1, "res": None}
    with ResultsStore(store_path(tmp_path), provenance=Provenance({}, None, {})) as store:
        assert leaderboard_table(store.scores_frame()).rows == []
        store.start_run("r1", spec, None)
        for seed, acc in enumerate([0.70, 0.72, 0.74]):
            store.add_score("r1", "convnet", seed, {"name": "dc"}, acc, None, 1.0, 1.0, None)
        frame = store.scores_frame()
    table = leaderboard_table(frame, filters={"ipc": 1, "res": None})
    assert cell_texts(table) == [["pixel", "dm", "72.0 ± 1.6"]]


def test_module_docstring_example_runs() -> None:
    result = doctest.testmod(leaderboard, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


def test_best_is_marked_per_ipc_when_ipc_is_a_row_key() -> None:
    by_ipc = {
        ipc: scores(
            ("pixel", "dm", "fashion-mnist", "convnet", [pixel]),
            ("glad", "dm", "fashion-mnist", "convnet", [glad]),
            ipc=ipc,
        )
        for ipc, pixel, glad in [(1, 0.69, 0.67), (10, 0.80, 0.74)]
    }
    frame = pd.concat(by_ipc.values()).assign(run_id=lambda f: f.run_id + "-" + f.ipc.astype(str))
    table = leaderboard_table(frame, rows=("prior", "matcher", "ipc"))
    best = {(r[0], r[2]): r[3].best for r in table.rows}
    assert best == {("pixel", 1): True, ("glad", 1): False, ("pixel", 10): True, ("glad", 10): False}


def test_marked_cells_show_their_mark_in_every_format_and_never_win() -> None:
    frame = scores(
        ("pixel", "dm", "cifar10", "convnet", [0.50, 0.52]),
        ("glad", "dm", "cifar10", "convnet", [0.70, 0.72]),  # higher, but from a smoke run
        ("glad", "real", "cifar10", "convnet", [0.10, 0.12]),
    )
    smoke = leaderboard.CellMark(
        leaderboard.OTHER_SETTINGS, "run glad-dm has other settings: iterations 1 (suite: 100)"
    )
    wrong = leaderboard.CellMark(leaderboard.NOT_MEANINGFUL, "run glad-real is not meaningful: random latents")
    table = leaderboard_table(frame, marks={(("glad", "dm"), "cifar10"): [smoke], (("glad", "real"), None): [wrong]})
    rows = {row[:2]: row[2] for row in table.rows}
    assert rows[("pixel", "dm")].best and not rows[("pixel", "dm")].marks
    assert not rows[("glad", "dm")].best and rows[("glad", "dm")].symbols == "†"
    assert rows[("glad", "real")].symbols == "‡"
    markdown = format_table(table, "markdown")
    assert "**51.0 ± 1.0**" in markdown and "| 71.0 ± 1.0†" in markdown and "| 11.0 ± 1.0‡" in markdown
    assert "71.0 $\\pm$ 1.0\\textsuperscript{\\dag}" in format_table(table, "latex")
    assert "71.0 ± 1.0†" in format_table(table, "rich")
    assert leaderboard.mark_notes(table) == [f"† {smoke.note}", f"‡ {wrong.note}"]
    # an average carries the marks of its cells
    averaged = leaderboard_table(frame, columns="evaluator", marks={(("glad", "dm"), "convnet"): [smoke]})
    glad_dm = next(row for row in averaged.rows if row[:2] == ("glad", "dm"))
    assert glad_dm[-1].marks == (smoke,) and not glad_dm[-1].best


def test_a_cell_over_other_evaluators_than_its_column_is_marked_and_never_wins() -> None:
    frame = scores(
        ("pixel", "dm", "fashion-mnist", "convnet", [0.60]),
        ("pixel", "dm", "fashion-mnist", "alexnet", [0.50]),
        ("glad", "dm", "fashion-mnist", "convnet", [0.58]),
        ("glad", "dm", "fashion-mnist", "alexnet", [0.48]),
        ("ld3m", "dm", "fashion-mnist", "convnet", [0.70]),  # higher, but convnet only
    )
    rows = {row[:2]: row[2] for row in leaderboard_table(frame).rows}
    assert rows[("ld3m", "dm")].symbols == leaderboard.OTHER_EVALUATORS and not rows[("ld3m", "dm")].best
    assert rows[("pixel", "dm")].best and not rows[("pixel", "dm")].marks
    (note,) = leaderboard.mark_notes(leaderboard_table(frame))
    assert note == "§ averaged over convnet; most of its column over alexnet, convnet"
    # one evaluator set per column, or evaluators as columns: nothing to mark
    assert not any(c.marks for row in leaderboard_table(frame[frame.evaluator == "convnet"]).rows for c in row[2:])
    per_arch = leaderboard_table(frame, columns="evaluator")
    assert not any(c is not None and c.marks for row in per_arch.rows for c in row[2:])


def test_variants_of_one_prior_are_rows_of_their_own() -> None:
    from ddbench.results.report import with_prior_variants

    def run(run_id: str, options: dict, accs: list[float]) -> pd.DataFrame:
        frame = scores(("ld3m", "dm", "fashion-mnist", "convnet", accs)).assign(run_id=run_id)
        spec = json.loads(frame["spec_json"].iloc[0]) | {"prior_options": options}
        return frame.assign(spec_json=json.dumps(spec))

    frame = pd.concat([run("a", {}, [0.60, 0.62]), run("b", {"generator": "random"}, [0.70, 0.72])])
    with pytest.raises(InvalidOptionError, match="differ in run_id"):
        leaderboard_table(frame)  # one prior name, two experiments: refused, not averaged
    rows = {row[0]: row[2].text() for row in leaderboard_table(with_prior_variants(frame)).rows}
    assert rows == {"ld3m": "61.0 ± 1.0", "ld3m[generator=random]": "71.0 ± 1.0"}


def test_learning_rates_given_to_a_run_make_its_variant() -> None:
    """Runs that differ only in `--lr` are rows of their own, labelled with the rates they were given."""
    from ddbench.results.report import with_prior_variants

    def run(run_id: str, lrs: dict, accs: list[float]) -> pd.DataFrame:
        frame = scores(("ld3m", "dc", "fashion-mnist", "convnet", accs)).assign(run_id=run_id)
        spec = json.loads(frame["spec_json"].iloc[0]) | {"lrs": lrs}
        return frame.assign(spec_json=json.dumps(spec))

    frame = pd.concat([run("a", {}, [0.60, 0.62]), run("b", {"z": 0.1, "c": 0.1}, [0.70, 0.72])])
    rows = {row[0]: row[2].text() for row in leaderboard_table(with_prior_variants(frame)).rows}
    assert rows == {"ld3m": "61.0 ± 1.0", "ld3m[lr.c=0.1,lr.z=0.1]": "71.0 ± 1.0"}


def test_cell_text_is_the_plain_cell_with_its_marks_and_a_dash_when_missing() -> None:
    cell = leaderboard.Cell(mean=0.5, std=0.01, n=3, marks=(leaderboard.CellMark("†", "other settings"),))
    assert leaderboard.cell_text(cell) == "50.0 ± 1.0†"
    assert leaderboard.cell_text(None) == leaderboard.MISSING and leaderboard.cell_text("pixel") == "pixel"
