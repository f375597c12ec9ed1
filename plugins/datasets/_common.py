"""What every dataset plugin shares: where data may live and what to say when it is not there,
image decoding and resizing, per-channel statistics, and the decoded-image cache.

Search order and messages live here so that every dataset explains a missing download the same way.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import json
import os
import tempfile
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import Tensor
from torchvision.transforms import InterpolationMode, functional as TF

from ddbench.errors import CorruptFileError, DataNotFoundError

ENV_DATA = "DDBENCH_DATA"
ENV_CACHE = "DDBENCH_CACHE"
#: bumped whenever decoding or resizing changes, so that old cache files are never reused
CACHE_FORMAT = 1


class CorruptDataError(DataNotFoundError, CorruptFileError):
    """A data file that exists but cannot be parsed (truncated download, wrong format).

    Both a DataNotFoundError (the data set is not usable as found) and a CorruptFileError (a file
    cannot be read back), so callers catching either see it.
    """


# ------------------------------------------------------------------------------ where data lives


def data_home() -> Path:
    """``$DDBENCH_DATA``, else ``~/.local/share/ddbench`` (where ``download=True`` puts data)."""
    value = os.environ.get(ENV_DATA)
    return Path(value).expanduser() if value else Path.home() / ".local" / "share" / "ddbench"


def cache_home() -> Path:
    """``$DDBENCH_CACHE``, else ``~/.cache/ddbench``."""
    value = os.environ.get(ENV_CACHE)
    return Path(value).expanduser() if value else Path.home() / ".cache" / "ddbench"


@dataclasses.dataclass(frozen=True)
class Place:
    """One directory a dataset may be found in, and how the user chose it (for error messages)."""

    path: Path | None  # None: the environment variable that would name it is unset
    origin: str


#: how a place named by the user is described (the root argument of `load`, i.e. --data-root)
ROOT_ORIGIN = "the root argument / --data-root"


def root_places(root: str | os.PathLike[str] | None, subdir: str) -> list[Place]:
    """The ``root`` argument itself and ``root/<subdir>``, so a general data root works too."""
    if root is None:
        return []
    base = Path(root).expanduser()
    return [Place(base, ROOT_ORIGIN), Place(base / subdir, "<root>/" + subdir)]


def search_places(root: str | os.PathLike[str] | None, subdir: str, *defaults: Place) -> list[Place]:
    """Where to look: only ``root`` (and ``root/<subdir>``) when the user named one, else ``defaults``.

    A named root that lacks the data is an error, never a silent fall-back to another copy elsewhere
    (which could be other data than the user meant).
    """
    return root_places(root, subdir) if root is not None else list(defaults)


def env_place(variable: str, *subpath: str) -> Place:
    """A place named by an environment variable (reported as unset when it is)."""
    value = os.environ.get(variable)
    origin = "$" + "/".join((variable, *subpath))
    return Place(Path(value).expanduser().joinpath(*subpath) if value else None, origin)


def data_home_place(*subpath: str) -> Place:
    """``$DDBENCH_DATA/<subpath>``, falling back to the default data home when it is unset."""
    origin = "$" + "/".join((ENV_DATA, *subpath))
    if not os.environ.get(ENV_DATA):
        origin = f"the default data home, as ${ENV_DATA} is unset"
    return Place(data_home().joinpath(*subpath), origin)


def missing_files(directory: Path, names: Iterable[str]) -> str | None:
    """Why ``directory`` does not hold all of ``names``, or None when it does."""
    if not directory.is_dir():
        return "does not exist" if not directory.exists() else "is not a directory"
    absent = [name for name in names if not (directory / name).is_file()]
    return f"missing {', '.join(absent)}" if absent else None


def locate_first(
    dataset: str,
    places: Sequence[Place],
    problem: Callable[[Path], str | None],
    how_to_get: Sequence[str],
) -> Path:
    """The first place for which ``problem`` returns None, else a DataNotFoundError listing every place."""
    looked: list[str] = []
    for place in places:
        if place.path is None:
            looked.append(f"  - {place.origin}: not set")
            continue
        reason = problem(place.path)
        if reason is None:
            return place.path
        looked.append(f"  - {place.path} ({place.origin}): {reason}")
    if any(place.origin == ROOT_ORIGIN for place in places):
        how_to_get = [
            *how_to_get,
            "or drop --data-root to look in the default places (a named root is the only place searched)",
        ]
    fixes = "\n".join(f"  - {line}" for line in how_to_get)
    raise DataNotFoundError(
        f"Dataset '{dataset}' was not found. Looked in:\n" + "\n".join(looked) + f"\nTo get it:\n{fixes}"
    )


# -------------------------------------------------------------------------------- image decoding

#: what PIL reports for single-channel images that are safe to read as 8-bit grayscale
GRAYSCALE_MODES = frozenset({"L", "1"})


def image_extensions() -> frozenset[str]:
    """Lower-case file suffixes PIL can open (``.jpeg``, ``.png``, …)."""
    return frozenset(ext.lower() for ext in Image.registered_extensions())


def list_images(directory: Path) -> list[Path]:
    """Image files directly inside ``directory`` (by suffix, case-insensitive), sorted by name."""
    extensions = image_extensions()
    return sorted(p for p in directory.iterdir() if p.suffix.lower() in extensions and p.is_file())


def image_mode(path: Path) -> str:
    """PIL mode of an image, read from its header only."""
    try:
        with Image.open(path) as img:
            return img.mode
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise CorruptDataError(f"Cannot read image {path}: {err}. Replace or delete the file.") from err


def decode_image(path: Path, res: int, grayscale: bool) -> Tensor:
    """uint8 ``(C, res, res)``: the shorter side resized to ``res`` (antialiased bilinear), then a centre crop."""
    try:
        with Image.open(path) as img:
            img = img.convert("L" if grayscale else "RGB")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise CorruptDataError(f"Cannot read image {path}: {err}. Replace or delete the file.") from err
    img = TF.resize(img, res, interpolation=InterpolationMode.BILINEAR, antialias=True)
    return TF.pil_to_tensor(TF.center_crop(img, res))


def decode_images(files: Sequence[Path], res: int, grayscale: bool, description: str) -> Tensor:
    """Decode many images into one preallocated uint8 ``(N, C, res, res)`` tensor, with a progress bar."""
    from rich.console import Console
    from rich.progress import Progress

    out = torch.empty((len(files), 1 if grayscale else 3, res, res), dtype=torch.uint8)
    # PIL releases the GIL while decoding and resampling, so threads give a real speed-up.
    workers = max(1, min(8, os.cpu_count() or 1))
    decode = lambda path: decode_image(path, res, grayscale)  # noqa: E731 - looked up at call time (tests patch it)
    console = Console(stderr=True)
    # Only a terminal can redraw a bar; in logs it would just add blank lines.
    with Progress(console=console, transient=True, disable=not console.is_terminal) as progress:
        task = progress.add_task(description, total=len(files))
        with concurrent.futures.ThreadPoolExecutor(workers) as pool:
            for i, image in enumerate(pool.map(decode, files)):
                out[i] = image
                progress.advance(task)
    return out


# ---------------------------------------------------------------------------------- statistics


def channel_stats(images: Tensor, chunk: int = 512) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (population) std of uint8 images scaled to [0, 1], accumulated in float64
    over chunks so that multi-gigabyte uint8 datasets are never copied to float at once."""
    if images.dtype != torch.uint8 or images.dim() != 4 or len(images) == 0:
        raise ValueError(f"Expected non-empty uint8 (N, C, H, W) images but got {images.dtype} {tuple(images.shape)}")
    total = torch.zeros(images.shape[1], dtype=torch.float64)
    squares = torch.zeros_like(total)
    for start in range(0, len(images), chunk):
        x = images[start : start + chunk].to(torch.float64) / 255.0
        total += x.sum(dim=(0, 2, 3))
        squares += (x * x).sum(dim=(0, 2, 3))
    count = images.numel() // images.shape[1]
    mean = total / count
    # A constant channel carries no information; flooring its std at one grey level keeps
    # standardisation finite (it maps that channel to 0) instead of dividing by zero.
    std = (squares / count - mean * mean).clamp_min(0).sqrt().clamp_min(1 / 255)
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)


