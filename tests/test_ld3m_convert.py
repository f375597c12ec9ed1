"""convert-ldm on a tiny checkpoint written here in the original CompVis key layout."""

from __future__ import annotations

import copy

import pytest
import torch
from ddbench_plugins.priors.ld3m import LD3MPrior
from ddbench_plugins.priors.ld3m.backends import load_backend
from ddbench_plugins.priors.ld3m.convert import convert_ldm, convert_state_dict

from ddbench.errors import CorruptFileError
from ddbench.interfaces import RealData, class_labels

MC, MULT, NRB, CTX = 32, (1, 2), 1, 16  # UNet: model_channels, channel_mult, res blocks, context dim
CH, N_EMBED, N_CLASSES = 32, 16, 5  # VQ: ch (mult 1-2), codebook size; ClassEmbedder rows (4 + uncond)

TINY_CONFIG = {
    "model": {
        "params": {
            "linear_start": 0.0015,
            "linear_end": 0.0195,
            "timesteps": 1000,
            "unet_config": {
                "params": {
                    "image_size": 8,
                    "in_channels": 3,
                    "out_channels": 3,
                    "model_channels": MC,
                    "attention_resolutions": [2],
                    "num_res_blocks": NRB,
                    "channel_mult": list(MULT),
                    "num_heads": 1,
                    "use_spatial_transformer": True,
                    "transformer_depth": 1,
                    "context_dim": CTX,
                }
            },
            "first_stage_config": {
                "params": {
                    "embed_dim": 3,
                    "n_embed": N_EMBED,
                    "ddconfig": {
                        "double_z": False,
                        "z_channels": 3,
                        "resolution": 16,
                        "in_channels": 3,
                        "out_ch": 3,
                        "ch": CH,
                        "ch_mult": list(MULT),
                        "num_res_blocks": NRB,
                        "attn_resolutions": [],
                    },
                }
            },
            "cond_stage_config": {
                "target": "ldm.modules.encoders.modules.ClassEmbedder",
                "params": {"n_classes": N_CLASSES, "embed_dim": CTX},
            },
        }
    }
}


