"""Paper-shaped leaderboards of suites (golden files), --compare paper, and the self-contained HTML report.

Golden files live in tests/golden/; after an intended change, regenerate them with
``DDBENCH_UPDATE_GOLDEN=1 pytest tests/test_report.py`` and review the diff.
"""

from __future__ import annotations

import doctest
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from ddbench import registry
from ddbench.cli.main import cli, main
from ddbench.engine.spec import RunEnv, RunSpec
from ddbench.errors import InvalidOptionError
from ddbench.results import paper, report
from ddbench.results.leaderboard import Cell, Delta, PaperCell, format_table
from ddbench.results.provenance import Provenance
from ddbench.results.report import grids as report_grids
from ddbench.results.store import ResultsStore, store_path
from ddbench.running.identity import plugin_labels, resolve_spec
from ddbench.running.suites import load_suite

GOLDEN = Path(__file__).parent / "golden"
PRIOR_BASE = {
    "pixel": 0.20,
    "glad": 0.25,
    "glad-random": 0.24,
    "glad-trained": 0.26,
    "ld3m": 0.30,
    "ld3m-trained": 0.29,
}
MATCHER_BASE = {"dc": 0.00, "dm": -0.02, "mtt": 0.03}
EVALUATOR_STEP = {"alexnet": 0.000, "vgg11": 0.010, "resnet18": 0.020, "vit": -0.010, "convnet": 0.030}


def accuracy(keys: dict, dataset_index: int, evaluator: str, seed: int) -> float:
    """A known, readable score: prior and matcher set the level, then dataset, evaluator and seed."""
    prior = keys.get("prior", "pixel")
    generator_bonus = {"ffhq": -0.005, "random": 0.005}.get(keys.get("generator", ""), 0.0)
    return round(
        PRIOR_BASE.get(prior, 0.2) + MATCHER_BASE[keys["matcher"]] + generator_bonus
        + 0.01 * dataset_index + EVALUATOR_STEP[evaluator] + 0.004 * (seed - 1),
        6,
    )  # fmt: skip


def suite_runs(name: str) -> list[tuple[RunSpec, dict[str, str]]]:
    return [(r.spec, r.labels) for r in load_suite(name).expand(require_env=False, validate=False)]


def fill_store(path: Path, name: str, skip: int | None = 7, partial: int = 5, seeds: int | None = None) -> None:
    """Scores for the suite's runs: runs 3, 3 + ``skip``, 3 + 2·``skip`` … are left out (missing
    cells) and run ``partial`` is scored by its first evaluator only (an incomplete average);
    ``seeds`` per evaluator (default: as many as the suite asks)."""
    layout = load_suite(name).layout
    runs = suite_runs(name)
    datasets = list(dict.fromkeys(spec.dataset for spec, _ in runs))
    with ResultsStore(path, provenance=Provenance({}, None, {})) as store:
        for index, (spec, labels) in enumerate(runs):
            if skip is not None and index % skip == 3:
                continue
            # the generator as a resolved run records it (`plugin_labels`), which the report reads
            labelled = {**spec.to_dict(), "identity": {"prior": {"labels": recorded(spec.prior, spec.prior_options)}}}
            keys = report.run_keys(labelled, labels, layout.paper_table, ("prior", "matcher", "generator"))
            store.start_run(spec.run_id, spec.to_dict(), None)
            store.finish_run(spec.run_id, 1.0, None, None)
            evaluators = spec.evaluators[:1] if index == partial else spec.evaluators
            for evaluator in evaluators:
                for seed in range(len(spec.eval_seeds) if seeds is None else seeds):
                    acc = accuracy(keys, datasets.index(spec.dataset), evaluator, seed)
                    store.add_score(
                        spec.run_id, evaluator, seed, {"name": spec.protocol_key()}, acc, None, 1.0, 1.0, None
                    )


def frames(path: Path):
    with ResultsStore(path, provenance=Provenance({}, None, {})) as store:
        return store.scores_frame(), store.runs_frame()


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("DDBENCH_UPDATE_GOLDEN"):
        path.parent.mkdir(exist_ok=True)
        path.write_text(text + "\n", encoding="utf-8")
    assert path.exists(), f"missing golden file {path}; create it with DDBENCH_UPDATE_GOLDEN=1"
    assert text + "\n" == path.read_text(encoding="utf-8")


# ----------------------------------------------------------------------------- layouts


