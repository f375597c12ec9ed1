"""The ``dit`` backend of LD3M, on a tiny DiT directory built here in the diffusers DiTPipeline layout."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import make_tiny_data
from ddbench_plugins.priors.ld3m import LD3MPrior
from ddbench_plugins.priors.ld3m.backends import load_backend
from ddbench_plugins.priors.ld3m.dit import DiTBackend
from diffusers import AutoencoderKL, DDIMScheduler, DiTTransformer2DModel

from ddbench.errors import InvalidOptionError
from ddbench.interfaces import class_labels

NUM_CLASSES = 3


def _tiny_dit(shared_table: bool = True) -> tuple[AutoencoderKL, DiTTransformer2DModel, DDIMScheduler]:
    torch.manual_seed(0)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        block_out_channels=(16, 16), layers_per_block=1, latent_channels=4, norm_num_groups=8, sample_size=16,
    )  # fmt: skip
    dit = DiTTransformer2DModel(
        num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=8, num_layers=2, sample_size=8,
        patch_size=2, num_embeds_ada_norm=NUM_CLASSES,
    )  # fmt: skip
    # a real DiT's blocks share one label table (y_embedder), copied into each block by diffusers
    if shared_table:
        first = dit.transformer_blocks[0].norm1.emb.class_embedder.embedding_table.weight
        with torch.no_grad():
            first.normal_()
            for block in dit.transformer_blocks[1:]:
                block.norm1.emb.class_embedder.embedding_table.weight.copy_(first)
    scheduler = DDIMScheduler(
        num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02, clip_sample=False
    )
    return vae, dit, scheduler


def _pipeline_dir(root: Path) -> Path:
    """The layout of a DiTPipeline on disk (model_index.json + one folder per component)."""
    vae, dit, scheduler = _tiny_dit()
    vae.save_pretrained(root / "vae")
    dit.save_pretrained(root / "transformer")
    scheduler.save_pretrained(root / "scheduler")
    index = {
        "_class_name": "DiTPipeline",
        "transformer": ["diffusers", "DiTTransformer2DModel"],
        "vae": ["diffusers", "AutoencoderKL"],
        "scheduler": ["diffusers", "DDIMScheduler"],
    }
    (root / "model_index.json").write_text(json.dumps(index))
    return root


def test_injected_c_equals_the_label_lookup_and_drives_the_output():
    backend = DiTBackend(*_tiny_dit()).freeze()
    z = torch.randn(2, 4, 8, 8)
    t = torch.tensor([500, 500])
    labels = torch.tensor([0, 2])
    plain = backend.transformer(z, timestep=t, class_labels=labels).sample[:, :4]
    injected = backend.denoise(z, t, backend.class_embedding(labels))
    torch.testing.assert_close(injected, plain)
    other = backend.denoise(z, t, backend.class_embedding(torch.tensor([1, 1])))
    assert not torch.allclose(other, plain)
    assert backend.unconditional_embedding(2).shape == (2, backend.transformer.config.num_attention_heads * 8)


def test_blocks_with_different_label_tables_are_refused():
    with pytest.raises(InvalidOptionError, match="different label tables"):
        DiTBackend(*_tiny_dit(shared_table=False))


def test_ld3m_on_a_dit_directory_generates_and_learns_z_and_c(tmp_path):
    model_dir = _pipeline_dir(tmp_path / "dit")
    assert isinstance(load_backend(model_dir), DiTBackend)
    data = make_tiny_data(num_classes=NUM_CLASSES, per_class=4, channels=3, res=16)
    prior = LD3MPrior(backend="dit", model_dir=str(model_dir), T=3)
    prior.setup(data, torch.device("cpu"))
    assert prior.latent_size == 8  # 16 px / f2
    labels = class_labels(NUM_CLASSES, 1)
    real = torch.cat([data.sample_class(c, 1, torch.Generator().manual_seed(c)) for c in range(NUM_CLASSES)])
    state = prior.init_state(real, labels, torch.Generator().manual_seed(0))
    assert set(state.params) == {"z", "c"}
    images = prior.generate(state, torch.arange(len(labels)))
    assert images.shape == (NUM_CLASSES, 3, 16, 16) and torch.isfinite(images).all()
    images.square().mean().backward()
    assert state.params["z"].grad.abs().sum() > 0 and state.params["c"].grad.abs().sum() > 0
    assert all(p.grad is None for p in prior.backend.parameters())  # the DiT itself stays frozen
    torch.testing.assert_close(prior.generate(state, torch.arange(len(labels))), images.detach())  # fixed noise


def test_backend_name_and_directory_must_agree(tmp_path):
    model_dir = _pipeline_dir(tmp_path / "dit")
    data = make_tiny_data(num_classes=NUM_CLASSES, per_class=2, channels=3, res=16)
    with pytest.raises(InvalidOptionError, match="backend=dit"):
        LD3MPrior(backend="cin256", model_dir=str(model_dir), T=2).setup(data, torch.device("cpu"))


def test_save_pretrained_round_trips(tmp_path):
    backend = DiTBackend(*_tiny_dit()).freeze()
    backend.save_pretrained(tmp_path / "saved")
    loaded = load_backend(tmp_path / "saved")
    assert isinstance(loaded, DiTBackend)
    z, t, c = torch.randn(1, 4, 8, 8), torch.tensor([10]), backend.class_embedding(torch.tensor([1]))
    torch.testing.assert_close(loaded.freeze().denoise(z, t, c), backend.denoise(z, t, c))