class Layout:
    """Shapes of an original checkpoint, written from the CompVis module structure
    (openaimodel.UNetModel with SpatialTransformer, taming Encoder/Decoder, ClassEmbedder)."""

    def __init__(self) -> None:
        self.shapes: dict[str, tuple[int, ...]] = {}

    def lin(self, name, i, o, bias=True):
        self.shapes[name + ".weight"] = (o, i)
        if bias:
            self.shapes[name + ".bias"] = (o,)

    def conv(self, name, i, o, k=3):
        self.shapes[name + ".weight"] = (o, i, k, k)
        self.shapes[name + ".bias"] = (o,)

    def norm(self, name, c):
        self.shapes[name + ".weight"] = (c,)
        self.shapes[name + ".bias"] = (c,)

    # ---- UNet
    def resblock(self, name, i, o):
        self.norm(name + ".in_layers.0", i)
        self.conv(name + ".in_layers.2", i, o)
        self.lin(name + ".emb_layers.1", 4 * MC, o)
        self.norm(name + ".out_layers.0", o)
        self.conv(name + ".out_layers.3", o, o)
        if i != o:
            self.conv(name + ".skip_connection", i, o, 1)

    def transformer(self, name, c):
        self.norm(name + ".norm", c)
        self.conv(name + ".proj_in", c, c, 1)
        b = name + ".transformer_blocks.0"
        for attn, kv in (("attn1", c), ("attn2", CTX)):
            self.lin(f"{b}.{attn}.to_q", c, c, bias=False)
            self.lin(f"{b}.{attn}.to_k", kv, c, bias=False)
            self.lin(f"{b}.{attn}.to_v", kv, c, bias=False)
            self.lin(f"{b}.{attn}.to_out.0", c, c)
        self.lin(b + ".ff.net.0.proj", c, c * 8)  # GEGLU
        self.lin(b + ".ff.net.2", c * 4, c)
        for n in ("norm1", "norm2", "norm3"):
            self.norm(f"{b}.{n}", c)
        self.conv(name + ".proj_out", c, c, 1)

    def unet(self, p="model.diffusion_model."):
        self.lin(p + "time_embed.0", MC, 4 * MC)
        self.lin(p + "time_embed.2", 4 * MC, 4 * MC)
        self.conv(p + "input_blocks.0.0", 3, MC)
        chans, ch, ds, idx = [MC], MC, 1, 1
        for level, m in enumerate(MULT):
            for _ in range(NRB):
                self.resblock(f"{p}input_blocks.{idx}.0", ch, m * MC)
                ch = m * MC
                if ds == 2:
                    self.transformer(f"{p}input_blocks.{idx}.1", ch)
                chans.append(ch)
                idx += 1
            if level != len(MULT) - 1:
                self.conv(f"{p}input_blocks.{idx}.0.op", ch, ch)
                chans.append(ch)
                idx += 1
                ds *= 2
        self.resblock(p + "middle_block.0", ch, ch)
        self.transformer(p + "middle_block.1", ch)
        self.resblock(p + "middle_block.2", ch, ch)
        idx = 0
        for level, m in reversed(list(enumerate(MULT))):
            for i in range(NRB + 1):
                self.resblock(f"{p}output_blocks.{idx}.0", ch + chans.pop(), m * MC)
                ch, j = m * MC, 1
                if ds == 2:
                    self.transformer(f"{p}output_blocks.{idx}.1", ch)
                    j = 2
                if level and i == NRB:
                    self.conv(f"{p}output_blocks.{idx}.{j}.conv", ch, ch)
                    ds //= 2
                idx += 1
        self.norm(p + "out.0", ch)
        self.conv(p + "out.2", MC, 3)

    # ---- VQ autoencoder
    def vq_res(self, name, i, o):
        self.norm(name + ".norm1", i)
        self.conv(name + ".conv1", i, o)
        self.norm(name + ".norm2", o)
        self.conv(name + ".conv2", o, o)
        if i != o:
            self.conv(name + ".nin_shortcut", i, o, 1)

    def vq_attn(self, name, c):
        self.norm(name + ".norm", c)
        for q in ("q", "k", "v", "proj_out"):
            self.conv(f"{name}.{q}", c, c, 1)

    def vq(self, p="first_stage_model."):
        self.conv(p + "encoder.conv_in", 3, CH)
        c = CH
        for i, m in enumerate(MULT):
            for j in range(NRB):
                self.vq_res(f"{p}encoder.down.{i}.block.{j}", c, CH * m)
                c = CH * m
            if i != len(MULT) - 1:
                self.conv(f"{p}encoder.down.{i}.downsample.conv", c, c)
        for part in ("encoder", "decoder"):
            if part == "decoder":
                self.conv(p + "decoder.conv_in", 3, c)
            self.vq_res(f"{p}{part}.mid.block_1", c, c)
            self.vq_attn(f"{p}{part}.mid.attn_1", c)
            self.vq_res(f"{p}{part}.mid.block_2", c, c)
            if part == "encoder":
                self.norm(p + "encoder.norm_out", c)
                self.conv(p + "encoder.conv_out", c, 3)
        for i in reversed(range(len(MULT))):
            for j in range(NRB + 1):
                self.vq_res(f"{p}decoder.up.{i}.block.{j}", c, CH * MULT[i])
                c = CH * MULT[i]
            if i != 0:
                self.conv(f"{p}decoder.up.{i}.upsample.conv", c, c)
        self.norm(p + "decoder.norm_out", c)
        self.conv(p + "decoder.conv_out", c, 3)
        self.conv(p + "quant_conv", 3, 3, 1)
        self.conv(p + "post_quant_conv", 3, 3, 1)
        self.shapes[p + "quantize.embedding.weight"] = (N_EMBED, 3)


def original_checkpoint() -> dict[str, torch.Tensor]:
    layout = Layout()
    layout.unet()
    layout.vq()
    layout.shapes["cond_stage_model.embedding.weight"] = (N_CLASSES, CTX)
    g = torch.Generator().manual_seed(0)
    state = {k: torch.randn(s, generator=g) * 0.2 for k, s in layout.shapes.items()}
    # LDM's own schedule buffers (make_beta_schedule "linear": linear in √β)
    betas = torch.linspace(0.0015**0.5, 0.0195**0.5, 1000, dtype=torch.float64) ** 2
    state["alphas_cumprod"] = torch.cumprod(1 - betas, 0).float()
    return state


@pytest.fixture(scope="module")
def converted():
    state = original_checkpoint()
    return state, convert_state_dict(state, TINY_CONFIG)


