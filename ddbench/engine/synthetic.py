"""The distilled result: images, labels, the latents that made them, and metadata.

On disk a synthetic set is a directory with ``synthetic.safetensors`` (tensors),
``synthetic.json`` (metadata: spec, dataset statistics, what evaluation needs) and ``grid.png``
(the images under their class names, `ddbench.engine.image_grid`). `load_synthetic_dataset` turns it
back into a torch dataset.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor
from torch.utils.data import TensorDataset

from ddbench.engine.image_grid import save_grid
from ddbench.errors import CorruptFileError, DataNotFoundError
from ddbench.util.fileio import write_atomic, write_json_atomic

TENSORS_FILE = "synthetic.safetensors"
METADATA_FILE = "synthetic.json"
GRID_FILE = "grid.png"
FORMAT_VERSION = 1


@dataclasses.dataclass
class SyntheticSet:
    images: Tensor  # float, normalised with the dataset's mean/std, (N, C, H, W)
    labels: Tensor  # int64 (N,)
    latents: dict[str, Tensor]  # the prior's tensors that generate `images`
    metadata: dict[str, Any]  # spec, mean/std, class names, matcher metadata (e.g. MTT's lr)

    def __post_init__(self) -> None:
        if self.images.dim() != 4 or self.labels.shape != (self.images.shape[0],):
            raise ValueError(
                f"Expected images (N, C, H, W) and N labels but got {tuple(self.images.shape)} "
                f"and {tuple(self.labels.shape)}"
            )
        if not torch.isfinite(self.images).all():
            raise ValueError("Synthetic images contain NaN or inf values")

    @property
    def mean(self) -> tuple[float, ...]:
        return tuple(self.metadata["mean"])

    @property
    def std(self) -> tuple[float, ...]:
        return tuple(self.metadata["std"])

    def images_01(self) -> Tensor:
        """Images in [0, 1] (denormalised), for viewing."""
        mean = torch.tensor(self.mean).view(1, -1, 1, 1)
        std = torch.tensor(self.std).view(1, -1, 1, 1)
        return (self.images.float().cpu() * std + mean).clamp(0, 1)

    def as_dataset(self) -> TensorDataset:
        return TensorDataset(self.images, self.labels)

    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {"images": self.images.detach().cpu().contiguous(), "labels": self.labels.cpu().contiguous()}
        tensors.update({f"latent.{k}": v.detach().cpu().contiguous() for k, v in self.latents.items()})
        write_atomic(directory / TENSORS_FILE, lambda tmp: save_file(tensors, str(tmp)))
        write_json_atomic(directory / METADATA_FILE, {"format_version": FORMAT_VERSION, **self.metadata})
        save_grid(self.images_01(), self.labels, directory / GRID_FILE, self.metadata.get("class_names"))
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> SyntheticSet:
        directory = Path(directory)
        tensors_path, meta_path = directory / TENSORS_FILE, directory / METADATA_FILE
        if not tensors_path.exists() or not meta_path.exists():
            raise DataNotFoundError(
                f"No synthetic set in {directory}: expected {TENSORS_FILE} and {METADATA_FILE} "
                "(written by `ddbench run`)."
            )
        try:
            tensors = load_file(str(tensors_path))
            metadata = json.loads(meta_path.read_text())
        except (SafetensorError, OSError, ValueError) as err:
            raise CorruptFileError(
                f"Cannot read the synthetic set in {directory} ({err}); delete the run directory and "
                "run again (or `ddbench run ... --force`)."
            ) from err
        fix = "delete the run directory and run again (or `ddbench run ... --force`)"
        missing = [key for key in ("images", "labels") if key not in tensors]
        if missing:
            raise CorruptFileError(f"{tensors_path} lacks the tensor(s) {missing} (found {sorted(tensors)}); {fix}")
        if not isinstance(metadata, dict):
            raise CorruptFileError(f"{meta_path} holds a {type(metadata).__name__}, not a JSON object; {fix}")
        metadata.pop("format_version", None)
        latents = {k.removeprefix("latent."): v for k, v in tensors.items() if k.startswith("latent.")}
        try:
            return cls(images=tensors["images"], labels=tensors["labels"], latents=latents, metadata=metadata)
        except ValueError as err:  # wrong shapes, NaN images
            raise CorruptFileError(f"The synthetic set in {directory} is not usable ({err}); {fix}") from err


def load_synthetic_dataset(directory: str | Path) -> TensorDataset:
    """A saved synthetic set as a ``TensorDataset`` of (normalised image, label) pairs."""
    return SyntheticSet.load(directory).as_dataset()
