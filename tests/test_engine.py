"""The distillation engine: split backward, checkpoint/resume, NaN guard, reproducibility."""

from __future__ import annotations

import math

import pytest
import torch
from ddbench_plugins.priors.pixel import PixelPrior
from torch import Tensor

from ddbench.engine.distill import CHECKPOINT_FILE, Distiller, split_backward_step
from ddbench.engine.spec import RunSpec
from ddbench.errors import NonFiniteLossError
from ddbench.interfaces import LatentState, Matcher, Prior, RealSampler, class_labels


class MeanMatcher(Matcher):
    """Matches per-class pixel means of a random real batch: cheap, smooth, needs no network."""

    name = "mean-test"

    def __init__(self, scale: float = 1.0) -> None:
        self.scale = scale

    def loss(self, images: Tensor, labels: Tensor, real: RealSampler) -> Tensor:
        total = images.new_zeros(())
        for c in torch.unique(labels).tolist():
            target = real.class_batch(c, 4).mean(0)
            total = total + self.scale * ((images[labels == c].mean(0) - target) ** 2).sum()
        return total


class LinearPrior(Prior):
    """images = W · z with a fixed random W: a generator with a graph, for the split backward."""

    name = "linear-test"
    base_lrs = {"z": 0.5}

    def setup(self, data, device) -> None:
        self.shape = (data.channels, data.resolution, data.resolution)
        n = data.channels * data.resolution**2
        self.weight = torch.randn(n, 8, generator=torch.Generator().manual_seed(1)) / 3

    def init_state(self, real_images, labels, generator) -> LatentState:
        return LatentState(params={"z": torch.randn(len(labels), 8, generator=generator)})

    def generate(self, state: LatentState, indices: Tensor) -> Tensor:
        return (state.params["z"][indices] @ self.weight.T).view(len(indices), *self.shape)


def _spec(**kw) -> RunSpec:
    defaults = dict(dataset="tiny", prior="pixel", matcher="mean-test", ipc=2, iterations=6, seed=3)
    return RunSpec(**{**defaults, **kw})


def _distiller(tiny_data, tmp_path, matcher=None, prior=None, **spec_kw) -> Distiller:
    return Distiller(
        _spec(**spec_kw),
        tiny_data,
        tmp_path,
        checkpoint_every=2,
        chunk_size=3,
        progress=False,
        prior=prior or PixelPrior(),
        matcher=matcher or MeanMatcher(),
    )


def test_split_backward_equals_direct_backward(tiny_data):
    prior = LinearPrior()
    prior.setup(tiny_data, torch.device("cpu"))
    labels = class_labels(tiny_data.num_classes, 3)
    gen = torch.Generator().manual_seed(0)
    state = prior.init_state(None, labels, gen)
    state.params["z"].requires_grad_(True)
    matcher = MeanMatcher()

    def sampler() -> RealSampler:
        return RealSampler(tiny_data, torch.Generator().manual_seed(5), torch.device("cpu"))

    split_backward_step(prior, matcher, state, labels, sampler(), chunk_size=2)
    split_grad = state.params["z"].grad.clone()
    state.params["z"].grad = None
    matcher.loss(prior.generate(state, torch.arange(len(labels))), labels, sampler()).backward()
    torch.testing.assert_close(split_grad, state.params["z"].grad, rtol=1e-5, atol=1e-7)


def test_loss_decreases_and_images_change(tiny_data, tmp_path):
    result = _distiller(tiny_data, tmp_path, iterations=30).run()
    assert result.losses[-1] < result.losses[0]
    assert result.synthetic.images.shape == (6, 1, 16, 16)
    assert result.synthetic.labels.tolist() == [0, 0, 1, 1, 2, 2]


def test_seeded_runs_are_bit_for_bit_repeatable(tiny_data, tmp_path):
    a = _distiller(tiny_data, tmp_path / "a").run()
    b = _distiller(tiny_data, tmp_path / "b").run()
    assert torch.equal(a.synthetic.images, b.synthetic.images)
    assert a.losses == b.losses
    c = _distiller(tiny_data, tmp_path / "c", seed=4).run()
    assert not torch.equal(a.synthetic.images, c.synthetic.images)


