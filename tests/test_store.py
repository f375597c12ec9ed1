"""The results store (SQLite) and the provenance it records."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from ddbench.errors import CorruptFileError, InvalidOptionError
from ddbench.results import provenance
from ddbench.results.provenance import Provenance
from ddbench.results.store import RUN_COLUMNS, SCHEMA_VERSION, SCORE_COLUMNS, ResultsStore, store_path

FIXED = Provenance(versions={"ddbench": "test", "torch": "x"}, git_commit="0" * 40, host={"cpu_count": 1})

SPEC = {"dataset": "fashion-mnist", "prior": "pixel", "matcher": "dm", "ipc": 10, "res": None, "iterations": 5}
PROTOCOL = {"name": "dc", "epochs": 300, "lr": 0.01, "report": "final"}


def _score(store: ResultsStore, run_id: str, seed: int, accuracy: float, evaluator: str = "convnet",
           protocol: dict | None = None) -> None:  # fmt: skip
    store.add_score(run_id, evaluator, seed, protocol or PROTOCOL, accuracy, None, 1.5, 0.5, 1024)


@pytest.fixture()
def store(tmp_path: Path) -> ResultsStore:
    with ResultsStore(store_path(tmp_path), provenance=FIXED) as opened:
        yield opened


def test_round_trip_runs_and_scores(store: ResultsStore, tmp_path: Path) -> None:
    store.start_run("run1", SPEC, tmp_path / "runs" / "run1")
    assert store.get_run("run1")["status"] == "running"
    store.finish_run("run1", distill_seconds=12.5, peak_memory_bytes=2**20, seconds_per_iteration=2.5)
    store.add_score("run1", "convnet", 0, PROTOCOL, 0.81, 0.83, 30.0, 1.25, 4096)
    store.add_score("run1", "alexnet", 1, PROTOCOL, 0.5, None, None, None, None)

    run = store.get_run("run1")
    assert run["status"] == "done" and run["error"] is None
    assert (run["dataset"], run["prior"], run["matcher"], run["ipc"], run["res"]) == (
        "fashion-mnist",
        "pixel",
        "dm",
        10,
        None,
    )
    assert run["spec"] == SPEC
    assert run["distill_seconds"] == 12.5 and run["distill_peak_memory_bytes"] == 2**20
    assert run["seconds_per_iteration"] == 2.5
    assert run["run_dir"] == str(tmp_path / "runs" / "run1")
    assert run["versions"] == FIXED.versions and run["git_commit"] == FIXED.git_commit and run["host"] == FIXED.host
    assert run["created_at"] <= run["finished_at"]
    assert store.get_run("missing") is None

    scores = store.scores_frame()
    assert list(scores.columns) == list(SCORE_COLUMNS)
    assert len(scores) == 2
    row = scores[scores.evaluator == "convnet"].iloc[0]
    assert (row.dataset, row.prior, row.matcher, row.ipc, row.seed, row.protocol) == (
        "fashion-mnist",
        "pixel",
        "dm",
        10,
        0,
        "dc",
    )
    assert (row.accuracy, row.accuracy_max, row.report) == (0.81, 0.83, "final")
    assert (row.train_seconds, row.eval_seconds, row.peak_memory_bytes) == (30.0, 1.25, 4096)
    assert row.protocol_json == '{"epochs": 300, "lr": 0.01, "name": "dc", "report": "final"}'
    assert row.git_commit == FIXED.git_commit
    assert scores["res"].isna().all()

    runs = store.runs_frame()
    assert list(runs.columns) == list(RUN_COLUMNS)
    assert runs.run_id.tolist() == ["run1"]


def test_add_score_is_an_upsert(store: ResultsStore) -> None:
    store.start_run("run1", SPEC, None)
    _score(store, "run1", seed=0, accuracy=0.5)
    _score(store, "run1", seed=0, accuracy=0.6)  # same key: replaces
    _score(store, "run1", seed=1, accuracy=0.7)
    _score(store, "run1", seed=0, accuracy=0.4, protocol={"name": "glad", "report": "max"})
    scores = store.scores_frame().sort_values(["protocol", "seed"])
    assert scores[["protocol", "seed", "accuracy", "report"]].values.tolist() == [
        ["dc", 0, 0.6, "final"],
        ["dc", 1, 0.7, "final"],
        ["glad", 0, 0.4, "max"],
    ]
    assert store.has_score("run1", "convnet", 0, "dc")
    assert store.has_score("run1", "convnet", 0, "glad")
    assert not store.has_score("run1", "convnet", 2, "dc")
    assert not store.has_score("run1", "alexnet", 0, "dc")


def test_fail_restart_and_delete(store: ResultsStore) -> None:
    store.start_run("run1", SPEC, None)
    store.fail_run("run1", "NonFiniteLossError: loss became nan at iteration 3")
    failed = store.get_run("run1")
    assert failed["status"] == "failed" and "nan at iteration 3" in failed["error"]

    store.start_run("run1", SPEC, None)  # a failed run may be retried in place
    assert store.get_run("run1")["status"] == "running"
    assert store.get_run("run1")["error"] is None
    store.finish_run("run1", 1.0, None, None)
    _score(store, "run1", seed=0, accuracy=0.5)
    store.start_run("run1", SPEC, None)  # distilled again (its files were lost): same id, same set
    restarted = store.get_run("run1")
    assert restarted["status"] == "running" and restarted["distill_seconds"] is None
    assert store.has_score("run1", "convnet", 0, "dc")
    store.finish_run("run1", 2.0, None, None)

    assert store.delete_run("run1") is True
    assert store.get_run("run1") is None
    assert store.scores_frame().empty  # scores go with their run
    assert store.delete_run("run1") is False
    store.start_run("run1", SPEC, None)  # and it can be distilled again
    assert len(store.runs_frame()) == 1


def test_invalid_writes_name_the_fix(store: ResultsStore) -> None:
    with pytest.raises(InvalidOptionError, match="start_run"):
        _score(store, "nope", seed=0, accuracy=0.5)
    with pytest.raises(InvalidOptionError, match="start_run"):
        store.finish_run("nope", 1.0, None, None)
    store.start_run("run1", SPEC, None)
    with pytest.raises(InvalidOptionError, match=r"fraction in \[0, 1\].*percentage"):
        _score(store, "run1", seed=0, accuracy=81.0)
    with pytest.raises(InvalidOptionError, match="name"):
        _score(store, "run1", seed=0, accuracy=0.5, protocol={"epochs": 3})
    with pytest.raises(InvalidOptionError, match="'final' or 'max'"):
        _score(store, "run1", seed=0, accuracy=0.5, protocol={"name": "dc", "report": "best"})
    with pytest.raises(InvalidOptionError, match="matcher"):
        store.start_run("run2", {"dataset": "cifar10", "prior": "pixel", "ipc": 1}, None)
    assert store.scores_frame().empty  # nothing half-written


def test_file_is_wal_with_schema_version(store: ResultsStore, tmp_path: Path) -> None:
    store.start_run("run1", SPEC, None)
    conn = sqlite3.connect(store_path(tmp_path))
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    finally:
        conn.close()


def test_reopen_keeps_data(tmp_path: Path) -> None:
    with ResultsStore(store_path(tmp_path), provenance=FIXED) as first:
        first.start_run("run1", SPEC, None)
        _score(first, "run1", seed=0, accuracy=0.5)
    with ResultsStore(store_path(tmp_path), provenance=FIXED) as second:
        assert second.has_score("run1", "convnet", 0, "dc")
    with pytest.raises(InvalidOptionError, match="closed"):
        second.get_run("run1")


def test_threads_with_separate_connections_lose_nothing(tmp_path: Path) -> None:
    import threading

    path = store_path(tmp_path)
    with ResultsStore(path, provenance=FIXED) as setup:
        setup.start_run("run1", SPEC, None)
    barrier = threading.Barrier(2, timeout=30)  # a writer that dies early must not hang the other
    errors: list[BaseException] = []

    def writer(evaluator: str) -> None:
        try:
            with ResultsStore(path, provenance=FIXED) as own:
                barrier.wait()
                for seed in range(40):
                    _score(own, "run1", seed=seed, accuracy=seed / 100, evaluator=evaluator)
        except BaseException as err:  # noqa: BLE001 - re-raised in the main thread
            errors.append(err)

    threads = [threading.Thread(target=writer, args=(name,), daemon=True) for name in ("convnet", "alexnet")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors and not any(thread.is_alive() for thread in threads), errors
    with ResultsStore(path, provenance=FIXED) as check:
        counts = check.scores_frame().groupby("evaluator").size().to_dict()
    assert counts == {"alexnet": 40, "convnet": 40}


_WRITER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from ddbench.results.provenance import Provenance
    from ddbench.results.store import ResultsStore
    path, name, go = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    store = ResultsStore(path, provenance=Provenance({}, None, {}))
    Path(go.parent / f"ready-{name}").touch()
    while not go.exists():
        time.sleep(0.01)
    store.start_run(f"run-{name}", {"dataset": "d", "prior": name, "matcher": "dm", "ipc": 1}, None)
    for seed in range(30):
        store.add_score(f"run-{name}", "convnet", seed, {"name": "dc"}, 0.5, None, 0.0, 0.0, None)
    store.finish_run(f"run-{name}", 1.0, None, None)
    store.close()
    """
)


