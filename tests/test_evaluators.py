"""The cross-architecture evaluators: alexnet, vgg11, resnet18, vit.

Shapes are checked with real tensors at 28/32 px and on the meta device at 128/256 px (shape
propagation without arithmetic), so the whole file stays fast on two shared cores.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ddbench import registry
from ddbench.errors import InvalidOptionError

NAMES = ("alexnet", "vgg11", "resnet18", "vit")
RESOLUTIONS = (28, 32, 128, 256)
CLASSES = 3


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny batches gain little from a second thread, and on shared cores oversubscription costs ~5×."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def build(name: str, channels: int, resolution: int, device: str = "meta", **options: object) -> nn.Module:
    """A seeded network; on the meta device (no init, no arithmetic) unless values matter."""
    evaluator = registry.create("evaluator", name, **options)
    evaluator.check_input(channels, resolution)
    torch.manual_seed(0)
    with torch.device(device):
        return evaluator.build(channels, CLASSES, resolution)


def test_all_registered_with_their_protocol_lrs() -> None:
    installed = registry.plugin_names("evaluator")
    for name in NAMES:
        assert name in installed
    lrs = {name: registry.create("evaluator", name).protocol_lrs for name in NAMES}
    assert lrs == {"alexnet": {}, "vgg11": {"glad": 1e-4}, "resnet18": {}, "vit": {}}


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("resolution", RESOLUTIONS)
@pytest.mark.parametrize("channels", (1, 3))
def test_builds_with_right_output_and_embedding(name: str, resolution: int, channels: int) -> None:
    small = resolution <= 32
    device = torch.device("cpu" if small else "meta")
    net = build(name, channels, resolution, device=device.type).eval()
    x = torch.randn(2, channels, resolution, resolution, device=device)
    with torch.no_grad():
        logits, features = net(x), net.embed(x)
    assert logits.shape == (2, CLASSES)
    assert features.shape == (2, net.embed_dim)
    assert net.get_classifier().in_features == net.embed_dim
    if small:  # forward is the final linear layer applied to embed
        torch.testing.assert_close(logits, net.get_classifier()(features))
        assert torch.isfinite(logits).all()


@pytest.mark.parametrize("name", NAMES)
def test_loss_falls_on_a_tiny_batch(name: str) -> None:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(CLASSES, 1, 28, 28, generator=gen)
    y = torch.arange(CLASSES)
    net = build(name, 1, 28, device="cpu")
    twin = build(name, 1, 28, device="cpu")  # the same seed gives the same network
    for a, b in zip(net.state_dict().values(), twin.state_dict().values()):
        torch.testing.assert_close(a, b)

    def eval_loss() -> float:
        net.eval()
        with torch.no_grad():
            return F.cross_entropy(net(x), y).item()

    before = eval_loss()
    # Adam at a small lr: one setting that every architecture (with or without norm) follows
    optimiser = torch.optim.Adam(net.parameters(), lr=1e-4)
    for _ in range(5):
        net.train()
        optimiser.zero_grad()
        F.cross_entropy(net(x), y).backward()
        optimiser.step()
    after = eval_loss()
    assert after < 0.95 * before, f"{name}: loss {before:.4f} → {after:.4f}"


@pytest.mark.parametrize(
    ("name", "options", "too_small", "smallest"),
    [
        ("alexnet", {}, 7, 8),
        ("vgg11", {}, 27, 28),
        ("vgg11", {}, 30, 28),  # 29-31 px are neither padded to 32 nor poolable five times
        ("resnet18", {}, 8, 9),
        ("vit", {}, 30, 4),  # not a multiple of the 4-px patch
        ("vit", {"patch_size": 16}, 8, 16),
    ],
)
def test_impossible_input_fails_before_training_naming_smallest_resolution(
    name: str, options: dict, too_small: int, smallest: int
) -> None:
    evaluator = registry.create("evaluator", name, **options)
    with pytest.raises(InvalidOptionError, match=rf"smallest resolution it supports is {smallest} px"):
        evaluator.check_input(1, too_small)
    with pytest.raises(InvalidOptionError):  # build checks too, so no caller can skip it
        evaluator.build(1, CLASSES, too_small)
    evaluator.check_input(1, smallest)
    net = evaluator.build(1, CLASSES, smallest).eval()
    with torch.no_grad():
        assert net(torch.randn(2, 1, smallest, smallest)).shape == (2, CLASSES)


def test_resnet_without_instance_norm_takes_tiny_images() -> None:
    registry.create("evaluator", "resnet18", norm="none").check_input(1, 8)


def test_bad_options_are_errors() -> None:
    with pytest.raises(InvalidOptionError, match="norm"):
        registry.create("evaluator", "vgg11", norm="layernorm")
    with pytest.raises(InvalidOptionError, match="head"):
        registry.create("evaluator", "vgg11", head="avg")
    with pytest.raises(InvalidOptionError, match="Accepted options"):
        registry.create("evaluator", "alexnet", width=64)
    with pytest.raises(InvalidOptionError, match="divisible by heads"):
        registry.create("evaluator", "vit", dim=100, heads=8)
    with pytest.raises(InvalidOptionError, match="channel"):
        registry.create("evaluator", "resnet18").check_input(0, 32)


# ------------------------------------------------------------------- the protocol's architectures


def count(net: nn.Module, kind: type) -> int:
    return sum(isinstance(m, kind) for m in net.modules())


def test_alexnet_layout() -> None:
    net = build("alexnet", 1, 28)
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size[0], c.stride[0]) for c in convs] == [
        (128, 5, 1), (192, 5, 1), (256, 3, 1), (192, 3, 1), (192, 3, 1)
    ]  # fmt: skip
    assert convs[0].padding == (4, 4)  # 28 px padded to 32, as the DC reference
    assert build("alexnet", 3, 32).features[0].padding == (2, 2)
    assert count(net, nn.MaxPool2d) == 3
    assert count(net, nn.GroupNorm) + count(net, nn.BatchNorm2d) + count(net, nn.LayerNorm) == 0
    assert net.embed_dim == 192 * 4 * 4
    assert build("alexnet", 3, 128).embed_dim == 192 * 16 * 16


def test_vgg11_layout() -> None:
    net = build("vgg11", 1, 28)
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 128, 256, 256, 512, 512, 512, 512]
    assert convs[0].padding == (3, 3) and convs[1].padding == (1, 1)
    layers = list(net.features)
    for i, layer in enumerate(layers):  # instance norm right after every conv
        if isinstance(layer, nn.Conv2d):
            norm = layers[i + 1]
            assert isinstance(norm, nn.GroupNorm) and norm.num_groups == norm.num_channels == layer.out_channels
    assert count(net, nn.MaxPool2d) == 5
    assert net.embed_dim == 512  # 512×1×1
    assert build("vgg11", 3, 32).features[0].padding == (1, 1)
    assert build("vgg11", 3, 128).embed_dim == 512 * 4 * 4
    assert build("vgg11", 3, 128, head="adaptive-max-7").embed_dim == 512 * 7 * 7
    assert count(build("vgg11", 3, 32, norm="none"), nn.GroupNorm) == 0


def test_resnet18_layout() -> None:
    net = build("resnet18", 3, 32)
    assert (net.conv1.kernel_size, net.conv1.stride) == ((3, 3), (1, 1))
    assert isinstance(net.maxpool, nn.Identity)
    assert [len(stage) for stage in (net.layer1, net.layer2, net.layer3, net.layer4)] == [2, 2, 2, 2]
    # stem + 2 per block × 8 blocks + 3 downsampling shortcuts, all instance norm
    norms = [m for m in net.modules() if isinstance(m, nn.GroupNorm)]
    assert len(norms) == 20 and all(n.num_groups == n.num_channels for n in norms)
    assert count(net, nn.BatchNorm2d) == 0
    assert count(build("resnet18", 3, 32, norm="none"), nn.GroupNorm) == 0


def test_vit_layout_per_resolution() -> None:
    small, large = build("vit", 3, 32), build("vit", 3, 128)
    assert small.patch_embed.patch_size == (4, 4) and large.patch_embed.patch_size == (16, 16)
    assert small.patch_embed.num_patches == large.patch_embed.num_patches == 64
    for net in (small, large):
        assert len(net.blocks) == 10 and net.embed_dim == 512
        block = net.blocks[0]
        assert block.attn.num_heads == 8 and block.attn.qkv.bias is None
        assert block.mlp.fc1.out_features == 512
        assert block.mlp.drop1.p == block.mlp.drop2.p == block.attn.proj_drop.p == net.pos_drop.p == 0.1
        assert net.cls_token is not None
    # GLaD's CIFAR ViT keeps LayerNorm (2 per block + the head's); its 128-px ViT has none
    assert count(small, nn.LayerNorm) == 2 * 10 + 1
    assert count(large, nn.LayerNorm) == 0
    assert count(build("vit", 3, 128, layer_norm=True), nn.LayerNorm) == 21
    assert build("vit", 1, 28, depth=6).blocks.__len__() == 6
