"""ConvNet evaluator: depth by resolution, shapes, instance-norm semantics, in-place re-initialisation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from ddbench_plugins.evaluators.convnet import ConvNet, ConvNetEvaluator, auto_depth
from torch import nn

from ddbench import registry
from ddbench.errors import InvalidOptionError


@pytest.mark.parametrize("res, depth", [(28, 3), (32, 3), (64, 4), (128, 5), (256, 6), (8, 1)])
def test_depth_by_resolution(res, depth):
    assert auto_depth(res) == depth


@pytest.mark.parametrize("res, channels, depth", [(28, 1, 3), (32, 3, 3), (64, 3, 4), (128, 3, 5)])
def test_forward_and_embed_shapes(res, channels, depth):
    torch.manual_seed(0)
    net = ConvNet(channels, 10, res, width=8)
    x = torch.randn(2, channels, res, res)
    assert net.depth == depth
    assert sum(isinstance(m, nn.Conv2d) for m in net.modules()) == depth
    # every resolution ends at a 4×4 map (28 px is padded to 32 px, as the reference MNIST ConvNet)
    assert net.embed(x).shape == (2, 8 * 4 * 4) == (2, net.embed_dim)
    assert net(x).shape == (2, 10)


def test_default_width_embed_at_28px():
    net = registry.create("evaluator", "convnet").build(1, 10, 28)
    assert isinstance(net, ConvNet)
    assert net.embed(torch.randn(3, 1, 28, 28)).shape == (3, 128 * 4 * 4)


def test_norm_is_per_sample_instance_norm():
    torch.manual_seed(0)
    net = ConvNet(3, 5, 16, width=6)
    gn = net.features[1]
    assert isinstance(gn, nn.GroupNorm) and gn.num_groups == gn.num_channels == 6 and gn.affine
    with torch.no_grad():
        gn.weight.uniform_(0.5, 1.5)
        gn.bias.uniform_(-0.5, 0.5)
    h = torch.randn(4, 6, 8, 8)
    expected = F.instance_norm(h, weight=gn.weight, bias=gn.bias, eps=gn.eps)
    assert torch.allclose(gn(h), expected, atol=1e-5)
    # hence a batch embeds exactly as its samples one by one (DM concatenates classes relying on it)
    x = torch.randn(5, 3, 16, 16)
    one_by_one = torch.cat([net.embed(x[i : i + 1]) for i in range(5)])
    assert torch.allclose(net.embed(x), one_by_one, atol=1e-5)


def test_reset_parameters_reinitialises_in_place():
    torch.manual_seed(0)
    net = ConvNet(1, 10, 28, width=8)
    params = dict(net.named_parameters())
    before = {k: (p.data_ptr(), p.detach().clone()) for k, p in params.items()}
    with torch.no_grad():
        net.features[1].weight.fill_(3.0)  # an instance-norm scale moved away from its init
    net.reset_parameters()
    after = dict(net.named_parameters())
    assert after.keys() == before.keys()
    for name, (ptr, old) in before.items():
        assert after[name] is params[name] and after[name].data_ptr() == ptr  # same storage
        if name.endswith("weight") and after[name].dim() > 1:
            assert not torch.equal(after[name], old)  # conv/linear weights redrawn
    assert torch.equal(net.features[1].weight, torch.ones(8))  # norm affine back to identity


def test_reset_follows_the_global_seed():
    net = ConvNet(1, 10, 28, width=8)
    torch.manual_seed(5)
    net.reset_parameters()
    first = [p.detach().clone() for p in net.parameters()]
    torch.manual_seed(5)
    net.reset_parameters()
    assert all(torch.equal(a, b) for a, b in zip(first, net.parameters()))


def test_norm_options():
    assert not any(isinstance(m, nn.GroupNorm) for m in ConvNet(1, 2, 16, width=4, norm="none").modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in ConvNet(1, 2, 16, width=4, norm="batchnorm").modules())


def test_evaluator_options_and_input_checks():
    evaluator = registry.create("evaluator", "convnet", width=16, depth=2)
    assert evaluator.options() == {"width": 16, "depth": 2, "norm": "instancenorm"}
    assert ConvNetEvaluator.protocol_lrs == {}
    assert evaluator.build(3, 4, 32).embed(torch.randn(1, 3, 32, 32)).shape == (1, 16 * 8 * 8)
    with pytest.raises(InvalidOptionError, match="at least 8 px"):
        evaluator.check_input(1, 4)
    with pytest.raises(InvalidOptionError, match="depth"):
        registry.create("evaluator", "convnet", depth=5).check_input(1, 16)
    with pytest.raises(InvalidOptionError, match="norm"):
        ConvNetEvaluator(norm="layernorm")
    with pytest.raises(InvalidOptionError, match="does not accept"):
        registry.create("evaluator", "convnet", widht=3)
