"""Train the ``tiny`` LD3M backend on a dataset: the VQ autoencoder, then the class-conditional
diffusion model on its latents (ε-prediction, classifier-free guidance by dropping the class).

Resumable: ``train_state.pt`` in the output directory holds the stage, step, weights, optimiser
and RNG states, written every ``checkpoint_every`` steps and at each stage's end. It holds only
tensors and plain values and is read with ``weights_only=True``, so a crafted file cannot run code.
The result is saved with `LDMBackend.save_pretrained` (diffusers layout) with ``metrics.json``
(reconstruction PSNR on the test split) and ``samples.png`` (a class-conditional DDIM sample grid).
"""

from __future__ import annotations

import json
import math
import pickle
import sys
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import torchvision
from ddbench_plugins.priors.ld3m.backends import LDMBackend, build_tiny
from ddbench_plugins.priors.ld3m.sampler import DDIMSchedule, reverse_process
from torch import Tensor

from ddbench.errors import CorruptFileError
from ddbench.interfaces import RealData
from ddbench.util.fileio import write_atomic
from ddbench.util.progress import make_progress

STATE_FILE = "train_state.pt"
P_UNCOND = 0.1  # fraction of training samples conditioned on the unconditional row (for guidance)


def to_model_range(uint8: Tensor) -> Tensor:
    """uint8 pixels → the autoencoder's [−1, 1] range."""
    return uint8.float() / 127.5 - 1


def reconstruction_psnr(backend: LDMBackend, data: RealData, batch: int = 256) -> float:
    """PSNR (dB, images in [0, 1]) of decode(encode(x)) over the test split."""
    mse, n = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(data.test_images), batch):
            x = to_model_range(data.test_images[start : start + batch])
            rec = backend.decode(backend.encode(x)).clamp(-1, 1)
            mse += float(((rec - x) / 2).square().mean(dim=(1, 2, 3)).sum())
            n += len(x)
    return 10 * math.log10(1.0 / max(mse / n, 1e-12))


def encode_all(backend: LDMBackend, uint8_images: Tensor, batch: int = 512) -> Tensor:
    """Latents Z of every image (uint8, N×C×H×W), batched, without gradients."""
    with torch.no_grad():
        return torch.cat(
            [backend.encode(to_model_range(uint8_images[i : i + batch])) for i in range(0, len(uint8_images), batch)]
        )


def sample_grid(
    backend: LDMBackend,
    num_classes: int,
    per_class: int,
    path: Path,
    steps: int = 50,
    guidance: float = 3.0,
    seed: int = 0,
) -> Tensor:
    """Plain DDIM (η = 0, no LD3M residual) class-conditional samples, one row per class."""
    sched = backend.scheduler
    sched.set_timesteps(steps)
    schedule = DDIMSchedule.from_alphas_cumprod(
        sched.alphas_cumprod, sched.timesteps, float(sched.final_alpha_cumprod), 0.0
    )
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    c = backend.class_embedding(labels)
    uc = backend.unconditional_embedding(len(labels))

    def eps(z: Tensor, t: Tensor, cond: Tensor) -> Tensor:
        e_u, e_c = backend.denoise(torch.cat([z, z]), torch.cat([t, t]), torch.cat([uc, cond])).chunk(2)
        return e_u + guidance * (e_c - e_u)

    size = backend.native_latent_size
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        z_T = torch.randn((len(labels), backend.latent_channels, size, size), generator=g)
        images = backend.decode(reverse_process(z_T, c, eps, schedule, None, residual="none", checkpoint=False))
    images = ((images.clamp(-1, 1) + 1) / 2).cpu()
    path.parent.mkdir(parents=True, exist_ok=True)
    torchvision.utils.save_image(images, path, nrow=per_class)
    return images


#: what `train_tiny` checkpoints: plain tensors, numbers and strings only, so it loads with weights_only
STATE_KEYS = ("model", "ae_opt", "dm_opt", "scaling_factor", "rng", "stage", "step")
STAGES = ("ae", "diffusion", "done")


