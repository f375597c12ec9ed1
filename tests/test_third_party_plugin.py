"""A real third-party package (examples/ddbench-example-plugin) installed with pip and run via the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "ddbench-example-plugin"


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory) -> dict[str, str]:
    """pip-install the example package into its own directory and put it on PYTHONPATH."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(EXAMPLE),
        ],
        check=True,
        timeout=300,
    )
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(target), env.get("PYTHONPATH", "")])
    return env


def test_plugins_lists_the_third_party_distribution(plugin_site):
    out = subprocess.run(
        [sys.executable, "-m", "ddbench.cli.main", "plugins"],
        env=plugin_site,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "lowres" in out.stdout and "mmd" in out.stdout
    assert "ddbench-example-plugin" in out.stdout


def test_third_party_prior_and_matcher_run_through_the_cli(plugin_site, tmp_path, fmnist_slice):
    args = [
        "run", "--dataset", "fashion-mnist", "--data-root", str(fmnist_slice), "--prior", "lowres", "--algo", "mmd",
        "--ipc", "1", "--iterations", "2", "--eval-epochs", "2", "--seeds", "1", "--algo-opt", "batch_real=8",
        "--prior-opt", "factor=2", "--no-progress", "--out", str(tmp_path),
    ]  # fmt: skip
    out = subprocess.run(
        [sys.executable, "-m", "ddbench.cli.main", *args], env=plugin_site, capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr
    assert "lowres" in out.stdout and "mmd" in out.stdout
    grids = list((tmp_path / "runs" / "fashion-mnist").glob("lowres-mmd-ipc1-*/grid.png"))
    assert len(grids) == 1


def test_unknown_option_of_a_plugin_is_an_error(plugin_site, tmp_path):
    args = [
        "run",
        "--dataset",
        "fashion-mnist",
        "--prior",
        "lowres",
        "--prior-opt",
        "factr=2",
        "--out",
        str(tmp_path),
        "--no-progress",
    ]
    out = subprocess.run(
        [sys.executable, "-m", "ddbench.cli.main", *args], env=plugin_site, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 2
    assert "factr" in out.stderr and "factor" in out.stderr


def test_the_example_package_runs_the_contract_kit_in_its_own_tests(plugin_site):
    """ddbench.testing, as a third party uses it: the example package's own test file."""
    tests = EXAMPLE / "tests" / "test_contract.py"
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(EXAMPLE), str(tests)],
        env=plugin_site, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    assert "2 passed" in out.stdout
