"""Suites and sweeps: suite files, their expansion, skip/resume, executors, and the store under concurrency."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from ddbench.cli.main import cli
from ddbench.engine.spec import RunEnv
from ddbench.errors import InvalidOptionError
from ddbench.running.executor import Executor, SweepTask, TaskResult
from ddbench.running.grid import SpecGrid, build_specs
from ddbench.running.identity import resolve_spec
from ddbench.running.suites import available_suites, load_suite
from ddbench.running.sweep import plan_sweep, run_sweep
from ddbench.util.fileio import FileLock

PAPER_SUITES = ("table1", "table2", "table3", "table4")

# a sweep small enough for CI: two runs (pixel + DM, random real), 2 iterations, 2 evaluation epochs
SMALL_SUITE = """
name = "small"
version = 1
description = "two tiny Fashion-MNIST runs for the tests"

[grid]
datasets = ["fashion-mnist"]
priors = ["pixel"]
matchers = ["dm", "real"]
ipcs = [1]
seeds = 2
iterations = {iterations}
eval_epochs = 2
budget = "smoke"
matcher_options = {{ dm.compile = false, dm.batch_real = 8 }}

[layout]
rows = ["prior", "matcher"]
columns = "dataset"
"""


def _suite_file(tmp_path: Path, iterations: int = 2, name: str = "small.toml") -> Path:
    path = tmp_path / name
    path.write_text(SMALL_SUITE.format(iterations=iterations))
    return path


def _scores(out: Path) -> list[tuple]:
    with sqlite3.connect(out / "results.sqlite") as conn:
        return conn.execute(
            "SELECT run_id, evaluator, seed, protocol FROM scores ORDER BY run_id, evaluator, seed"
        ).fetchall()


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ddbench.cli.main", *args], capture_output=True, text=True, timeout=300
    )


def _popen(*args: str, log: Path) -> subprocess.Popen[bytes]:
    handle = open(log, "wb")
    return subprocess.Popen([sys.executable, "-m", "ddbench.cli.main", *args], stdout=handle, stderr=subprocess.STDOUT)


# ----------------------------------------------------------------------------------- suite files


def test_packaged_suites_load_with_their_layout():
    assert set(PAPER_SUITES) | {"fmnist-cpu"} <= set(available_suites())
    for name in PAPER_SUITES:
        suite = load_suite(name)
        assert suite.name == name and suite.version >= 1 and suite.description
        assert suite.layout.paper_table == name
        assert suite.layout.columns in ("dataset", "evaluator")
    assert load_suite("fmnist-cpu").layout.paper_table is None
    assert load_suite("table4").layout.columns == "evaluator"
    assert load_suite("table2").layout.all_column is True


def test_table7_fmnist_ablates_ld3m_on_table4_fmnists_protocol(tmp_path):
    """Its LD3M row is table4-fmnist's ld3m-trained DM run, so one --out computes it once."""
    env = RunEnv(out=tmp_path, device="cpu")

    def ids(name: str) -> dict[str, str]:
        runs = load_suite(name).expand()
        return {
            str(labels.get("variant", labels.get("prior"))) + "/" + spec.matcher: resolve_spec(spec, env).run_id
            for spec, labels in ((r.spec, r.labels) for r in runs)
        }

    table7, table4 = ids("table7-fmnist"), ids("table4-fmnist")
    assert len(set(table7.values())) == 6
    assert table7["Z, c with Eq. 12 (LD3M, T 10)/dm"] == table4["ld3m-trained/dm"]
    assert load_suite("table7-fmnist").layout.rows == ("variant",)


