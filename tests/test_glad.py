"""GLaD prior with the tiny StyleGAN2-style generator: split invariance, gradients, initialisation,
normalisation, save/load, options, the engine, and `ddbench run --prior glad` with every matcher."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from conftest import make_tiny_data
from ddbench_plugins.priors.glad import GLaDPrior
from ddbench_plugins.priors.glad.tiny import TinyConfig, TinyStyleGenerator

from ddbench import registry
from ddbench.engine.distill import Distiller, split_backward_step
from ddbench.engine.spec import RunSpec
from ddbench.errors import CorruptFileError, DataNotFoundError, InvalidOptionError
from ddbench.interfaces import LatentState, RealData, RealSampler, class_labels

CPU = torch.device("cpu")


def tiny(res: int = 16, channels: int = 1, classes: int = 3, seed: int = 0) -> TinyStyleGenerator:
    return TinyStyleGenerator.build(TinyConfig(resolution=res, channels=channels, num_classes=classes), seed=seed)


def random_ws(gen: TinyStyleGenerator, n: int = 2, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, gen.z_dim, generator=g)
    return gen.mapping(z, torch.arange(n) % gen.num_classes)


def make_prior(data: RealData, ipc: int = 2, **options) -> tuple[GLaDPrior, LatentState]:
    prior = registry.create("prior", "glad", **options)
    prior.setup(data, CPU)
    labels = class_labels(data.num_classes, ipc)
    return prior, prior.init_state(
        torch.zeros(len(labels), data.channels, data.resolution, data.resolution),
        labels,
        torch.Generator().manual_seed(7),
    )


# ------------------------------------------------------------------------------ the generator


@pytest.mark.parametrize("res,channels", [(28, 1), (32, 3), (64, 3), (128, 1), (256, 3)])
def test_split_at_any_layer_equals_the_whole_synthesis(res: int, channels: int) -> None:
    gen = tiny(res, channels)
    ws = random_ws(gen, n=1 if res >= 128 else 2)
    with torch.no_grad():
        full = gen.synthesis(ws)
        assert full.shape == (ws.shape[0], channels, res, res)
        assert gen.num_ws == gen.num_layers + 1 == 2 * len(gen.config.resolutions())
        splits = range(gen.num_layers + 1) if res < 128 else (0, 1, gen.num_layers // 2, gen.num_layers)
        for k in splits:
            f = gen.features(ws, k)
            assert f.shape[1] > channels  # the feature map carries the partial toRGB image too
            torch.testing.assert_close(gen.from_features(f, ws, k), full, rtol=0, atol=0, msg=f"layer {k}")
        # the state really is needed: dropping the skip image changes the result
        f = gen.features(ws, gen.num_layers - 1)
        f[:, -channels:] = 0
        assert not torch.allclose(gen.from_features(f, ws, gen.num_layers - 1), full)


def test_architecture_by_resolution() -> None:
    assert TinyConfig(28, 1, 10).resolutions() == [7, 14, 28]
    assert TinyConfig(256, 3, 10).resolutions() == [4, 8, 16, 32, 64, 128, 256]
    for bad in (4, 9, 100):
        with pytest.raises(InvalidOptionError, match="resolution b·2\\^k"):
            TinyConfig(bad, 1, 10)


def test_random_generator_is_seeded_and_class_conditional() -> None:
    a, b, c = tiny(seed=0), tiny(seed=0), tiny(seed=1)
    ws = random_ws(a)
    torch.testing.assert_close(a.synthesis(ws), b.synthesis(ws), rtol=0, atol=0)
    assert not torch.allclose(a.synthesis(ws), c.synthesis(ws))
    z = torch.randn(1, a.z_dim).repeat(2, 1)
    w = a.mapping(z, torch.tensor([0, 1]))
    assert not torch.allclose(w[0], w[1])  # same z, different class


def test_truncation_pulls_toward_the_class_average() -> None:
    gen = tiny()
    z, labels = torch.randn(3, gen.z_dim), torch.tensor([0, 1, 2])
    torch.testing.assert_close(gen.mapping(z, labels, truncation=0.0)[:, 0], gen.mapping_network.w_avg[labels])
    w, half = gen.mapping(z, labels), gen.mapping(z, labels, truncation=0.5)
    torch.testing.assert_close(half, (w + gen.mapping_network.w_avg[labels, None]) / 2)


def test_safetensors_round_trip(tmp_path: Path) -> None:
    gen = tiny(28, 1, classes=10, seed=3)
    path = gen.save(tmp_path / "gen.safetensors")
    loaded = TinyStyleGenerator.load(path)
    assert loaded.config == gen.config
    ws = random_ws(gen)
    torch.testing.assert_close(loaded.synthesis(ws), gen.synthesis(ws), rtol=0, atol=0)
    torch.testing.assert_close(loaded.mapping_network.w_avg, gen.mapping_network.w_avg, rtol=0, atol=0)
    with pytest.raises(DataNotFoundError, match="leave the `weights` option unset"):
        TinyStyleGenerator.load(tmp_path / "missing.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(CorruptFileError, match="not a tiny GLaD generator"):
        TinyStyleGenerator.load(tmp_path / "junk.safetensors")


# --------------------------------------------------------------------------------- the prior


def test_gradients_reach_w_and_the_feature_map_only_past_the_split() -> None:
    data = make_tiny_data(channels=1, res=16)
    prior, state = make_prior(data, layer=2)
    w, f = state.params["w"], state.params["features"]
    assert w.shape == (6, prior.generator.num_ws, 512) and f.shape[0] == 6
    images = prior.generate(state, torch.tensor([1, 4]))
    assert images.shape == (2, 1, 16, 16)
    images.square().sum().backward()
    assert f.grad[[1, 4]].abs().sum() > 0 and w.grad[[1, 4], 2:].abs().amin(dim=-1).gt(0).all()
    assert w.grad[:, :2].abs().sum() == 0  # ws of layers before the split act through the feature map only
    assert f.grad[[0, 2, 3, 5]].abs().sum() == 0 and w.grad[[0, 2, 3, 5]].abs().sum() == 0


def test_init_is_the_generator_and_generation_is_its_normalised_output() -> None:
    data = make_tiny_data(channels=1, res=16)
    prior, state = make_prior(data, layer=3, truncation=0.7)
    gen = prior.generator
    z = torch.randn(6, gen.z_dim, generator=torch.Generator().manual_seed(7))
    ws = gen.mapping(z, class_labels(3, 2), truncation=0.7)
    torch.testing.assert_close(state.params["w"], ws)
    torch.testing.assert_close(state.params["features"], gen.features(ws, 3))
    raw = gen.synthesis(ws)
    expected = ((raw + 1) / 2 - 0.5) / 0.25  # the dataset's own mean 0.5 / std 0.25
    with torch.no_grad():
        torch.testing.assert_close(prior.generate(state, torch.arange(6)), expected)
        torch.testing.assert_close(
            prior.generate(state, torch.arange(6)), prior.generate(state, torch.arange(6)), rtol=0, atol=0
        )


def test_avg_w_init_and_w_only_mode() -> None:
    data = make_tiny_data(channels=1, res=16)
    prior, state = make_prior(data, ipc=1, init="avg_w", avg_samples=64, layer=-1)
    assert set(state.params) == {"w"}
    expected = prior.generator.mean_w(torch.arange(3), 64, torch.Generator().manual_seed(7))
    torch.testing.assert_close(state.params["w"], expected)
    assert torch.allclose(state.params["w"][:, 0], state.params["w"][:, -1])  # one w broadcast to W+
    images = prior.generate(state, torch.arange(3))
    images.sum().backward()
    assert state.params["w"].grad.abs().sum() > 0
    assert prior.learning_rates(10.0) == {"w": 0.01}  # DM's scale


def test_rgb_generator_on_grey_data_averages_channels_and_resizes() -> None:
    data = make_tiny_data(channels=1, res=12)
    gen = tiny(16, 3)
    prior = registry.create("prior", "glad", layer=1)
    prior.setup(data, CPU, generator=gen)
    state = prior.init_state(torch.zeros(6, 1, 12, 12), class_labels(3, 2), torch.Generator().manual_seed(0))
    with torch.no_grad():
        raw = gen.synthesis(state.params["w"]).mean(dim=1, keepdim=True)
        raw = torch.nn.functional.interpolate(raw, size=(12, 12), mode="bilinear", antialias=True, align_corners=False)
        torch.testing.assert_close(prior.generate(state, torch.arange(6)), ((raw + 1) / 2 - 0.5) / 0.25)


def test_learning_rates_follow_the_protocol() -> None:
    prior = GLaDPrior()
    scale = {name: registry.get_plugin_class("matcher", name).lr_scale for name in ("dc", "dm", "mtt")}
    assert prior.learning_rates(scale["dc"]) == {"features": 1.0, "w": 0.001}
    assert prior.learning_rates(scale["dm"]) == {"features": 10.0, "w": 0.01}
    assert prior.learning_rates(scale["mtt"]) == {"features": 10000.0, "w": 10.0}
    assert prior.learning_rates(scale["mtt"], {"w": 5}) == {"features": 10000.0, "w": 5.0}
    with pytest.raises(InvalidOptionError, match="no learnable tensor 'z'"):
        prior.learning_rates(scale["dm"], {"z": 1.0})


def test_options_are_validated_with_the_fix() -> None:
    for options, message in [
        ({"backend": "biggan"}, "backend to be one of"),
        ({"layer": -2}, "integer ≥ -1"),
        ({"layer": 1.5}, "option layer expects an integer"),  # checked against the annotation first
        ({"init": "real"}, "init to be one of"),
        ({"truncation": -1}, "truncation"),
        ({"stylegan_xl_src": "/x"}, "applies to backend='stylegan-xl' only"),
        ({"backend": "stylegan-xl"}, "needs weights="),
    ]:
        with pytest.raises(InvalidOptionError, match=message):
            registry.create("prior", "glad", **options)
    data = make_tiny_data(channels=1, res=16)
    with pytest.raises(InvalidOptionError, match=r"layer in \[0, 5\]"):
        make_prior(data, layer=6)
    with pytest.raises(InvalidOptionError, match="class_ids must lie in"):
        make_prior(data, class_ids=[0, 1, 3])


# -------------------------------------------------------------------------------- the engine


def test_split_backward_gives_the_direct_gradients() -> None:
    data = make_tiny_data(channels=1, res=16)
    prior, state = make_prior(data, layer=2)
    labels = class_labels(3, 2)
    targets = torch.randn(6, 1, 16, 16, generator=torch.Generator().manual_seed(2))

    class PixelTarget:  # any differentiable loss on the whole set
        def loss(self, images, labels, real):
            return ((images - targets) ** 2).mean() + images.mean(dim=(1, 2, 3)).prod()

    real = RealSampler(data, torch.Generator(), CPU)
    split_backward_step(prior, PixelTarget(), state, labels, real, chunk_size=4)
    split = {k: v.grad.clone() for k, v in state.params.items()}
    for v in state.params.values():
        v.grad = None
    PixelTarget().loss(prior.generate(state, torch.arange(6)), labels, real).backward()
    for k, v in state.params.items():
        torch.testing.assert_close(split[k], v.grad, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("matcher,options", [("dm", {"batch_real": 8}), ("dc", {"batch_real": 8})])
def test_distils_through_the_engine(tmp_path: Path, matcher: str, options: dict) -> None:
    data = make_tiny_data(channels=1, res=16)
    spec = RunSpec(dataset="tiny", prior="glad", matcher=matcher, ipc=1, iterations=2, seed=1,
                   prior_options={"layer": 2}, matcher_options=options)  # fmt: skip
    result = Distiller(spec, data, tmp_path, progress=False).run()
    assert all(math.isfinite(v) for v in result.losses) and len(result.losses) == 2
    latents = result.synthetic.latents
    assert latents["param.w"].shape[:2] == (3, 6) and "param.features" in latents
    prior, state = make_prior(data, ipc=1, layer=2)  # what the run started from (same seed → same init)
    assert not torch.equal(latents["param.features"], state.params["features"].detach())


# ------------------------------------------------------------------- `ddbench run` end to end


@pytest.mark.slow
def test_ddbench_run_prior_glad_with_every_matcher(tmp_path: Path, fmnist_slice: Path) -> None:
    from ddbench.cli.main import cli

    out = tmp_path / "out"
    args = [
        "run", "--dataset", "fashion-mnist", "--data-root", str(fmnist_slice), "--prior", "glad", "--algo", "dm,dc,mtt",
        "--ipc", "1", "--budget", "smoke", "--iterations", "1", "--eval-epochs", "1", "--seeds", "1", "--no-progress",
        "--prior-opt", "layer=2", "--algo-opt", "dm.batch_real=4", "--algo-opt", "dm.compile=false", "--algo-opt", "dc.batch_real=4",
        "--algo-opt", "mtt.build_experts=true", "--algo-opt", "mtt.num_experts=1", "--algo-opt", "mtt.syn_steps=2",
        "--algo-opt", "mtt.max_start_epoch=1", "--algo-opt", "mtt.expert_epochs=1", "--out", str(out),
    ]  # fmt: skip
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    run_dirs = sorted((out / "runs" / "fashion-mnist").iterdir())
    assert [d.name.split("-")[1] for d in run_dirs] == ["dc", "dm", "mtt"]
    for run_dir in run_dirs:
        assert (run_dir / "grid.png").stat().st_size > 0 and (run_dir / "synthetic.safetensors").exists()
    from ddbench.results.store import ResultsStore

    with ResultsStore(out / "results.sqlite") as store:
        scores = store.scores_frame()
    assert len(scores) == 3 and scores["accuracy"].between(0, 1).all()
