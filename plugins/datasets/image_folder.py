"""Any ``root/<class>/<image>`` tree as a dataset (optionally pre-split into train/ and test/ or val/)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch

from ddbench.errors import InvalidOptionError
from ddbench.interfaces import DatasetPlugin, RealData
from ddbench.util.fingerprint import files_digest

from . import _common as common

ENV_IMAGE_FOLDER = "DDBENCH_IMAGE_FOLDER"
TEST_FOLDERS = ("test", "val")
DEFAULT_RES = 32
MIN_RES = 8
#: image trees up to this size are identified by their bytes, bigger ones by relative path and size
FINGERPRINT_MAX_BYTES = 64 * 2**20


def class_folders(directory: Path) -> list[Path]:
    """Visible sub-folders of ``directory``, sorted by name: one per class."""
    return sorted(p for p in directory.iterdir() if p.is_dir() and not p.name.startswith("."))


def _class_files(folder: Path) -> list[Path]:
    files = common.list_images(folder)
    if not files:
        raise common.DataNotFoundError(f"Class folder {folder} holds no images; add images or remove the folder")
    return files


class ImageFolder(DatasetPlugin):
    """Images in one folder per class; class names are the sorted folder names.

    With ``root/train`` and ``root/test`` (or ``root/val``) those splits are used; otherwise each class is
    split at random (seeded, stratified) into ``1 - val_fraction`` train and ``val_fraction`` test.
    Images are resized on their shorter side and centre-cropped to ``res`` (default 32, any int >= 8); the
    data set has 1 channel when every image is grayscale, else 3.

    Options:
        val_fraction: share of each class held out for testing when the tree is not pre-split.
        seed: seed of that split.
        cache: keep the decoded uint8 tensors in ``$DDBENCH_CACHE`` (default ``~/.cache/ddbench``).
    """

    name = "image-folder"
    description = "Your own images: root/<class>/<image> (or root/train + root/test), any res >= 8 px (default 32)"
    #: suggestions only: any integer resolution >= 8 px is accepted
    resolutions = (DEFAULT_RES, 64, 128, 256)
    version = 1
    neutral_options = ("cache",)

    def __init__(self, val_fraction: float = 0.2, seed: int = 0, cache: bool = True) -> None:
        if not 0.0 < float(val_fraction) < 1.0:
            raise InvalidOptionError(f"Expected val_fraction strictly between 0 and 1 but got {val_fraction}")
        self.val_fraction = float(val_fraction)
        self.seed = int(seed)
        self.cache = bool(cache)

    def places(self, root: str | os.PathLike[str] | None = None) -> list[common.Place]:
        # a named root is the only place looked in (no fall-back to $DDBENCH_IMAGE_FOLDER)
        if root is not None:
            return [common.Place(Path(root).expanduser(), common.ROOT_ORIGIN)]
        return [common.env_place(ENV_IMAGE_FOLDER)]

    @staticmethod
    def _problem(directory: Path) -> str | None:
        if not directory.is_dir():
            return "does not exist" if not directory.exists() else "is not a directory"
        return None if class_folders(directory) else "has no class sub-folders (expected <root>/<class>/<image>)"

    def locate(self, root: str | os.PathLike[str] | None = None) -> str:
        return str(
            common.locate_first(
                self.name,
                self.places(root),
                self._problem,
                how_to_get=[
                    f"pass --data-root DIR or set ${ENV_IMAGE_FOLDER}=DIR, where DIR holds one folder of images "
                    "per class (DIR/<class>/<image>), optionally pre-split as DIR/train/<class>/... and "
                    "DIR/test/<class>/... (or DIR/val); there is nothing to download",
                ],
            )
        )

    def fingerprint(self, root: str | None = None, res: int | None = None) -> str:
        """The image files `load` reads: their bytes up to `FINGERPRINT_MAX_BYTES` in all, else
        their relative paths and sizes (a tree of any size stays cheap to identify)."""
        directory = Path(self.locate(root))
        files = self._layout(directory)[1]
        return files_digest(files, directory, max_bytes=FINGERPRINT_MAX_BYTES)

    def _layout(self, directory: Path) -> tuple[list[str], list[Path], list[int], int | None]:
        """Class names, every file with its label (train files first), and how many of them are the
        pre-split train set (None when the tree is not pre-split)."""
        test_dir = next((directory / t for t in TEST_FOLDERS if (directory / t).is_dir()), None)
        if (directory / "train").is_dir() and test_dir is not None:
            classes = [p.name for p in class_folders(directory / "train")]
            unknown = sorted({p.name for p in class_folders(test_dir)} - set(classes))
            if unknown:
                raise common.DataNotFoundError(
                    f"{test_dir} has classes {unknown} that {directory / 'train'} lacks; add their training "
                    f"images or remove those test folders"
                )
            splits = [directory / "train", test_dir]
        else:
            classes = [p.name for p in class_folders(directory)]
            splits = [directory]
        files: list[Path] = []
        labels: list[int] = []
        split_sizes = []
        for split in splits:
            before = len(files)
            for label, name in enumerate(classes):
                if split is test_dir and not (split / name).is_dir():
                    continue  # a pre-split test set need not cover every class
                found = _class_files(split / name)
                files.extend(found)
                labels.extend([label] * len(found))
            split_sizes.append(len(files) - before)
        return classes, files, labels, split_sizes[0] if len(splits) == 2 else None

    def _decode_all(self, directory: Path, files: list[Path], res: int) -> torch.Tensor:
        def build() -> torch.Tensor:
            # Read only headers first: one colour image makes the whole data set RGB.
            grayscale = all(common.image_mode(path) in common.GRAYSCALE_MODES for path in files)
            return common.decode_images(files, res, grayscale, description=f"Decoding {directory.name}")

        key = {
            "dataset": self.name,
            "root": str(directory.resolve()),
            "res": res,
            "files": common.file_fingerprint(files, directory),
        }
        prefix = re.sub(r"[^A-Za-z0-9_.-]+", "_", directory.resolve().name) or "root"
        return common.cached_images(f"{self.name}-{prefix}-{res}", key, build, enabled=self.cache)

    def _random_split(self, labels: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Stratified train/test indices: ``round(n * val_fraction)`` of each class held out, seeded."""
        generator = torch.Generator().manual_seed(self.seed)
        train, test = [], []
        for label in range(num_classes):
            idx = torch.nonzero(labels == label, as_tuple=True)[0]
            idx = idx[torch.randperm(len(idx), generator=generator)]
            n_test = min(round(len(idx) * self.val_fraction), len(idx) - 1)  # keep >= 1 training image
            test.append(idx[:n_test])
            train.append(idx[n_test:])
        return torch.cat(train).sort().values, torch.cat(test).sort().values

    def load(self, root: str | None = None, res: int | None = None, download: bool = False) -> RealData:
        res = DEFAULT_RES if res is None else res
        if isinstance(res, bool) or not isinstance(res, int) or res < MIN_RES:
            raise InvalidOptionError(f"Expected res to be an integer >= {MIN_RES} but got {res!r}")
        directory = Path(self.locate(root))
        classes, files, labels_list, n_train = self._layout(directory)
        images = self._decode_all(directory, files, res)
        labels = torch.tensor(labels_list, dtype=torch.int64)
        if n_train is not None:
            train_idx, test_idx = torch.arange(n_train), torch.arange(n_train, len(files))
        else:
            train_idx, test_idx = self._random_split(labels, len(classes))
        if len(test_idx) == 0:
            raise common.DataNotFoundError(
                f"{directory} has too few images to hold out any for testing (val_fraction={self.val_fraction}); "
                f"add images, raise val_fraction, or provide a test/ folder"
            )
        train_images = images[train_idx]
        mean, std = common.channel_stats(train_images)
        return RealData(
            name=self.name,
            train_images=train_images,
            train_labels=labels[train_idx],
            test_images=images[test_idx],
            test_labels=labels[test_idx],
            class_names=classes,
            mean=mean,
            std=std,
        )