def _stop(procs: list[subprocess.Popen]) -> str:
    """Kill the writers still running and return everyone's stderr (for the failure message)."""
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
    return "\n".join(proc.communicate()[1] for proc in procs)


def test_two_processes_write_at_once(tmp_path: Path) -> None:
    path = store_path(tmp_path)
    go = tmp_path / "go"
    procs = [
        subprocess.Popen([sys.executable, "-c", _WRITER, str(path), name, str(go)], stderr=subprocess.PIPE, text=True)
        for name in ("a", "b")
    ]
    try:
        deadline = time.monotonic() + 60
        while not all((tmp_path / f"ready-{n}").exists() for n in ("a", "b")):
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                pytest.fail(f"writer processes did not get ready:\n{_stop(procs)}")
            time.sleep(0.02)
        go.touch()  # both release their writes together
        for proc in procs:
            proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail(f"writer processes did not finish:\n{_stop(procs)}")
    errors = _stop(procs)
    assert [p.returncode for p in procs] == [0, 0], errors
    with ResultsStore(path, provenance=FIXED) as check:
        assert check.scores_frame().groupby("run_id").size().to_dict() == {"run-a": 30, "run-b": 30}
        assert check.runs_frame().status.tolist() == ["done", "done"]


def test_corrupt_file_names_file_and_fix(tmp_path: Path) -> None:
    bad = tmp_path / "results.sqlite"
    bad.write_bytes(b"this is certainly not a database\n" * 200)
    with pytest.raises(CorruptFileError) as caught:
        ResultsStore(bad, provenance=FIXED)
    message = str(caught.value)
    assert str(bad) in message and "Move it aside" in message and f"{bad}.bak" in message


