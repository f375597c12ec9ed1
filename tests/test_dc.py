"""DC gradient matching: the distance, the loop schedule, the loss and the inner network training."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from ddbench_plugins.matchers._realside import ReshapeAvgPool2d
from ddbench_plugins.matchers.dc import (
    GradientMatching,
    gradient_distance,
    inner_compiled,
    layer_distance,
    loop_schedule,
)

from ddbench.errors import InvalidOptionError
from ddbench.interfaces import IdentityContext, MatchContext, RealSampler, class_labels


def _context(data, ipc: int = 2, dsa=None) -> MatchContext:
    return MatchContext(data=data, ipc=ipc, device=torch.device("cpu"), dsa=dsa)


def _matcher(data, ipc: int = 2, dsa=None, **options) -> GradientMatching:
    matcher = GradientMatching(batch_real=8, **options)
    matcher.setup(_context(data, ipc, dsa))
    torch.manual_seed(0)
    matcher.begin_iteration(0)
    return matcher


def _synthetic(data, ipc: int) -> tuple[torch.Tensor, torch.Tensor]:
    labels = class_labels(data.num_classes, ipc)
    images = torch.cat([data.sample_class(c, ipc, torch.Generator().manual_seed(c)) for c in range(data.num_classes)])
    return images.requires_grad_(True), labels


# ------------------------------------------------------------------------------- the distance


def test_distance_is_zero_for_identical_gradients():
    torch.manual_seed(0)
    grads = [torch.randn(8, 3, 3, 3), torch.randn(10, 32), torch.randn(8)]
    assert float(gradient_distance(grads, [g.clone() for g in grads])) == pytest.approx(0.0, abs=1e-5)
    # scaling a gradient does not change its direction: still 0
    assert float(layer_distance(grads[0], 3.0 * grads[0])) == pytest.approx(0.0, abs=1e-5)


def test_distance_ignores_one_dimensional_tensors():
    torch.manual_seed(0)
    weight_r, weight_s = torch.randn(4, 6), torch.randn(4, 6)
    with_bias = gradient_distance([weight_r, torch.randn(4)], [weight_s, -torch.randn(4)])
    assert float(layer_distance(torch.randn(5), torch.randn(5))) == 0.0
    assert float(with_bias) == pytest.approx(float(layer_distance(weight_r, weight_s)))


def test_distance_is_sum_over_rows_of_one_minus_cosine():
    g = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 4.0]])
    opposite = g * torch.tensor([[-1.0], [1.0], [1.0]])  # row 0 flipped: 1 - (-1) = 2, others 0
    assert float(layer_distance(g, opposite)) == pytest.approx(2.0, abs=1e-5)
    conv_r, conv_s = torch.randn(4, 2, 3, 3), torch.randn(4, 2, 3, 3)
    rows = torch.nn.functional.cosine_similarity(conv_r.reshape(4, -1), conv_s.reshape(4, -1), dim=1, eps=0)
    assert float(layer_distance(conv_r, conv_s)) == pytest.approx(float((1 - rows).sum()), rel=1e-4)


def test_distance_rejects_mismatched_gradients():
    with pytest.raises(ValueError, match="same shape"):
        layer_distance(torch.zeros(2, 3), torch.zeros(3, 2))


# ------------------------------------------------------------------------------------ schedule


def test_loop_schedule_follows_reference_and_rule():
    assert loop_schedule(1) == (1, 1)
    assert loop_schedule(10) == (10, 50)
    assert loop_schedule(50) == (50, 10)
    assert loop_schedule(5) == (5, 1)  # between 1 and 10: outer = ipc, inner of IPC 1
    assert loop_schedule(15) == (15, 50)
    assert loop_schedule(100) == (50, 10)  # outer capped at 50
    with pytest.raises(InvalidOptionError, match="ipc"):
        loop_schedule(0)


def test_setup_resolves_schedule_and_options_override_it(tiny_data):
    matcher = GradientMatching()
    matcher.setup(_context(tiny_data, ipc=10))
    assert (matcher.steps_per_iteration, matcher.inner_loop) == (10, 50)
    matcher = GradientMatching(outer_loop=3, inner_loop=0)
    matcher.setup(_context(tiny_data, ipc=10))
    assert (matcher.steps_per_iteration, matcher.inner_loop) == (3, 0)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"outer_loop": 0}, "outer_loop"),
        ({"net_lr": 0}, "net_lr"),
        ({"batch_real": 0}, "batch_real"),
        ({"real_precision": "fp8"}, "real_precision"),
        ({"inner_precision": "fp16"}, "inner_precision"),
        ({"inner_compile": "yes"}, "inner_compile"),
    ],
)
def test_invalid_options_name_the_fix(options, message):
    with pytest.raises(InvalidOptionError, match=message):
        GradientMatching(**options)


# ---------------------------------------------------------------------------------------- loss


def test_loss_sends_gradients_to_every_synthetic_image(tiny_data):
    matcher = _matcher(tiny_data)
    images, labels = _synthetic(tiny_data, 2)
    real = RealSampler(tiny_data, torch.Generator().manual_seed(0), torch.device("cpu"))
    loss = matcher.loss(images, labels, real)
    assert loss.dim() == 0 and float(loss.detach()) > 0
    loss.backward()
    per_image = images.grad.flatten(1).abs().sum(1)
    assert torch.isfinite(images.grad).all() and (per_image > 0).all()


def test_loss_is_lower_for_the_real_batch_itself_than_for_noise(tiny_data):
    """With the class's own images as the synthetic set the gradients nearly coincide; noise does not."""
    matcher = _matcher(tiny_data)
    matcher.batch_real = 12

    class WholeClass:  # a sampler that returns every image of the class, unshuffled
        def class_batch(self, label: int, n: int) -> torch.Tensor:
            return tiny_data.normalise(tiny_data.train_images[tiny_data.class_indices(label)])

    own = tiny_data.normalise(tiny_data.train_images).requires_grad_(True)
    noise = torch.randn_like(own).requires_grad_(True)
    same = float(matcher.loss(own, tiny_data.train_labels, WholeClass()).detach())
    other = float(matcher.loss(noise, tiny_data.train_labels, WholeClass()).detach())
    assert same < 0.1 * other