@pytest.mark.parametrize("name", ["table1", "table2", "table3", "table4"])
def test_suite_layout_golden(tmp_path: Path, name: str) -> None:
    fill_store(store_path(tmp_path), name)
    scores, runs = frames(store_path(tmp_path))
    suite = load_suite(name)
    made = report.suite_table(scores, runs, suite_runs(name), suite.layout, name)
    published = paper.paper_table(name)
    table = made.table
    # the paper's rows, in its order, and its columns (the aggregate where the paper has it)
    assert table.columns[: table.n_keys] == tuple(suite.layout.rows)
    assert [c for c in table.value_columns if c not in ("all", "average")] == list(published.value_columns)
    assert len(table.rows) == len(published.rows)
    assert made.not_run, "some runs were left out"
    check_golden(f"{name}.md", format_table(table, "markdown"))


def test_table2_all_is_the_mean_of_complete_rows(tmp_path: Path) -> None:
    fill_store(store_path(tmp_path), "table2", skip=None, partial=-1)  # every run scored
    scores, runs = frames(store_path(tmp_path))
    made = report.suite_table(scores, runs, suite_runs("table2"), load_suite("table2").layout, "table2")
    assert made.table.value_columns[0] == "all"  # first, as in the paper
    for row in made.table.rows:
        cells = row[made.table.n_keys + 1 :]
        assert row[2].mean == pytest.approx(sum(c.mean for c in cells) / len(cells))
        assert row[2].std == pytest.approx(sum(c.std for c in cells) / len(cells))
    # drop one subset's scores of a row: its "All" goes missing, the rest stays
    spec = next(
        s for s, _ in suite_runs("table2") if s.prior == "pixel" and s.matcher == "dc" and s.dataset == "imagenet-e"
    )
    kept = scores[scores["run_id"] != spec.run_id]
    made = report.suite_table(kept, runs, suite_runs("table2"), load_suite("table2").layout, "table2")
    pixel_dc = next(r for r in made.table.rows if r[:2] == ("pixel", "dc"))
    assert pixel_dc[2] is None and pixel_dc[-1] is None and isinstance(pixel_dc[3], Cell)


def test_table1_cell_averages_the_four_unseen_architectures(tmp_path: Path) -> None:
    fill_store(store_path(tmp_path), "table1", skip=None, partial=-1, seeds=2)
    scores, runs = frames(store_path(tmp_path))
    made = report.suite_table(scores, runs, suite_runs("table1"), load_suite("table1").layout, "table1")
    ld3m_dc = next(r for r in made.table.rows if r[:2] == ("ld3m", "dc"))
    # seeds 0/1 → ±0.2 per architecture; architecture offsets 0, +1, +2, −1 → mean +0.5
    assert ld3m_dc[2].text() == "30.3 ± 0.2" and ld3m_dc[2].n == 8
    ld3m_mtt = next(r for r in made.table.rows if r[:2] == ("ld3m", "mtt"))
    assert ld3m_mtt[2].text() == "33.3 ± 0.2"
    # 2 of the suite's 5 seeds: every cell says so and none is ranked
    assert ld3m_mtt[2].symbols == "*" and not ld3m_mtt[2].best and not ld3m_dc[2].best
    assert "run " in made.notes[-1] and "has 2 of 5 seeds of alexnet" in " ".join(made.notes)
    assert [r[:2] for r in made.table.rows][:3] == [("pixel", "mtt"), ("pixel", "dc"), ("pixel", "dm")]  # paper order


def test_a_smoke_run_of_the_suite_fills_its_cell(tmp_path: Path) -> None:
    # the same suite run with fewer iterations and epochs has another run id but the same cell
    suite = load_suite("table4")
    smoke = suite.expand(overrides={"budget": "smoke"}, require_env=False, validate=False)
    with ResultsStore(store_path(tmp_path), provenance=Provenance({}, None, {})) as store:
        for spec in (smoke[0].spec, RunSpec.from_dict({**smoke[0].spec.to_dict(), "iterations": 7})):
            store.start_run(spec.run_id, spec.to_dict(), None)
            store.finish_run(spec.run_id, 1.0, None, None)
            for evaluator in spec.evaluators:
                store.add_score(spec.run_id, evaluator, 0, {"name": spec.protocol_key()}, 0.5, None, 1.0, 1.0, None)
        failed = RunSpec.from_dict({**smoke[0].spec.to_dict(), "iterations": 9})
        store.start_run(failed.run_id, failed.to_dict(), None)
        store.fail_run(failed.run_id, "killed")
    scores, runs = frames(store_path(tmp_path))
    made = report.suite_table(scores, runs, suite_runs("table4"), suite.layout, "table4")
    dc_pixel = next(r for r in made.table.rows if r[:2] == ("dc", "pixel"))
    assert dc_pixel[2].text() == "50.0 ± 0.0" and dc_pixel[-1].text() == "50.0 ± 0.0"
    (also,) = [note for note in made.notes if "also stored" in note]  # two candidates: which one was used is said
    assert failed.run_id not in also, "a failed attempt is no candidate worth naming"


