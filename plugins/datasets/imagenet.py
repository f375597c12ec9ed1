"""The ten 10-class ImageNet subsets of GLaD / LD3M, read from an ILSVRC-2012 ``train/`` + ``val/`` tree.

Which classes form a subset, and in which order, comes from ``imagenet_subsets.json`` (copied from the
reference code): label i is the i-th wnid of the list, whatever folders the tree holds or in which order.
"""

from __future__ import annotations

import functools
import importlib.resources
import json
import os
from pathlib import Path
from typing import Any, ClassVar

import torch

from ddbench.errors import InvalidOptionError
from ddbench.interfaces import DatasetPlugin, RealData
from ddbench.util.fingerprint import listing_digest

from . import _common as common

ENV_IMAGENET = "DDBENCH_IMAGENET"
#: (RealData split, ILSVRC-2012 folder): the paper tests on the original validation split
SPLITS = (("train", "train"), ("test", "val"))
#: ImageNet-1k statistics, which the GLaD / LD3M code uses for every subset (``stats="imagenet"``)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
STATS = ("train", "imagenet")


@functools.cache
def subset_table() -> dict[str, Any]:
    """The parsed ``imagenet_subsets.json``: subset name -> list of {idx, wnid, name}, plus ``_source``."""
    text = importlib.resources.files(__package__).joinpath("imagenet_subsets.json").read_text(encoding="utf-8")
    return json.loads(text)


def subset_classes(subset: str) -> list[dict[str, Any]]:
    """The classes of one subset, in label order."""
    table = subset_table()
    if subset not in table or subset.startswith("_"):
        known = sorted(k for k in table if not k.startswith("_"))
        raise InvalidOptionError(f"Unknown ImageNet subset '{subset}'; expected one of {known}")
    return table[subset]


class ImageNetSubset(DatasetPlugin):
    """A 10-class ImageNet subset at 128 or 256 px (shorter side resized, then centre-cropped).

    Options:
        stats: ``"train"`` (default) normalises with the subset's own train-split mean/std;
            ``"imagenet"`` uses the ImageNet-1k constants the GLaD / LD3M reference code uses.
        cache: keep the decoded uint8 tensors in ``$DDBENCH_CACHE`` (default ``~/.cache/ddbench``).
    """

    resolutions: ClassVar[tuple[int, ...]] = (128, 256)
    version: ClassVar[int | None] = 1
    neutral_options: ClassVar[tuple[str, ...]] = ("cache",)

    def __init__(self, stats: str = "train", cache: bool = True) -> None:
        if stats not in STATS:
            raise InvalidOptionError(f"Expected stats to be one of {list(STATS)} but got {stats!r}")
        self.stats = stats
        self.cache = bool(cache)

    @property
    def wnids(self) -> list[str]:
        return [entry["wnid"] for entry in subset_classes(self.name)]

    @property
    def class_names(self) -> list[str]:
        return [entry["name"] for entry in subset_classes(self.name)]

    def places(self, root: str | os.PathLike[str] | None = None) -> list[common.Place]:
        return common.search_places(
            root, "imagenet", common.env_place(ENV_IMAGENET), common.data_home_place("imagenet")
        )

    def _problem(self, directory: Path) -> str | None:
        if not directory.is_dir():
            return "does not exist"
        named = dict(zip(self.wnids, self.class_names))
        gaps = []
        for _, folder in SPLITS:
            missing = [wnid for wnid in self.wnids if not (directory / folder / wnid).is_dir()]
            if missing:
                gaps.append(f"{folder}/ lacks {', '.join(f'{w} ({named[w]})' for w in missing)}")
        return "; ".join(gaps) or None

    def locate(self, root: str | os.PathLike[str] | None = None) -> str:
        return str(
            common.locate_first(
                self.name,
                self.places(root),
                self._problem,
                how_to_get=[
                    "ImageNet cannot be downloaded automatically (its licence needs a login at image-net.org); "
                    "get ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar there",
                    "extract them to <dir>/train/<wnid>/*.JPEG and <dir>/val/<wnid>/*.JPEG (sort val/ into wnid "
                    "folders, e.g. with the valprep.sh script of the PyTorch ImageNet example)",
                    f"then pass <dir> with --data-root, or set ${ENV_IMAGENET}=<dir>",
                ],
            )
        )

    def fingerprint(self, root: str | None = None, res: int | None = None) -> str:
        """The subset's image files by relative path and size (its classes' folders only; reading
        ~26 000 JPEGs on every run would not be cheap)."""
        directory = Path(self.locate(root))
        files = [f for _, folder in SPLITS for f in self._split_files(directory, folder)[0]]
        return listing_digest(files, directory)

    def _split_files(self, directory: Path, folder: str) -> tuple[list[Path], torch.Tensor]:
        files: list[Path] = []
        counts = []
        for wnid in self.wnids:  # label = position in the subset list, never the folder's index
            found = common.list_images(directory / folder / wnid)
            if not found:
                raise common.DataNotFoundError(
                    f"{directory / folder / wnid} holds no images; re-extract that class from the ILSVRC-2012 archive"
                )
            files.extend(found)
            counts.append(len(found))
        return files, torch.arange(len(counts)).repeat_interleave(torch.tensor(counts))

    def _decode(self, directory: Path, folder: str, res: int) -> tuple[torch.Tensor, torch.Tensor]:
        files, labels = self._split_files(directory, folder)
        key = {"dataset": self.name, "split": folder, "res": res, "files": common.file_fingerprint(files, directory)}
        images = common.cached_images(
            f"{self.name}-{folder}-{res}",
            key,
            lambda: common.decode_images(files, res, grayscale=False, description=f"Decoding {self.name} {folder}"),
            enabled=self.cache,
        )
        return images, labels

    def load(self, root: str | None = None, res: int | None = None, download: bool = False) -> RealData:
        res = self.resolution_for(res)
        directory = Path(self.locate(root))  # ``download`` cannot help: ImageNet has no public download URL
        train_images, train_labels = self._decode(directory, "train", res)
        test_images, test_labels = self._decode(directory, "val", res)
        if self.stats == "imagenet":
            mean, std = IMAGENET_MEAN, IMAGENET_STD
        else:
            mean, std = common.channel_stats(train_images)
        return RealData(
            name=self.name,
            train_images=train_images,
            train_labels=train_labels,
            test_images=test_images,
            test_labels=test_labels,
            class_names=self.class_names,
            mean=mean,
            std=std,
        )