def _bad_state(path: Path, why: str) -> CorruptFileError:
    return CorruptFileError(
        f"Cannot resume from {path}: {why}. Delete it to train from the start (or pass another --out)"
    )


def load_train_state(path: Path) -> dict[str, Any]:
    """A training checkpoint, loaded with ``weights_only=True``: a crafted file cannot run code."""
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise _bad_state(
            path,
            f"it holds more than tensors and plain values ({str(err).splitlines()[0][:160]}); it was not written by ddbench",
        ) from err
    except (RuntimeError, OSError, EOFError, ValueError) as err:  # truncated, not a torch file
        raise _bad_state(
            path,
            f"it is not a readable checkpoint ({type(err).__name__}: {str(err).splitlines()[0][:160] if str(err) else ''})",
        ) from err
    if not isinstance(saved, dict):
        raise _bad_state(path, f"it holds a {type(saved).__name__}, not a training state")
    missing = [key for key in STATE_KEYS if key not in saved]
    if missing:
        raise _bad_state(path, f"it lacks {missing}")
    if (
        saved["stage"] not in STAGES
        or isinstance(saved["step"], bool)
        or not isinstance(saved["step"], int)
        or saved["step"] < 0
    ):
        raise _bad_state(path, f"its stage {saved['stage']!r} / step {saved['step']!r} are not a training position")
    if not isinstance(saved["scaling_factor"], (int, float)) or not isinstance(saved["rng"], Tensor):
        raise _bad_state(path, "its scaling_factor or RNG state has the wrong type")
    return saved