# ---------------------------------------------------------------------- --compare paper


def test_compare_paper_on_known_rows(tmp_path: Path) -> None:
    suite = load_suite("table4")
    runs = suite_runs("table4")
    wanted = {("dc", "pixel"): [0.30, 0.31, 0.29], ("dm", "glad-random"): [0.20, 0.20, 0.20]}
    with ResultsStore(store_path(tmp_path), provenance=Provenance({}, None, {})) as store:
        for spec, labels in runs:
            accs = wanted.get((spec.matcher, labels["prior"]))
            if accs is None:
                continue
            store.start_run(spec.run_id, spec.to_dict(), None)
            for evaluator in spec.evaluators:
                for seed, acc in enumerate(accs):
                    store.add_score(
                        spec.run_id, evaluator, seed, {"name": spec.protocol_key()}, acc, None, 1.0, 1.0, None
                    )
    scores, stored = frames(store_path(tmp_path))
    table = report.suite_table(scores, stored, runs, suite.layout, "table4", compare=True).table
    assert table.columns[2:5] == ("alexnet", "alexnet paper", "alexnet Δ")
    assert table.columns[-3:] == ("average", "average paper", "average Δ")
    rows = {row[:2]: dict(zip(table.columns, row)) for row in table.rows}
    dc_pixel = rows[("dc", "pixel")]
    # ours 30.0 ± 0.8; the paper's Table 4, DC pixel: AlexNet 25.9 ± 0.2, average 26.0 ± 0.4
    assert dc_pixel["alexnet"].text() == "30.0 ± 0.8"
    assert isinstance(dc_pixel["alexnet paper"], PaperCell) and dc_pixel["alexnet paper"].text() == "25.9 ± 0.2"
    assert isinstance(dc_pixel["alexnet Δ"], Delta) and dc_pixel["alexnet Δ"].text() == "+4.1"
    assert dc_pixel["average paper"].text() == "26.0 ± 0.4" and dc_pixel["average Δ"].text() == "+4.0"
    dm_random = rows[("dm", "glad-random")]
    assert dm_random["vit paper"].text() == "21.4 ± 0.2" and dm_random["vit Δ"].text() == "-1.4"
    # a row we have not run: the paper's number, ours and the difference missing
    ld3m = rows[("dc", "ld3m-trained")]
    assert ld3m["vgg11"] is None and ld3m["vgg11 Δ"] is None and ld3m["vgg11 paper"].text() == "31.5 ± 0.3"
    assert ld3m["vgg11 paper"].best  # the paper's best VGG11 number of the DC and DM rows
    check_golden("table4-compare.md", format_table(table, "markdown"))


def test_compare_needs_a_paper_table(tmp_path: Path) -> None:
    class Layout:
        rows, columns, all_column, title, paper_table = ("prior", "matcher"), "dataset", False, "", None

    scores, runs = frames(store_path(tmp_path))
    with pytest.raises(InvalidOptionError, match="no paper table"):
        report.suite_table(scores, runs, suite_runs("table4"), Layout(), "mine", compare=True)


# ------------------------------------------------------------------- the paper's numbers


def test_paper_tables_are_shipped_as_package_data() -> None:
    assert paper.paper_table_names() == ["table1", "table2", "table3", "table4", "table6", "table7"]
    t1 = paper.paper_table("table1")
    assert t1.row_keys == ("prior", "matcher") and len(t1.rows) == 9 and t1.aggregate_column is None
    assert t1.cells[(("ld3m", "dc"), "imagenet-a")] == pytest.approx(
        (0.423, 0.013)
    )  # Table 1, LD3M + DC, ImageNet-A: 42.3 ± 1.3
    assert paper.paper_table("table3").row_keys == ("prior", "generator")
    assert paper.paper_table("table3").settings["matcher"] == "dc"
    assert paper.paper_table("table2").columns[0] == "all"
    frame = paper.paper_table("table4").frame()
    assert len(frame) == 8 * 5 and set(frame.columns) == {"matcher", "prior", "column", "mean", "std"}
    with pytest.raises(InvalidOptionError, match="Did you mean 'table4'"):
        paper.paper_table("tabel4")
    assert doctest.testmod(paper).failed == 0


