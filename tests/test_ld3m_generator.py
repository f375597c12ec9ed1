"""LD3M's generator: the shipped Fashion-MNIST model, the paper's "random" LDM, and which one a run used."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import make_tiny_data
from ddbench_plugins.priors.ld3m.backends import build_tiny, packaged_model
from ddbench_plugins.priors.ld3m.train import reconstruction_psnr

from ddbench import registry
from ddbench.engine.spec import RunEnv, RunSpec
from ddbench.errors import InvalidOptionError
from ddbench.interfaces import class_labels
from ddbench.running.identity import resolve_specs

SHIPPED = packaged_model("fashion-mnist")


def fmnist_like(per_class: int = 4) -> object:
    """28-px grey 10-class data named fashion-mnist (the shipped model's shape), without the real files."""
    return dataclasses.replace(make_tiny_data(num_classes=10, per_class=per_class, res=28), name="fashion-mnist")


def images_of(generator: str, per_class: int = 2) -> torch.Tensor:
    data = fmnist_like()
    prior = registry.create("prior", "ld3m", generator=generator)
    prior.setup(data, torch.device("cpu"))
    labels = class_labels(data.num_classes, per_class)
    gen = torch.Generator().manual_seed(0)
    real = torch.cat([data.sample_class(c, per_class, gen) for c in range(data.num_classes)])
    state = prior.init_state(real, labels, gen)
    with torch.no_grad():
        return prior.generate(state, torch.arange(len(labels)))


def pixel_spread(images: torch.Tensor) -> float:
    """Mean over pixels of the standard deviation across samples (normalised units)."""
    return float(images.flatten(1).std(0).mean())


def test_a_model_ships_for_fashion_mnist_and_is_small() -> None:
    assert SHIPPED is not None, "the trained Fashion-MNIST LDM must ship inside the package"
    size = sum(p.stat().st_size for p in SHIPPED.rglob("*") if p.is_file())
    assert size <= 25 * 2**20
    assert list(SHIPPED.rglob("*.safetensors")), "weights as safetensors"
    card = json.loads((SHIPPED / "metrics.json").read_text())
    assert {"reconstruction_psnr_db", "command", "commit"} <= set(card)


def test_random_generator_decodes_different_latents_to_different_images() -> None:
    random_spread = pixel_spread(images_of("random"))
    untrained_spread = pixel_spread(images_of("untrained"))
    # the paper's random LDM (trained autoencoder, random denoiser) keeps the latents apart; an
    # all-random one (untrained VQ codebook) sends them to one image
    assert random_spread > 0.2
    assert untrained_spread < 0.05 * random_spread


def test_random_generator_keeps_the_autoencoder_and_reinitialises_the_denoiser() -> None:
    data = fmnist_like()
    trained = registry.create("prior", "ld3m")
    trained.setup(data, torch.device("cpu"))
    random = registry.create("prior", "ld3m", generator="random", seed=5)
    random.setup(data, torch.device("cpu"))
    assert trained.generator_kind == "trained" and random.generator_kind == "random"
    for a, b in zip(trained.backend.vqvae.parameters(), random.backend.vqvae.parameters()):
        assert torch.equal(a, b)
    assert not torch.equal(next(trained.backend.unet.parameters()), next(random.backend.unet.parameters()))
    again = registry.create("prior", "ld3m", generator="random", seed=5)
    again.setup(data, torch.device("cpu"))
    assert torch.equal(next(again.backend.unet.parameters()), next(random.backend.unet.parameters()))


def test_shipped_model_reproduces_its_recorded_psnr_offline() -> None:
    from ddbench_plugins.priors.ld3m.backends import load_backend

    card = json.loads((SHIPPED / "metrics.json").read_text())
    check = card["test_slice"]
    backend = load_backend(SHIPPED).freeze()
    data = registry.create("dataset", "fashion-mnist")
    try:
        real = data.load().subset(test_size=check["images"])
    except Exception as err:  # noqa: BLE001
        pytest.skip(f"Fashion-MNIST not installed: {err}")
    assert reconstruction_psnr(backend, real) == pytest.approx(check["psnr_db"], abs=0.01)


def _run_id(tmp_path: Path, **prior_options) -> str:
    spec = RunSpec(
        dataset="fashion-mnist", prior="ld3m", matcher="dm", ipc=1, iterations=2, prior_options=prior_options
    )
    return resolve_specs([spec], RunEnv(out=tmp_path))[0].run_id


def test_the_default_model_is_the_shipped_one_and_others_change_the_run_id(tmp_path) -> None:
    default = _run_id(tmp_path)
    assert _run_id(tmp_path, model_dir=str(SHIPPED)) == default
    assert _run_id(tmp_path, generator="trained") == default
    assert _run_id(tmp_path, generator="random") != default
    assert _run_id(tmp_path, generator="untrained") != default
    # a user's model: the same files elsewhere are the same model; other weights are another one
    copy = tmp_path / "copy"
    shutil.copytree(SHIPPED, copy)
    assert _run_id(tmp_path, model_dir=str(copy)) == default
    other = tmp_path / "other"
    build_tiny(1, 10, seed=7).save_pretrained(other)
    assert _run_id(tmp_path, model_dir=str(other)) != default


def test_generator_options_fail_with_the_fix() -> None:
    with pytest.raises(InvalidOptionError, match="generator"):
        registry.create("prior", "ld3m", generator="pretrained")
    with pytest.raises(InvalidOptionError, match="drop model_dir"):
        registry.create("prior", "ld3m", generator="untrained", model_dir="/x")
    prior = registry.create("prior", "ld3m", generator="random")
    with pytest.raises(InvalidOptionError, match="prior train ld3m --dataset tiny"):
        prior.setup(make_tiny_data(), torch.device("cpu"))


@pytest.mark.parametrize("generator", ["trained", "random"])
def test_the_default_sampler_carries_z_to_the_images(generator: str, fmnist_slice: Path) -> None:
    """Eq. 12 with z_T = Z (the default) starts from images near the real ones Z was encoded from and
    passes Z a real gradient; with the reference's z_T drawn at t = 901 neither holds."""
    data = registry.create("dataset", "fashion-mnist").load(root=str(fmnist_slice))
    labels = class_labels(data.num_classes, 2)
    gen = torch.Generator().manual_seed(0)
    real = torch.cat([data.sample_class(c, 2, gen) for c in range(data.num_classes)])

    def signal(**options) -> tuple[float, float]:
        prior = registry.create("prior", "ld3m", generator=generator, **options)
        prior.setup(data, torch.device("cpu"))
        state = prior.init_state(real, labels, torch.Generator().manual_seed(1))
        images = prior.generate(state, torch.arange(len(labels)))
        images.pow(2).mean().backward()
        return float(((images.detach() - real) ** 2).mean()), float(state.params["z"].grad.norm())

    default_mse, default_grad = signal()
    noised_mse, noised_grad = signal(forward_noise=True)
    assert default_mse < 0.3 < noised_mse
    assert default_grad > 5 * noised_grad
