"""LD3M prior: Eq. 12, gradient paths, checkpointing, fixed noise, options, save/load."""

from __future__ import annotations

import math

import pytest
import torch
from ddbench_plugins.priors.ld3m import LD3MPrior, activations
from ddbench_plugins.priors.ld3m.backends import LDMBackend, build_tiny, load_backend
from ddbench_plugins.priors.ld3m.sampler import DDIMSchedule, reverse_process

from ddbench import registry
from ddbench.errors import DataNotFoundError, InvalidOptionError
from ddbench.interfaces import LatentState, Matcher, RealData, class_labels

K, IPC = 3, 2


def fake_data(channels: int = 1, res: int = 16, per_class: int = 6) -> RealData:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (K * per_class, channels, res, res), dtype=torch.uint8, generator=g)
    labels = torch.arange(K).repeat_interleave(per_class)
    return RealData(
        "fake",
        images,
        labels,
        images[:4],
        labels[:4],
        [f"c{i}" for i in range(K)],
        (0.4,) * channels,
        (0.3,) * channels,
    )


def make_prior(data: RealData | None = None, **options) -> tuple[LD3MPrior, LatentState]:
    data = data or fake_data()
    options.setdefault("T", 3)
    options.setdefault("precision", "fp32")  # these tests check the arithmetic; bf16 has its own
    prior = registry.create("prior", "ld3m", **options)
    prior.setup(data, torch.device("cpu"))
    g = torch.Generator().manual_seed(1)
    labels = class_labels(K, IPC)
    real = torch.cat([data.sample_class(c, IPC, g) for c in range(K)])
    return prior, prior.init_state(real, labels, g)