def test_bf16_real_side_is_close_to_fp32(tiny_data):
    images, labels = _synthetic(tiny_data, 2)
    losses = []
    for precision in ("fp32", "bf16"):
        matcher = _matcher(tiny_data, real_precision=precision)
        real = RealSampler(tiny_data, torch.Generator().manual_seed(0), torch.device("cpu"))
        losses.append(float(matcher.loss(images, labels, real).detach()))
    assert losses[1] == pytest.approx(losses[0], rel=0.05)


def test_compiled_and_chunked_real_side_match_eager_and_follow_the_network(tiny_data):
    """The real side's copy of the network takes each iteration's weights, compiled or not."""
    images, labels = _synthetic(tiny_data, 2)
    variants = {
        "eager": {"compile": False},
        "compiled": {"compile": True},
        "chunked": {"compile": False, "real_chunk": 3},
    }
    losses = {}
    for name, options in variants.items():
        matcher = _matcher(tiny_data, **options)
        losses[name] = []
        for iteration in (0, 1):
            torch.manual_seed(iteration)
            matcher.begin_iteration(iteration)
            real = RealSampler(tiny_data, torch.Generator().manual_seed(0), torch.device("cpu"))
            losses[name].append(float(matcher.loss(images, labels, real).detach()))
        if name == "compiled":  # compiled for real, not fallen back to eager
            assert matcher._real_chunk_gradients.compiled is not None
    assert losses["eager"][0] != pytest.approx(losses["eager"][1], rel=1e-3)  # a different network
    assert losses["compiled"] == pytest.approx(losses["eager"], rel=1e-4)
    assert losses["chunked"] == pytest.approx(losses["eager"], rel=1e-5)


def test_compile_auto_only_for_large_real_batches(tiny_data):
    assert not _matcher(tiny_data)._channels_last  # batch_real 8: compiling would not pay back
    big = GradientMatching(batch_real=256)
    big.setup(_context(tiny_data))
    big.begin_iteration(0)
    assert big._channels_last and big._real_chunk_gradients.compiled is not None
    # the compiled copy pools by reshape (a faster compiled backward); the matched network is unchanged
    assert any(isinstance(m, ReshapeAvgPool2d) for m in big._real_net.modules())
    assert not any(isinstance(m, ReshapeAvgPool2d) for m in big.net.modules())


