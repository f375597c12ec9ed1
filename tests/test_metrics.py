"""Per-iteration metrics (issue 18, item 1): metrics.jsonl, its consistency with the checkpoint on
resume (a real SIGKILL), the summary in the store (and old stores) and TensorBoard events."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from ddbench_plugins.priors.pixel import PixelPrior
from torch import Tensor

from ddbench.engine.distill import CHECKPOINT_FILE, Distiller
from ddbench.engine.metrics import METRICS_FILE, TENSORBOARD_DIR, RunMetrics, read_metrics, summarise
from ddbench.engine.spec import RunSpec
from ddbench.errors import InvalidOptionError
from ddbench.interfaces import Matcher, RealSampler
from ddbench.results.store import SCHEMA_VERSION, ResultsStore

TESTS = Path(__file__).parent


class ScaledMeanMatcher(Matcher):
    """Per-class pixel means against a real batch; reports a scalar of its own each iteration."""

    name = "scaled-mean-test"

    def __init__(self) -> None:
        self.calls = 0

    def loss(self, images: Tensor, labels: Tensor, real: RealSampler) -> Tensor:
        total = images.new_zeros(())
        for c in torch.unique(labels).tolist():
            total = total + ((images[labels == c].mean(0) - real.class_batch(c, 4).mean(0)) ** 2).sum()
        return total

    def after_step(self, images: Tensor, labels: Tensor, real: RealSampler) -> None:
        self.calls += 1

    def iteration_metrics(self) -> dict[str, float]:
        return {"steps_seen": float(self.calls)}


def _distiller(data, run_dir: Path, iterations: int = 6, **kwargs) -> Distiller:
    spec = RunSpec(dataset="tiny", prior="pixel", matcher="scaled-mean-test", ipc=2, iterations=iterations, seed=3)
    return Distiller(
        spec,
        data,
        run_dir,
        checkpoint_every=2,
        progress=False,
        prior=PixelPrior(),
        matcher=ScaledMeanMatcher(),
        **kwargs,
    )


def test_one_line_per_iteration_with_loss_time_memory_and_matcher_scalars(tiny_data, tmp_path):
    result = _distiller(tiny_data, tmp_path).run()
    lines = (tmp_path / METRICS_FILE).read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["iteration"] for r in records] == list(range(6))
    assert [r["loss"] for r in records] == result.losses
    assert all(r["seconds"] > 0 and r["peak_memory_bytes"] > 2**20 for r in records)
    assert [r["steps_seen"] for r in records] == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]  # the matcher's own, generically
    assert result.metrics["iterations"] == 6
    assert result.metrics["loss_final"] == result.losses[-1] and result.metrics["loss_min"] == min(result.losses)
    assert result.metrics["final"] == {"steps_seen": 6.0}


_KILLED_RUN = """
import os, signal, sys
from pathlib import Path
sys.path.insert(0, {tests!r})
from conftest import make_tiny_data
from test_metrics import _distiller

def kill_at_4(it, loss):
    if it == 4:  # iterations 0-3 are checkpointed (every 2); the line of iteration 4 is already written
        os.kill(os.getpid(), signal.SIGKILL)

