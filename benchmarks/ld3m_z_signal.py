"""How much of the learnable latent Z reaches LD3M's images, per generator and sampler variant.

LD3M's state is initialised from real Fashion-MNIST images (Z = E(x), as in a run) and decoded
through the sampler (T = 10 unless ``--steps``, guidance 3, η = 1). Printed per generator × variant:

- distance of the images to the real images Z was encoded from (mean squared error in the
  dataset's normalised units; the decoder alone, D(Z), sets the floor);
- the spread of the images across samples (mean per-pixel std; real images about 0.76);
- the gradient norm reaching Z and c from the same loss (mean of the squared images).

Variants: Eq. 12 with z_T ~ q(z_T | Z) at the first step's ᾱ (t = 901 at T = 10: √ᾱ ≈ 0.03, so
z_T is nearly pure noise); Eq. 12 with z_T = Z (``forward_noise=false``, the default); the LD3M
code's x̂0 blend toward quantize(Z) (``residual=x0``); Eq. 10 (``residual=none``), from noise or, as
table7-fmnist's "without Eq. 12" row runs it, from z_T = Z. ``--steps`` repeats each row per T.

    python benchmarks/ld3m_z_signal.py --per-class 4
    python benchmarks/ld3m_z_signal.py --generators trained --variants default,none --steps 2,5,10,20
"""

from __future__ import annotations

import argparse

import torch
from record import emit, table

from ddbench import registry
from ddbench.interfaces import class_labels

#: short name → (sampler label, ld3m options); every option is spelled out, so the rows do not move with the defaults
VARIANTS = {
    "forward-noise": ("Eq. 12, z_T ~ q(z_T | Z) at t = 901 (`forward_noise=true`)", {"forward_noise": True}),
    "default": ("Eq. 12, z_T = Z (`forward_noise=false`, the default)", {"forward_noise": False}),
    "x0": ("reference code (`residual=x0 forward_noise=true`)", {"residual": "x0", "forward_noise": True}),
    "none-noise": (
        "Eq. 10, no residual (`residual=none forward_noise=true`)",
        {"residual": "none", "forward_noise": True},
    ),
    "none": (
        "Eq. 10 from z_T = Z (`residual=none`, table7-fmnist's row)",
        {"residual": "none", "forward_noise": False},
    ),
}
DEFAULT_VARIANTS = "forward-noise,default,x0,none-noise"


def measure(generator: str, options: dict, data, real: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    prior = registry.create("prior", "ld3m", generator=generator, **options)
    prior.setup(data, torch.device("cpu"))
    state = prior.init_state(real, labels, torch.Generator().manual_seed(1))
    idx = torch.arange(len(labels))
    images = prior.generate(state, idx)
    images.pow(2).mean().backward()
    with torch.no_grad():
        decoded = prior.to_data_images(prior.backend.decode(state.params["z"]))
    return {
        "mse_to_source": float(((images.detach() - real) ** 2).mean()),
        "decoder_only_mse": float(((decoded - real) ** 2).mean()),
        "pixel_std": float(images.detach().flatten(1).std(0).mean()),
        "grad_z": float(state.params["z"].grad.norm()),
        "grad_c": float(state.params["c"].grad.norm()),
    }


def sci(value: float) -> str:
    """``3.2e-4``: one decimal, the exponent without padding."""
    mantissa, exponent = f"{value:.1e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=4)
    parser.add_argument("--generators", default="trained,random")
    parser.add_argument("--variants", default=DEFAULT_VARIANTS, help=f"comma list of {', '.join(VARIANTS)}")
    parser.add_argument("--steps", default="10", help="comma list of reverse steps T, e.g. 2,5,10,20")
    args = parser.parse_args()
    variants = [VARIANTS[name] for name in args.variants.split(",")]
    steps = [int(T) for T in args.steps.split(",")]
    torch.manual_seed(0)
    data = registry.create("dataset", "fashion-mnist").load().subset(train_per_class=200, test_size=100)
    labels = class_labels(data.num_classes, args.per_class)
    gen = torch.Generator().manual_seed(0)
    real = torch.cat([data.sample_class(c, args.per_class, gen) for c in range(data.num_classes)])
    rows = []
    for generator in args.generators.split(","):
        for variant, options in variants:
            for T in steps:
                measured = measure(generator, {**options, "T": T}, data, real, labels)
                rows.append({"generator": generator, "variant": variant, "T": T, **measured})
    real_std = float(real.flatten(1).std(0).mean())
    note = (
        f"{len(labels)} samples: {args.per_class} per class; T = {args.steps}, guidance 3, η = 1; "
        f"real images' pixel std {real_std:.3f}; gradient of mean(image²)"
    )
    with_steps = len(steps) > 1
    cells = [
        [r["generator"], r["variant"], *([str(r["T"])] if with_steps else []), f"{r['mse_to_source']:.3f}",
         f"{r['decoder_only_mse']:.3f}", f"{r['pixel_std']:.3f}", sci(r["grad_z"]), sci(r["grad_c"])]
        for r in rows
    ]  # fmt: skip
    columns = ["generator", "sampler", *(["T"] if with_steps else []), "MSE to the source images", "D(Z) alone",
               "pixel std", "|∂L/∂Z|", "|∂L/∂c|"]  # fmt: skip
    emit("ld3m_z_signal", [table(columns, cells, note=note)], per_class=args.per_class, rows=rows)


if __name__ == "__main__":
    main()