def test_resume_equals_uninterrupted_run(tiny_data, tmp_path):
    full = _distiller(tiny_data, tmp_path / "full", prior=LinearPrior()).run()

    class Killed(Exception):
        pass

    def kill_at_5(it: int, loss: float) -> None:
        if it == 4:  # iterations 0-3 checkpointed (every 2), iteration 4 lost
            raise Killed

    interrupted = _distiller(tiny_data, tmp_path / "cut", prior=LinearPrior())
    with pytest.raises(Killed):
        interrupted.run(on_iteration=kill_at_5)
    assert (tmp_path / "cut" / CHECKPOINT_FILE).exists()
    resumed = _distiller(tiny_data, tmp_path / "cut", prior=LinearPrior()).run(resume=True)
    assert resumed.resumed_from == 4
    assert torch.equal(full.synthetic.images, resumed.synthetic.images)
    assert full.losses == resumed.losses


def test_slow_iterations_are_checkpointed_by_time(tiny_data, tmp_path):
    """checkpoint_every alone would not save before iteration 100; the time rule saves every iteration here."""

    class Killed(Exception):
        pass

    def kill_at_3(it: int, loss: float) -> None:
        if it == 3:
            raise Killed

    distiller = Distiller(_spec(), tiny_data, tmp_path, checkpoint_every=100, checkpoint_seconds=0.0, progress=False,
                          prior=LinearPrior(), matcher=MeanMatcher())  # fmt: skip
    with pytest.raises(Killed):
        distiller.run(on_iteration=kill_at_3)
    resumed = Distiller(_spec(), tiny_data, tmp_path, checkpoint_every=100, progress=False, prior=LinearPrior(),
                        matcher=MeanMatcher()).run(resume=True)  # fmt: skip
    assert resumed.resumed_from == 3


def test_nan_loss_stops_with_clear_error_and_keeps_checkpoint(tiny_data, tmp_path):
    class ExplodingMatcher(MeanMatcher):
        def loss(self, images, labels, real):
            value = super().loss(images, labels, real)
            return value * math.inf if self.calls_left() else value

        calls = 0

        def calls_left(self) -> bool:
            self.calls += 1
            return self.calls > 3

    d = _distiller(tiny_data, tmp_path, matcher=ExplodingMatcher())
    with pytest.raises(NonFiniteLossError, match="iteration 3.*checkpoint"):
        d.run()
    payload = torch.load(tmp_path / CHECKPOINT_FILE, weights_only=True)
    assert payload["iteration"] == 2
    assert all(torch.isfinite(v).all() for v in payload["params"].values())


def test_a_loss_that_is_nan_before_any_update_blames_the_plugin_not_the_rate(tiny_data, tmp_path):
    class NanMatcher(MeanMatcher):
        def loss(self, images, labels, real):
            return super().loss(images, labels, real) * math.nan

    with pytest.raises(NonFiniteLossError) as caught:
        _distiller(tiny_data, tmp_path, matcher=NanMatcher()).run()
    message = str(caught.value)
    assert "on the initial images, before any update" in message and "check_matcher(..., ipc=" in message
    assert "Lower the learning rates" not in message


def test_corrupt_checkpoint_restarts_from_scratch(tiny_data, tmp_path, caplog):
    (tmp_path / CHECKPOINT_FILE).write_bytes(b"not a checkpoint")
    fresh = _distiller(tiny_data, tmp_path / "fresh").run()
    result = _distiller(tiny_data, tmp_path).run()
    assert result.resumed_from == 0
    assert (tmp_path / "checkpoint.pt.corrupt").exists()
    assert torch.equal(fresh.synthetic.images, result.synthetic.images)
    assert "unreadable" in caplog.text


def test_baseline_matcher_keeps_real_images(tiny_data, tmp_path):
    from ddbench_plugins.matchers.real import RandomReal

    result = _distiller(tiny_data, tmp_path, matcher=RandomReal()).run()
    assert result.losses == []
    # the initial images are real training images of the right class
    for image, label in zip(result.synthetic.images, result.synthetic.labels):
        pool = tiny_data.normalise(tiny_data.train_images[tiny_data.class_indices(int(label))])
        assert any(torch.allclose(image, p) for p in pool)


def test_a_matcher_that_does_not_distil_gets_no_progress_bar(tiny_data, tmp_path):
    """Random real images: no iterations, so no '0/0 loss —' bar on the shared progress display."""
    import io

    from ddbench_plugins.matchers.real import RandomReal
    from rich.console import Console

    from ddbench.util.progress import make_progress

    for matcher, shown in ((RandomReal(), False), (MeanMatcher(), True)):
        out = io.StringIO()
        with make_progress(True, console=Console(file=out, force_terminal=False)) as bar:
            spec = _spec(matcher=matcher.name, iterations=2)
            Distiller(spec, tiny_data, tmp_path / matcher.name, progress=bar, prior=PixelPrior(), matcher=matcher).run(
                resume=False
            )
        assert (spec.label in out.getvalue()) is shown
