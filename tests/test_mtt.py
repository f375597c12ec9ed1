"""MTT trajectory matching and its expert buffer."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from ddbench_plugins.matchers.mtt import experts as experts_module
from ddbench_plugins.matchers.mtt.experts import ExpertBuffer, ExpertConfig, ExpertTrajectory, save_trajectory, snapshot
from ddbench_plugins.matchers.mtt.matcher import LearningRateDivergedError, TrajectoryMatching, default_hyperparameters
from torch.func import functional_call

from ddbench.errors import DataNotFoundError, InvalidOptionError
from ddbench.interfaces import MatchContext, class_labels


def _config(data, epochs: int = 3, **kwargs) -> ExpertConfig:
    return ExpertConfig.for_data(data, epochs=epochs, **kwargs)


def fake_train_expert(config, data, index, device="cpu", progress=None):
    """Deterministic 'training': the init of a real ConvNet, then small seeded perturbations."""
    torch.manual_seed(1000 + index)
    model = experts_module.build_model(config.model, data)
    snapshots = [snapshot(model)]
    for _ in range(config.epochs):
        snapshots.append({k: v + 0.01 * torch.randn_like(v) for k, v in snapshots[-1].items()})
    return snapshots, None


@pytest.fixture
def fake_training(monkeypatch):
    calls: list[int] = []

    def train(config, data, index, device="cpu", progress=None):
        calls.append(index)
        return fake_train_expert(config, data, index, device, progress)

    monkeypatch.setattr(experts_module, "train_expert", train)
    return calls


def _mtt(data, root: Path, ipc: int = 1, **options) -> TrajectoryMatching:
    defaults = dict(expert_epochs=1, max_start_epoch=2, syn_steps=3, lr_lr=1e-5, num_experts=2, expert_dir=str(root))
    matcher = TrajectoryMatching(**{**defaults, **options})
    matcher.setup(MatchContext(data=data, ipc=ipc, device=torch.device("cpu"), dsa=None))
    return matcher


def _synthetic(data, ipc: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    labels = class_labels(data.num_classes, ipc)
    images = torch.cat([data.sample_class(c, ipc, torch.Generator().manual_seed(c)) for c in range(data.num_classes)])
    return images.requires_grad_(True), labels


# ------------------------------------------------------------------------------ expert buffer


def test_trajectory_round_trips_through_safetensors(tmp_path, tiny_data):
    snaps, _ = fake_train_expert(_config(tiny_data), tiny_data, 0)
    path = tmp_path / "expert_0000.safetensors"
    save_trajectory(path, snaps, {"index": 0})
    loaded = ExpertTrajectory(path)
    assert loaded.num_epochs == 3 and loaded.metadata == {"index": 0}
    assert loaded.names == list(snaps[0])
    for epoch in (0, 2, 3):
        params = loaded.params_at(epoch)
        assert all(torch.equal(params[k], snaps[epoch][k]) for k in snaps[0])
    with pytest.raises(IndexError, match="0..3"):
        loaded.params_at(4)


def test_buffer_builds_resumes_and_never_leaves_half_files(tmp_path, tiny_data, fake_training, monkeypatch):
    config = _config(tiny_data)
    buffer = ExpertBuffer.at(tmp_path, config)
    real_train = experts_module.train_expert

    def dies_on_second(cfg, data, index, device="cpu", progress=None):
        if index == 1:
            raise KeyboardInterrupt  # killed while training expert 1
        return real_train(cfg, data, index, device, progress)

    monkeypatch.setattr(experts_module, "train_expert", dies_on_second)
    with pytest.raises(KeyboardInterrupt):
        buffer.build(tiny_data, 3)
    assert [p.name for p in buffer.expert_paths()] == ["expert_0000.safetensors"]
    (buffer.directory / ".expert_0001.safetensors.x1y2.tmp").write_bytes(b"half")  # a SIGKILL leftover
    first = ExpertTrajectory(buffer.expert_path(0)).params_at(3)

    monkeypatch.setattr(experts_module, "train_expert", real_train)
    fake_training.clear()
    buffer.build(tiny_data, 3)
    assert fake_training == [1, 2]  # the finished expert is kept, the unfinished one restarts
    assert len(buffer) == 3 and not list(buffer.directory.glob("*.tmp"))
    again = ExpertTrajectory(buffer.expert_path(0)).params_at(3)
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert json.loads((buffer.directory / "config.json").read_text()) == config.to_dict()


def test_a_second_builder_waits_for_the_first_and_reuses_its_experts(tmp_path, tiny_data, fake_training):
    """Parallel sweep workers share one buffer: the build lock makes the second wait, then skip."""
    buffer = ExpertBuffer.at(tmp_path, _config(tiny_data))
    lock_file = buffer.directory.parent / f".{buffer.directory.name}.lock"
    holder = subprocess.Popen(
        [sys.executable, "-c", f"from ddbench.util.fileio import FileLock; import time; assert FileLock({str(lock_file)!r}).acquire(); print('held', flush=True); time.sleep(1.5)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        start = time.perf_counter()
        buffer.build(tiny_data, 1)
        assert time.perf_counter() - start > 0.5  # it waited for the holder to exit
    finally:
        holder.wait(timeout=30)
    assert fake_training == [0] and len(buffer) == 1


def test_find_reuses_a_longer_buffer_of_the_same_configuration(tmp_path, tiny_data, fake_training):
    ExpertBuffer.at(tmp_path, _config(tiny_data, epochs=5)).build(tiny_data, 2)
    found = ExpertBuffer.find(tmp_path, _config(tiny_data, epochs=3), num_experts=2)
    assert found is not None and found.config.epochs == 5
    assert ExpertBuffer.find(tmp_path, _config(tiny_data, epochs=6), num_experts=2) is None
    assert ExpertBuffer.find(tmp_path, _config(tiny_data, epochs=3), num_experts=3) is None
    assert ExpertBuffer.find(tmp_path, _config(tiny_data, epochs=3, lr=0.02), num_experts=1) is None
    assert ExpertBuffer.find(tmp_path, _config(tiny_data.subset(6), epochs=3), num_experts=1) is None


def test_expert_trains_with_the_shared_loop_and_snapshots_every_epoch(tiny_data):
    config = _config(tiny_data, epochs=2, batch_size=16)
    snaps, _ = experts_module.train_expert(config, tiny_data, index=0)
    assert len(snaps) == 3
    moved = [max(float((snaps[e + 1][k] - snaps[e][k]).abs().max()) for k in snaps[0]) for e in range(2)]
    assert all(m > 0 for m in moved)
    again, _ = experts_module.train_expert(config, tiny_data, index=0)  # seeded from (seed, index)
    assert all(torch.equal(again[2][k], snaps[2][k]) for k in snaps[0])


# ------------------------------------------------------------------------------------ matcher


def test_default_hyperparameters_by_dataset():
    assert default_hyperparameters(32, 1) == {"syn_steps": 50, "expert_epochs": 2, "max_start_epoch": 2, "lr_lr": 1e-7}
    assert default_hyperparameters(128, 1)["syn_steps"] == 20
    assert default_hyperparameters(128, 1)["lr_lr"] == 1e-6


def test_missing_buffer_names_the_command_that_builds_it(tmp_path, tiny_data):
    with pytest.raises(DataNotFoundError) as err:
        _mtt(tiny_data, tmp_path / "none", build_experts=False)
    message = str(err.value)
    assert "ddbench experts --dataset tiny --res 16 --model convnet --num-experts 2 --epochs 3" in message
    assert "--train-per-class 12" in message and "build_experts=true" in message


def test_a_run_builds_the_missing_buffer_by_default(tmp_path, tiny_data, fake_training):
    assert TrajectoryMatching().build_experts  # `ddbench run --algo mtt` as a newcomer types it
    matcher = _mtt(tiny_data, tmp_path)
    assert fake_training == [0, 1] and len(matcher.experts) == 2


def test_preparation_costs_only_the_experts_still_missing(tmp_path, tiny_data, fake_training):
    from ddbench_plugins.matchers.mtt.matcher import EXPERT_SECONDS_PER_IMAGE_EPOCH

    from ddbench.interfaces import IdentityContext

    context = IdentityContext(dataset="tiny", resolution=16, ipc=1, device=torch.device("cpu"))
    images = len(tiny_data.train_labels)
    per_expert = 3 * images * EXPERT_SECONDS_PER_IMAGE_EPOCH  # max_start_epoch 2 + expert_epochs 1

    def cost(**options) -> float | None:
        defaults = dict(expert_epochs=1, max_start_epoch=2, num_experts=2)
        prepared = TrajectoryMatching(**{**defaults, **options}).preparation(context, images, tmp_path / "cache")
        return None if prepared is None else prepared.one_core_seconds

    assert cost() == pytest.approx(2 * per_expert)
    assert cost(build_experts=False) is None  # the run would stop and say how to build them
    # one finished expert in the run's cache (as `ddbench experts` or an interrupted build leaves it)
    config = ExpertConfig.for_data(tiny_data, epochs=3)
    ExpertBuffer.at(tmp_path / "cache" / "experts", config).build(tiny_data, 1)
    assert cost() == pytest.approx(per_expert)
    _mtt(tiny_data, tmp_path / "cache" / "experts")  # the run finishes the buffer where it looks for it
    assert fake_training == [0, 1] and cost() is None
    assert cost(num_experts=3) == pytest.approx(per_expert)


def test_loss_sends_gradients_to_images_and_learnable_lr(tmp_path, tiny_data, fake_training):
    matcher = _mtt(tiny_data, tmp_path, build_experts=True, batch_syn=4)
    images, labels = _synthetic(tiny_data)
    torch.manual_seed(0)
    loss = matcher.loss(images, labels, real=None)
    assert loss.dim() == 0 and float(loss.detach()) > 0
    loss.backward()
    assert torch.isfinite(images.grad).all() and (images.grad.flatten(1).abs().sum(1) > 0).all()
    assert matcher.syn_lr.grad is not None and float(matcher.syn_lr.grad) != 0.0
    (group,) = matcher.parameters()
    assert group["params"] == [matcher.syn_lr] and group["lr"] == 1e-5 and group["momentum"] == 0.5


def test_loss_is_zero_when_the_student_lands_on_the_target(tmp_path, tiny_data, fake_training):
    matcher = _mtt(tiny_data, tmp_path, build_experts=True)
    images, labels = _synthetic(tiny_data)
    start = matcher._flat(matcher.experts[0].params_at(0))
    theta = start.clone()
    lr = float(matcher.syn_lr.detach())
    for _ in range(matcher.syn_steps):  # the same full-batch SGD steps, taken outside the matcher
        theta.requires_grad_(True)
        logits = functional_call(matcher.net, matcher._unflatten(theta), (images.detach(),))
        (grad,) = torch.autograd.grad(F.cross_entropy(logits, labels), theta)
        theta = (theta - lr * grad).detach()
    loss = matcher.trajectory_loss(images, labels, start, theta)
    assert float(loss.detach()) == pytest.approx(0.0, abs=1e-8)
    other = matcher._flat(matcher.experts[0].params_at(1))
    assert float(matcher.trajectory_loss(images, labels, start, other).detach()) > 1e-3


@pytest.mark.parametrize("bad", [-0.01, 0.0, float("nan"), float("inf")])
def test_a_learning_rate_that_diverges_stops_the_run(tmp_path, tiny_data, fake_training, bad):
    matcher = _mtt(tiny_data, tmp_path, build_experts=True)
    images, labels = _synthetic(tiny_data)
    with torch.no_grad():
        matcher.syn_lr.fill_(bad)
    with pytest.raises(LearningRateDivergedError, match="lr_lr"):
        matcher.after_step(images.detach(), labels, None)
    with pytest.raises(LearningRateDivergedError):
        matcher.loss(images, labels, None)


def test_learned_lr_is_saved_and_checkpointed(tmp_path, tiny_data, fake_training):
    matcher = _mtt(tiny_data, tmp_path, build_experts=True)
    with torch.no_grad():
        matcher.syn_lr.fill_(0.02)
    assert matcher.synthetic_metadata() == {"lr": pytest.approx(0.02)}
    state = matcher.state_dict()
    fresh = _mtt(tiny_data, tmp_path)
    tensor = fresh.syn_lr
    fresh.load_state_dict(state)
    assert fresh.syn_lr is tensor and float(fresh.syn_lr.detach()) == pytest.approx(0.02)


def test_learned_lr_is_recorded_per_iteration(tmp_path, tiny_data, fake_training):
    from ddbench_plugins.priors.pixel import PixelPrior

    from ddbench.engine.distill import Distiller
    from ddbench.engine.metrics import read_metrics
    from ddbench.engine.spec import RunSpec

    matcher = _mtt(tiny_data, tmp_path / "experts", build_experts=True, lr_lr=1e-4)
    spec = RunSpec(dataset="tiny", prior="pixel", matcher="mtt", ipc=1, iterations=3)
    result = Distiller(spec, tiny_data, tmp_path / "run", progress=False, prior=PixelPrior(), matcher=matcher).run()
    lrs = [record["lr"] for record in read_metrics(tmp_path / "run")]
    assert len(lrs) == 3 and len(set(lrs)) == 3  # the learned lr moves, and each iteration's value is kept
    assert lrs[-1] == pytest.approx(result.synthetic.metadata["matcher"]["lr"])
    assert result.metrics["final"] == {"lr": lrs[-1]}


def test_invalid_options_name_the_fix(tmp_path, tiny_data, fake_training):
    with pytest.raises(InvalidOptionError, match="syn_steps"):
        TrajectoryMatching(syn_steps=0)
    with pytest.raises(InvalidOptionError, match="lr_teacher"):
        TrajectoryMatching(lr_teacher=-1)
    with pytest.raises(InvalidOptionError, match="expert_train_epochs"):
        _mtt(tiny_data, tmp_path, expert_train_epochs=2, build_experts=True)


# ------------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_cli_builds_experts_and_runs_mtt_end_to_end(fmnist_slice, tmp_path: Path):
    from click.testing import CliRunner

    from ddbench.cli.main import cli

    out = tmp_path / "out"
    runner = CliRunner()
    built = runner.invoke(
        cli,
        ["experts", "--dataset", "fashion-mnist", "--data-root", str(fmnist_slice), "--num-experts", "1", "--epochs", "2",
         "--no-progress", "--out", str(out)],
    )  # fmt: skip
    assert built.exit_code == 0, built.output + repr(built.exception)
    assert len(list(out.glob("cache/experts/*/expert_0000.safetensors"))) == 1
    result = runner.invoke(
        cli,
        ["run", "--dataset", "fashion-mnist", "--data-root", str(fmnist_slice), "--prior", "pixel", "--algo", "mtt",
         "--ipc", "1", "--iterations", "2", "--eval-epochs", "2", "--seeds", "1", "--algo-opt", "num_experts=1", "--algo-opt", "max_start_epoch=1",
         "--algo-opt", "expert_epochs=1", "--algo-opt", "syn_steps=3", "--algo-opt", "lr_teacher=0.01",
         "--no-progress", "--out", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output + repr(result.exception)
    (meta,) = list(out.glob("runs/**/synthetic.json"))
    assert json.loads(meta.read_text())["matcher"]["lr"] > 0
