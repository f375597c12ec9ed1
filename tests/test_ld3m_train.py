"""`ddbench prior train ld3m` on a tiny slice: stages, resume, outputs, and the CLI wiring."""

from __future__ import annotations

import json

import torch
from click.testing import CliRunner
from ddbench_plugins.priors.ld3m.backends import load_backend
from ddbench_plugins.priors.ld3m.cli import convert_ldm, train
from ddbench_plugins.priors.ld3m.train import STATE_FILE, train_tiny

from ddbench.interfaces import RealData


def slice_data() -> RealData:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (24, 1, 12, 12), dtype=torch.uint8, generator=g)
    labels = torch.arange(3).repeat_interleave(8)
    return RealData("slice", images, labels, images[:6], labels[:6], ["a", "b", "c"], (0.5,), (0.3,))


def test_train_saves_a_loadable_model_with_metrics_and_samples(tmp_path) -> None:
    data = slice_data()
    metrics = train_tiny(
        data,
        tmp_path,
        ae_steps=3,
        diffusion_steps=3,
        batch_size=4,
        base_channels=8,
        checkpoint_every=2,
        progress=False,
        sample_steps=2,
    )
    assert (tmp_path / "samples.png").is_file() and (tmp_path / STATE_FILE).is_file()
    assert (
        json.loads((tmp_path / "metrics.json").read_text())["reconstruction_psnr_db"]
        == metrics["reconstruction_psnr_db"]
    )
    assert 0 < metrics["reconstruction_psnr_db"] < 100
    backend = load_backend(tmp_path)
    assert backend.image_channels == 1 and backend.num_classes == 3
    assert abs(backend.scale - metrics["scaling_factor"]) < 1e-6


def test_training_resumes_where_it_stopped(tmp_path) -> None:
    data = slice_data()
    train_tiny(
        data,
        tmp_path / "a",
        ae_steps=2,
        diffusion_steps=2,
        batch_size=4,
        base_channels=8,
        progress=False,
        sample_steps=2,
    )
    # an interrupted run: stopped after the autoencoder stage, then resumed with the full budget
    train_tiny(
        data,
        tmp_path / "b",
        ae_steps=2,
        diffusion_steps=0,
        batch_size=4,
        base_channels=8,
        progress=False,
        sample_steps=2,
    )
    state = torch.load(tmp_path / "b" / STATE_FILE, weights_only=False)
    state["stage"], state["step"] = "diffusion", 0
    torch.save(state, tmp_path / "b" / STATE_FILE)
    train_tiny(
        data,
        tmp_path / "b",
        ae_steps=2,
        diffusion_steps=2,
        batch_size=4,
        base_channels=8,
        progress=False,
        sample_steps=2,
    )
    a, b = load_backend(tmp_path / "a"), load_backend(tmp_path / "b")
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(pa, pb, msg=name)


def test_cli_commands_are_wired(tmp_path) -> None:
    runner = CliRunner()
    result = runner.invoke(train, ["pixel", "--out", str(tmp_path)])
    assert result.exit_code != 0 and "ld3m" in str(result.exception)
    result = runner.invoke(convert_ldm, [str(tmp_path / "missing.ckpt"), str(tmp_path / "out")])
    assert result.exit_code != 0 and "No checkpoint" in str(result.exception)