def test_table1_expands_to_the_paper_grid():
    specs = load_suite("table1").specs(require_env=False, validate=False)
    assert len(specs) == 10 * 3 * 3
    assert {s.dataset for s in specs} == {
        "imagenet-a", "imagenet-b", "imagenet-c", "imagenet-d", "imagenet-e",
        "imagenette", "imagewoof", "imagenet-birds", "imagenet-fruits", "imagenet-cats",
    }  # fmt: skip
    assert {(s.prior, s.matcher) for s in specs} == {
        (p, m) for p in ("pixel", "glad", "ld3m") for m in ("dc", "dm", "mtt")
    }
    assert all(s.ipc == 1 and s.res == 128 and s.eval_seeds == (0, 1, 2, 3, 4) for s in specs)
    assert all(s.evaluators == ("alexnet", "vgg11", "resnet18", "vit") for s in specs)
    assert all(s.matcher_options.get("build_experts") for s in specs if s.matcher == "mtt")
    assert not any("build_experts" in s.matcher_options for s in specs if s.matcher != "mtt")
    assert {s.iterations for s in specs if s.prior == "ld3m"} == {5000}


def test_table3_rows_are_labelled_generators_with_weights_from_the_environment(monkeypatch):
    monkeypatch.setenv("DDBENCH_MODELS", "/models")
    monkeypatch.setenv("STYLEGAN_XL_SRC", "/src/stylegan-xl")
    runs = load_suite("table3").expand(validate=False)
    assert len(runs) == 7 * 5
    assert {(r.spec.prior, r.labels["generator"]) for r in runs} == {
        ("pixel", "-"), ("glad", "imagenet"), ("glad", "random"), ("glad", "ffhq"),
        ("ld3m", "imagenet"), ("ld3m", "random"), ("ld3m", "ffhq"),
    }  # fmt: skip
    ffhq = next(r.spec for r in runs if r.spec.prior == "glad" and r.labels["generator"] == "ffhq")
    assert (
        ffhq.prior_options["weights"] == "/models/stylegan-xl/ffhq256.pkl" and ffhq.res == 256 and ffhq.matcher == "dc"
    )


def test_missing_weights_variable_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("DDBENCH_MODELS", raising=False)
    with pytest.raises(InvalidOptionError, match="DDBENCH_MODELS.*export"):
        load_suite("table3").specs(validate=False)


def test_unknown_suite_names_the_closest_and_the_available():
    with pytest.raises(InvalidOptionError, match="Did you mean 'table1'.*Available suites: .*fmnist-cpu"):
        load_suite("tabel1")