def train_tiny(
    data: RealData,
    out: str | Path,
    ae_steps: int = 1000,
    diffusion_steps: int = 4000,
    batch_size: int = 64,
    ae_lr: float = 1e-3,
    diffusion_lr: float = 3e-4,
    base_channels: int = 32,
    checkpoint_every: int = 250,
    seed: int = 0,
    progress: bool = True,
    sample_steps: int = 50,
) -> dict[str, Any]:
    """Train (or resume) and save the tiny backend in ``out``; returns the metrics."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    backend = build_tiny(data.channels, data.num_classes, seed=seed, base_channels=base_channels)
    backend.vqvae.register_to_config(sample_size=data.resolution)
    ae_opt = torch.optim.Adam(backend.vqvae.parameters(), lr=ae_lr)
    dm_params = list(backend.unet.parameters()) + list(backend.embedder.parameters())
    dm_opt = torch.optim.Adam(dm_params, lr=diffusion_lr)
    stage, step = "ae", 0
    state_path = out / STATE_FILE
    if state_path.is_file():  # resume
        saved = load_train_state(state_path)
        try:
            backend.load_state_dict(saved["model"])
            ae_opt.load_state_dict(saved["ae_opt"])
            dm_opt.load_state_dict(saved["dm_opt"])
            torch.set_rng_state(saved["rng"])
        except (RuntimeError, ValueError, KeyError, TypeError) as err:  # another --width, another dataset
            raise _bad_state(
                state_path, f"it does not fit this model ({type(err).__name__}: {str(err).splitlines()[0][:200]})"
            ) from err
        backend.vqvae.register_to_config(scaling_factor=float(saved["scaling_factor"]))
        stage, step = saved["stage"], int(saved["step"])

    def save_state(stage: str, step: int) -> None:
        payload = dict(
            model=backend.state_dict(),
            ae_opt=ae_opt.state_dict(),
            dm_opt=dm_opt.state_dict(),
            scaling_factor=backend.scale,
            rng=torch.get_rng_state(),
            stage=stage,
            step=step,
        )
        write_atomic(state_path, lambda f: torch.save(payload, f))

    n_train = len(data.train_labels)

    def batch() -> tuple[Tensor, Tensor]:
        pick = torch.randint(n_train, (batch_size,))
        return to_model_range(data.train_images[pick]), data.train_labels[pick]

    def ae_loss() -> Tensor:
        x, _ = batch()
        out_ae = backend.vqvae(x)
        return F.mse_loss(out_ae.sample, x) + out_ae.commit_loss.mean()

    train_latents: Tensor | None = None  # the training set encoded once, when the diffusion stage starts

    def diffusion_loss() -> Tensor:
        pick = torch.randint(n_train, (batch_size,))
        z, y = train_latents[pick], data.train_labels[pick]
        alphas = backend.scheduler.alphas_cumprod
        t = torch.randint(0, len(alphas), (len(z),))
        noise = torch.randn_like(z)
        a = alphas[t].view(-1, 1, 1, 1)
        z_t = a.sqrt() * z + (1 - a).sqrt() * noise
        y = torch.where(torch.rand(len(y)) < P_UNCOND, torch.full_like(y, backend.num_classes), y)
        return F.mse_loss(backend.unet(z_t, t, encoder_hidden_states=backend.embedder(y)).sample, noise)

    def run_stage(bars: Any, name: str, total: int, step: int, optimizer: torch.optim.Optimizer, loss_fn: Any) -> None:
        """Optimise ``loss_fn`` from ``step`` to ``total``, checkpointing every ``checkpoint_every`` steps."""
        task = bars.add_task({"ae": "autoencoder"}.get(name, name), total=total, completed=step)
        while step < total:
            loss = loss_fn()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            bars.update(task, advance=1, loss=float(loss.detach()))
            if step % checkpoint_every == 0:
                save_state(name, step)

    with make_progress(progress) as bars:
        if stage == "ae":
            backend.vqvae.train()
            run_stage(bars, "ae", ae_steps, step, ae_opt, ae_loss)
            # LDM's scale_by_std: the diffusion model sees unit-variance latents
            with torch.no_grad():
                z = backend.vqvae.encode(batch()[0]).latents
            backend.vqvae.register_to_config(scaling_factor=float(1 / z.std().clamp_min(1e-6)))
            stage, step = "diffusion", 0
            save_state(stage, step)
        backend.vqvae.eval().requires_grad_(False)
        if stage == "diffusion":
            # The encoder is frozen and deterministic: encoding every image once is exact, where
            # encoding each batch again would repeat that work at every step.
            train_latents = encode_all(backend, data.train_images)
            backend.unet.train()
            run_stage(bars, "diffusion", diffusion_steps, step, dm_opt, diffusion_loss)
            stage = "done"
            save_state(stage, diffusion_steps)

    backend.freeze()
    backend.unet.register_to_config(sample_size=int(backend.encode(to_model_range(data.train_images[:1])).shape[-1]))
    backend.save_pretrained(out)
    metrics = {
        "reconstruction_psnr_db": reconstruction_psnr(backend, data),
        "ae_steps": ae_steps,
        "diffusion_steps": diffusion_steps,
        "batch_size": batch_size,
        "dataset": data.name,
        "scaling_factor": backend.scale,
        **model_card(backend, data),
    }
    write_atomic(out / "metrics.json", lambda tmp: tmp.write_text(json.dumps(metrics, indent=2)))
    sample_grid(backend, data.num_classes, 8, out / "samples.png", steps=sample_steps)
    return metrics


#: test images whose reconstruction PSNR a model card records, for a quick check after loading
CARD_TEST_IMAGES = 1000


def model_card(backend: LDMBackend, data: RealData) -> dict[str, Any]:
    """What a saved model records about its making: the command, the ddbench commit, and the PSNR on
    the first `CARD_TEST_IMAGES` test images (a load check that needs seconds, not the whole split)."""
    from ddbench.results.provenance import git_commit

    check = data.subset(test_size=CARD_TEST_IMAGES)
    return {
        "command": " ".join(["ddbench", *sys.argv[1:]]) if Path(sys.argv[0]).name == "ddbench" else None,
        "commit": git_commit(),
        "test_slice": {"images": len(check.test_labels), "psnr_db": reconstruction_psnr(backend, check)},
    }
