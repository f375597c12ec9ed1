"""`ddbench runs` and `ddbench show` on a store with a finished, a failed and a running run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from ddbench.cli.main import cli
from ddbench.results.provenance import Provenance
from ddbench.results.run_views import runs_rows, spec_rows
from ddbench.results.store import ResultsStore, store_path

PROVENANCE = Provenance(
    {"ddbench": "0.1.0", "torch": "2.14.1", "plugins": {"prior:pixel": "ddbench==0.1.0"}},
    "abc1234",
    {"hostname": "box", "cpu_count": 2},
)

IDENTITY = {
    "dataset": {
        "name": "fashion-mnist",
        "version": "v1",
        "options": {},
        "key": {"fingerprint": "sha256:feed"},
        "found_at": "/data/fm",
    },
    "prior": {"name": "pixel", "version": "v1", "options": {"init": "real"}, "key": {"init": "real"}},
    "matcher": {"name": "dm", "version": "v2", "options": {"batch_real": 64, "net": "convnet"}, "key": {}},
    "lrs": {"images": 1.0},
    "device": "cpu",
}


def _spec(prior: str, matcher: str, ipc: int, **extra) -> dict:
    return {"dataset": "fashion-mnist", "prior": prior, "matcher": matcher, "ipc": ipc, "res": None, "iterations": 200, "seed": 0,
            "dsa": True, "evaluators": ["convnet", "alexnet"], "eval_seeds": [0, 1], "protocol": "dc", "eval_epochs": None, "report": "final",
            "prior_options": {}, "matcher_options": {}, "lrs": {}, **extra}  # fmt: skip


@pytest.fixture()
def out(tmp_path: Path) -> Path:
    run_dir = tmp_path / "runs" / "fashion-mnist" / "pixel-dm-ipc1-aaaa"
    run_dir.mkdir(parents=True)
    (run_dir / "synthetic.json").write_text(json.dumps({"final_loss": 0.01234}))
    (run_dir / "grid.png").write_bytes(b"\x89PNG")
    with ResultsStore(store_path(tmp_path), provenance=PROVENANCE) as store:
        store.start_run("aaaa1111", _spec("pixel", "dm", 1, identity=IDENTITY), run_dir)
        store.finish_run("aaaa1111", 125.0, 3 * 2**30 // 2, 0.625)
        for seed, (convnet, alexnet) in enumerate([(0.60, 0.40), (0.62, 0.44)]):
            store.add_score("aaaa1111", "convnet", seed, {"name": "dc"}, convnet, None, 12.0, 1.0, 2**30)
            store.add_score("aaaa1111", "alexnet", seed, {"name": "dc"}, alexnet, None, 30.0, 2.0, 2**31)
        store.start_run("bbbb2222", _spec("ld3m", "dc", 10), tmp_path / "runs" / "x")
        store.fail_run("bbbb2222", "OutOfMemoryError: CUDA out of memory\nTraceback line 2")
        store.start_run("cccc3333", _spec("pixel", "mtt", 1), None)
    return tmp_path


def _invoke(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def test_runs_lists_every_run_with_status_and_the_error_of_a_failed_one(out):
    text = _invoke("runs", "--out", str(out))
    for expected in ("aaaa1111", "done", "bbbb2222", "failed", "OutOfMemoryError", "cccc3333", "running", "3 run(s)"):
        assert expected in text, expected
    with ResultsStore(store_path(out), read_only=True) as store:
        columns, rows = runs_rows(store.runs_frame(), store.scores_frame())
    cells = [dict(zip(columns, row)) for row in rows]
    assert [(c["run id"], c["status"]) for c in cells] == [
        ("aaaa1111", "done"),
        ("bbbb2222", "failed"),
        ("cccc3333", "running"),
    ]
    assert cells[0]["accuracy %"] == "convnet 61.0 ± 1.0 · alexnet 42.0 ± 2.0"
    assert (cells[0]["distil"], cells[0]["s/it"], cells[0]["error"]) == ("2m05s", "0.625", "")
    # the first line of the error; `show` has it all
    assert cells[1]["error"] == "OutOfMemoryError: CUDA out of memory" and cells[1]["accuracy %"] == "—"


def test_runs_say_when_an_evaluator_has_fewer_seeds_than_asked(out):
    """A run still being evaluated must not read as a finished mean ("vit 43.0 ± 0.0")."""
    with ResultsStore(store_path(out)) as store:
        store.add_score("cccc3333", "convnet", 0, {"name": "dc"}, 0.43, None, 12.0, 1.0, None)
        columns, rows = runs_rows(store.runs_frame(), store.scores_frame())
    cells = {row[0]: dict(zip(columns, row)) for row in rows}
    assert cells["cccc3333"]["accuracy %"] == "convnet 43.0 ± 0.0 (1/2 seeds)"
    assert cells["aaaa1111"]["accuracy %"] == "convnet 61.0 ± 1.0 · alexnet 42.0 ± 2.0"


def test_runs_filters(out):
    text = _invoke("runs", "--out", str(out), "--prior", "pixel")
    assert "aaaa1111" in text and "cccc3333" in text and "bbbb2222" not in text
    text = _invoke("runs", "--out", str(out), "--algo", "dm,dc", "--dataset", "fashion-mnist")
    assert "aaaa1111" in text and "bbbb2222" in text and "cccc3333" not in text
    text = _invoke("runs", "--out", str(out), "--status", "failed")
    assert "bbbb2222" in text and "aaaa1111" not in text
    # a name no run has is a typo or a wrong store, said as the leaderboard says it (exit 2)
    typo = str(CliRunner().invoke(cli, ["runs", "--out", str(out), "--algo", "dn"]).exception)
    assert "has matcher 'dn'. Did you mean 'dm'? Recorded: dc, dm, mtt" in typo
    assert "No runs" in CliRunner().invoke(cli, ["runs", "--out", str(out), "--prior", "pixel", "--algo", "dc"]).output


def test_runs_rows_drop_the_error_column_when_nothing_failed(out):
    with ResultsStore(store_path(out), read_only=True) as store:
        columns, rows = runs_rows(store.runs_frame(), store.scores_frame(), {"matcher": ["dm"]})
    assert "error" not in columns and len(rows) == 1 and len(rows[0]) == len(columns)


def test_show_is_a_readable_record_of_one_run(out):
    text = _invoke("show", "aaaa", "--out", str(out))
    for expected in (
        "run aaaa1111", "done",
        "dm v2 (batch_real=64, net=convnet)", "pixel v1 (init=real)", "sha256:feed", "images=1.0",  # the identity record
        "convnet", "61.0 ± 1.0", "s0: 60.0  s1: 62.0", "alexnet", "42.0 ± 2.0",  # accuracy in %, per seed
        "2m05s wall", "0.625 s/it", "1.50 GiB", "1.00 GiB", "2.00 GiB", "12.0 s",  # cost in human units
        "final loss    0.01234", "torch 2.14.1", "abc1234", "box, 2 CPUs", "grid.png",
    ):  # fmt: skip
        assert expected in text, expected
    assert "0.6" not in text.replace("0.625", "")  # no fractions where the rest of the tool shows %
    assert "(missing)" not in text


def test_show_a_failed_run_has_its_whole_error(out):
    text = _invoke("show", "bbbb", "--out", str(out))
    assert "failed" in text and "OutOfMemoryError: CUDA out of memory" in text and "Traceback line 2" in text
    assert "no scores stored yet" in text and "grid.png (missing)" in text


def test_show_and_runs_write_nothing(out):
    sqlite_own = {"results.sqlite-wal", "results.sqlite-shm"}  # SQLite's shared memory of a WAL reader
    before, data = {p.name for p in out.iterdir()} - sqlite_own, store_path(out).read_bytes()
    _invoke("runs", "--out", str(out))
    _invoke("show", "aaaa", "--out", str(out))
    assert {p.name for p in out.iterdir()} - sqlite_own == before and store_path(out).read_bytes() == data
    result = CliRunner().invoke(cli, ["runs", "--out", str(out / "nowhere")])
    assert result.exit_code != 0 and not (out / "nowhere").exists()


def test_spec_rows_without_identity_show_options_as_typed():
    rows = dict(spec_rows(_spec("pixel", "dm", 1, matcher_options={"batch_real": 12})))
    assert rows["matcher"] == "dm (batch_real=12)" and rows["evaluation"] == "convnet, alexnet × 2 seed(s); protocol dc"


def test_show_with_an_ambiguous_prefix_lists_the_runs_it_matches(out):
    with ResultsStore(store_path(out)) as store:
        store.start_run("aaaa9999", _spec("pixel", "dc", 1), None)
    message = str(CliRunner().invoke(cli, ["show", "aaaa", "--out", str(out)]).exception)
    assert "'aaaa' matches 2 runs: aaaa1111, aaaa9999; type more of the id" in message
    assert "bbbb2222" not in message
