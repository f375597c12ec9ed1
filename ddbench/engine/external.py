"""Readers for synthetic sets made by other tools, detected from the files (`ddbench evaluate`).

Each reader returns `ExternalSet`s as found on disk (images in whatever range the file holds,
labels hard or soft); `ddbench.running.scoring` turns them into what evaluation needs (normalised,
at the dataset's resolution). Formats:

* ``folder``: a class-per-folder tree of images, ``DIR/<class>/*.png`` — folders named after the
  dataset's classes (case and punctuation ignored) or their indices (``3``, ``3_dress``);
* ``tensors``: a ``.safetensors`` or ``.pt`` file holding an image tensor and labels (hard ``(N,)``
  or soft ``(N, K)``), under ``images`` / ``labels`` (or ``soft_labels``), or a ``.pt`` pair
  ``(images, labels)``;
* ``dc``: the DC/DSA/DM repository's ``res_<method>_<dataset>_<model>_<ipc>ipc.pt``,
  ``{'data': [[images, labels], ...], 'accs_all_exps': {...}}`` — one set per experiment;
* ``mtt``: MTT's ``images_<it>.pt`` + ``labels_<it>.pt`` (+ ``synthetic_lr_<it>.pt``, the
  learned lr evaluation then uses), as a directory (``best``, else the last iteration) or one file;
* ``ddbench``: a ddbench run directory (``synthetic.safetensors`` + ``synthetic.json``).

``.pt`` files are read with ``torch.load(weights_only=True)`` only: a pickle never runs code here.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ddbench.engine.synthetic import METADATA_FILE, TENSORS_FILE, SyntheticSet
from ddbench.errors import DataNotFoundError, InvalidOptionError

ACCEPTED = (
    "a class-per-folder image tree (DIR/<class>/*.png), a .safetensors or .pt file with 'images' and 'labels' "
    "tensors, a DC/DSA/DM res_*.pt ({'data': [[images, labels], ...]}), an MTT images_*.pt + labels_*.pt, "
    "or a ddbench run directory (synthetic.safetensors + synthetic.json)"
)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
IMAGE_KEYS = ("images", "image_syn", "x", "imgs")
LABEL_KEYS = ("soft_labels", "labels", "label_syn", "y", "targets")
LR_KEYS = ("lr", "syn_lr", "synthetic_lr")
#: a ddbench run directory keeps soft labels as this latent tensor (its `labels` are their argmax)
SOFT_LATENT = "soft_labels"
_MTT_FILE = re.compile(r"^images_(.+)\.pt$")


@dataclasses.dataclass
class ExternalSet:
    """A synthetic set as read from disk, before normalisation and resizing."""

    images: Tensor  # (N, C, H, W): uint8, or float in [0, 1] ("unit") or normalised
    labels: Tensor  # (N,) class ids or (N, K) soft labels
    format: str  # one of: folder, tensors, dc, mtt, ddbench
    source: str  # the path read
    range: str | None = None  # "unit" / "normalized" when the format fixes it; None: detect
    lr: float | None = None  # a learned evaluation lr (MTT) that came with the set
    experiment: int | None = None  # the experiment's index in a DC file
    notes: list[str] = dataclasses.field(default_factory=list)  # what the reader did (resizes, choices)
    dataset: str | None = None  # the dataset the files say they come from, when they say
    resize: str | None = None  # how the reader resized images (folders of other sizes)


def unreadable(path: Path | str, why: str) -> InvalidOptionError:
    """The one-line error for a path that is not a synthetic set."""
    return InvalidOptionError(f"Cannot read {path} as a synthetic set: {why}. Accepted: {ACCEPTED}.")


def read_external(
    path: str | Path,
    class_names: list[str],
    channels: int,
    resolution: int,
    experiment: int | None = None,
) -> list[ExternalSet]:
    """Every set at ``path`` (several for a DC file with several experiments; ``experiment`` picks one).

    ``class_names``, ``channels`` and ``resolution`` are the target dataset's: class folders are
    matched to the names, and folder images are read with that many channels at that size.
    """
    path = Path(path)
    if not path.exists():
        raise DataNotFoundError(f"No file or directory {path}; pass the path of a synthetic set ({ACCEPTED})")
    if path.is_dir():
        if (path / TENSORS_FILE).is_file() and (path / METADATA_FILE).is_file():
            sets = [_read_ddbench(path)]
        elif any(_MTT_FILE.match(p.name) for p in path.iterdir()):
            sets = [_read_mtt_dir(path)]
        elif any(p.is_dir() for p in path.iterdir()):
            sets = [_read_folder(path, class_names, channels, resolution)]
        else:
            raise unreadable(path, "a directory with no class folders, images_*.pt or synthetic.safetensors")
    elif path.suffix == ".safetensors":
        sets = [_read_safetensors(path)]
    elif path.suffix in (".pt", ".pth"):
        sets = _read_pt(path)
    else:
        raise unreadable(path, f"unknown file type '{path.suffix or path.name}'")
    if experiment is not None:
        if sets[0].format != "dc":
            raise InvalidOptionError(
                f"--experiment picks one experiment of a DC/DSA/DM res_*.pt file, but {path} is a '{sets[0].format}' set; leave it out"
            )
        if not 0 <= experiment < len(sets):
            raise InvalidOptionError(
                f"Expected --experiment in 0..{len(sets) - 1} ({len(sets)} experiments in {path}) but got {experiment}"
            )
        sets = [sets[experiment]]
    return sets


# ------------------------------------------------------------------------------------ tensors


def _load_pt(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - pickle/zip errors of any kind: not a readable tensor file
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise unreadable(path, f"torch.load(weights_only=True) failed ({first[:160]})") from None


def _pick(mapping: dict[str, Any], keys: tuple[str, ...]) -> tuple[str, Any] | None:
    for key in keys:
        if key in mapping:
            return key, mapping[key]
    return None


def _scalar(value: Any) -> float | None:
    if isinstance(value, Tensor) and value.numel() == 1:
        return float(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


def _from_mapping(path: Path, tensors: dict[str, Any], fmt: str) -> ExternalSet:
    images, labels = _pick(tensors, IMAGE_KEYS), _pick(tensors, LABEL_KEYS)
    if images is None or labels is None:
        raise unreadable(
            path,
            f"found keys {sorted(map(str, tensors))[:12]}, expected an image tensor under one of {IMAGE_KEYS} and labels under one of {LABEL_KEYS}",
        )
    if not isinstance(images[1], Tensor) or not isinstance(labels[1], Tensor):
        raise unreadable(path, f"'{images[0]}' and '{labels[0]}' must be tensors")
    lr = _pick(tensors, LR_KEYS)
    notes = [f"labels from '{labels[0]}'"] if labels[0] != "labels" else []
    return ExternalSet(images[1], labels[1], fmt, str(path), lr=_scalar(lr[1]) if lr else None, notes=notes)


def _read_safetensors(path: Path) -> ExternalSet:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise unreadable(path, f"not a readable safetensors file ({err})") from None
    return _from_mapping(path, tensors, "tensors")


def _read_pt(path: Path) -> list[ExternalSet]:
    match = _MTT_FILE.match(path.name)
    if match and (path.parent / f"labels_{match.group(1)}.pt").is_file():
        return [_read_mtt(path.parent, match.group(1))]
    obj = _load_pt(path)
    if isinstance(obj, dict) and "data" in obj and isinstance(obj["data"], (list, tuple)):
        return _read_dc(path, obj["data"])
    if isinstance(obj, dict):
        return [_from_mapping(path, obj, "tensors")]
    if isinstance(obj, (list, tuple)) and len(obj) == 2 and all(isinstance(t, Tensor) for t in obj):
        return [ExternalSet(obj[0], obj[1], "tensors", str(path))]
    if isinstance(obj, Tensor):
        raise unreadable(
            path, "it holds one tensor and no labels (MTT's images_<it>.pt needs labels_<it>.pt beside it)"
        )
    raise unreadable(path, f"it holds a {type(obj).__name__}")


def _read_dc(path: Path, data: list[Any]) -> list[ExternalSet]:
    """DC/DSA/DM: ``data[exp] = [image_syn, label_syn]``, images normalised with the dataset's mean/std."""
    if not data:
        raise unreadable(path, "its 'data' list is empty (no experiment saved)")
    sets = []
    for k, entry in enumerate(data):
        if not (isinstance(entry, (list, tuple)) and len(entry) == 2 and all(isinstance(t, Tensor) for t in entry)):
            raise unreadable(path, f"data[{k}] is not an [images, labels] pair of tensors")
        sets.append(ExternalSet(entry[0], entry[1], "dc", str(path), experiment=k))
    return sets