def schedule(T: int, eta: float) -> DDIMSchedule:
    ac = torch.linspace(0.99, 0.02, 1000, dtype=torch.float64)
    ts = torch.arange(T - 1, -1, -1) * (1000 // T) + 1
    return DDIMSchedule.from_alphas_cumprod(ac, ts, final_alpha_cumprod=0.995, eta=eta)


# ------------------------------------------------------------------------------------ Eq. 12


def toy_eps(z: torch.Tensor, t: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    # a known, t-dependent noise predictor so μθ can be written down by hand
    return 0.3 * z + c + (t.double() / 1000).view(-1, 1, 1, 1)


@pytest.mark.parametrize("T", [1, 4])
def test_eq12_exactly_on_toy_denoiser(T: int) -> None:
    torch.manual_seed(0)
    sch = schedule(T, eta=1.0)
    z_T = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    c = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    noise = torch.randn(2, T, 3, 4, 4, dtype=torch.float64)
    got = reverse_process(z_T, c, toy_eps, sch, noise, residual="mean", checkpoint=False)

    z = z_T
    for i, k in enumerate(range(T, 0, -1)):
        a_bar, a_prev = float(sch.alpha[i]), float(sch.alpha_prev[i])
        a = a_bar / a_prev
        sigma = math.sqrt((1 - a_prev) / (1 - a_bar) * (1 - a))  # η = 1
        eps = toy_eps(z, torch.full((2,), int(sch.timesteps[i])), c)
        mu = (z - (1 - a) / math.sqrt(1 - a_bar) * eps) / math.sqrt(a)  # paper Eq. 9
        z = (1 - k / T) * mu + (k / T) * z_T + sigma**2 * noise[:, i]  # paper Eq. 12
    torch.testing.assert_close(got, z, rtol=1e-12, atol=1e-12)


def test_residual_none_is_eq10_and_x0_matches_reference_code() -> None:
    torch.manual_seed(0)
    T = 3
    sch = schedule(T, eta=0.5)
    z_T, c, anchor = (torch.randn(1, 2, 3, 3, dtype=torch.float64) for _ in range(3))
    noise = torch.randn(1, T, 2, 3, 3, dtype=torch.float64)
    plain = reverse_process(z_T, c, toy_eps, sch, noise, residual="none", checkpoint=False)
    ref = reverse_process(z_T, c, toy_eps, sch, noise, residual="x0", anchor=anchor, checkpoint=False)
    z_plain, z_ref = z_T, z_T
    for i, k in enumerate(range(T, 0, -1)):
        a_bar, a_prev, s = float(sch.alpha[i]), float(sch.alpha_prev[i]), float(sch.sigma[i])
        t = torch.full((1,), int(sch.timesteps[i]))
        eps = toy_eps(z_plain, t, c)
        x0 = (z_plain - math.sqrt(1 - a_bar) * eps) / math.sqrt(a_bar)
        z_plain = math.sqrt(a_prev) * x0 + math.sqrt(1 - a_prev - s**2) * eps + s**2 * noise[:, i]
        eps = toy_eps(z_ref, t, c)
        x0 = (z_ref - math.sqrt(1 - a_bar) * eps) / math.sqrt(a_bar)
        w = (k - 1) / (T - 1)
        x0 = (1 - w) * x0 + w * anchor
        z_ref = math.sqrt(a_prev) * x0 + math.sqrt(1 - a_prev - s**2) * eps + s * noise[:, i]
    torch.testing.assert_close(plain, z_plain, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ref, z_ref, rtol=1e-12, atol=1e-12)


def test_checkpoint_passes_the_timestep_as_an_argument() -> None:
    # a t-dependent denoiser: recomputing with a captured (stale) t would change the gradient
    sch = schedule(5, eta=1.0)
    z_T = torch.randn(2, 1, 2, 2, dtype=torch.float64, requires_grad=True)
    c = torch.randn(2, 1, 2, 2, dtype=torch.float64, requires_grad=True)

    def eps(z, t, cond):
        return torch.sin(z * (t.double() / 300).view(-1, 1, 1, 1)) * cond

    grads = []
    for ck in (True, False):
        out = reverse_process(z_T, c, eps, sch, None, checkpoint=ck)
        grads.append(torch.autograd.grad(out.square().sum(), (z_T, c)))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


# -------------------------------------------------------------------------- prior behaviour


def test_state_layout_and_paper_learning_rates() -> None:
    prior, state = make_prior()
    assert set(state.params) == {"z", "c"} and set(state.buffers) == {"noise_seed"}
    assert state.params["z"].shape == (K * IPC, 3, 8, 8)  # VQ-f2 at 16 px
    assert state.params["c"].shape == (K * IPC, 1, 64)
    # the paper's rates are the base rate × each matcher's scale (DC ×1, DM ×10, MTT ×10⁴)
    scale = {name: registry.get_plugin_class("matcher", name).lr_scale for name in ("dc", "dm", "mtt")}
    assert prior.learning_rates(scale["dc"]) == {"z": 1e-3, "c": 1e-3}
    assert prior.learning_rates(scale["dm"]) == {"z": 1e-2, "c": 1e-2}
    assert prior.learning_rates(scale["mtt"], {"c": 5}) == {"z": 10.0, "c": 5.0}
    with pytest.raises(InvalidOptionError, match="no learnable tensor 'w'"):
        prior.learning_rates(scale["dm"], {"w": 1})
    # c is initialised with the class embedding of each sample's class
    expected = prior.backend.class_embedding(class_labels(K, IPC))
    torch.testing.assert_close(state.params["c"], expected)


def test_z_is_the_encoding_of_the_real_images() -> None:
    data = fake_data()
    prior = registry.create("prior", "ld3m", T=2)
    prior.setup(data, torch.device("cpu"))
    real = data.normalise(data.train_images[: K * IPC])
    state = prior.init_state(real, class_labels(K, IPC), torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = prior.backend.encode(prior.to_model_images(real))
    torch.testing.assert_close(state.params["z"], expected)


def test_gradients_reach_z_and_c_but_not_the_frozen_model() -> None:
    prior, state = make_prior()
    images = prior.generate(state, torch.arange(K * IPC))
    assert images.shape == (K * IPC, 1, 16, 16)
    images.square().mean().backward()
    for key in ("z", "c"):
        grad = state.params[key].grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0
    assert all(not p.requires_grad and p.grad is None for p in prior.backend.parameters())


def test_checkpointed_and_plain_gradients_agree() -> None:
    prior, state = make_prior(T=4)
    grads = []
    for ck in (True, False):
        prior.checkpoint = ck
        for p in state.params.values():
            p.grad = None
        prior.generate(state, torch.arange(K * IPC)).square().mean().backward()
        grads.append({k: v.grad.clone() for k, v in state.params.items()})
    for key in ("z", "c"):
        rel = (grads[0][key] - grads[1][key]).norm() / grads[1][key].norm()
        assert rel < 1e-5, (key, float(rel))


def test_checkpoint_auto_keeps_the_activations_only_where_they_fit(monkeypatch) -> None:
    """``checkpoint=auto`` counts what one denoiser call saves per sample and keeps a generation's
    activations when they take at most a quarter of the free memory; the gradients are the same."""
    reference, state = make_prior(T=4)
    reference.checkpoint = True
    reference.generate(state, torch.arange(K * IPC)).square().mean().backward()
    expected = {k: v.grad.clone() for k, v in state.params.items()}
    for free, recomputes in ((2**40, False), (1024, True)):
        monkeypatch.setattr(activations, "available_bytes_per_run", lambda device, free=free: free)
        prior, state = make_prior(T=4)
        assert prior.checkpoint == "auto"  # the default
        prior.generate(state, torch.arange(K * IPC)).square().mean().backward()
        policy = prior._checkpoint_policy
        assert policy.decided == {K * IPC: recomputes} and policy.per_sample > 0
        for key in ("z", "c"):
            torch.testing.assert_close(state.params[key].grad, expected[key], rtol=1e-5, atol=1e-8)
    with pytest.raises(InvalidOptionError, match="checkpoint expects true or false or .auto."):
        registry.create("prior", "ld3m", checkpoint="sometimes")


def test_fixed_noise_gives_identical_images_and_resampling_does_not() -> None:
    prior, state = make_prior()
    idx = torch.arange(K * IPC)
    with torch.no_grad():
        first = prior.generate(state, idx)
        torch.manual_seed(123)  # the global RNG must not matter
        again = prior.generate(state, idx)
        chunk = prior.generate(state, idx[2:4])
    torch.testing.assert_close(first, again, rtol=0, atol=0)
    torch.testing.assert_close(chunk, first[2:4], rtol=1e-5, atol=1e-5)  # per-sample noise, any chunking
    prior.resample_noise = True
    with torch.no_grad():
        fresh = prior.generate(state, idx)
    assert not torch.allclose(fresh, first)


def test_learn_c_only_keeps_z_fixed_and_decoder_only_skips_diffusion() -> None:
    _, state = make_prior(learn="c")
    assert set(state.params) == {"c"} and "z" in state.buffers
    prior, state = make_prior(diffusion="off")
    calls = []
    prior.backend.unet.register_forward_hook(lambda *a: calls.append(1))
    with torch.no_grad():
        images = prior.generate(state, torch.arange(K * IPC))
        expected = prior.to_data_images(prior.backend.decode(state.params["z"]))
    assert not calls
    torch.testing.assert_close(images, expected)


def test_noise_init_and_residual_options_change_images() -> None:
    prior, state = make_prior(init="noise")
    assert abs(float(state.params["z"].detach().std()) - 1) < 0.2
    idx = torch.arange(K * IPC)
    with torch.no_grad():
        outs = {}
        for residual in ("mean", "x0", "none"):
            prior.residual = residual
            outs[residual] = prior.generate(state, idx)
    assert not torch.allclose(outs["mean"], outs["none"]) and not torch.allclose(outs["x0"], outs["none"])


def test_split_backward_matches_full_backward() -> None:
    from ddbench.engine.distill import split_backward_step

    class SumOfSquares(Matcher):
        def loss(self, images, labels, real):
            return (images.square() * (labels + 1).view(-1, 1, 1, 1)).mean()

    prior, state = make_prior()
    labels = class_labels(K, IPC)
    split_backward_step(prior, SumOfSquares(), state, labels, None, chunk_size=2)
    split = {k: v.grad.clone() for k, v in state.params.items()}
    for p in state.params.values():
        p.grad = None
    SumOfSquares().loss(prior.generate(state, torch.arange(K * IPC)), labels, None).backward()
    for key, grad in split.items():
        # chunks of 2 and one batch of 6 may take different convolution kernels (and an untrained
        # codebook's nearest code can flip with rounding): compare at the gradient's own scale,
        # where a missing gradient path would differ by O(1)
        scale = float(grad.abs().max())
        torch.testing.assert_close(grad, state.params[key].grad, rtol=1e-4, atol=1e-3 * scale)


def _generate_with_grads(prior: LD3MPrior, state: LatentState) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    for p in state.params.values():
        p.grad = None
    images = prior.generate(state, torch.arange(K * IPC))
    images.square().mean().backward()
    return images.detach(), {k: v.grad.clone() for k, v in state.params.items()}


@pytest.mark.parametrize("checkpoint", [False, True])
def test_compiled_generation_matches_eager(checkpoint: bool, caplog) -> None:
    """``compile=True`` compiles the guided denoiser and the decoder for real (no fall-back) and gives
    the eager images and gradients up to rounding; recomputed (checkpointed) calls run eager."""
    eager, state = make_prior(T=2, compile=False, checkpoint=checkpoint)
    expected = _generate_with_grads(eager, state)
    compiled, state = make_prior(T=2, compile=True, checkpoint=checkpoint)
    got = _generate_with_grads(compiled, state)
    assert compiled._guided.compiled is not None and compiled._decode.compiled is not None
    assert "torch.compile failed" not in caplog.text
    torch.testing.assert_close(got[0], expected[0], rtol=1e-4, atol=1e-5)
    for key in ("z", "c"):
        scale = float(expected[1][key].abs().max())
        torch.testing.assert_close(got[1][key], expected[1][key], rtol=1e-4, atol=1e-4 * scale)


def test_compile_and_precision_auto_resolve_for_the_run(monkeypatch) -> None:
    """What ``auto`` means is decided per run (IPC, device, the CPU's bf16 units) and recorded as such."""
    from ddbench_plugins.priors.ld3m import prior as prior_module

    from ddbench.interfaces import IdentityContext

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert not prior_module.compiles("auto", 1, cpu) and prior_module.compiles("auto", 10, cpu)
    assert not prior_module.compiles("auto", 10, cuda)  # unmeasured on GPUs: eager there
    assert prior_module.compiles(True, 1, cuda) and not prior_module.compiles(False, 10, cpu)
    prior = registry.create("prior", "ld3m")
    assert (prior.precision, prior.compile) == ("auto", "auto")  # the defaults
    for fast in (True, False):
        monkeypatch.setattr(prior_module, "bf16_is_fast", lambda device, fast=fast: fast)
        for ipc in (1, 10):
            options = prior.effective_options(IdentityContext("fashion-mnist", 28, ipc, cpu))
            assert options["precision"] == ("bf16" if fast else "fp32")
            assert options["compile"] is (ipc == 10)
    with pytest.raises(InvalidOptionError, match="compile"):
        LD3MPrior(compile="sometimes")


def test_grey_data_with_rgb_model_and_resizing() -> None:
    prior = registry.create("prior", "ld3m", latent_size=4)
    prior.setup(fake_data(res=12), torch.device("cpu"))
    x = fake_data(res=12).normalise(fake_data(res=12).train_images[:2])
    assert prior.to_model_images(x).shape == (2, 1, 8, 8)
    assert prior.to_data_images(torch.zeros(2, 3, 8, 8)).shape == (2, 1, 12, 12)


def test_option_errors_name_the_fix() -> None:
    with pytest.raises(InvalidOptionError, match="convert-ldm"):
        registry.create("prior", "ld3m", backend="cin256").setup(fake_data(), torch.device("cpu"))
    with pytest.raises(InvalidOptionError, match="residual"):
        registry.create("prior", "ld3m", residual="paper")
    with pytest.raises(InvalidOptionError, match="does not accept"):
        registry.create("prior", "ld3m", steps=3)
    with pytest.raises(DataNotFoundError, match="prior train ld3m"):
        load_backend("/nonexistent/ld3m")
    prior = registry.create("prior", "ld3m", class_ids=[0, 1])
    with pytest.raises(InvalidOptionError, match="class_ids"):
        prior.setup(fake_data(), torch.device("cpu"))


def test_default_T_follows_resolution() -> None:
    prior = registry.create("prior", "ld3m")
    prior.setup(fake_data(), torch.device("cpu"))
    assert prior.T == 10 and len(prior.schedule.timesteps) == 10
    assert prior.schedule.timesteps.tolist() == list(range(901, 0, -100))


# ------------------------------------------------------------------------------ save / load


def test_tiny_backend_save_and_load_round_trip(tmp_path) -> None:
    backend = build_tiny(image_channels=1, num_classes=K, seed=3).freeze()
    backend.save_pretrained(tmp_path / "model")
    loaded = load_backend(tmp_path / "model")
    assert isinstance(loaded, LDMBackend)
    loaded.freeze()
    torch.manual_seed(0)
    x = torch.rand(2, 1, 16, 16) * 2 - 1
    t = torch.tensor([901, 1])
    with torch.no_grad():
        for model in (backend, loaded):
            z = model.encode(x)
            c = model.class_embedding(torch.tensor([0, 2]))
            model._out = (z, model.decode(z), model.denoise(z, t, c), model.unconditional_embedding(2))
    for a, b in zip(backend._out, loaded._out):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    # the prior loads the directory through model_dir
    prior, state = make_prior(model_dir=str(tmp_path / "model"))
    assert prior.backend.num_classes == K


def test_an_imagenet_subset_conditions_on_its_imagenet_classes():
    """On a 1000-class model (cin256) imagenette's labels 0…9 must map to their ImageNet indices."""
    import dataclasses

    from conftest import make_tiny_data
    from ddbench_plugins.priors._class_ids import imagenet_ids

    data = dataclasses.replace(make_tiny_data(num_classes=10, per_class=2), name="imagenette")
    prior = LD3MPrior(T=2)
    prior.setup(data, torch.device("cpu"), backend=build_tiny(image_channels=1, num_classes=1000))
    assert prior.model_class.tolist() == imagenet_ids("imagenette") != list(range(10))
    with pytest.raises(InvalidOptionError, match="class_ids"):
        LD3MPrior(T=2, class_ids=[0, 1]).setup(
            data, torch.device("cpu"), backend=build_tiny(image_channels=1, num_classes=1000)
        )
