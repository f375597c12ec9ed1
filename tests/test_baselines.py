"""Runs that do not measure what their row says: `ddbench run` refuses them, naming the reason."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from ddbench.cli.main import cli, main
from ddbench.engine.spec import RunSpec
from ddbench.results.baselines import baseline_problem, split_meaningful


def test_a_real_baseline_needs_a_prior_that_starts_from_real_images() -> None:
    assert baseline_problem("pixel", {}, "real") is None  # pixel's default init="real"
    assert "init=real (this run: init=noise)" in baseline_problem("pixel", {"init": "noise"}, "real")
    assert "'glad' never starts from real images" in baseline_problem("glad", {}, "real")
    assert baseline_problem("ld3m", {"init": "real", "generator": "trained"}, "real") is None
    assert "generator=untrained" in baseline_problem("ld3m", {"init": "real", "generator": "untrained"}, "real")
    assert baseline_problem("glad", {}, "dm") is None  # a matcher that distils is always meaningful
    kept, dropped = split_meaningful(
        [RunSpec("fashion-mnist", "pixel", "real", 1), RunSpec("fashion-mnist", "glad", "real", 1)]
    )
    assert [s.prior for s in kept] == ["pixel"] and [s.prior for s, _ in dropped] == ["glad"]


def test_run_refuses_a_meaningless_baseline_and_skips_it_in_a_cross_product(tmp_path: Path, capsys) -> None:
    base = [
        "run",
        "--dataset",
        "fashion-mnist",
        "--algo",
        "real",
        "--budget",
        "smoke",
        "--out",
        str(tmp_path),
        "--dry-run",
    ]
    with pytest.raises(SystemExit) as info:
        main([*base, "--prior", "glad"])
    error = capsys.readouterr().err
    assert info.value.code == 2 and len(error.strip().splitlines()) == 1, error
    assert (
        "glad+real ipc1: 'real' keeps the prior's initial images" in error and "never starts from real images" in error
    )
    with pytest.raises(SystemExit) as info:
        main([*base, "--prior", "pixel", "--prior-opt", "init=noise"])
    assert info.value.code == 2 and "--prior-opt pixel.init=real" in capsys.readouterr().err
    result = CliRunner().invoke(cli, [*base, "--prior", "pixel,glad"])
    assert result.exit_code == 0, result.output
    assert "skipped: fashion-mnist glad+real ipc1" in result.output and "1 to run" in result.output