def _read_mtt_dir(directory: Path) -> ExternalSet:
    tags = [m.group(1) for p in directory.iterdir() if (m := _MTT_FILE.match(p.name))]
    tags = [t for t in tags if (directory / f"labels_{t}.pt").is_file()]
    if not tags:
        raise unreadable(directory, "it has images_*.pt but no matching labels_*.pt")
    numbered = sorted((int(t), t) for t in tags if t.isdigit())
    tag = "best" if "best" in tags else numbered[-1][1] if numbered else sorted(tags)[-1]
    found = _read_mtt(directory, tag)
    found.notes.append(
        f"chose images_{tag}.pt of {len(tags)} ({'the best' if tag == 'best' else 'the last iteration'}; pass a file to pick another)"
    )
    return found


def _read_mtt(directory: Path, tag: str) -> ExternalSet:
    images, labels = _load_pt(directory / f"images_{tag}.pt"), _load_pt(directory / f"labels_{tag}.pt")
    if not isinstance(images, Tensor) or not isinstance(labels, Tensor):
        raise unreadable(directory / f"images_{tag}.pt", "images_/labels_ files must each hold one tensor")
    lr_file = directory / f"synthetic_lr_{tag}.pt"
    lr = _scalar(_load_pt(lr_file)) if lr_file.is_file() else None
    notes = [f"learned lr {lr:g} from {lr_file.name}"] if lr is not None else []
    return ExternalSet(images, labels, "mtt", str(directory / f"images_{tag}.pt"), lr=lr, notes=notes)