# --------------------------------------------------------------------------------------- cache


def file_fingerprint(files: Sequence[Path], base: Path) -> list[tuple[str, int]]:
    """(path relative to ``base``, size in bytes) of each file: identifies a decoded set cheaply."""
    return [(path.relative_to(base).as_posix(), path.stat().st_size) for path in files]


def cache_path(prefix: str, key: dict[str, Any]) -> Path:
    """Where the cache file for ``key`` lives (the name carries a digest of the whole key)."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    return cache_home() / "datasets" / f"{prefix}-{digest}.safetensors"


def _read_cache(path: Path, key_text: str) -> Tensor | None:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            if (handle.metadata() or {}).get("key") != key_text:
                return None
            images = handle.get_tensor("images")
    except Exception as err:  # noqa: BLE001 - a broken cache file is rebuilt, never fatal
        warnings.warn(f"Ignoring unreadable dataset cache {path} ({err}); decoding the images again", stacklevel=3)
        return None
    return images if images.dtype == torch.uint8 and images.dim() == 4 else None


def _write_cache(path: Path, key_text: str, images: Tensor) -> None:
    from safetensors.torch import save_file

    tmp_name = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Write next to the target and rename: a crash or a concurrent reader never sees half a file.
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=path.name, suffix=".tmp", delete=False) as tmp:
            tmp_name = tmp.name
        save_file({"images": images.contiguous()}, tmp_name, metadata={"key": key_text})
        os.replace(tmp_name, path)
    except OSError as err:
        if tmp_name is not None and os.path.exists(tmp_name):
            os.unlink(tmp_name)
        warnings.warn(
            f"Could not write the dataset cache {path} ({err}); set ${ENV_CACHE} to a writable directory "
            f"to avoid decoding the images on every run",
            stacklevel=3,
        )


def cached_images(prefix: str, key: dict[str, Any], build: Callable[[], Tensor], enabled: bool = True) -> Tensor:
    """``build()``'s uint8 images, read from / written to a safetensors cache file keyed by ``key``."""
    if not enabled:
        return build()
    key = {"format": CACHE_FORMAT, **key}
    key_text = json.dumps(key, sort_keys=True)
    path = cache_path(prefix, key)
    if path.is_file():
        images = _read_cache(path, key_text)
        if images is not None:
            return images
    images = build()
    _write_cache(path, key_text, images)
    return images