class SpyDSA:
    """Records the seed of every call and flips the images (a real, differentiable op)."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []

    def __call__(self, images: torch.Tensor, seed: int) -> torch.Tensor:
        self.calls.append((len(images), seed))
        return images.flip(3)


def test_same_dsa_draw_on_real_and_synthetic_batch(tiny_data):
    spy = SpyDSA()
    matcher = _matcher(tiny_data, dsa=spy)
    images, labels = _synthetic(tiny_data, 2)
    real = RealSampler(tiny_data, torch.Generator().manual_seed(0), torch.device("cpu"))
    matcher.loss(images, labels, real)
    assert [n for n, _ in spy.calls] == [8, 2] * tiny_data.num_classes
    pairs = [(spy.calls[i][1], spy.calls[i + 1][1]) for i in range(0, len(spy.calls), 2)]
    assert all(real_seed == syn_seed for real_seed, syn_seed in pairs)
    assert len({seed for seed, _ in pairs}) == tiny_data.num_classes  # a fresh draw per class


# ------------------------------------------------------------------------- inner network training


def test_network_trains_between_outer_steps_but_not_after_the_last(tiny_data):
    matcher = _matcher(tiny_data, outer_loop=2, inner_loop=2)
    images, labels = _synthetic(tiny_data, 2)
    before = [p.detach().clone() for p in matcher.net.parameters()]
    matcher.after_step(images.detach(), labels, None)
    after_first = [p.detach().clone() for p in matcher.net.parameters()]
    assert any(not torch.equal(a, b) for a, b in zip(before, after_first))
    matcher.after_step(images.detach(), labels, None)  # last outer step: the net is discarded
    assert all(torch.equal(a, p) for a, p in zip(after_first, matcher.net.parameters()))


def test_inner_compile_auto_from_the_network_steps_per_iteration():
    assert not inner_compiled("auto", *loop_schedule(1))  # the network never trains at IPC 1
    assert not inner_compiled("auto", *loop_schedule(5))  # 4 steps an iteration: compiling would not pay
    assert inner_compiled("auto", *loop_schedule(10)) and inner_compiled("auto", *loop_schedule(50))
    assert inner_compiled(True, 1, 1) and not inner_compiled(False, 10, 50)


def test_effective_options_resolve_the_inner_training_for_the_run():
    cpu = torch.device("cpu")
    at = {ipc: IdentityContext("fashion-mnist", 28, ipc, cpu) for ipc in (1, 10)}
    options = {ipc: GradientMatching().effective_options(context) for ipc, context in at.items()}
    assert options[10]["inner_compile"] is True and options[10]["inner_precision"] == "fp32"  # the defaults
    # at IPC 1 the network is never trained between image steps: the inner options change nothing,
    # so they stay out of the run id (DC runs at IPC 1 keep the ids they had before the options existed)
    assert "inner_compile" not in options[1] and "inner_precision" not in options[1]
    bf16 = GradientMatching(inner_precision="bf16").effective_options(at[1])
    assert bf16 == options[1]
    auto = GradientMatching(inner_precision="auto").effective_options(at[10])["inner_precision"]
    assert auto in ("fp32", "bf16")  # what auto means on this machine, as the run id records it


def _trained_weights(data, **options) -> list[torch.Tensor]:
    """The network's weights after two inner loops (iterations 0 and 1, each from a fresh network)."""
    matcher = _matcher(data, outer_loop=3, inner_loop=3, **options)
    images, labels = _synthetic(data, 2)
    weights = []
    for iteration in (0, 1):
        torch.manual_seed(iteration)
        matcher.begin_iteration(iteration)
        matcher.after_step(images.detach(), labels, None)
        weights += [p.detach().clone() for p in matcher.net.parameters()]
    if options.get("inner_compile") is True:  # compiled for real, not fallen back to eager
        assert matcher._train_step.compiled is not None and matcher._train_net is not None
    return weights


def test_compiled_and_bf16_inner_training_follow_the_eager_one(tiny_data):
    """The compiled copy takes each iteration's fresh weights and gives the trained ones back to the
    matched network; fp32 compiled equals eager up to rounding, bf16 autocast stays close."""
    matcher = _matcher(tiny_data)
    untrained = []
    for iteration in (0, 1):  # the fresh networks the inner loops start from
        torch.manual_seed(iteration)
        matcher.begin_iteration(iteration)
        untrained += [p.detach().clone() for p in matcher.net.parameters()]
    eager = _trained_weights(tiny_data, inner_compile=False)
    compiled = _trained_weights(tiny_data, inner_compile=True)
    bf16 = _trained_weights(tiny_data, inner_compile=False, inner_precision="bf16")
    assert any(not torch.allclose(a, b) for a, b in zip(untrained, eager))  # it did train
    for a, b in zip(eager, compiled):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)
    change = torch.cat([(e - u).flatten() for e, u in zip(eager, untrained)])
    error = torch.cat([(b - e).flatten() for b, e in zip(bf16, eager)])
    assert error.norm() < 0.05 * change.norm()  # bf16's rounding is small against what training moved


def test_begin_iteration_builds_a_fresh_seeded_network(tiny_data):
    matcher = _matcher(tiny_data)
    first = [p.detach().clone() for p in matcher.net.parameters()]
    torch.manual_seed(1)
    matcher.begin_iteration(1)
    assert any(not torch.equal(a, p) for a, p in zip(first, matcher.net.parameters()))
    torch.manual_seed(0)
    matcher.begin_iteration(0)
    assert all(torch.equal(a, p) for a, p in zip(first, matcher.net.parameters()))


# ------------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_cli_runs_dc_end_to_end_with_pixel_prior(fmnist_slice, tmp_path: Path):
    from click.testing import CliRunner

    from ddbench.cli.main import cli

    out = tmp_path / "out"
    result = CliRunner().invoke(
        cli,
        ["run", "--dataset", "fashion-mnist", "--data-root", str(fmnist_slice), "--prior", "pixel", "--algo", "dc",
         "--ipc", "1", "--iterations", "2", "--eval-epochs", "2", "--seeds", "1", "--algo-opt", "batch_real=12",
         "--no-progress", "--out", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output + repr(result.exception)
    grids = list(out.glob("runs/**/grid.png"))
    assert len(grids) == 1