def test_foreign_database_and_newer_schema_are_refused(tmp_path: Path) -> None:
    other = tmp_path / "other.sqlite"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE photos (id INTEGER)")
    conn.commit()
    conn.close()
    with pytest.raises(CorruptFileError, match="something else.*photos"):
        ResultsStore(other, provenance=FIXED)

    newer = tmp_path / "newer.sqlite"
    ResultsStore(newer, provenance=FIXED).close()
    conn = sqlite3.connect(newer)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    with pytest.raises(CorruptFileError, match="newer ddbench"):
        ResultsStore(newer, provenance=FIXED)


def test_directory_path_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidOptionError, match="store_path"):
        ResultsStore(tmp_path)


# ---------------------------------------------------------------------------- provenance


def test_default_provenance_is_recorded(tmp_path: Path) -> None:
    with ResultsStore(store_path(tmp_path)) as store:
        store.start_run("run1", SPEC, None)
        run = store.get_run("run1")
    versions = run["versions"]
    assert versions["python"] == ".".join(map(str, sys.version_info[:3]))
    assert versions["ddbench"] and versions["torch"] and versions["numpy"]
    assert {"diffusers", "timm", "torchvision", "plugins"} <= set(versions)
    assert versions["plugins"]["dataset:fashion-mnist"].startswith("ddbench==")
    assert run["host"]["cpu_count"] >= 1 and "platform" in run["host"]
    assert run["git_commit"] == provenance.git_commit()


def _git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=cwd, check=True,
                   capture_output=True)  # fmt: skip


@pytest.mark.skipif(subprocess.run(["git", "--version"], capture_output=True).returncode != 0, reason="no git")
def test_git_commit_clean_dirty_and_outside(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "sub").mkdir(parents=True)
    _git(repo, "init", "-q")
    assert provenance.git_commit(repo) is None  # no commit yet
    (repo / "a.txt").write_text("one")
    _git(repo, "add", "a.txt")
    _git(repo, "commit", "-q", "-m", "first")
    clean = provenance.git_commit(repo)
    assert clean is not None and len(clean) == 40 and all(c in "0123456789abcdef" for c in clean)
    (repo / "untracked.txt").write_text("ignored")  # untracked files do not make it dirty
    assert provenance.git_commit(repo) == clean
    (repo / "a.txt").write_text("two")
    assert provenance.git_commit(repo) == f"{clean}-dirty"
    # a directory inside someone else's repository is not a ddbench checkout
    assert provenance.git_commit(repo / "sub") is None
    outside = tmp_path / "plain"
    outside.mkdir()
    assert provenance.git_commit(outside) is None


def test_widening_a_runs_evaluation_records_the_union_once(tmp_path):
    """A later spec that asks more of a stored run (another evaluator, more seeds) widens its stored
    request; asking again for what it has changes nothing."""
    with ResultsStore(tmp_path / "results.sqlite") as store:
        spec = {"dataset": "fashion-mnist", "prior": "pixel", "matcher": "dm", "ipc": 1,
                "evaluators": ["convnet"], "eval_seeds": [0, 1, 2]}  # fmt: skip
        store.start_run("r1", spec, None)
        store.widen_evaluation("r1", ["alexnet", "convnet"], [3, 4, 0])
        stored = store.get_run("r1")["spec"]
        assert stored["evaluators"] == ["convnet", "alexnet"] and stored["eval_seeds"] == [0, 1, 2, 3, 4]
        store.widen_evaluation("r1", ["convnet"], [1])
        assert store.get_run("r1")["spec"] == stored
        store.widen_evaluation("no-such-run", ["convnet"], [0])  # nothing stored: nothing to widen