def test_every_original_tensor_lands_in_the_right_place(converted) -> None:
    state, backend = converted
    weights = {k: v for k, v in state.items() if k != "alphas_cumprod"}
    params = {k: v.detach() for k, v in backend.named_parameters()}
    assert sum(v.numel() for v in weights.values()) == sum(p.numel() for p in params.values())
    # each original tensor is used exactly once (compared through distinct random values)
    assert sorted(round(float(v.sum()), 4) for v in weights.values()) == sorted(
        round(float(p.sum()), 4) for p in params.values()
    )
    u, m = "unet.", "model.diffusion_model."
    pairs = {
        u + "conv_in.weight": m + "input_blocks.0.0.weight",
        u + "time_embedding.linear_1.weight": m + "time_embed.0.weight",
        u + "down_blocks.1.resnets.0.conv_shortcut.weight": m + "input_blocks.3.0.skip_connection.weight",
        u + "down_blocks.0.downsamplers.0.conv.weight": m + "input_blocks.2.0.op.weight",
        u + "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight": m
        + "input_blocks.3.1.transformer_blocks.0.attn2.to_k.weight",
        u + "mid_block.attentions.0.proj_in.weight": m + "middle_block.1.proj_in.weight",
        u + "mid_block.resnets.1.time_emb_proj.weight": m + "middle_block.2.emb_layers.1.weight",
        u + "up_blocks.0.upsamplers.0.conv.weight": m + "output_blocks.1.2.conv.weight",
        u + "up_blocks.1.resnets.1.conv2.weight": m + "output_blocks.3.0.out_layers.3.weight",
        u + "conv_out.weight": m + "out.2.weight",
        "vqvae.decoder.up_blocks.0.resnets.0.conv1.weight": "first_stage_model.decoder.up.1.block.0.conv1.weight",
        "vqvae.decoder.up_blocks.0.upsamplers.0.conv.weight": "first_stage_model.decoder.up.1.upsample.conv.weight",
        "vqvae.encoder.down_blocks.0.downsamplers.0.conv.weight": "first_stage_model.encoder.down.0.downsample.conv.weight",
        "vqvae.quantize.embedding.weight": "first_stage_model.quantize.embedding.weight",
        "vqvae.post_quant_conv.weight": "first_stage_model.post_quant_conv.weight",
        "embedder.embedding.weight": "cond_stage_model.embedding.weight",
    }
    for ours, theirs in pairs.items():
        torch.testing.assert_close(params[ours], state[theirs], rtol=0, atol=0, msg=ours)
    # 1×1-conv attention of the VQ mid block becomes linear layers
    torch.testing.assert_close(
        params["vqvae.encoder.mid_block.attentions.0.to_q.weight"],
        state["first_stage_model.encoder.mid.attn_1.q.weight"][:, :, 0, 0],
    )
    assert backend.num_classes == N_CLASSES - 1 and backend.latent_channels == 3


def test_round_trip_through_a_ckpt_file_and_the_prior(converted, tmp_path) -> None:
    state, backend = converted
    ckpt = tmp_path / "model.ckpt"
    torch.save({"state_dict": state, "global_step": 0}, ckpt)
    config = tmp_path / "tiny.yaml"
    import yaml

    config.write_text(yaml.safe_dump(TINY_CONFIG))
    convert_ldm(ckpt, tmp_path / "out", config=config)
    loaded = load_backend(tmp_path / "out").freeze()
    backend.freeze()
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        z = backend.encode(x)
        torch.testing.assert_close(loaded.encode(x), z, rtol=0, atol=0)
        c = backend.class_embedding(torch.tensor([1, 3]))
        t = torch.tensor([901, 1])
        torch.testing.assert_close(loaded.denoise(z, t, c), backend.denoise(z, t, c), rtol=0, atol=0)
        torch.testing.assert_close(loaded.decode(z), backend.decode(z), rtol=0, atol=0)
    # the prior loads the directory offline and maps dataset classes to model classes
    images = torch.randint(0, 256, (6, 3, 16, 16), dtype=torch.uint8)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    data = RealData("tiny", images, labels, images, labels, ["a", "b", "c"], (0.5,) * 3, (0.25,) * 3)
    prior = LD3MPrior(backend="cin256", model_dir=str(tmp_path / "out"), T=2, class_ids=[3, 0, 2])
    prior.setup(data, torch.device("cpu"))
    state0 = prior.init_state(data.normalise(images[::2]), class_labels(3, 1), torch.Generator().manual_seed(0))
    torch.testing.assert_close(state0.params["c"][0], loaded.class_embedding(torch.tensor([3]))[0])
    assert prior.generate(state0, torch.arange(3)).shape == (3, 3, 16, 16)


def test_mismatched_config_or_schedule_is_reported() -> None:
    state = original_checkpoint()
    wrong = copy.deepcopy(TINY_CONFIG)
    wrong["model"]["params"]["unet_config"]["params"]["channel_mult"] = [1, 1]
    with pytest.raises(CorruptFileError, match="--config"):
        convert_state_dict(state, wrong)
    other = copy.deepcopy(TINY_CONFIG)
    other["model"]["params"]["linear_end"] = 0.012
    with pytest.raises(CorruptFileError, match="alphas_cumprod"):
        convert_state_dict(state, other)
