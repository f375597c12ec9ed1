"""GLaD's StyleGAN-XL backend: a small network pickle, written in a fresh process from a fake
StyleGAN-XL source tree, loads through the same path as the official pickles (persistent classes
whose source travels in the pickle; only G_ema built; custom ops on their reference path) and
generates what the original G_ema generates.

The fake tree mirrors the parts of StyleGAN-XL the loader relies on: ``dnnlib.EasyDict``,
``torch_utils.persistence`` (same pickle format: ``_reconstruct_persistent_obj(meta)`` with the
module source), a custom op with ``_init()`` whose plugin cannot be built, and a StyleGAN3-layout
generator (``synthesis.input``, ``layer_names``, ``num_ws = layers + 2``, ``output_scale``). Its
discriminator holds a plain (non-persistent) feature network from a package that refuses to import
while ``FAKE_SGXL_FORBID_D`` is set — so a loader that touched the discriminator fails.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from conftest import make_tiny_data
from ddbench_plugins.priors.glad.lazy_pickle import Deferred, load_deferred, materialise
from ddbench_plugins.priors.glad.stylegan_xl import configure_custom_ops, load_stylegan_xl

from ddbench import registry
from ddbench.errors import CorruptFileError, DataNotFoundError, InvalidOptionError
from ddbench.interfaces import class_labels

FORBID_ENV = "FAKE_SGXL_FORBID_D"

TREE = {
    "dnnlib/__init__.py": """
        class EasyDict(dict):
            def __getattr__(self, name):
                try:
                    return self[name]
                except KeyError:
                    raise AttributeError(name)
            def __setattr__(self, name, value):
                self[name] = value
    """,
    "torch_utils/__init__.py": "",
    "torch_utils/persistence.py": """
        # Same pickle format as NVIDIA's torch_utils.persistence: a persistent object reduces to
        # _reconstruct_persistent_obj(meta), meta carrying the source of the class's module.
        import inspect, sys, types, uuid
        import dnnlib

        _version = 6
        _decorators = set()
        _src_by_module, _module_by_src = {}, {}

        def _source(module):
            if module not in _src_by_module:
                src = inspect.getsource(module)
                _src_by_module[module], _module_by_src[src] = src, module
            return _src_by_module[module]

        def _module_from_source(src):
            if src not in _module_by_src:
                module = types.ModuleType("_imported_module_" + uuid.uuid4().hex)
                sys.modules[module.__name__] = module
                _src_by_module[module], _module_by_src[src] = src, module
                exec(src, module.__dict__)
            return _module_by_src[src]

        def persistent_class(cls):
            if cls in _decorators:
                return cls
            src = _source(sys.modules[cls.__module__])

            class Decorator(cls):
                _orig_module_src, _orig_class_name = src, cls.__name__

                def __reduce__(self):
                    fields = list(super().__reduce__()) + [None] * 3
                    meta = dict(type="class", version=_version, module_src=self._orig_module_src,
                                class_name=self._orig_class_name, state=fields[2])
                    return (_reconstruct_persistent_obj, (meta,), None)

            Decorator.__name__ = cls.__name__
            _decorators.add(Decorator)
            return Decorator

        def _reconstruct_persistent_obj(meta):
            meta = dnnlib.EasyDict(meta)
            assert meta.version == _version and meta.type == "class"
            module = _module_from_source(meta.module_src)
            cls = persistent_class(module.__dict__[meta.class_name])
            obj = cls.__new__(cls)
            obj.__setstate__(dict(meta.state))
            return obj
    """,
    "torch_utils/custom_ops.py": """
        def get_plugin(module_name, **kwargs):
            raise RuntimeError(f"cannot build {module_name}: no CUDA compiler in this fake tree")
    """,
    "torch_utils/ops/__init__.py": "",
    "torch_utils/ops/bias_act.py": """
        import torch
        _plugin = None

        def _init():
            global _plugin
            if _plugin is None:
                from torch_utils import custom_ops
                _plugin = custom_ops.get_plugin("bias_act_plugin")
            return True

        def bias_act(x, b=None, act="linear", gain=None, impl="cuda"):
            if impl == "cuda" and x.device.type == "cuda" and _init():
                return _plugin.bias_act(x, b, act)
            if b is not None:
                x = x + b.reshape(1, -1, *([1] * (x.dim() - 2)))
            if act == "lrelu":
                x = torch.nn.functional.leaky_relu(x, 0.2) * (2 ** 0.5 if gain is None else gain)
            return x
    """,
    "training/__init__.py": "",
    "training/networks_fake_xl.py": """
        # A StyleGAN3-layout generator, small: Fourier-ish input driven by ws[:, 0], then layers.
        import numpy as np
        import torch
        from torch_utils import persistence
        from torch_utils.ops import bias_act

        @persistence.persistent_class
        class FullyConnectedLayer(torch.nn.Module):
            def __init__(self, in_features, out_features, activation="linear", bias_init=0.0):
                super().__init__()
                self.activation = activation
                self.weight = torch.nn.Parameter(torch.randn(out_features, in_features))
                self.bias = torch.nn.Parameter(torch.full([out_features], float(bias_init)))
                self.weight_gain = 1 / np.sqrt(in_features)

            def forward(self, x):
                return bias_act.bias_act(x @ (self.weight * self.weight_gain).t(), self.bias, act=self.activation)

        @persistence.persistent_class
        class MappingNetwork(torch.nn.Module):
            def __init__(self, z_dim, c_dim, w_dim, num_ws):
                super().__init__()
                self.z_dim, self.c_dim, self.w_dim, self.num_ws = z_dim, c_dim, w_dim, num_ws
                self.embed = torch.nn.Embedding(c_dim, 8)  # a plain torch module, as StyleGAN-XL's
                self.embed_proj = FullyConnectedLayer(8, z_dim, activation="lrelu")
                self.fc0 = FullyConnectedLayer(2 * z_dim, w_dim, activation="lrelu")
                self.fc1 = FullyConnectedLayer(w_dim, w_dim, activation="lrelu")
                self.register_buffer("w_avg", torch.randn(c_dim, w_dim) * 0.1)

            def forward(self, z, c, truncation_psi=1, truncation_cutoff=None, update_emas=False):
                x = z * (z.square().mean(1, keepdim=True) + 1e-8).rsqrt()
                y = self.embed_proj(self.embed(c.argmax(1)))
                y = y * (y.square().mean(1, keepdim=True) + 1e-8).rsqrt()
                x = self.fc1(self.fc0(torch.cat([x, y], dim=1)))
                x = x.unsqueeze(1).repeat([1, self.num_ws, 1])
                if truncation_psi != 1:
                    x = self.w_avg[c.argmax(1)].unsqueeze(1).lerp(x, truncation_psi)
                return x

        @persistence.persistent_class
        class SynthesisInput(torch.nn.Module):
            def __init__(self, w_dim, channels, size):
                super().__init__()
                self.size = size
                self.affine = FullyConnectedLayer(w_dim, 2, bias_init=1.0)
                self.register_buffer("freqs", torch.randn(channels, 2))

            def forward(self, w):
                grid = torch.linspace(-1, 1, self.size, device=w.device)
                yy, xx = torch.meshgrid(grid, grid, indexing="ij")
                shift = self.affine(w)  # (N, 2)
                arg = (self.freqs[None, :, 0, None, None] * (xx + shift[:, 0, None, None, None])
                       + self.freqs[None, :, 1, None, None] * (yy + shift[:, 1, None, None, None]))
                return torch.sin(np.pi * arg)

        @persistence.persistent_class
        class SynthesisLayer(torch.nn.Module):
            def __init__(self, w_dim, in_channels, out_channels, up, is_torgb):
                super().__init__()
                self.up, self.is_torgb = up, is_torgb
                self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1.0)
                k = 1 if is_torgb else 3
                self.weight = torch.nn.Parameter(torch.randn(out_channels, in_channels, k, k))
                self.bias = torch.nn.Parameter(torch.zeros(out_channels))

            def forward(self, x, w, noise_mode="random", force_fp32=False, update_emas=False):
                if self.up:
                    x = torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest")
                s = self.affine(w)
                wt = self.weight[None] * s[:, None, :, None, None]
                if not self.is_torgb:
                    wt = wt * (wt.square().sum([2, 3, 4], keepdim=True) + 1e-8).rsqrt()
                n, o, i, k, _ = wt.shape
                y = torch.nn.functional.conv2d(x.reshape(1, n * i, *x.shape[2:]), wt.reshape(n * o, i, k, k),
                                               padding=k // 2, groups=n).reshape(n, o, *x.shape[2:])
                return bias_act.bias_act(y, self.bias, act="linear" if self.is_torgb else "lrelu")

        @persistence.persistent_class
        class SynthesisNetwork(torch.nn.Module):
            def __init__(self, w_dim, img_resolution, img_channels, num_layers=4):
                super().__init__()
                self.w_dim, self.img_resolution, self.img_channels = w_dim, img_resolution, img_channels
                self.num_ws = num_layers + 2
                self.output_scale = 0.25
                self.input = SynthesisInput(w_dim, 12, img_resolution // 2)
                self.layer_names = []
                for idx in range(num_layers + 1):
                    is_torgb = idx == num_layers
                    layer = SynthesisLayer(w_dim, 12, img_channels if is_torgb else 12, up=idx == 1, is_torgb=is_torgb)
                    name = f"L{idx}_{img_resolution if idx else img_resolution // 2}_{img_channels if is_torgb else 12}"
                    setattr(self, name, layer)
                    self.layer_names.append(name)

            def forward(self, ws, **layer_kwargs):
                ws = ws.to(torch.float32).unbind(dim=1)
                x = self.input(ws[0])
                for name, w in zip(self.layer_names, ws[1:]):
                    x = getattr(self, name)(x, w, **layer_kwargs)
                return (x * self.output_scale).to(torch.float32)

        @persistence.persistent_class
        class Generator(torch.nn.Module):
            def __init__(self, z_dim, c_dim, w_dim, img_resolution, img_channels):
                super().__init__()
                self.z_dim, self.c_dim, self.w_dim = z_dim, c_dim, w_dim
                self.img_resolution, self.img_channels = img_resolution, img_channels
                self.synthesis = SynthesisNetwork(w_dim, img_resolution, img_channels)
                self.num_ws = self.synthesis.num_ws
                self.mapping = MappingNetwork(z_dim, c_dim, w_dim, self.num_ws)

            def forward(self, z, c, truncation_psi=1, **kwargs):
                return self.synthesis(self.mapping(z, c, truncation_psi=truncation_psi))
    """,
    "feature_networks/__init__.py": """
        import os
        if os.environ.get("FAKE_SGXL_FORBID_D"):
            raise ImportError("the discriminator's feature networks were imported while loading G_ema")
    """,
    "feature_networks/net.py": """
        import torch
        class FeatureNet(torch.nn.Module):  # plain class: pickled by reference, like timm models
            def __init__(self):
                super().__init__()
                self.body = torch.nn.Conv2d(3, 4, 3)
    """,
    "pg_modules/__init__.py": "",
    "pg_modules/discriminator.py": """
        import torch
        from torch_utils import persistence
        from feature_networks.net import FeatureNet

        @persistence.persistent_class
        class ProjectedDiscriminator(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.feature_network = FeatureNet()
                self.head = torch.nn.Linear(4, 1)
    """,
}

BUILD = """
import copy, pickle, sys
import torch
import dnnlib
from training.networks_fake_xl import Generator
from pg_modules.discriminator import ProjectedDiscriminator

torch.manual_seed(0)
G = Generator(z_dim=16, c_dim=5, w_dim=32, img_resolution=16, img_channels=3).eval()
D = ProjectedDiscriminator()
G_ema = copy.deepcopy(G)
with torch.no_grad():  # make G_ema differ from G, as after training
    for p in G_ema.parameters():
        p.add_(0.05 * torch.randn_like(p))
snapshot = dict(G=G, D=D, G_ema=G_ema, augment_pipe=None, training_set_kwargs=dnnlib.EasyDict(resolution=16))
with open(sys.argv[1], "wb") as f:
    pickle.dump(snapshot, f)

g = torch.Generator().manual_seed(1)
z = torch.randn(4, 16, generator=g)
labels = torch.tensor([0, 3, 4, 1])
c = torch.nn.functional.one_hot(labels, 5).float()
with torch.no_grad():
    ws = G_ema.mapping(z, c)
    ws_trunc = G_ema.mapping(z, c, truncation_psi=0.5)
    torch.save(dict(z=z, labels=labels, ws=ws, ws_trunc=ws_trunc, img=G_ema(z, c)), sys.argv[2])
"""


@pytest.fixture(scope="module")
def fake_xl(tmp_path_factory) -> Iterator[dict[str, Path]]:
    """The fake tree, a snapshot pickle written from it by a fresh process, and G_ema's reference outputs."""
    root = tmp_path_factory.mktemp("fake_sgxl")
    src = root / "stylegan-xl"
    for rel, text in TREE.items():
        path = src / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())
    pkl, ref = root / "fake_xl.pkl", root / "reference.pt"
    env = {k: v for k, v in os.environ.items() if k != FORBID_ENV}
    env.update(PYTHONPATH=str(src), OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-c", BUILD, str(pkl), str(ref)], cwd=src, capture_output=True, text=True, timeout=120, env=env
    )
    assert proc.returncode == 0, proc.stderr
    yield {"src": src, "pkl": pkl, "ref": ref}
    # leave no fake `dnnlib` / `torch_utils` / `training` behind for other test modules
    sys.path[:] = [p for p in sys.path if Path(p).resolve() != src.resolve()]
    for name in list(sys.modules):
        if name.split(".")[0] in (
            "dnnlib",
            "torch_utils",
            "training",
            "feature_networks",
            "pg_modules",
        ) or name.startswith("_imported_module_"):
            del sys.modules[name]


@pytest.fixture
def forbid_discriminator(monkeypatch):
    monkeypatch.setenv(FORBID_ENV, "1")


def test_g_ema_loads_and_matches_the_original(fake_xl, forbid_discriminator):
    gen = load_stylegan_xl(fake_xl["pkl"], fake_xl["src"])
    ref = torch.load(fake_xl["ref"])
    assert (gen.z_dim, gen.w_dim, gen.num_ws, gen.num_layers, gen.num_classes) == (16, 32, 6, 5, 5)
    assert (gen.img_channels, gen.img_resolution) == (3, 16)
    assert not any(p.requires_grad for p in gen.parameters()) and not gen.training
    with torch.no_grad():
        ws = gen.mapping(ref["z"], ref["labels"])
        torch.testing.assert_close(ws, ref["ws"])
        torch.testing.assert_close(gen.mapping(ref["z"], ref["labels"], truncation=0.5), ref["ws_trunc"])
        torch.testing.assert_close(gen.synthesis(ws), ref["img"])  # G_ema, not G
    # only G_ema was built: the discriminator's modules never ran, its plain classes never imported
    assert "feature_networks" not in sys.modules and "pg_modules" not in sys.modules


def test_split_at_every_layer_equals_the_original_synthesis(fake_xl):
    gen = load_stylegan_xl(fake_xl["pkl"], fake_xl["src"])
    ref = torch.load(fake_xl["ref"])
    with torch.no_grad():
        for k in range(gen.num_layers + 1):
            f = gen.features(ref["ws"], k)
            torch.testing.assert_close(gen.from_features(f, ref["ws"], k), ref["img"], msg=f"split at layer {k}")
    with pytest.raises(InvalidOptionError, match=r"layer in \[0, 5\]"):
        gen.features(ref["ws"], 6)


def test_lazy_unpickling_defers_everything_but_tensors(fake_xl, forbid_discriminator):
    with open(fake_xl["pkl"], "rb") as handle:
        data, deferred = load_deferred(handle)
    assert {"torch_utils.persistence", "feature_networks.net", "dnnlib"} <= deferred
    assert all(isinstance(data[k], Deferred) for k in ("G", "D", "G_ema"))
    with pytest.raises(ImportError, match="feature networks were imported"):
        materialise(data["D"])  # what a loader that built the discriminator would hit


def test_custom_op_build_failure_falls_back_to_reference(fake_xl):
    load_stylegan_xl(fake_xl["pkl"], fake_xl["src"])
    bias_act = sys.modules["torch_utils.ops.bias_act"]
    assert configure_custom_ops(torch.device("cpu")) == {"bias_act": "reference"}
    original = bias_act._init
    try:
        with pytest.warns(UserWarning, match="could not be built"):
            modes = configure_custom_ops(torch.device("cuda"))  # the build is attempted, fails, and is replaced
        assert modes == {"bias_act": "reference"} and bias_act._init() is False
    finally:
        bias_act._init = original


def test_glad_prior_runs_on_the_stylegan_xl_backend(fake_xl):
    # 3-channel 16-px generator on 1-channel 12-px data: channel mean, then resize
    data = make_tiny_data(num_classes=3, channels=1, res=12)
    prior = registry.create(
        "prior",
        "glad",
        backend="stylegan-xl",
        weights=str(fake_xl["pkl"]),
        stylegan_xl_src=str(fake_xl["src"]),
        layer=2,
        class_ids=[4, 0, 2],
        trust_pickle=True,
    )
    prior.setup(data, torch.device("cpu"))
    labels = class_labels(3, 2)
    state = prior.init_state(torch.zeros(6, 1, 12, 12), labels, torch.Generator().manual_seed(0))
    assert state.params["w"].shape == (6, 6, 32) and state.params["features"].shape == (6, 12, 16, 16)
    images = prior.generate(state, torch.arange(6))
    assert images.shape == (6, 1, 12, 12) and torch.isfinite(images).all()
    images.square().mean().backward()
    assert state.params["w"].grad.abs().sum() > 0 and state.params["features"].grad.abs().sum() > 0
    # the initial w of sample i is G_ema's mapping of its z with the generator class of its label
    z = torch.randn(6, 16, generator=torch.Generator().manual_seed(0))
    expected = prior.generator.mapping(z, torch.tensor([4, 4, 0, 0, 2, 2]))
    torch.testing.assert_close(state.params["w"].detach(), expected)


def test_missing_tree_pickle_or_key_are_clear_errors(fake_xl, tmp_path):
    with pytest.raises(DataNotFoundError, match="clone https://github.com/autonomousvision/stylegan-xl"):
        load_stylegan_xl(fake_xl["pkl"], tmp_path / "nowhere")
    with pytest.raises(DataNotFoundError, match="not a StyleGAN-XL source tree"):
        load_stylegan_xl(fake_xl["pkl"], tmp_path)
    with pytest.raises(DataNotFoundError, match="No StyleGAN-XL pickle"):
        load_stylegan_xl(tmp_path / "missing.pkl", fake_xl["src"])
    bad = tmp_path / "bad.pkl"
    bad.write_bytes(b"not a pickle")
    with pytest.raises(CorruptFileError, match="not a readable network pickle"):
        load_stylegan_xl(bad, fake_xl["src"])
    with pytest.raises(CorruptFileError, match="has no 'G_missing' entry"):
        load_stylegan_xl(fake_xl["pkl"], fake_xl["src"], key="G_missing")
    with pytest.raises(InvalidOptionError, match="needs weights=.*stylegan_xl_src="):
        registry.create("prior", "glad", backend="stylegan-xl", weights=str(fake_xl["pkl"]))
    # a pickle runs code when it loads: never without the user's explicit trust
    with pytest.raises(InvalidOptionError, match="glad.trust_pickle=true"):
        registry.create(
            "prior", "glad", backend="stylegan-xl", weights=str(fake_xl["pkl"]), stylegan_xl_src=str(fake_xl["src"])
        )