def _read_ddbench(directory: Path) -> ExternalSet:
    synthetic = SyntheticSet.load(directory)
    soft = synthetic.latents.get(SOFT_LATENT)
    lr = (synthetic.metadata.get("matcher") or {}).get("lr")  # the learned lr a matcher left for evaluation
    return ExternalSet(
        synthetic.images,
        soft if soft is not None else synthetic.labels,
        "ddbench",
        str(directory),
        range="normalized",
        lr=_scalar(lr),
        dataset=synthetic.metadata.get("dataset"),
    )


# ------------------------------------------------------------------------------------ folders


def _norm(text: str) -> str:
    return re.sub(r"[^0-9a-z]", "", text.lower())


def match_class(folder: str, class_names: list[str]) -> int | None:
    """The class a folder stands for: its name (case and punctuation ignored), its index, or an
    ``<index>_<anything>`` prefix (what `export_class_folders` writes); None if none fits."""
    by_name = {_norm(name): i for i, name in enumerate(class_names)}
    if _norm(folder) in by_name and _norm(folder):
        return by_name[_norm(folder)]
    prefix = re.match(r"^(\d+)(?:[_\- .].*)?$", folder)
    if prefix and int(prefix.group(1)) < len(class_names):
        return int(prefix.group(1))
    return None


def _read_folder(directory: Path, class_names: list[str], channels: int, resolution: int) -> ExternalSet:
    from PIL import Image, UnidentifiedImageError

    folders = sorted(p for p in directory.iterdir() if p.is_dir() and not p.name.startswith("."))
    classes = {folder.name: match_class(folder.name, class_names) for folder in folders}
    unknown = [name for name, c in classes.items() if c is None]
    if unknown:
        shown = ", ".join(class_names[:12]) + (", …" if len(class_names) > 12 else "")
        raise InvalidOptionError(
            f"Class folder(s) {unknown[:5]} in {directory} match no class of the dataset; name each folder "
            f"after a class ({shown}) or its index 0–{len(class_names) - 1}"
        )
    taken: dict[int, str] = {}
    for name, c in classes.items():
        if c in taken:
            raise InvalidOptionError(
                f"Folders '{taken[c]}' and '{name}' in {directory} both stand for class {c} ({class_names[c]}); keep one"
            )
        taken[c] = name  # type: ignore[index]
    mode = "L" if channels == 1 else "RGB"
    images, labels, sizes = [], [], set()
    for folder in folders:
        for file in sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
            try:
                with Image.open(file) as image:
                    pixels = torch.frombuffer(bytearray(image.convert(mode).tobytes()), dtype=torch.uint8)
                    width, height = image.size
            except (OSError, UnidentifiedImageError) as err:
                raise InvalidOptionError(f"Cannot read the image {file} ({err}); remove it or replace it") from None
            tensor = pixels.view(height, width, channels).permute(2, 0, 1).float().div(255)
            sizes.add((height, width))
            if (height, width) != (resolution, resolution):
                # each image on its own: a folder may mix sizes
                tensor = F.interpolate(
                    tensor[None], size=(resolution, resolution), mode="bilinear", antialias=True, align_corners=False
                )[0]
            images.append(tensor.clamp(0, 1))
            labels.append(classes[folder.name])
    if not images:
        raise unreadable(directory, f"its class folders hold no images ({', '.join(IMAGE_SUFFIXES)})")
    notes = [f"{len(folders)} class folder(s), {len(images)} image(s)"]
    resized = sorted(s for s in sizes if s != (resolution, resolution))
    resize = None
    if resized:
        shown = ", ".join(f"{w}×{h}" for h, w in resized[:3]) + (" …" if len(resized) > 3 else "")
        resize = f"{shown} → {resolution}×{resolution} (bilinear, antialiased)"
        notes.append(f"resized {resize}")
    labels_t = torch.tensor(labels, dtype=torch.long)
    return ExternalSet(
        torch.stack(images), labels_t, "folder", str(directory), range="unit", notes=notes, resize=resize
    )


def export_class_folders(images_01: Tensor, labels: Tensor, class_names: list[str], directory: str | Path) -> Path:
    """Write images in [0, 1] as 8-bit PNGs in ``DIR/<index>_<class>/<n>.png``, the tree `read_external` reads."""
    from PIL import Image

    from ddbench.util.fileio import safe_name

    directory = Path(directory)
    hard = labels.argmax(1) if labels.dim() == 2 else labels
    pixels = images_01.detach().cpu().clamp(0, 1).mul(255).round().to(torch.uint8)
    for i, (image, label) in enumerate(zip(pixels, hard.tolist())):
        folder = directory / f"{label}_{safe_name(class_names[label])}"
        folder.mkdir(parents=True, exist_ok=True)
        array = image.permute(1, 2, 0).numpy()
        Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array).save(folder / f"{i:05d}.png")
    return directory


__all__ = ["ExternalSet", "read_external", "match_class", "export_class_folders", "ACCEPTED", "SOFT_LATENT"]
