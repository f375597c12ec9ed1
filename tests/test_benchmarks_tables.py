"""The benchmark harness: records written by `benchmarks/record.py` render into the README's
generated sections (`benchmarks/tables.py`), and the committed README matches its records."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture(scope="module")
def harness():
    sys.path.insert(0, str(BENCHMARKS))  # the scripts import each other as top-level modules
    try:
        yield importlib.import_module("record"), importlib.import_module("tables")
    finally:
        sys.path.remove(str(BENCHMARKS))


def test_an_emitted_record_renders_as_its_table_with_command_commit_and_machine(harness, tmp_path, monkeypatch):
    record, tables = harness
    monkeypatch.setenv("DDBENCH_BENCH_OUT", str(tmp_path))
    monkeypatch.setattr(sys, "argv", ["benchmarks/bench_x.py", "--seeds", "3"])
    figure = record.table(["setting", "s/it"], [["a | b", 1.5], ["c", None]], title="Speed", note="2 threads")
    path = record.emit("bench_x", [figure], settings={"seeds": 3})

    written = json.loads(path.read_text())
    assert written["command"] == "python benchmarks/bench_x.py --seeds 3"
    assert written["figures"]["settings"] == {"seeds": 3}
    assert written["machine"] and "commit" in written
    text = "intro\n<!-- figures: bench_x -->\nstale\n<!-- /figures -->\nafter\n"
    rendered = tables.render_readme(text, tmp_path)
    assert rendered.startswith("intro\n<!-- figures: bench_x -->\n**Speed**\n\n| setting | s/it |\n| --- | --- |\n")
    assert "| a \\| b | 1.5 |\n| c |  |" in rendered  # a | in a cell is escaped, None is empty
    assert "2 threads" in rendered
    assert "`python benchmarks/bench_x.py --seeds 3`" in rendered and written["machine"] in rendered
    assert "stale" not in rendered and rendered.endswith("<!-- /figures -->\nafter\n")
    assert tables.render_readme(rendered, tmp_path) == rendered  # rendering is idempotent


def test_a_transcribed_record_says_so(harness, tmp_path):
    _, tables = harness
    transcribed = {
        "transcribed": True, "command": "python benchmarks/bench_y.py", "commit": "0123456789abcdef",
        "commit_date": "2026-11-27T13:00:38+00:00", "machine": "2-core machine",
        "figures": {"tables": [{"title": None, "columns": ["a"], "rows": [["1"]], "note": None}]},
    }  # fmt: skip
    (tmp_path / "y.json").write_text(json.dumps(transcribed))
    rendered = tables.render_readme("<!-- figures: y -->\n<!-- /figures -->\n", tmp_path)
    assert "Transcribed from this README as of commit 0123456789ab (2026-11-27)" in rendered
    assert "`python benchmarks/bench_y.py`" in rendered and "2-core machine" in rendered


def test_write_record_keeps_figures_of_any_shape(harness, tmp_path, monkeypatch):
    record, _ = harness
    monkeypatch.setenv("DDBENCH_BENCH_OUT", str(tmp_path))
    path = record.write_record("raw", {"rows": [{"x": 1}]})
    assert json.loads(path.read_text())["figures"] == {"rows": [{"x": 1}]}


def test_table_rejects_rows_of_the_wrong_width(harness):
    record, _ = harness
    with pytest.raises(ValueError, match="rows of 2 cells"):
        record.table(["a", "b"], [["1"]])


def test_a_section_without_its_record_fails(harness, tmp_path):
    _, tables = harness
    with pytest.raises(SystemExit, match="missing"):
        tables.render_readme("<!-- figures: missing -->\n<!-- /figures -->\n", tmp_path)


def test_the_readme_is_generated_from_the_committed_records(harness):
    """A hand edit of a generated table, or a record changed without re-rendering, fails here:
    run `python benchmarks/tables.py`."""
    _, tables = harness
    text = tables.README.read_text(encoding="utf-8")
    assert tables.render_readme(text) == text
    names = tables.sections(text)
    assert len(names) == len(set(names)), "a record is shown twice"
    assert sorted(names) == sorted(p.stem for p in tables.RESULTS.glob("*.json")), "a record no section shows"
    for name in names:
        record = tables.load_record(name)
        assert record["command"] and record["machine"] and record["commit"]
        for figure in record["figures"]["tables"]:
            assert all(len(row) == len(figure["columns"]) for row in figure["rows"]), name


def test_spec_runs_go_through_the_executor_and_read_back(harness, tmp_path, fmnist_slice):
    """`spec_runs.run_specs` takes `ddbench run`'s path: the executor's run log and lock, the store's row."""
    from ddbench.engine.spec import RunEnv, RunSpec
    from ddbench.results.store import ResultsStore, store_path

    spec_runs = importlib.import_module("spec_runs")
    env = RunEnv(out=tmp_path, data_root=str(fmnist_slice))
    spec = RunSpec(dataset="fashion-mnist", matcher="real", ipc=1, eval_epochs=1, eval_seeds=(0,), test_size=40)
    (resolved,) = spec_runs.run_specs([spec], env, threads=1, fresh_process=False)
    assert (env.run_dir(resolved) / "run.log").exists()  # written by ddbench.running.executor.execute_task
    with ResultsStore(store_path(tmp_path)) as store:
        accuracy, seeds, *_ = spec_runs.result_cells(store, spec, env)
    assert seeds == 1 and "±" in accuracy
    assert spec_runs.run_specs([spec], env, fresh_process=False) == [resolved]  # in the store: skipped


def test_store_scores_records_what_the_leaderboard_shows(harness, tmp_path, fmnist_slice, monkeypatch):
    """`store_scores.py` turns a store's scores into a record: one row per prior and matcher, mean ± std."""
    from ddbench.engine.spec import RunEnv, RunSpec

    spec_runs = importlib.import_module("spec_runs")
    store_scores = importlib.import_module("store_scores")
    env = RunEnv(out=tmp_path / "store", data_root=str(fmnist_slice))
    spec = RunSpec(dataset="fashion-mnist", matcher="real", ipc=1, eval_epochs=1, eval_seeds=(0, 1), test_size=40)
    spec_runs.run_specs([spec], env, threads=1, fresh_process=False)
    monkeypatch.setenv("DDBENCH_BENCH_OUT", str(tmp_path / "records"))
    monkeypatch.setattr(sys, "argv", ["store_scores.py", "--out", str(tmp_path / "store"), "--evaluators", "convnet"])
    store_scores.main()
    record = json.loads((tmp_path / "records" / "store_scores.json").read_text())
    (figure,) = record["figures"]["tables"]
    assert figure["columns"] == ["prior", "matcher", "fashion-mnist"]
    ((prior, matcher, cell),) = figure["rows"]
    assert (prior, matcher) == ("pixel", "real") and "±" in cell
    assert str(tmp_path / "store") in figure["note"]