def test_paper_averages_follow_the_documented_convention() -> None:
    # "All"/"average" = mean of the other columns' means ± mean of their stds (to the printed 0.1)
    for name in ("table2", "table3", "table4", "table6"):
        table = paper.paper_table(name)
        for row in table.rows:
            cells = [table.cells[(row, c)] for c in table.value_columns]
            agg = table.cells[(row, table.aggregate_column)]
            assert agg[0] == pytest.approx(sum(m for m, _ in cells) / len(cells), abs=0.0006)
            assert agg[1] == pytest.approx(sum(s for _, s in cells) / len(cells), abs=0.0006)


def recorded(prior: str, options: dict) -> dict:
    """What a resolved run records of its prior (`ddbench.running.identity.plugin_labels`)."""
    return plugin_labels(registry.get_plugin_class("prior", prior), options)


def test_paper_row_names_from_spec_options() -> None:
    def name(table, field, prior, options):
        return paper.paper_row_name(table, field, prior, options, recorded(prior, options))

    assert name("table4", "prior", "glad", {"backend": "tiny"}) == "glad-random"
    assert name("table4", "prior", "glad", {"backend": "stylegan-xl", "weights": "/m/cifar10.pkl"}) == "glad-trained"
    assert name("table4", "prior", "ld3m", {"model_dir": "/m/ld3m/cifar10"}) == "ld3m-trained"
    assert name("table4", "prior", "ld3m", {}) is None  # a random LDM is not a row of Table 4
    assert name("table6", "prior", "ld3m", {"diffusion": "off"}) == "ld3m-no-diffusion"
    assert name("table6", "prior", "ld3m", {}) == "ld3m"  # the plugin's default diffusion="on"
    assert name("table7", "variant", "ld3m", {"learn": "c"}) == "ld3m-learn-c"
    assert name("table7", "variant", "ld3m", {"residual": "none"}) == "ld3m-learn-zc-no-eq12"
    assert name("table7", "variant", "ld3m", {}) == "ld3m-learn-zc-eq12"
    assert name("table1", "prior", "ld3m", {}) is None  # tables 1-3 use our prior names as they are

    def gen(prior, options):
        return paper.generator_name(prior, options, recorded(prior, options))

    assert [gen("pixel", {}), gen("glad", {}), gen("ld3m", {"model_dir": "/m/ld3m/cin256-v2"})] == [
        "-",
        "random",
        "imagenet",
    ]
    assert gen("glad", {"weights": "/models/stylegan-xl/ffhq256.pkl"}) == "ffhq"
    assert gen("glad", {"weights": "/models/mine.safetensors"}) == "mine"

    def label(prior, options):
        return report.prior_label(prior, options, recorded(prior, options))

    assert label("ld3m", {"diffusion": "off", "checkpoint": False}) == "ld3m[diffusion=off]"
    assert label("ld3m", {"learn": "zc"}) == "ld3m"  # a default is not a variant
    assert (
        label("glad", {"backend": "stylegan-xl", "weights": "/m/ffhq256.pkl"})
        == "glad[backend=stylegan-xl,generator=ffhq]"
    )


def test_a_run_that_recorded_no_labels_shows_its_options_without_importing_its_prior() -> None:
    assert paper.generator_name("glad", {}) == paper.UNRECORDED
    assert report.prior_label("ld3m", {"diffusion": "off", "learn": "zc"}) == "ld3m[diffusion=off,learn=zc]"
    assert report.prior_label("ld3m", {}) == "ld3m"


# ------------------------------------------------------------------------------- HTML


def make_demo_store(out: Path) -> list[str]:
    """Two fashion-mnist runs with scores; the first has a grid.png, the second's is missing."""
    run_ids = []
    with ResultsStore(store_path(out), provenance=Provenance({}, None, {})) as store:
        for matcher, acc in (("dm", 0.61), ("real", 0.52)):
            spec = RunSpec(dataset="fashion-mnist", prior="pixel", matcher=matcher, ipc=1, iterations=20)
            run_dir = out / "runs" / "fashion-mnist" / f"pixel-{matcher}-{spec.run_id}"
            run_dir.mkdir(parents=True)
            if matcher == "dm":
                Image.new("L", (28 * 10, 28 * 10), color=128).save(run_dir / "grid.png")
            store.start_run(spec.run_id, spec.to_dict(), run_dir)
            store.finish_run(spec.run_id, 1.0, None, None)
            for seed in range(2):
                store.add_score(spec.run_id, "convnet", seed, {"name": "dc"}, acc + 0.01 * seed, None, 1.0, 1.0, None)
            run_ids.append(spec.run_id)
    return run_ids


