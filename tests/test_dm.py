"""Distribution matching: loss properties, gradient flow, fresh network per iteration, fast paths."""

from __future__ import annotations

import pytest
import torch
from ddbench_plugins.matchers.dm import DistributionMatching

from ddbench.engine.dsa import DSA
from ddbench.errors import InvalidOptionError
from ddbench.interfaces import MatchContext, RealSampler, class_labels


def _matcher(data, dsa=None, **options) -> DistributionMatching:
    options = {"real_precision": "fp32", "compile": False, **options}
    matcher = DistributionMatching(**options)
    matcher.setup(MatchContext(data=data, ipc=1, device=torch.device("cpu"), dsa=dsa))
    torch.manual_seed(0)
    matcher.begin_iteration(0)
    return matcher


def _sampler(data, seed=0) -> RealSampler:
    return RealSampler(data, torch.Generator().manual_seed(seed), torch.device("cpu"))


def test_loss_is_zero_when_synthetic_set_is_the_real_class(tiny_data):
    per_class = len(tiny_data.class_indices(0))
    matcher = _matcher(tiny_data, batch_real=per_class)
    images = torch.cat([tiny_data.normalise(tiny_data.train_images[tiny_data.class_indices(c)]) for c in range(3)])
    labels = class_labels(3, per_class)
    loss = matcher.loss(images, labels, _sampler(tiny_data))
    assert loss.item() < 1e-8  # same images in another order: identical mean embeddings


def test_loss_is_positive_and_sends_gradients_to_every_synthetic_image(tiny_data):
    matcher = _matcher(tiny_data, dsa=DSA(), batch_real=8)
    labels = class_labels(3, 2)
    images = torch.randn(6, 1, 16, 16, requires_grad=True)
    torch.manual_seed(1)
    loss = matcher.loss(images, labels, _sampler(tiny_data))
    loss.backward()
    assert loss.item() > 0
    assert all(g.abs().sum() > 0 for g in images.grad)
    assert all(p.grad is None for p in matcher.net.parameters())  # the network stays frozen


def test_each_iteration_draws_a_fresh_network_in_place(tiny_data):
    matcher = _matcher(tiny_data)
    weight = next(matcher.net.parameters())
    before = weight.clone()
    torch.manual_seed(123)
    matcher.begin_iteration(1)
    assert next(matcher.net.parameters()) is weight  # same tensor: compiled graphs stay valid
    assert not torch.equal(before, weight)


def test_bf16_real_embedding_stays_close_to_fp32(tiny_data):
    labels = class_labels(3, 2)
    images = torch.randn(6, 1, 16, 16)
    losses = {}
    for precision in ("fp32", "bf16"):
        matcher = _matcher(tiny_data, batch_real=8, real_precision=precision)
        losses[precision] = matcher.loss(images, labels, _sampler(tiny_data)).item()
    assert abs(losses["bf16"] - losses["fp32"]) / losses["fp32"] < 0.05


def test_compiled_real_embedding_matches_eager(tiny_data):
    labels = class_labels(3, 1)
    images = torch.randn(3, 1, 16, 16)
    eager = _matcher(tiny_data, batch_real=4).loss(images, labels, _sampler(tiny_data))
    compiled = _matcher(tiny_data, batch_real=4, compile=True).loss(images, labels, _sampler(tiny_data))
    torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-6)


def test_real_chunk_changes_nothing_but_rounding(tiny_data):
    labels = class_labels(3, 2)
    images = torch.randn(6, 1, 16, 16)
    losses = [
        _matcher(tiny_data, batch_real=12, real_chunk=chunk).loss(images, labels, _sampler(tiny_data)).item()
        for chunk in (None, 5)
    ]
    assert abs(losses[0] - losses[1]) <= 1e-5 * abs(losses[0])


def test_real_chunk_must_be_a_positive_whole_number():
    for bad in (0, -3, 2.5, True):
        with pytest.raises(InvalidOptionError, match="real_chunk"):
            DistributionMatching(real_chunk=bad)


def test_real_side_copy_takes_each_iterations_network(tiny_data):
    """The real images are embedded by a copy of the network that follows its re-initialisation."""
    from ddbench_plugins.matchers._realside import ReshapeAvgPool2d

    labels = class_labels(3, 1)
    images = torch.randn(3, 1, 16, 16)
    x = tiny_data.normalise(tiny_data.train_images[:6])
    for compile in (False, True):
        matcher = _matcher(tiny_data, batch_real=4, compile=compile)
        for iteration in (1, 2):
            torch.manual_seed(iteration)
            matcher.begin_iteration(iteration)
            matcher.loss(images, labels, _sampler(tiny_data))
            torch.testing.assert_close(matcher._embed_real(x), matcher.net.embed(x), rtol=1e-4, atol=1e-5)
        pools = [type(m) for m in matcher._real_net.modules() if "Pool" in type(m).__name__]
        assert pools and all(p is (ReshapeAvgPool2d if compile else torch.nn.AvgPool2d) for p in pools)
        assert not any(isinstance(m, ReshapeAvgPool2d) for m in matcher.net.modules())
        if compile:  # compiled for real, not fallen back to eager
            assert matcher._real_embed.compiled is not None
