"""Dataset plugins on tiny fixture trees written by the tests (nothing is ever downloaded)."""

from __future__ import annotations

import gzip
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import tomllib
import torch
from ddbench_plugins.datasets import _common as common, fashion_mnist, imagenet
from fixtures_data import (
    FASHION_FILES,
    label_colour,
    make_cifar10,
    make_fashion_mnist,
    make_image_folder,
    make_imagenet,
    write_idx_gz,
)
from PIL import Image

from ddbench import registry
from ddbench.errors import CorruptFileError, DataNotFoundError, InvalidOptionError
from ddbench.interfaces import DatasetPlugin

REPO = Path(__file__).resolve().parents[1]
DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(autouse=True)
def isolated_env(tmp_path, monkeypatch):
    """Point every search path and the cache into tmp_path, and hide the Debian copy."""
    monkeypatch.setenv("DDBENCH_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("DDBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("DDBENCH_IMAGENET", raising=False)
    monkeypatch.delenv("DDBENCH_IMAGE_FOLDER", raising=False)
    monkeypatch.setattr(fashion_mnist, "DEBIAN_DIR", tmp_path / "no-debian")


def stats_of(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = images.double() / 255
    return x.mean(dim=(0, 2, 3)), x.std(dim=(0, 2, 3), unbiased=False)


# ------------------------------------------------------------------------------------ registry


def test_every_entry_point_is_a_dataset_plugin_named_like_its_entry_point():
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    declared = pyproject["project"]["entry-points"]["ddbench.datasets"]
    assert sorted(declared) == registry.plugin_names("dataset")
    for name in declared:
        plugin = registry.create("dataset", name)
        assert isinstance(plugin, DatasetPlugin)
        assert type(plugin).name == name and plugin.description and plugin.resolutions
    subsets = {k for k in imagenet.subset_table() if not k.startswith("_")}
    assert subsets == {n for n in declared if n.startswith("image") and n != "image-folder"}


def test_subset_table_keeps_source_and_ten_unique_wnids_per_subset():
    table = imagenet.subset_table()
    assert "GeorgeCazenavette/glad" in table["_source"]
    for name, classes in table.items():
        if name.startswith("_"):
            continue
        wnids = [c["wnid"] for c in classes]
        assert len(classes) == 10 and len(set(wnids)) == 10, name
        assert all(w.startswith("n") and len(w) == 9 and w[1:].isdigit() for w in wnids)
    assert table["imagenette"][0] == {"idx": 0, "wnid": "n01440764", "name": "tench"}


# ------------------------------------------------------------------------------- fashion-mnist


def test_fashion_mnist_reads_idx_files_exactly(tmp_path):
    arrays = make_fashion_mnist(tmp_path / "fm")
    data = registry.create("dataset", "fashion-mnist").load(root=str(tmp_path / "fm"))
    assert data.train_images.shape == (30, 1, 28, 28) and data.test_images.shape == (10, 1, 28, 28)
    assert data.train_images.dtype == torch.uint8 and data.train_labels.dtype == torch.int64
    assert torch.equal(data.train_images[:, 0], torch.from_numpy(arrays["train_images"]))
    assert torch.equal(data.test_labels, torch.from_numpy(arrays["test_labels"]).long())
    assert data.class_names[0] == "T-shirt/top" and data.class_names[9] == "Ankle boot"
    mean, std = stats_of(data.train_images)
    assert data.mean == pytest.approx(mean.tolist(), abs=1e-9) and data.std == pytest.approx(std.tolist(), abs=1e-9)
    assert data.resolution == 28 and data.channels == 1


def test_fashion_mnist_search_order(tmp_path):
    make_fashion_mnist(tmp_path / "data" / "fashion-mnist", n_train=20, seed=1)
    make_fashion_mnist(tmp_path / "given", n_train=30, seed=2)
    plugin = registry.create("dataset", "fashion-mnist")
    assert plugin.locate() == str(tmp_path / "data" / "fashion-mnist")
    assert plugin.locate(str(tmp_path / "given")) == str(tmp_path / "given")
    assert len(plugin.load(root=str(tmp_path / "given")).train_labels) == 30
    # a general data root holding fashion-mnist/ works like $DDBENCH_DATA
    assert plugin.locate(str(tmp_path / "data")) == str(tmp_path / "data" / "fashion-mnist")


def test_fashion_mnist_missing_says_where_it_looked_and_how_to_get_it(tmp_path):
    (tmp_path / "partial").mkdir()
    write_idx_gz(tmp_path / "partial" / FASHION_FILES["train"][0], np.zeros((1, 28, 28), np.uint8))
    plugin = registry.create("dataset", "fashion-mnist")
    with pytest.raises(DataNotFoundError) as err:
        plugin.load(root=str(tmp_path / "partial"))
    message = str(err.value)
    assert str(tmp_path / "partial") in message and "missing train-labels-idx1-ubyte.gz" in message
    # a root the user named is the only place looked in: no silent fall-back to another copy
    looked = message.split("To get it:")[0]
    assert str(tmp_path / "data" / "fashion-mnist") not in looked and str(tmp_path / "no-debian") not in looked
    assert "apt-get install dataset-fashion-mnist" in message and "--data-root" in message and "--download" in message
    with pytest.raises(DataNotFoundError) as err:
        plugin.load()
    message = str(err.value)
    assert str(tmp_path / "data" / "fashion-mnist") in message and "$DDBENCH_DATA" in message
    assert str(tmp_path / "no-debian") in message
    ok, why = plugin.available()
    assert not ok and "apt-get install" in why


@pytest.mark.parametrize(
    "damage, expected",
    [
        ("truncate", "not a complete gzip file"),
        ("magic", "expected magic number 0x00000803 but found 0x00000801"),
        ("short", "header promises shape (30, 28, 28)"),
        ("count", "has 30 images but"),
        ("label", "contains label 12"),
    ],
)
def test_fashion_mnist_corrupt_files_are_named(tmp_path, damage, expected):
    directory = tmp_path / "fm"
    arrays = make_fashion_mnist(directory)
    images_path, labels_path = (directory / name for name in FASHION_FILES["train"])
    if damage == "truncate":
        images_path.write_bytes(images_path.read_bytes()[:200])
    elif damage == "magic":
        write_idx_gz(images_path, np.zeros(5, np.uint8))
    elif damage == "short":
        raw = gzip.decompress(images_path.read_bytes())
        images_path.write_bytes(gzip.compress(raw[:-100]))
    elif damage == "count":
        write_idx_gz(labels_path, arrays["train_labels"][:29])
    else:
        write_idx_gz(labels_path, np.full(30, 12, np.uint8))
    with pytest.raises(DataNotFoundError) as err:
        registry.create("dataset", "fashion-mnist").load(root=str(directory))
    assert isinstance(err.value, CorruptFileError)
    assert expected in str(err.value)
    named = labels_path if damage in ("label",) else images_path
    assert str(named) in str(err.value)


def test_fashion_mnist_download_fills_the_data_home(tmp_path, monkeypatch):
    import torchvision.datasets.utils as tv_utils

    source = tmp_path / "mirror"
    make_fashion_mnist(source)
    fetched = []

    def fake_download_url(url, root, filename=None, md5=None):  # stands in for the network
        fetched.append(url)
        (Path(root) / filename).write_bytes((source / filename).read_bytes())

    monkeypatch.setattr(tv_utils, "download_url", fake_download_url)
    plugin = registry.create("dataset", "fashion-mnist")
    with pytest.raises(DataNotFoundError):
        plugin.load()
    data = plugin.load(download=True)
    assert len(fetched) == 4 and all(url.endswith(".gz") for url in fetched)
    assert (tmp_path / "data" / "fashion-mnist" / "t10k-images-idx3-ubyte.gz").is_file()
    assert len(data.train_labels) == 30


def test_fashion_mnist_rejects_other_resolutions(tmp_path):
    make_fashion_mnist(tmp_path / "fm")
    with pytest.raises(InvalidOptionError, match="28 px"):
        registry.create("dataset", "fashion-mnist").load(root=str(tmp_path / "fm"), res=32)


@pytest.mark.skipif(not DEBIAN_FASHION.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
def test_real_debian_fashion_mnist(monkeypatch):
    monkeypatch.setattr(fashion_mnist, "DEBIAN_DIR", DEBIAN_FASHION)
    data = registry.create("dataset", "fashion-mnist").load()
    assert data.train_images.shape == (60000, 1, 28, 28) and data.test_images.shape == (10000, 1, 28, 28)
    assert torch.bincount(data.train_labels).tolist() == [6000] * 10
    assert torch.bincount(data.test_labels).tolist() == [1000] * 10
    assert data.mean[0] == pytest.approx(0.2860, abs=1e-3) and data.std[0] == pytest.approx(0.3530, abs=1e-3)


# ------------------------------------------------------------------------------------- cifar10


def test_cifar10_reads_pickled_batches(tmp_path):
    arrays = make_cifar10(tmp_path / "data" / "cifar10")
    data = registry.create("dataset", "cifar10").load()
    assert data.train_images.shape == (50, 3, 32, 32) and data.test_images.shape == (10, 3, 32, 32)
    assert data.class_names[0] == "airplane" and data.class_names[9] == "truck"
    # each row is the red plane, then green, then blue, each row-major
    row = arrays["train_rows"][7]
    assert data.train_images[7, 1, 2, 5] == row[1024 + 2 * 32 + 5]
    assert data.train_images[7, 2, 31, 0] == row[2048 + 31 * 32]
    assert torch.equal(data.train_labels, torch.from_numpy(arrays["train_labels"]).long())
    assert torch.equal(data.test_images.reshape(10, -1), torch.from_numpy(arrays["test_rows"]))
    mean, std = stats_of(data.train_images)
    assert data.mean == pytest.approx(mean.tolist(), abs=1e-9) and data.std == pytest.approx(std.tolist(), abs=1e-9)


def test_cifar10_locations(tmp_path):
    make_cifar10(tmp_path / "data")
    plugin = registry.create("dataset", "cifar10")
    assert plugin.locate() == str(tmp_path / "data" / "cifar-10-batches-py")
    make_cifar10(tmp_path / "mine")
    batches = tmp_path / "mine" / "cifar-10-batches-py"
    assert plugin.locate(str(tmp_path / "mine")) == str(batches)
    assert plugin.locate(str(batches)) == str(batches)


def test_cifar10_missing_and_corrupt_batches_are_named(tmp_path):
    make_cifar10(tmp_path / "c")
    batches = tmp_path / "c" / "cifar-10-batches-py"
    plugin = registry.create("dataset", "cifar10")
    (batches / "data_batch_3").unlink()
    with pytest.raises(DataNotFoundError) as err:
        plugin.load(root=str(tmp_path / "c"))
    assert "missing data_batch_3" in str(err.value) and "--download" in str(err.value)
    (batches / "data_batch_3").write_bytes(b"\x80\x02not a pickle")
    with pytest.raises(CorruptFileError, match="data_batch_3"):
        plugin.load(root=str(tmp_path / "c"))


def test_cifar10_refuses_pickles_that_run_code(tmp_path):
    make_cifar10(tmp_path / "c")

    class Exploit:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    (tmp_path / "c" / "cifar-10-batches-py" / "test_batch").write_bytes(pickle.dumps({"data": Exploit()}))
    with pytest.raises(DataNotFoundError, match="refusing to load"):
        registry.create("dataset", "cifar10").load(root=str(tmp_path / "c"))


# ------------------------------------------------------------------------------------ imagenet


IMAGENETTE = [c["wnid"] for c in imagenet.subset_classes("imagenette")]


@pytest.mark.parametrize("subset", ["imagenette", "imagenet-a"])  # imagenet-a's wnids are not in sorted order
def test_imagenet_labels_follow_the_subset_list_not_the_folders(tmp_path, subset):
    classes = imagenet.subset_classes(subset)
    # distractor wnids sort before and between the real ones; creation order is shuffled
    make_imagenet(tmp_path / "inet", [c["wnid"] for c in classes], extra_wnids=["n00000001", "n02500000"])
    data = registry.create("dataset", subset).load(root=str(tmp_path / "inet"))
    assert data.train_images.shape == (20, 3, 128, 128) and data.test_images.shape == (10, 3, 128, 128)
    assert data.class_names == [c["name"] for c in classes]
    for images, labels in ((data.train_images, data.train_labels), (data.test_images, data.test_labels)):
        colours = torch.tensor([label_colour(int(k)) for k in labels], dtype=torch.float64)
        assert (images.double().mean(dim=(2, 3)) - colours).abs().max() < 4
    assert torch.bincount(data.train_labels).tolist() == [2] * 10
    mean, std = stats_of(data.train_images)
    assert data.mean == pytest.approx(mean.tolist(), abs=1e-9) and data.std == pytest.approx(std.tolist(), abs=1e-9)


def test_imagenet_root_from_environment_and_fixed_stats(tmp_path, monkeypatch):
    make_imagenet(tmp_path / "inet", IMAGENETTE, n_train=1, n_val=1, size=(30, 40))
    monkeypatch.setenv("DDBENCH_IMAGENET", str(tmp_path / "inet"))
    data = registry.create("dataset", "imagenette", stats="imagenet", cache=False).load(res=256)
    assert data.train_images.shape == (10, 3, 256, 256)
    assert data.mean == imagenet.IMAGENET_MEAN and data.std == imagenet.IMAGENET_STD


def test_imagenet_rejects_bad_options(tmp_path):
    make_imagenet(tmp_path / "inet", IMAGENETTE, n_train=1, n_val=1)
    with pytest.raises(InvalidOptionError, match="128 px, 256 px"):
        registry.create("dataset", "imagenette").load(root=str(tmp_path / "inet"), res=64)
    with pytest.raises(InvalidOptionError, match="stats"):
        registry.create("dataset", "imagenette", stats="cifar")


def test_imagenet_missing_wnids_are_listed(tmp_path):
    make_imagenet(tmp_path / "inet", IMAGENETTE, n_train=1, n_val=1)
    for split in ("train", "val"):
        for wnid in IMAGENETTE[3:5]:
            for f in (tmp_path / "inet" / split / wnid).iterdir():
                f.unlink()
            (tmp_path / "inet" / split / wnid).rmdir()
    with pytest.raises(DataNotFoundError) as err:
        registry.create("dataset", "imagenette").load(root=str(tmp_path / "inet"))
    message = str(err.value)
    assert (
        str(tmp_path / "inet") in message and "$DDBENCH_IMAGENET" not in message.split("To get it:")[0]
    )  # only the named root
    assert "train/ lacks n03000684 (chain saw), n03028079 (church)" in message
    assert "val/ lacks n03000684 (chain saw), n03028079 (church)" in message
    assert IMAGENETTE[0] not in message


def test_imagenet_second_load_reads_the_cache(tmp_path, monkeypatch):
    make_imagenet(tmp_path / "inet", IMAGENETTE, n_train=1, n_val=1)
    plugin = registry.create("dataset", "imagenette")
    first = plugin.load(root=str(tmp_path / "inet"))
    cached = sorted((tmp_path / "cache" / "datasets").glob("imagenette-*.safetensors"))
    assert [p.name.split("-")[1] for p in cached] == ["train", "val"]
    assert not list((tmp_path / "cache" / "datasets").glob("*.tmp"))

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded although the cache holds these images")

    monkeypatch.setattr(common, "decode_image", no_decoding)
    second = plugin.load(root=str(tmp_path / "inet"))
    assert torch.equal(first.train_images, second.train_images) and torch.equal(first.test_images, second.test_images)
    # another file list is another cache entry: the new image must be decoded
    Image.new("RGB", (32, 32), label_colour(0)).save(tmp_path / "inet" / "train" / IMAGENETTE[0] / "extra.JPEG")
    with pytest.raises(AssertionError, match="decoded although"):
        plugin.load(root=str(tmp_path / "inet"))


def test_imagenet_corrupt_cache_is_rebuilt_with_a_warning(tmp_path):
    make_imagenet(tmp_path / "inet", IMAGENETTE, n_train=1, n_val=1)
    plugin = registry.create("dataset", "imagenette")
    first = plugin.load(root=str(tmp_path / "inet"))
    for path in (tmp_path / "cache" / "datasets").glob("*.safetensors"):
        path.write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="unreadable dataset cache"):
        second = plugin.load(root=str(tmp_path / "inet"))
    assert torch.equal(first.train_images, second.train_images)


# -------------------------------------------------------------------------------- image folder


def test_image_folder_seeded_stratified_split(tmp_path):
    make_image_folder(tmp_path / "pets", ["dog", "cat", "bird"], per_class=10)
    (tmp_path / "pets" / "README.txt").write_text("not an image")
    (tmp_path / "pets" / "cat" / "notes.txt").write_text("ignored: not an image suffix")
    data = registry.create("dataset", "image-folder").load(root=str(tmp_path / "pets"))
    assert data.class_names == ["bird", "cat", "dog"]
    assert data.train_images.shape == (24, 3, 32, 32) and data.test_images.shape == (6, 3, 32, 32)
    assert torch.bincount(data.test_labels).tolist() == [2, 2, 2]
    colours = torch.tensor([label_colour(int(k)) for k in data.train_labels], dtype=torch.float64)
    assert (data.train_images.double().mean(dim=(2, 3)) - colours).abs().max() < 1
    again = registry.create("dataset", "image-folder", cache=False).load(root=str(tmp_path / "pets"))
    assert torch.equal(again.test_images, data.test_images)

    reseeded = registry.create("dataset", "image-folder", seed=1, val_fraction=0.3).load(root=str(tmp_path / "pets"))
    assert torch.bincount(reseeded.test_labels).tolist() == [3, 3, 3] and len(reseeded.train_labels) == 21


def test_image_folder_split_depends_on_the_seed_only():
    labels = torch.arange(4).repeat_interleave(25)
    split = lambda seed: registry.create("dataset", "image-folder", seed=seed)._random_split(labels, 4)  # noqa: E731
    train, test = split(0)
    assert torch.bincount(labels[test]).tolist() == [5] * 4
    assert sorted(torch.cat([train, test]).tolist()) == list(range(100))
    assert torch.equal(split(0)[1], test) and not torch.equal(split(1)[1], test)


def test_image_folder_resizes_shorter_side_then_centre_crops(tmp_path, monkeypatch):
    folder = tmp_path / "strip" / "only"
    folder.mkdir(parents=True)
    array = np.zeros((32, 64, 3), np.uint8)
    array[:, :16, 0] = array[:, 48:, 0] = 255  # red margins, cropped away
    array[:, 16:48, 2] = 255  # blue centre square
    Image.fromarray(array).save(folder / "a.png")
    Image.fromarray(array[::-1].copy()).save(folder / "b.png")
    monkeypatch.setenv("DDBENCH_IMAGE_FOLDER", str(tmp_path / "strip"))
    data = registry.create("dataset", "image-folder", val_fraction=0.5).load(res=16)
    image = torch.cat([data.train_images, data.test_images])[0]
    assert image.shape == (3, 16, 16)
    assert (image[2, :, 1:-1] == 255).all() and (image[0, :, 1:-1] == 0).all()
    assert data.std[1] == pytest.approx(1 / 255)  # a constant channel: std floored, never zero


def test_image_folder_grayscale_and_pre_split(tmp_path):
    make_image_folder(tmp_path / "g" / "train", ["a", "b"], per_class=3, mode="L")
    make_image_folder(tmp_path / "g" / "val", ["a", "b"], per_class=1, mode="L")
    data = registry.create("dataset", "image-folder").load(root=str(tmp_path / "g"), res=8)
    assert data.train_images.shape == (6, 1, 8, 8) and data.test_images.shape == (2, 1, 8, 8)
    assert data.test_labels.tolist() == [0, 1] and len(data.mean) == 1
    # one colour image makes the whole set RGB
    Image.new("RGB", (8, 8), (1, 2, 3)).save(tmp_path / "g" / "train" / "a" / "colour.png")
    assert registry.create("dataset", "image-folder").load(root=str(tmp_path / "g"), res=8).channels == 3


def test_image_folder_errors(tmp_path):
    plugin = registry.create("dataset", "image-folder")
    with pytest.raises(DataNotFoundError, match=r"\$DDBENCH_IMAGE_FOLDER"):
        plugin.load()
    make_image_folder(tmp_path / "f", ["a", "b"], per_class=5)
    with pytest.raises(InvalidOptionError, match=">= 8"):
        plugin.load(root=str(tmp_path / "f"), res=4)
    with pytest.raises(InvalidOptionError, match="val_fraction"):
        registry.create("dataset", "image-folder", val_fraction=1.5)
    broken = tmp_path / "f" / "b" / "broken.png"
    broken.write_text("this is not a png")
    with pytest.raises(CorruptFileError, match="broken.png"):
        plugin.load(root=str(tmp_path / "f"))
    broken.unlink()
    truncated = tmp_path / "f" / "a" / "truncated.png"
    Image.new("RGB", (64, 64), (9, 9, 9)).save(truncated)
    truncated.write_bytes(truncated.read_bytes()[:60])
    with pytest.raises(DataNotFoundError, match="truncated.png"):
        plugin.load(root=str(tmp_path / "f"))