def assert_self_contained(page: str) -> None:
    assert report.external_references(page) == []
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page, flags=re.I)
    assert "<script" not in page.lower() and "@import" not in page and "<link" not in page.lower()
    for src in re.findall(r'<img src="([^"]*)"', page):
        assert src.startswith("data:image/png;base64,")


def test_html_report_of_the_whole_store_is_self_contained(tmp_path: Path) -> None:
    run_ids = make_demo_store(tmp_path)
    with ResultsStore(store_path(tmp_path), provenance=Provenance({}, None, {})) as store:
        scores, runs = store.scores_frame(), store.runs_frame()
    tables = report.store_tables(scores, runs)
    page = report.html_report(tables, runs, store_dir=tmp_path)
    assert_self_contained(page)
    assert [t.title for t in tables] == ["IPC 1, resolution default, protocol dc"]
    assert page.count("<table>") == 1 and "<strong>61.5 ± 0.5</strong>" in page and "52.5 ± 0.5" in page
    assert page.count('<img src="data:image/png;base64,') == 1  # the dm run's grid
    assert f"image grid missing: {tmp_path / 'runs' / 'fashion-mnist'}" in page  # the real run's
    assert all(f'id="run-{r}"' in page for r in run_ids)


def test_html_report_of_a_suite_has_its_table_and_grids(tmp_path: Path) -> None:
    fill_store(store_path(tmp_path), "table4")
    scores, runs = frames(store_path(tmp_path))
    made = report.suite_table(scores, runs, suite_runs("table4"), load_suite("table4").layout, "table4", compare=True)
    page = report.html_report([made], runs, store_dir=tmp_path, title="Table 4")
    assert_self_contained(page)
    assert '<th colspan="3">alexnet</th>' in page and "<th>ours</th><th>paper</th><th>Δ</th>" in page
    assert 'class="missing"' in page and "Not run yet" in page and "30.1 ± 0.5" in page  # DC GLaD-random AlexNet
    # runs without a directory are listed with a visible note, never a broken image
    assert page.count("image grid missing: no run directory recorded") == len(made.run_ids) > 0


# -------------------------------------------------------------------------------- CLI


def test_cli_suite_compare_markdown_and_html(tmp_path: Path) -> None:
    fill_store(store_path(tmp_path), "table4")
    runner = CliRunner()
    result = runner.invoke(
        cli, ["leaderboard", "--out", str(tmp_path), "--suite", "table4", "--compare", "paper", "--format", "markdown"]
    )
    assert result.exit_code == 0, result.output
    assert "| matcher   | prior        | alexnet        | alexnet paper" in result.output
    assert "Table 4" in result.output and "Δ" in result.output
    out_file = tmp_path / "t4.md"
    result = runner.invoke(
        cli,
        ["leaderboard", "--out", str(tmp_path), "--suite", "table4", "--format", "markdown", "--output", str(out_file)],
    )
    assert result.exit_code == 0, result.output
    assert out_file.read_text() == (GOLDEN / "table4.md").read_text()
    result = runner.invoke(cli, ["leaderboard", "--out", str(tmp_path), "--suite", "table4", "--format", "html"])
    assert result.exit_code == 0, result.output
    assert_self_contained((tmp_path / "report-table4.html").read_text())
    result = runner.invoke(
        cli, ["leaderboard", "--out", str(tmp_path), "--format", "html", "--output", str(tmp_path / "all.html")]
    )
    assert result.exit_code == 0, result.output
    page = (tmp_path / "all.html").read_text()
    assert_self_contained(page) and "IPC 1, resolution default, protocol dc" in page


def test_cli_compare_without_suite_is_a_clear_error(tmp_path: Path, capsys) -> None:
    make_demo_store(tmp_path)
    with pytest.raises(SystemExit) as info:
        main(["leaderboard", "--out", str(tmp_path), "--compare", "paper"])
    assert info.value.code == 2 and "--compare paper needs --suite" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["leaderboard", "--out", str(tmp_path), "--suite", "tabel1"])
    assert info.value.code == 2 and "Did you mean 'table1'" in capsys.readouterr().err


