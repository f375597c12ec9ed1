"""``ddbench prior train ld3m`` and ``ddbench prior convert-ldm`` (entry-point group ddbench.prior_commands)."""

from __future__ import annotations

from pathlib import Path

import click

from ddbench.errors import InvalidOptionError


@click.command()
@click.argument("prior_name", metavar="PRIOR")
@click.option("--dataset", default="fashion-mnist", show_default=True, help="Dataset to train the tiny LDM on.")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Model directory (resumes if it holds a checkpoint).",
)
@click.option("--data-root", type=click.Path(file_okay=False), default=None, help="Where the dataset lives.")
@click.option(
    "--ae-steps", type=click.IntRange(min=0), default=1000, show_default=True, help="Autoencoder training steps."
)
@click.option(
    "--diffusion-steps",
    type=click.IntRange(min=0),
    default=4000,
    show_default=True,
    help="Diffusion-model training steps.",
)
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option(
    "--width",
    type=click.IntRange(min=8),
    default=32,
    show_default=True,
    help="Base channels of the autoencoder and UNet.",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--progress/--no-progress", default=True, show_default=True)
def train(
    prior_name: str,
    dataset: str,
    out: Path,
    data_root: str | None,
    ae_steps: int,
    diffusion_steps: int,
    batch_size: int,
    width: int,
    seed: int,
    progress: bool,
) -> None:
    """Train the tiny LD3M backend (VQ autoencoder, then class-conditional UNet) on a dataset.

    Writes a diffusers-layout model directory usable as `--prior-opt model_dir=OUT`, with
    metrics.json (test reconstruction PSNR) and samples.png (class-conditional samples).
    """
    if prior_name != "ld3m":
        raise InvalidOptionError(f"`ddbench prior train` trains the ld3m prior's model; got '{prior_name}'")
    from ddbench_plugins.priors.ld3m.train import train_tiny

    from ddbench import registry

    data = registry.create("dataset", dataset).load(root=data_root)
    metrics = train_tiny(
        data,
        out,
        ae_steps=ae_steps,
        diffusion_steps=diffusion_steps,
        batch_size=batch_size,
        base_channels=width,
        seed=seed,
        progress=progress,
    )
    click.echo(f"reconstruction PSNR on the {dataset} test split: {metrics['reconstruction_psnr_db']:.2f} dB")
    click.echo(f"model: {out}  samples: {out / 'samples.png'}")


@click.command(name="convert-ldm")
@click.argument("checkpoint", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--config",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="The checkpoint's LDM YAML config (default: cin256-v2).",
)
@click.option(
    "--trust-checkpoint",
    "--trust-pickle",
    "trust_checkpoint",
    is_flag=True,
    help="CompVis .ckpt files are Python pickles; by default only their tensors are read (weights_only). This flag unpickles everything in the file, which can run code from it: use it only for files you trust (e.g. the official cin256-v2 download).",
)
def convert_ldm(checkpoint: Path, out_dir: Path, config: Path | None, trust_checkpoint: bool) -> None:
    """Convert a CompVis class-conditional LDM checkpoint (cin256-v2 model.ckpt) for the ld3m prior."""
    from ddbench_plugins.priors.ld3m.convert import convert_ldm as convert

    backend = convert(checkpoint, out_dir, config=config, trust_pickle=trust_checkpoint)
    click.echo(
        f"converted {checkpoint} → {out_dir} ({backend.num_classes} classes, latents "
        f"{backend.latent_channels}×{backend.native_latent_size}²); use --prior-opt backend=cin256 "
        f"--prior-opt model_dir={out_dir}"
    )