_distiller(make_tiny_data(), Path({run_dir!r})).run(on_iteration=kill_at_4)
"""


def test_sigkill_then_resume_leaves_each_iteration_exactly_once(tiny_data, tmp_path):
    full = _distiller(tiny_data, tmp_path / "full").run()
    run_dir = tmp_path / "cut"
    script = _KILLED_RUN.format(tests=str(TESTS), run_dir=str(run_dir))
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert (run_dir / CHECKPOINT_FILE).exists()
    assert [r["iteration"] for r in read_metrics(run_dir)] == [0, 1, 2, 3, 4]  # one line past the checkpoint
    with open(run_dir / METRICS_FILE, "a") as fh:
        fh.write('{"iteration": 5, "lo')  # torn by the kill mid-write

    resumed = _distiller(tiny_data, run_dir).run(resume=True)
    assert resumed.resumed_from == 4
    records = read_metrics(run_dir)
    assert [r["iteration"] for r in records] == list(range(6))
    assert [r["loss"] for r in records] == full.losses
    assert len((run_dir / METRICS_FILE).read_text().splitlines()) == 6  # the torn line is gone too
    assert resumed.metrics["iterations"] == 6


def test_a_fresh_start_replaces_the_old_metrics(tiny_data, tmp_path):
    _distiller(tiny_data, tmp_path, iterations=4).run()
    (tmp_path / CHECKPOINT_FILE).unlink()  # --no-resume / --force: distilled again from iteration 0
    _distiller(tiny_data, tmp_path, iterations=3).run(resume=False)
    assert [r["iteration"] for r in read_metrics(tmp_path)] == [0, 1, 2]


def test_a_matcher_metric_may_not_shadow_the_engines(tmp_path):
    with RunMetrics(tmp_path) as metrics, pytest.raises(InvalidOptionError, match="loss"):
        metrics.record(0, 1.0, 0.1, 1, {"loss": 2.0})


def test_summary_of_no_iterations_is_empty_not_an_error():
    assert summarise([]) == {"iterations": 0, "loss_first": None, "loss_final": None, "loss_min": None,
                             "seconds_per_iteration_median": None, "peak_memory_bytes": None, "final": {}}  # fmt: skip


# ------------------------------------------------------------------------------------- store

_SPEC = {"dataset": "tiny", "prior": "pixel", "matcher": "dm", "ipc": 1}


def test_store_keeps_the_summary_and_a_restart_clears_it(tmp_path):
    summary = {"iterations": 3, "loss_final": 0.5, "final": {"lr": 0.01}}
    with ResultsStore(tmp_path / "results.sqlite") as store:
        store.start_run("r1", _SPEC, str(tmp_path))
        store.finish_run("r1", 1.0, 10, 0.3, summary)
        assert store.get_run("r1")["metrics"] == summary
        assert json.loads(store.runs_frame().loc[0, "metrics_json"]) == summary
        store.start_run("r1", _SPEC, str(tmp_path))  # distilled again: the old summary does not describe it
        assert store.get_run("r1")["metrics"] is None


_SCHEMA_1_RUNS = """CREATE TABLE runs (run_id TEXT PRIMARY KEY, spec_json TEXT NOT NULL, dataset TEXT NOT NULL,
    prior TEXT NOT NULL, matcher TEXT NOT NULL, ipc INTEGER NOT NULL, res INTEGER, status TEXT NOT NULL, error TEXT,
    run_dir TEXT, distill_seconds REAL, distill_peak_memory_bytes INTEGER, seconds_per_iteration REAL,
    created_at TEXT NOT NULL, finished_at TEXT, versions_json TEXT, git_commit TEXT, host_json TEXT)"""
_SCHEMA_1_SCORES = """CREATE TABLE scores (run_id TEXT NOT NULL, evaluator TEXT NOT NULL, seed INTEGER NOT NULL,
    protocol TEXT NOT NULL, accuracy REAL NOT NULL, accuracy_max REAL, report TEXT NOT NULL, protocol_json TEXT NOT NULL,
    train_seconds REAL, eval_seconds REAL, peak_memory_bytes INTEGER, created_at TEXT NOT NULL, versions_json TEXT,
    git_commit TEXT, UNIQUE (run_id, evaluator, seed, protocol))"""


def test_a_store_of_schema_1_is_read_as_is_and_upgraded_when_written(tmp_path):
    path = tmp_path / "results.sqlite"
    conn = sqlite3.connect(path)
    conn.execute(_SCHEMA_1_RUNS)
    conn.execute(_SCHEMA_1_SCORES)
    conn.execute("INSERT INTO runs (run_id, spec_json, dataset, prior, matcher, ipc, status, created_at) "
                 "VALUES ('old', '{}', 'tiny', 'pixel', 'dm', 1, 'done', '2025-01-01T00:00:00+00:00')")  # fmt: skip
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()

    with ResultsStore(path, read_only=True) as store:  # a reader changes nothing
        frame = store.runs_frame()
        assert frame.loc[0, "run_id"] == "old" and frame.loc[0, "metrics_json"] is None
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == 1

    with ResultsStore(path) as store:
        assert store.get_run("old")["metrics"] is None
        store.start_run("new", _SPEC, None)
        store.finish_run("new", 1.0, None, None, {"iterations": 1})
        assert store.get_run("new")["metrics"] == {"iterations": 1}
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2


# ------------------------------------------------------------------------------- TensorBoard


def test_tensorboard_events_are_written_when_asked(tiny_data, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _distiller(tiny_data, tmp_path / "off", iterations=2).run()
    assert not (tmp_path / "off" / TENSORBOARD_DIR).exists()

    _distiller(tiny_data, tmp_path / "on", iterations=3, tensorboard=True).run()
    events = EventAccumulator(str(tmp_path / "on" / TENSORBOARD_DIR))
    events.Reload()
    assert {"loss", "seconds_per_iteration", "peak_memory_MiB", "matcher/steps_seen"} <= set(events.Tags()["scalars"])
    assert [e.step for e in events.Scalars("loss")] == [0, 1, 2]
    assert [e.value for e in events.Scalars("matcher/steps_seen")] == [1.0, 2.0, 3.0]


def test_tensorboard_missing_is_one_line_with_the_install(monkeypatch, tmp_path):
    import importlib.util

    from ddbench.engine import metrics

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        metrics.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "tensorboard" else real_find_spec(name, *a),
    )
    with pytest.raises(InvalidOptionError, match=r"pip install 'ddbench\[tensorboard\]'"):
        RunMetrics(tmp_path, tensorboard=True)


def test_show_prints_the_summary_and_where_the_metrics_are(tmp_path):
    from click.testing import CliRunner

    from ddbench.cli.main import cli
    from ddbench.results.store import store_path

    run_dir = tmp_path / "runs" / "r1"
    run_dir.mkdir(parents=True)
    (run_dir / METRICS_FILE).write_text('{"iteration": 0, "loss": 2.0, "seconds": 1.0, "peak_memory_bytes": 1}\n')
    with ResultsStore(store_path(tmp_path)) as store:
        store.start_run("r1", _SPEC, str(run_dir))
        store.finish_run(
            "r1",
            3.0,
            2**20,
            1.0,
            {"iterations": 3, "loss_first": 2.0, "loss_final": 0.5, "loss_min": 0.25, "final": {"lr": 0.0125}},
        )
    result = CliRunner().invoke(cli, ["show", "r1", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "final loss    0.5 (first 2, min 0.25 over 3 iterations)" in result.output
    assert "final lr      0.0125" in result.output
    assert f"per-iteration metrics: {run_dir / METRICS_FILE}" in result.output
