"""The command line end to end on a Fashion-MNIST slice, and its error handling."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from ddbench.cli.main import cli, main

DDBENCH = [sys.executable, "-m", "ddbench.cli.main"]
FAST = ["--iterations", "3", "--eval-epochs", "3", "--seeds", "1", "--algo-opt", "dm.batch_real=12", "--no-progress"]


def _exit_code(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as info:
        main(argv)
    return info.value.code


def test_unknown_names_exit_2_with_closest_match(capsys):
    assert _exit_code(["run", "--prior", "pixle"]) == 2
    err = capsys.readouterr().err
    assert "Did you mean 'pixel'" in err and "Installed priors:" in err
    assert _exit_code(["run", "--algo", "dn"]) == 2
    assert "Did you mean 'dm'" in capsys.readouterr().err
    assert _exit_code(["run", "--dataset", "fashion-mnst"]) == 2
    assert "fashion-mnist" in capsys.readouterr().err


def test_bad_option_values_are_clear_errors(capsys):
    assert _exit_code(["run", "--ipc", "ten"]) == 2
    assert "whole numbers for --ipc" in capsys.readouterr().err
    assert _exit_code(["run", "--prior-opt", "init"]) == 2
    assert "KEY=VALUE" in capsys.readouterr().err


def test_plugins_lists_every_family_with_distribution():
    result = CliRunner().invoke(cli, ["plugins"])
    assert result.exit_code == 0, result.output
    for name in ("pixel", "dm", "real", "convnet", "fashion-mnist", "imagenette", "image-folder"):
        assert name in result.output
    assert "ddbench 0.1.0" in result.output


def test_help_everywhere():
    for args in (["--help"], ["run", "--help"], ["leaderboard", "--help"], ["show", "--help"], ["prior", "--help"]):
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 0, (args, result.output)


def test_run_end_to_end_then_reuse_and_leaderboard(tmp_path, fmnist_slice):
    out = tmp_path / "out"
    args = ["run", "--dataset", "fashion-mnist", "--data-root", str(fmnist_slice), "--prior", "pixel", "--algo", "dm,real",
            "--ipc", "1", *FAST, "--out", str(out)]  # fmt: skip
    proc = subprocess.run([*DDBENCH, *args], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    # before anything runs: what will run, the estimate and a shorter command
    assert proc.stderr.index("will run fashion-mnist · pixel + dm · IPC 1 · 3 iterations") < proc.stderr.index(
        "run(s) →"
    )
    assert "2 runs, estimated" in proc.stderr
    assert "--budget demo" not in proc.stderr  # the demo budget would take longer than these 3 iterations
    assert "no distillation" in proc.stderr  # the `real` baseline, told by Matcher.distils
    run_dirs = sorted((out / "runs" / "fashion-mnist").iterdir())
    assert len(run_dirs) == 2
    for run_dir in run_dirs:
        assert (run_dir / "grid.png").stat().st_size > 0
        assert (run_dir / "synthetic.safetensors").exists()
    assert "pixel" in proc.stdout and "±" in proc.stdout

    # one way to run: through the executor (a lock per run, its run.log), typed options or not
    assert (out / "locks").is_dir()
    for run_dir in run_dirs:
        assert "=== done in" in (run_dir / "run.log").read_text()
    assert "Distilled" in proc.stderr  # the run is in this process: its messages show here too

    again = subprocess.run([*DDBENCH, *args], capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert "2 already in the store, 0 to run" in again.stderr  # "already done?": ddbench.running.run_state
    assert "2 runs, already in the store: nothing to run" in again.stderr
    typed_default = subprocess.run(
        [*DDBENCH, *args, "--executor", "local", "--workers", "1"], capture_output=True, text=True, timeout=600
    )
    assert typed_default.returncode == 0 and "2 already in the store, 0 to run" in typed_default.stderr
    wider = subprocess.run([*DDBENCH, *args, "--seeds", "2"], capture_output=True, text=True, timeout=600)
    assert wider.returncode == 0, wider.stderr
    for run_dir in run_dirs:  # the second seed is evaluated, and the run dir's spec says so, as the store does
        assert json.loads((run_dir / "spec.json").read_text())["eval_seeds"] == [0, 1]

    from ddbench.results.store import ResultsStore

    with ResultsStore(out / "results.sqlite") as store:
        scores = store.scores_frame()
    assert len(scores) == 4  # one (run, evaluator, seed) row each, not duplicated by the re-runs

    board = CliRunner().invoke(cli, ["leaderboard", "--out", str(out), "--format", "markdown"])
    assert board.exit_code == 0, board.output
    assert "| pixel" in board.output and "dm" in board.output

    run_id = run_dirs[0].name.rsplit("-", 1)[-1]
    shown = CliRunner().invoke(cli, ["show", run_id[:8], "--out", str(out)])
    assert shown.exit_code == 0, shown.output
    assert (
        "grid.png" in shown.output and "pixel v" in shown.output and "accuracy %" in shown.output
    )  # a rich view, not raw JSON


def test_missing_data_says_where_it_looked(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("DDBENCH_DATA", str(tmp_path / "nowhere"))
    code = _exit_code(
        ["run", "--dataset", "cifar10", "--data-root", str(tmp_path / "empty"), *FAST, "--out", str(tmp_path)]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "empty" in err


def _new_run(spec):
    from ddbench.running.preview import one_core_seconds
    from ddbench.running.sweep import PlannedRun

    return PlannedRun(spec=spec, state="new", estimate_seconds=one_core_seconds(spec), missing_scores=0)


def test_the_headline_command_says_what_it_runs_in_one_line():
    from ddbench.engine.spec import RunSpec
    from ddbench.running.preview import preview_lines

    run = _new_run(RunSpec(prior="ld3m", matcher="dm", ipc=10, iterations=1000, eval_seeds=(0, 1, 2)))
    lines = preview_lines(
        [run], ["ld3m[generator=trained]"], ["run", "--prior", "ld3m", "--algo", "dm", "--ipc", "10"], None
    )
    assert len(lines) == 1
    line = lines[0]
    for part in (
        "fashion-mnist",
        "ld3m[generator=trained] + dm",
        "IPC 10",
        "1000 iterations",
        "convnet × 3 seeds",
        "estimated",
    ):
        assert part in line
    assert "shorter: ddbench run --prior ld3m --algo dm --ipc 10 --budget demo (≈" in line
    # a demo run suggests smoke; a smoke run suggests nothing shorter
    assert "--budget smoke" in preview_lines([run], ["ld3m"], ["run", "--budget", "demo"], "demo")[0]
    assert "shorter" not in preview_lines([run], ["ld3m"], ["run", "--budget", "smoke"], "smoke")[0]


def test_the_mtt_headline_counts_the_experts_it_will_train(tmp_path):
    """`ddbench run --algo mtt` builds its missing experts: the estimate and its shorter budget say so
    (tests/test_mtt.py: a buffer already in the runs' cache costs nothing)."""
    from ddbench_plugins.matchers.mtt.matcher import EXPERT_SECONDS_PER_IMAGE_EPOCH

    from ddbench.engine.spec import RunEnv, RunSpec
    from ddbench.running.preview import one_core_seconds, preview_lines, with_budget
    from ddbench.running.sweep import estimate_preparation, format_duration, plan_sweep, wall_seconds

    spec = RunSpec(prior="pixel", matcher="mtt", ipc=10, iterations=1000, eval_seeds=(0, 1, 2))
    env = RunEnv(out=tmp_path)
    (planned,) = plan_sweep([spec], env, None)
    experts = 10 * 22 * 60000 * EXPERT_SECONDS_PER_IMAGE_EPOCH  # default buffer at IPC 10, all of Fashion-MNIST
    assert planned.estimate_seconds - one_core_seconds(spec) == pytest.approx(experts)
    (line,) = preview_lines(
        [planned], ["pixel"], ["run", "--algo", "mtt", "--ipc", "10"], None, cache_dir=env.cache_dir
    )
    assert f"estimated {format_duration(wall_seconds(planned.estimate_seconds))}" in line
    # the demo preset cuts the buffer too (`budget_options`): 2 experts of 4 epochs
    demo = with_budget(spec, "demo")
    assert demo.matcher_options == {"num_experts": 2, "max_start_epoch": 2, "expert_epochs": 2, "syn_steps": 10}
    demo_experts = 2 * 4 * 60000 * EXPERT_SECONDS_PER_IMAGE_EPOCH
    assert f"--budget demo (≈ {format_duration(wall_seconds(one_core_seconds(demo) + demo_experts))})" in line
    no_build = dataclasses.replace(spec, matcher_options={"build_experts": False})
    assert estimate_preparation(no_build, env.cache_dir) is None


def test_a_budget_gives_plugins_its_options_under_the_users():
    from ddbench.engine.spec import RunSpec
    from ddbench.running.grid import SpecGrid, build_specs
    from ddbench.running.preview import with_budget

    def matcher_options(**grid) -> dict:
        (spec,) = build_specs(SpecGrid(datasets=["fashion-mnist"], matchers=["mtt"], ipcs=[10], **grid))
        return spec.matcher_options

    assert matcher_options() == {}  # the protocol's own settings
    assert matcher_options(budget="smoke")["num_experts"] == 1
    assert matcher_options(budget="demo", matcher_options={"num_experts": 5}) == {
        "num_experts": 5,  # the user's own value wins
        "max_start_epoch": 2,
        "expert_epochs": 2,
        "syn_steps": 10,
    }
    (dm,) = build_specs(SpecGrid(datasets=["fashion-mnist"], matchers=["dm"], budget="demo"))
    assert dm.matcher_options == {} and dm.prior_options == {}  # plugins without presets: as typed
    # the shorter budget the preview suggests swaps one preset's options for the other's, keeping the user's
    demo = RunSpec(matcher="mtt", ipc=10, matcher_options={**matcher_options(budget="demo"), "lr_teacher": 0.02})
    smoke = with_budget(demo, "smoke", current="demo")
    assert smoke.matcher_options == {
        "num_experts": 1, "max_start_epoch": 1, "expert_epochs": 1, "syn_steps": 5, "lr_teacher": 0.02,
    }  # fmt: skip


def test_the_preview_and_the_sweeps_first_eta_agree(monkeypatch):
    """One estimate per run: the line before it starts and the sweep's ETA use one conversion."""
    import io

    from rich.console import Console

    from ddbench.engine.spec import RunSpec
    from ddbench.running import sweep
    from ddbench.running.preview import preview_lines, spec_seconds
    from ddbench.running.sweep import SweepProgress, format_duration

    monkeypatch.setattr(sweep.os, "cpu_count", lambda: 2)
    spec = RunSpec(prior="pixel", matcher="dm", ipc=10, iterations=1000, eval_seeds=(0, 1, 2))
    one_core = spec_seconds(spec) * sweep.TWO_THREAD_SPEEDUP
    planned = [_new_run(spec)]
    alone = SweepProgress(planned, 1, Console(file=io.StringIO()))
    assert f"ETA {format_duration(spec_seconds(spec))}" in alone.line()
    two = [planned[0], _new_run(dataclasses.replace(spec, seed=1))]
    # two workers run one thread each: each run takes its one-core estimate, two at once
    assert f"ETA {format_duration(one_core)}" in SweepProgress(two, 2, Console(file=io.StringIO())).line()
    lines = preview_lines(two, ["pixel"] * 2, ["run"], "smoke", workers=2)
    assert f"estimated {format_duration(one_core)} on this machine (2 cores, 2 workers)" in lines[-1]


def test_a_resumed_sweeps_preview_counts_only_what_is_left(monkeypatch):
    """Resuming a half-done suite must not announce the whole suite's time, nor suggest a "shorter"
    budget that would take longer than what is left."""
    from ddbench.engine.spec import RunSpec
    from ddbench.running import sweep
    from ddbench.running.preview import preview_lines
    from ddbench.running.sweep import format_duration, wall_seconds

    monkeypatch.setattr(sweep.os, "cpu_count", lambda: 2)
    runs = [
        _new_run(RunSpec(prior="pixel", matcher="dm", ipc=10, iterations=1000, eval_seeds=(0, 1, 2), seed=seed))
        for seed in range(4)
    ]
    runs[0] = dataclasses.replace(runs[0], state="done", estimate_seconds=0.0)
    runs[1] = dataclasses.replace(runs[1], state="done", estimate_seconds=0.0)
    runs[2] = dataclasses.replace(runs[2], state="resume")
    left = wall_seconds(runs[2].estimate_seconds + runs[3].estimate_seconds, 2)
    lines = preview_lines(runs, [f"pixel{i}" for i in range(4)], ["run"], None, workers=2)
    # only what will run is listed as such
    assert [line.split(" + ")[0] for line in lines[:-1]] == [
        "will run fashion-mnist · pixel2",
        "will run fashion-mnist · pixel3",
    ]
    last = lines[-1]
    assert last.startswith("4 runs (2 already in the store), ")
    assert f"estimated {format_duration(left)} for the rest on this machine" in last
    assert "shorter: ddbench run --budget demo" in last  # demo still beats what is left
    runs[2:] = [dataclasses.replace(r, state="evaluate", estimate_seconds=60.0) for r in runs[2:]]
    assert "shorter" not in preview_lines(runs, ["pixel"] * 4, ["run"], None, workers=2)[-1]
    finished = [dataclasses.replace(r, state="done", estimate_seconds=0.0) for r in runs]
    assert preview_lines(finished, ["pixel"] * 4, ["run"], None) == ["4 runs, already in the store: nothing to run"]
    assert preview_lines(finished[:1], ["pixel"], ["run"], None) == [
        "nothing to run: fashion-mnist · pixel + dm · IPC 10 · 1000 iterations · convnet × 3 seeds (dc protocol) "
        "is already in the store"
    ]


def test_the_preview_shows_the_resolved_generator_as_text(monkeypatch, fmnist_available):
    """`ld3m[generator=trained]` must reach the terminal (rich would read ``[...]`` as markup)."""
    import io

    from rich.console import Console

    from ddbench.cli import main as cli_module
    from ddbench.engine.spec import RunEnv, RunSpec
    from ddbench.running.identity import resolve_specs

    buffer = io.StringIO()
    monkeypatch.setattr(cli_module, "console", Console(file=buffer, width=400))
    monkeypatch.setattr(cli_module, "_ARGV", ["run", "--prior", "ld3m", "--algo", "dm", "--ipc", "10"])
    spec = resolve_specs([RunSpec(prior="ld3m", matcher="dm", ipc=10)], RunEnv())[0]
    cli_module._print_preview([_new_run(spec)], {"budget": None}, RunEnv())
    assert "will run fashion-mnist · ld3m[generator=trained] + dm · IPC 10" in buffer.getvalue()


def test_a_value_given_twice_is_one_run():
    from ddbench.running.grid import SpecGrid, build_specs

    specs = build_specs(SpecGrid(datasets=["fashion-mnist", "fashion-mnist"], matchers=["dm", "dm"], ipcs=[1, 1]))
    assert len(specs) == 1


def test_more_workers_than_cores_or_runs_are_no_faster():
    from ddbench.running.sweep import wall_seconds

    assert wall_seconds(1000.0, workers=1000, cores=2) == wall_seconds(1000.0, workers=2, cores=2) == 500.0


def test_dry_run_names_model_files_that_are_not_on_this_machine(fmnist_slice, tmp_path):
    """Planning does not fail on a missing model (a sweep may be planned away from its models), but
    says that a run here would."""
    import io

    from rich.console import Console

    from ddbench.engine.spec import RunEnv, RunSpec
    from ddbench.running.identity import resolve_specs
    from ddbench.running.sweep import plan_sweep, print_plan

    spec = RunSpec(prior="ld3m", matcher="dm", prior_options={"model_dir": str(tmp_path / "nowhere")})
    env = RunEnv(out=tmp_path / "out", data_root=str(fmnist_slice))
    buffer = io.StringIO()
    print_plan(plan_sweep(resolve_specs([spec], env), env, None), Console(file=buffer, width=300))
    assert f"prior ld3m model_dir={tmp_path / 'nowhere'} is not on this machine; a run here fails" in buffer.getvalue()
