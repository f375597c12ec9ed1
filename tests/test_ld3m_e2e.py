"""`ddbench run --prior ld3m` end to end with every matcher on a Fashion-MNIST slice."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from ddbench.cli.main import cli


@pytest.mark.slow
def test_run_ld3m_with_every_matcher(tmp_path, fmnist_slice) -> None:
    out = tmp_path / "out"
    args = [
        "run",
        "--dataset",
        "fashion-mnist",
        "--data-root",
        str(fmnist_slice),
        "--prior",
        "ld3m",
        "--algo",
        "dm,dc,mtt",
        "--ipc",
        "1",
        "--iterations",
        "2",
        "--eval-epochs",
        "2",
        "--seeds",
        "1",
        "--no-progress",
        "--out",
        str(out),
        "--prior-opt",
        "T=2",
        "--algo-opt",
        "dm.batch_real=12",
        "--algo-opt",
        "dm.compile=false",
        "--algo-opt",
        "dc.batch_real=12",
        "--algo-opt",
        "mtt.build_experts=true",
        "--algo-opt",
        "mtt.num_experts=1",
        "--algo-opt",
        "mtt.expert_train_epochs=2",
        "--algo-opt",
        "mtt.expert_epochs=1",
        "--algo-opt",
        "mtt.max_start_epoch=1",
        "--algo-opt",
        "mtt.syn_steps=2",
    ]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    run_dirs = sorted((out / "runs" / "fashion-mnist").iterdir())
    assert len(run_dirs) == 3
    for run_dir in run_dirs:
        assert (run_dir / "grid.png").stat().st_size > 0
        assert (run_dir / "synthetic.safetensors").exists()
    assert "ld3m" in result.output