def test_golden_files_are_plain_markdown_tables() -> None:
    for path in GOLDEN.glob("table*.md"):
        lines = path.read_text().splitlines()
        assert lines[1].startswith("|--") and all(line.startswith("|") for line in lines), path


# ------------------------------------------------------------- grids, marks, meaningless rows


def store_suite_runs(
    out: Path, runs: list[tuple[RunSpec, dict[str, str]]], accuracy_of=None, grids: bool = True
) -> None:
    """Each run stored with one score per evaluator and seed it asks for, and (``grids``) a small grid.png."""
    import torch

    from ddbench.engine.image_grid import save_grid

    with ResultsStore(store_path(out), provenance=Provenance({}, None, {})) as store:
        for index, (spec, _) in enumerate(runs):
            run_dir = out / "runs" / spec.dataset / f"{spec.prior}-{spec.matcher}-ipc{spec.ipc}-{spec.run_id}"
            run_dir.mkdir(parents=True)
            if grids:
                labels = torch.arange(10).repeat_interleave(spec.ipc)
                save_grid(
                    torch.rand(len(labels), 1, 4, 4),
                    labels,
                    run_dir / "grid.png",
                    [f"class {c}" for c in range(10)],
                    min_cell=8,
                )
            store.start_run(spec.run_id, spec.to_dict(), run_dir)
            store.finish_run(spec.run_id, 1.0, None, None)
            acc = accuracy_of(spec) if accuracy_of else 0.3 + 0.01 * index
            for evaluator in spec.evaluators:
                for seed in spec.eval_seeds:
                    store.add_score(
                        spec.run_id, evaluator, seed, {"name": spec.protocol_key()}, acc, None, 1.0, 1.0, None
                    )


def grid_order(page: str, section: str) -> list[str]:
    """The run ids of the figures in one section of the page, in order."""
    match = re.search(f'<section id="{re.escape(section)}">(.*?)</section>', page, flags=re.S)
    assert match, f"no section {section}"
    return re.findall(r'<figure class="grid" id="run-([0-9a-f]+)">', match.group(1))


def test_report_grids_come_per_ipc_in_table_order_linked_both_ways(tmp_path: Path) -> None:
    runs = suite_runs("fmnist-cpu")
    store_suite_runs(tmp_path, runs)
    scores, stored = frames(store_path(tmp_path))
    suite = load_suite("fmnist-cpu")
    made = report.suite_table(scores, stored, runs, suite.layout, "fmnist-cpu")
    page = report.html_report([made], stored, store_dir=tmp_path, title="fmnist-cpu")
    assert_self_contained(page)
    # the table's rows, each with an id and a link to its run's grid
    rows = re.findall(r'<tr id="(fmnist-cpu-row-\d+)">(.*?)</tr>', page)
    assert len(rows) == len(made.table.rows) == 20
    linked = [re.search(r'href="#run-([0-9a-f]+)"', cells).group(1) for _, cells in rows]
    ipc_of = {spec.run_id: spec.ipc for spec, _ in runs}
    assert [ipc_of[r] for r in linked] != sorted(ipc_of[r] for r in linked), "the table interleaves IPCs"
    for ipc in (1, 10):
        in_table_order = [r for r in linked if ipc_of[r] == ipc]
        assert grid_order(page, f"fmnist-cpu-ipc-{ipc}") == in_table_order and len(in_table_order) == 10
    # a figure's caption links back to the row that links to it
    row_of = dict(zip(linked, (anchor for anchor, _ in rows)))
    for run_id, anchor in row_of.items():
        figure = re.search(f'<figure class="grid" id="run-{run_id}">(.*?)</figure>', page, flags=re.S).group(1)
        assert f'<figcaption><a href="#{anchor}">' in figure
    # thumbnails: IPC 1 a strip, IPC 10 a block, both small; the PNG is embedded whole
    sizes = {
        r: tuple(map(int, re.search(f'id="run-{r}">.*?width="(\\d+)" height="(\\d+)"', page, flags=re.S).groups()))
        for r in linked
    }
    assert all(w > 3 * h and w <= report_grids.STRIP_THUMB_WIDTH for r, (w, h) in sizes.items() if ipc_of[r] == 1)
    assert all(h > w / 2 and w <= report_grids.BLOCK_THUMB_WIDTH for r, (w, h) in sizes.items() if ipc_of[r] == 10)