def test_suite_file_typos_fail_at_load(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "bad"\nversion = 1\n[grid]\ndatasets = ["fashion-mnist"]\nprior = ["pixel"]\n')
    with pytest.raises(InvalidOptionError, match="unknown key 'prior'. Did you mean 'priors'"):
        load_suite(bad)
    bad.write_text('name = "bad"\nversion = 1\n[grid]\ndatasets = ["fashion-mnist"]\n[layout]\ncolumns = "ipc"\n')
    with pytest.raises(InvalidOptionError, match="columns"):
        load_suite(bad)


def test_suite_and_run_options_share_one_expansion(tmp_path):
    """A suite file and the same `ddbench run` options give the same run ids (one code path)."""
    suite = load_suite(_suite_file(tmp_path))
    grid = SpecGrid(
        datasets=["fashion-mnist"], priors=["pixel"], matchers=["dm", "real"], seeds=2, iterations=2, eval_epochs=2,
        budget="smoke", matcher_options={"dm.compile": False, "dm.batch_real": 8},
    )  # fmt: skip
    assert [s.run_id for s in suite.specs()] == [s.run_id for s in build_specs(grid)]
    assert [s.to_dict() for s in suite.specs()] == [s.to_dict() for s in build_specs(grid)]


def test_overrides_and_filters():
    suite = load_suite("fmnist-cpu")
    full = suite.specs(validate=False)
    smoke = suite.specs(
        overrides={"budget": "smoke", "iterations": 2}, filters={"priors": ["pixel"], "ipcs": [1]}, validate=False
    )
    assert {s.prior for s in smoke} == {"pixel"} and {s.ipc for s in smoke} == {1}
    assert all(s.iterations == 2 and s.train_per_class == 500 for s in smoke)
    # the budget replaced the suite's own evaluation settings
    assert all(s.eval_seeds == (0,) and s.eval_epochs == 50 for s in smoke)
    assert len(full) > len(smoke)
    # scoped options reach only the entries with that plugin; the suite's own options stay
    tuned = suite.specs(overrides={"matcher_options": {"dm.batch_real": 16}}, validate=False)
    assert all(s.matcher_options["batch_real"] == 16 for s in tuned if s.matcher == "dm")
    assert all("batch_real" not in s.matcher_options or s.matcher != "mtt" for s in tuned)
    with pytest.raises(InvalidOptionError, match="'nosuch', which is not an installed prior"):
        suite.specs(overrides={"prior_options": {"nosuch.x": 1}}, validate=False)
    with pytest.raises(InvalidOptionError, match="scoped to plugins that suite 'table4' does not use"):
        load_suite("table4").specs(
            overrides={"matcher_options": {"mtt.syn_steps": 5}}, require_env=False, validate=False
        )


def test_dry_run_lists_runs_and_cost(tmp_path):
    # table1's StyleGAN-XL generators are pickles: even listing its runs builds the priors, which need the opt-in
    result = CliRunner().invoke(cli, ["run", "--suite", "table1", "--dry-run", "--out", str(tmp_path),
                                      "--prior-opt", "glad.trust_pickle=true"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "90 to run, 0 already done" in result.output and "estimated" in result.output
    assert not (tmp_path / "results.sqlite").exists()  # a dry run writes nothing
    result = CliRunner().invoke(
        cli, ["run", "--suite", "fmnist-cpu", "--dry-run", "--workers", "2", "--out", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    assert "with 2 worker(s)" in result.output


def test_fmnist_cpu_fits_about_an_hour_on_two_cores(tmp_path):
    """The suite's estimated cost (1-core seconds over 2 workers) stays near its description's figure."""
    specs = load_suite("fmnist-cpu").specs(validate=False)
    assert {(s.prior, s.matcher) for s in specs} >= {
        (p, m) for p in ("pixel", "glad", "ld3m") for m in ("dc", "dm", "mtt")
    }
    assert {s.ipc for s in specs} == {1, 10} and any(s.matcher == "real" for s in specs)
    total = sum(p.estimate_seconds for p in plan_sweep(specs, RunEnv(out=tmp_path), None))
    assert 0.75 * 3600 < total / 2 < 1.5 * 3600


# --------------------------------------------------------------------------------------- sweeps


def _run_small(tmp_path: Path, fmnist_slice: Path, *extra: str, iterations: int = 2) -> tuple[int, str]:
    suite = _suite_file(tmp_path, iterations)
    args = [
        "run",
        "--suite",
        str(suite),
        "--out",
        str(tmp_path / "out"),
        "--data-root",
        str(fmnist_slice),
        "--no-progress",
        *extra,
    ]
    result = CliRunner().invoke(cli, args)
    return result.exit_code, result.output


def test_local_sweep_completes_then_skips_what_the_store_has(tmp_path, fmnist_slice):
    code, output = _run_small(tmp_path, fmnist_slice)
    assert code == 0, output
    assert "2/2 done · 0 running · 0 failed" in output
    out = tmp_path / "out"
    assert len(_scores(out)) == 2 * 2  # 2 runs × 1 evaluator × 2 seeds
    logs = sorted(out.glob("runs/fashion-mnist/*/run.log"))
    assert len(logs) == 2 and all("=== done" in log.read_text() for log in logs)
    # the workers' progress reaches each run's log as status lines (distillation, then each evaluation)
    distil_log = next(log.read_text() for log in logs if "pixel+dm" in log.read_text())
    assert re.search(r"pixel\+dm ipc1 2/2 loss \S+ .*elapsed", distil_log), distil_log
    assert re.search(r"eval convnet seed 1 \d+/\d+ loss", distil_log), distil_log
    code, output = _run_small(tmp_path, fmnist_slice)
    assert code == 0, output
    assert "2 already in the store, 0 to run" in output
    # asking for one more seed evaluates only what is missing
    code, output = _run_small(tmp_path, fmnist_slice, "--seeds", "3")
    assert code == 0 and "2 evaluate" in output, output
    assert len(_scores(out)) == 2 * 3
    # and the stored runs now say they were asked for three seeds, as their scores show
    with sqlite3.connect(out / "results.sqlite") as conn:
        specs = [json.loads(text) for (text,) in conn.execute("SELECT spec_json FROM runs")]
    assert [spec["eval_seeds"] for spec in specs] == [[0, 1, 2]] * 2


def test_local_executor_with_worker_processes(tmp_path, fmnist_slice):
    code, output = _run_small(tmp_path, fmnist_slice, "--workers", "2")
    assert code == 0, output
    assert "2 worker processes" in output and "2/2 done" in output
    assert len(_scores(tmp_path / "out")) == 4


def test_submitit_local_executor_completes_a_sweep(tmp_path, fmnist_slice):
    pytest.importorskip("submitit")
    code, output = _run_small(
        tmp_path, fmnist_slice, "--executor", "slurm", "--exec-opt", "cluster=local", "--exec-opt", "poll_seconds=0.5",
        "--exec-opt", "time=10", "--workers", "2",
    )  # fmt: skip
    assert code == 0, output
    assert "2/2 done" in output
    assert len(_scores(tmp_path / "out")) == 4
    assert list((tmp_path / "out" / "slurm").glob("*/*_log.out"))  # submitit's own job logs


def test_a_failed_run_is_recorded_and_does_not_stop_the_sweep(tmp_path, fmnist_slice):
    suite = tmp_path / "failing.toml"
    # MTT without expert trajectories, told not to build them, fails in set-up; pixel + DM still runs
    text = SMALL_SUITE.format(iterations=2).replace('matchers = ["dm", "real"]', 'matchers = ["mtt", "dm"]')
    suite.write_text(text.replace("dm.compile = false", "mtt.build_experts = false, dm.compile = false"))
    out = tmp_path / "out"
    result = CliRunner().invoke(
        cli, ["run", "--suite", str(suite), "--out", str(out), "--data-root", str(fmnist_slice), "--no-progress"]
    )
    assert result.exit_code == 1, result.output
    assert "1 run(s) failed" in result.output and "1/2 done · 0 running · 1 failed" in result.output
    with sqlite3.connect(out / "results.sqlite") as conn:
        rows = dict(conn.execute("SELECT matcher, status || ' ' || coalesce(error, '') FROM runs").fetchall())
    assert rows["dm"].startswith("done") and rows["mtt"].startswith("failed ") and "expert" in rows["mtt"].lower()
    # only the failed run again, in a store that has other scores: its failure is the last word
    again = CliRunner().invoke(
        cli,
        [
            "run",
            "--suite",
            str(suite),
            "--algo",
            "mtt",
            "--out",
            str(out),
            "--data-root",
            str(fmnist_slice),
            "--no-progress",
        ],
    )
    assert again.exit_code == 1 and "1 run(s) failed" in again.output, again.output
    assert "No scores with run_id" not in str(again.exception or "")


def test_a_corrupt_checkpoint_restarts_that_run_with_a_clear_message(tmp_path, fmnist_slice):
    suite = load_suite(_suite_file(tmp_path))
    env = RunEnv(out=tmp_path / "out", data_root=str(fmnist_slice))
    spec = resolve_spec(suite.specs()[0], env)  # the id `ddbench run` gives it
    env.run_dir(spec).mkdir(parents=True)
    (env.run_dir(spec) / "checkpoint.pt").write_bytes(b"not a checkpoint")
    code, output = _run_small(tmp_path, fmnist_slice)
    assert code == 0, output
    log = (env.run_dir(spec) / "run.log").read_text()
    assert "unreadable" in log and "restarting from iteration 0" in log
    assert (env.run_dir(spec) / "checkpoint.pt.corrupt").exists()


def test_run_lock_is_exclusive_and_dies_with_its_holder(tmp_path):
    path = tmp_path / "locks" / "abc.lock"
    first, second = FileLock(path), FileLock(path)
    assert first.acquire()
    assert not second.acquire() and f"pid {os.getpid()}" in second.owner()
    first.release()
    assert second.acquire()
    second.release()
    # a holder killed with SIGKILL leaves no stale lock
    holder = subprocess.Popen(
        [sys.executable, "-c", f"from ddbench.util.fileio import FileLock; import time; assert FileLock({str(path)!r}).acquire(); print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert holder.stdout.readline().strip() == "held"
    assert not FileLock(path).acquire()
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert FileLock(path).acquire()


class _ScriptedExecutor(Executor):
    """Answers each task from a script of states, without running anything."""

    name = "scripted"

    def __init__(self, states: list[str]) -> None:
        self.states = states
        self.calls = 0

    def run(self, tasks, on_start, on_done):
        for task in tasks:
            on_start(task)
            state = self.states[self.calls]
            self.calls += 1
            on_done(
                task,
                TaskResult(task.run_spec.run_id, state, error="running in host pid 1" if state == "busy" else None),
            )


def test_a_run_held_by_another_sweep_is_waited_for_then_retried(tmp_path):
    from rich.console import Console

    spec = build_specs(SpecGrid(datasets=["fashion-mnist"], iterations=1), validate=False)[0]
    executor = _ScriptedExecutor(["busy", "busy", "done"])
    waits: list[float] = []
    summary = run_sweep(
        [spec],
        RunEnv(out=tmp_path),
        executor,
        Console(file=open(os.devnull, "w")),
        busy_poll_seconds=0.25,
        sleep=waits.append,
    )
    assert executor.calls == 3 and waits == [0.25, 0.25]
    assert summary.done == [resolve_spec(spec, RunEnv(out=tmp_path)).run_id] and not summary.failed


def test_a_busy_run_is_not_dispatched_again_while_its_lock_is_held(tmp_path):
    """Waiting probes the lock here; no worker is started only to find the run still busy."""
    from rich.console import Console

    spec = resolve_spec(build_specs(SpecGrid(datasets=["fashion-mnist"], iterations=1), validate=False)[0],
                        RunEnv(out=tmp_path))  # fmt: skip
    executor = _ScriptedExecutor(["busy", "done"])
    holder = FileLock(SweepTask(spec=spec.to_dict(), env=RunEnv(out=tmp_path)).lock_path)
    assert holder.acquire()
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 3:
            holder.release()  # the other sweep ends its run

    run_sweep([spec], RunEnv(out=tmp_path), executor, Console(file=open(os.devnull, "w")),
              busy_poll_seconds=0.25, sleep=sleep)  # fmt: skip
    assert executor.calls == 2 and waits == [0.25] * 3


def test_execute_task_reports_busy_while_another_process_holds_the_run(tmp_path):
    from ddbench.running.executor import execute_task

    spec = build_specs(SpecGrid(datasets=["fashion-mnist"], iterations=1), validate=False)[0]
    task = SweepTask(spec=spec.to_dict(), env=RunEnv(out=tmp_path))
    lock = FileLock(task.lock_path)
    assert lock.acquire()
    try:
        result = execute_task(task)
    finally:
        lock.release()
    assert result.state == "busy" and f"pid {os.getpid()}" in result.error


# ------------------------------------------------------------------- crashes and concurrent sweeps


@pytest.mark.slow
def test_a_sweep_killed_mid_run_and_started_again_finishes_with_one_row_each(tmp_path, fmnist_slice):
    suite = _suite_file(tmp_path, iterations=60)
    out = tmp_path / "out"
    args = [
        "run",
        "--suite",
        str(suite),
        "--out",
        str(out),
        "--data-root",
        str(fmnist_slice),
        "--no-progress",
        "--checkpoint-every",
        "2",
    ]
    first = _popen(*args, log=tmp_path / "first.log")
    env = RunEnv(out=out, data_root=str(fmnist_slice))
    dm_spec = resolve_spec(next(s for s in load_suite(suite).specs(validate=False) if s.matcher == "dm"), env)
    checkpoint = env.run_dir(dm_spec) / "checkpoint.pt"
    deadline = time.monotonic() + 180
    while not checkpoint.exists() and time.monotonic() < deadline and first.poll() is None:
        time.sleep(0.2)
    assert checkpoint.exists(), (tmp_path / "first.log").read_text()
    first.send_signal(signal.SIGKILL)  # mid-distillation: no clean-up of any kind
    first.wait()
    with sqlite3.connect(out / "results.sqlite") as conn:
        assert conn.execute("SELECT status FROM runs WHERE run_id = ?", (dm_spec.run_id,)).fetchone() == ("running",)
    again = _cli(*args)
    assert again.returncode == 0, again.stderr
    rows = _scores(out)
    assert len(rows) == len(set(rows)) == 2 * 2
    with sqlite3.connect(out / "results.sqlite") as conn:
        assert {r[0] for r in conn.execute("SELECT status FROM runs")} == {"done"}


@pytest.mark.slow
def test_two_sweeps_sharing_one_store_lose_nothing(tmp_path, fmnist_slice):
    suite = _suite_file(tmp_path, iterations=40)
    out = tmp_path / "out"
    args = [
        "run",
        "--suite",
        str(suite),
        "--out",
        str(out),
        "--data-root",
        str(fmnist_slice),
        "--no-progress",
        "--seeds",
        "3",
    ]
    sweeps = [_popen(*args, log=tmp_path / f"sweep{i}.log") for i in range(2)]
    for i, sweep in enumerate(sweeps):
        assert sweep.wait(timeout=300) == 0, (tmp_path / f"sweep{i}.log").read_text()
    rows = _scores(out)
    assert len(rows) == len(set(rows)) == 2 * 3
    with sqlite3.connect(out / "results.sqlite") as conn:
        assert conn.execute("SELECT count(*), min(status), max(status) FROM runs").fetchone() == (2, "done", "done")
    # each run was distilled once: by one sweep, while the other waited for it or found it done
    run_logs = list(out.glob("runs/fashion-mnist/*/run.log"))
    assert len(run_logs) == 2
    for run_log in run_logs:
        assert run_log.read_text().count("Distilled") == 1, run_log.read_text()


def test_a_priors_generation_seconds_add_to_every_iteration_whatever_the_matcher():
    """A generator's cost does not scale with the matcher's: DM (cheap) and DC (costly) both pay
    the prior's `seconds_per_generation` once per iteration on top of their own cost."""
    from ddbench import registry
    from ddbench.engine.spec import RunSpec
    from ddbench.running.sweep import estimate_distill_seconds

    ld3m_class = registry.get_plugin_class("prior", "ld3m")
    per_generation = ld3m_class.seconds_per_generation[1]
    assert per_generation > 0
    for matcher in ("dm", "dc"):
        pixel = estimate_distill_seconds(RunSpec(prior="pixel", matcher=matcher, ipc=10, iterations=10))
        ld3m = estimate_distill_seconds(RunSpec(prior="ld3m", matcher=matcher, ipc=10, iterations=10))
        factor = ld3m_class.cost_factor[1]
        assert ld3m == pytest.approx(pixel * factor + 10 * per_generation)