class ImageNetA(ImageNetSubset):
    name = "imagenet-a"
    description = "ImageNet-A (GLaD/LD3M): 10 ILSVRC-2012 classes, Leonberg to limpkin; 128 or 256 px"
    display_order = 2


class ImageNetB(ImageNetSubset):
    name = "imagenet-b"
    description = "ImageNet-B (GLaD/LD3M): 10 ILSVRC-2012 classes, spoonbill to ruddy turnstone; 128 or 256 px"
    display_order = 3


class ImageNetC(ImageNetSubset):
    name = "imagenet-c"
    description = "ImageNet-C (GLaD/LD3M): 10 ILSVRC-2012 classes, freight car to goldfinch; 128 or 256 px"
    display_order = 4


class ImageNetD(ImageNetSubset):
    name = "imagenet-d"
    description = "ImageNet-D (GLaD/LD3M): 10 ILSVRC-2012 classes, ostrich to ringlet; 128 or 256 px"
    display_order = 5


class ImageNetE(ImageNetSubset):
    name = "imagenet-e"
    description = "ImageNet-E (GLaD/LD3M): 10 ILSVRC-2012 classes, spindle to lycaenid; 128 or 256 px"
    display_order = 6


class ImageNette(ImageNetSubset):
    name = "imagenette"
    description = "ImageNette: 10 easy ILSVRC-2012 classes (tench, church, parachute, ...); 128 or 256 px"
    display_order = 7


class ImageWoof(ImageNetSubset):
    name = "imagewoof"
    description = "ImageWoof: 10 ILSVRC-2012 dog breeds; 128 or 256 px"
    display_order = 8


class ImageNetBirds(ImageNetSubset):
    name = "imagenet-birds"
    description = "ImageNet-Birds (ImageSquawk): 10 ILSVRC-2012 bird classes; 128 or 256 px"
    display_order = 9


class ImageNetFruits(ImageNetSubset):
    name = "imagenet-fruits"
    description = "ImageNet-Fruits (ImageFruit): 10 ILSVRC-2012 fruit and vegetable classes; 128 or 256 px"
    display_order = 10


class ImageNetCats(ImageNetSubset):
    name = "imagenet-cats"
    description = "ImageNet-Cats (ImageMeow): 10 ILSVRC-2012 cat classes; 128 or 256 px"
    display_order = 11