def test_cells_of_runs_with_other_settings_are_marked_in_the_cell_and_not_ranked(tmp_path: Path) -> None:
    suite = load_suite("table4-fmnist")
    runs = suite_runs("table4-fmnist")
    smoke = {
        r.spec.run_id: r.spec for r in suite.expand(overrides={"budget": "smoke"}, require_env=False, validate=False)
    }
    pixel_dm = next(spec for spec in smoke.values() if (spec.prior, spec.matcher) == ("pixel", "dm"))
    exact = [(spec, labels) for spec, labels in runs if spec.matcher == "dc" and spec.prior == "pixel"]
    # the smoke run scores higher than the suite's own pixel + DC run
    store_suite_runs(
        tmp_path, [(pixel_dm, {}), *exact], accuracy_of=lambda spec: 0.9 if spec is pixel_dm else 0.4, grids=False
    )
    scores, stored = frames(store_path(tmp_path))
    made = report.suite_table(scores, stored, runs, suite.layout, "table4-fmnist")
    rows = {row[:2]: row[2:] for row in made.table.rows}
    assert all(c.symbols == "†" and not c.best for c in rows[("dm", "pixel")]), (
        "every cell of the smoke row, average included"
    )
    assert all(c.best and not c.marks for c in rows[("dc", "pixel")]), "the suite's own run is the best"
    note = next(n for n in made.notes if n.startswith("† "))
    assert (
        f"run {pixel_dm.run_id[:8]} has other settings than the suite's" in note
        and "iterations 20 (suite: 500)" in note
    )
    assert "eval_epochs 50 (suite: 300)" in note
    markdown = format_table(made.table, "markdown")
    assert "90.0 ± 0.0†" in markdown and "**90.0" not in markdown and "**40.0 ± 0.0**" in markdown
    page = report.html_report([made], stored, store_dir=tmp_path)
    mark = re.search(r'<td class="num marked">90\.0 ± 0\.0<sup class="mark" title="([^"]*)">†</sup></td>', page)
    assert mark and "iterations 20 (suite: 500)" in mark.group(1)
    assert "<summary>†: 1 run(s) marked in their cells" in page
    assert re.search(r"<ul><li>† [^<]*iterations 20 \(suite: 500\)[^<]*</li></ul></details>", page)


def test_a_real_baseline_under_a_prior_without_real_images_is_marked_with_the_reason(tmp_path: Path) -> None:
    suite_file = tmp_path / "baselines.toml"
    suite_file.write_text(
        'name = "baselines"\nversion = 1\n[defaults]\ndatasets = ["fashion-mnist"]\nbudget = "smoke"\n'
        '[[grid]]\npriors = ["pixel", "glad"]\nmatchers = ["real", "dm"]\nipcs = [1]\n'
        '[layout]\nrows = ["prior", "matcher"]\ncolumns = "dataset"\n'
    )
    runs = suite_runs(str(suite_file))
    # stored as `ddbench run` stores them: resolved, with what they recorded of their plugins
    env = RunEnv(out=tmp_path, device="cpu")
    store_suite_runs(tmp_path, [(resolve_spec(spec, env), labels) for spec, labels in runs], grids=False)
    scores, stored = frames(store_path(tmp_path))
    made = report.suite_table(scores, stored, runs, load_suite(str(suite_file)).layout, "baselines")
    rows = {row[:2]: row[2] for row in made.table.rows}
    assert rows[("glad", "real")].symbols == "‡" and not rows[("glad", "real")].best
    assert not rows[("pixel", "real")].marks and not rows[("glad", "dm")].marks
    reason = next(n for n in made.notes if n.startswith("‡ "))
    assert (
        "'real' keeps the prior's initial images without distilling" in reason
        and "'glad' never starts from real images" in reason
    )
    # the whole-store report marks it too
    (table,) = report.store_tables(scores, stored)
    glad_real = next(row for row in table.table.rows if row[1:3] == ("glad", "real"))
    assert glad_real[-1].symbols == "‡"


def test_a_table_without_stored_runs_has_no_grid_column(tmp_path: Path) -> None:
    fill_store(store_path(tmp_path), "table4")
    scores, runs = frames(store_path(tmp_path))
    layout = load_suite("table4").layout
    with_runs = report.suite_table(scores, runs, suite_runs("table4"), layout, "table4", compare=True)
    assert '<th rowspan="2">grid</th>' in report.html_report([with_runs], runs, store_dir=tmp_path)
    empty = report.suite_table(scores.iloc[0:0], runs.iloc[0:0], suite_runs("table4"), layout, "table4", compare=True)
    page = report.html_report([empty], runs.iloc[0:0], store_dir=tmp_path)
    assert ">grid</th>" not in page and "No stored runs." in page


# runs `ddbench ARGS` in a fresh interpreter, then prints which plugin modules and heavy modules it imported
_IMPORTS_PROBE = """
import json, sys
from ddbench.cli.main import main
try:
    main(sys.argv[1:])
except SystemExit as exit:
    assert not exit.code, exit.code
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision", "ddbench_plugins"))))
"""


def test_reports_read_labels_from_the_store_and_import_no_plugin(tmp_path: Path) -> None:
    """Issue 15: the leaderboard and the HTML report read what runs recorded (`plugin_labels`), for runs
    from before labels what they were given; neither imports a plugin (nor torch)."""
    make_demo_store(tmp_path)  # runs from before labels: no identity
    env = RunEnv(out=tmp_path, device="cpu")
    resolved = [
        resolve_spec(RunSpec("fashion-mnist", "ld3m", "dm", 1, iterations=20, prior_options={"diffusion": "off"}), env),
        resolve_spec(RunSpec("fashion-mnist", "glad", "real", 1, iterations=20), env),
    ]
    with ResultsStore(store_path(tmp_path), provenance=Provenance({}, None, {})) as store:
        for spec in resolved:
            store.start_run(spec.run_id, spec.to_dict(), tmp_path / "runs" / spec.run_id)
            store.finish_run(spec.run_id, 1.0, None, None)
            store.add_score(spec.run_id, "convnet", 0, {"name": "dc"}, 0.4, None, 1.0, 1.0, None)
    page = tmp_path / "report.html"
    for args in ([], ["--format", "html", "--output", str(page)]):
        proc = subprocess.run(
            [sys.executable, "-c", _IMPORTS_PROBE, "leaderboard", "--out", str(tmp_path), *args],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout.strip().splitlines()[-1]) == [], args
    text = page.read_text()
    assert "ld3m[diffusion=off]" in text  # the recorded defaults leave out the rest
    assert "never starts from real images" in text  # glad + real, by the recorded declarations


def test_suite_runs_that_have_not_finished_are_named_with_their_state(tmp_path: Path) -> None:
    """A running (or killed) run and a failed one leave empty cells; the notes must say why, not
    only "missing"."""
    suite = load_suite("table4-fmnist")
    runs = suite_runs("table4-fmnist")
    store_suite_runs(tmp_path, runs[:1], grids=False)
    running, failed = runs[1][0], runs[2][0]
    with ResultsStore(store_path(tmp_path), provenance=Provenance({}, None, {})) as store:
        store.start_run(running.run_id, running.to_dict(), None)
        store.start_run(failed.run_id, failed.to_dict(), None)
        store.fail_run(failed.run_id, "DivergedError: the training loss is NaN\nTraceback ...")
    scores, stored = frames(store_path(tmp_path))
    made = report.suite_table(scores, stored, runs, suite.layout, "table4-fmnist")
    note = next(n for n in made.notes if n.startswith("Not finished"))
    assert note.startswith("Not finished (2): ")
    assert f"{running.label} prior={runs[1][1]['prior']}: running, or stopped while running" in note
    assert f"{failed.label} prior={runs[2][1]['prior']}: failed (DivergedError: the training loss is NaN;" in note
    assert "Traceback" not in note
    assert len(made.not_run) == len(runs) - 3
    page = report.html_report([made], stored, store_dir=tmp_path)
    assert "Not finished (2): " in page


def test_a_run_without_scores_for_some_evaluators_is_named(tmp_path: Path) -> None:
    """Cells of evaluators a run has not scored yet are '—'; a note says which run lacks which."""
    suite = load_suite("table4-fmnist")
    runs = suite_runs("table4-fmnist")
    fill_store(store_path(tmp_path), "table4-fmnist", skip=None, partial=0)  # run 0: its first evaluator only
    scores, stored = frames(store_path(tmp_path))
    made = report.suite_table(scores, stored, runs, suite.layout, "table4-fmnist")
    note = next(n for n in made.notes if n.startswith("Being evaluated"))
    first = runs[0][0]
    assert f"run {first.run_id[:8]} has no {', '.join(first.evaluators[1:])} score yet" in note
    assert runs[1][0].run_id[:8] not in note
