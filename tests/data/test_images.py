"""Image loaders: idx parsing, Fashion-MNIST from a (fake) .deb, image folders, tfds,
and the checks every split passes. All fixtures are built under tmp_path."""

import os
import pathlib
import sys
import types

import numpy as np
import pytest
from image_fixtures import (
    fake_asset,
    fake_deb,
    fashion_arrays,
    fashion_files,
    idx_bytes,
    install_fake_apt,
)
from PIL import Image

from cofre_jax.data import images
from cofre_jax.data.errors import DataError, DataNotFoundError
from cofre_jax.data.images import idx

CACHE = os.environ.get("COFRE_CACHE") or str(pathlib.Path(__file__).parents[2] / ".cache")


def _one_line(info) -> str:
    message = str(info.value)
    assert "\n" not in message
    return message


# --- idx files and Fashion-MNIST ---------------------------------------------------------


@pytest.mark.parametrize("gzipped", [True, False])
def test_parse_idx_round_trip(gzipped):
    rng = np.random.default_rng(0)
    images_NxHxW = rng.integers(0, 256, (5, 28, 28), dtype=np.uint8)
    labels_N = rng.integers(0, 10, 5, dtype=np.uint8)
    got = images.parse_idx(idx_bytes(images_NxHxW, gzipped=gzipped), magic=idx.IDX_IMAGES_MAGIC)
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, images_NxHxW)
    got = images.parse_idx(idx_bytes(labels_N, gzipped=gzipped), magic=idx.IDX_LABELS_MAGIC)
    np.testing.assert_array_equal(got, labels_N)


def test_idx_errors_are_one_clear_line(tmp_path):
    labels = tmp_path / "labels.gz"
    labels.write_bytes(idx_bytes(np.arange(10)))
    with pytest.raises(DataError, match="magic number 0x00000801, expected 0x00000803") as info:
        images.read_idx(labels, magic=idx.IDX_IMAGES_MAGIC)
    assert _one_line(info).startswith(str(labels))
    cut = idx_bytes(np.zeros((3, 28, 28)), gzipped=False)[:-5]
    with pytest.raises(DataError, match=r"idx shape \(3, 28, 28\) needs 2368 bytes"):
        images.parse_idx(cut, magic=idx.IDX_IMAGES_MAGIC)


def test_fashion_mnist_from_a_fake_deb(tmp_path, monkeypatch):
    arrays = fashion_arrays()
    files = fashion_files(arrays)
    monkeypatch.setattr(idx, "FASHION_MNIST", fake_asset(files))
    log = install_fake_apt(monkeypatch, tmp_path, fake_deb(files))
    train, test = images.load_fashion_mnist(tmp_path / "cache")
    assert train.images_NxHxWxC.shape == (40, 28, 28, 1) and test.labels_N.shape == (12,)
    assert train.labels_N.dtype == np.int32 and train.num_classes == 10
    np.testing.assert_array_equal(train.images_NxHxWxC[..., 0], arrays["train_images"])
    np.testing.assert_array_equal(train.labels_N, arrays["train_labels"])
    np.testing.assert_array_equal(test.images_NxHxWxC[..., 0], arrays["test_images"])
    np.testing.assert_array_equal(test.labels_N, arrays["test_labels"])
    assert train.class_names[9] == "Ankle boot"
    images.load_fashion_mnist(tmp_path / "cache")  # from the cache
    assert len(log.read_text().splitlines()) == 1


def test_fashion_mnist_pin_names_the_four_idx_files():
    members = dict(images.FASHION_MNIST.members)
    assert images.FASHION_MNIST.package == "dataset-fashion-mnist"
    assert len(members) == 4 and all(len(sha) == 64 for sha in members.values())


@pytest.mark.slow
def test_real_fashion_mnist():
    """The real package (fetched by apt-get download into the cache on first use, 31 MB):
    its pinned hashes, shapes and balanced classes."""
    train, test = images.load_fashion_mnist(pathlib.Path(CACHE))
    assert train.images_NxHxWxC.shape == (60000, 28, 28, 1)
    assert test.images_NxHxWxC.shape == (10000, 28, 28, 1)
    assert np.bincount(train.labels_N).tolist() == [6000] * 10


# --- image folders ------------------------------------------------------------------------


def _write_folder(root: pathlib.Path, size=(6, 4)) -> dict[str, list[np.ndarray]]:
    """root/<class>/<i>.png with random RGB pixels (PNG is lossless); W x H = size."""
    rng = np.random.default_rng(1)
    written = {}
    for name, count in [("zebra", 2), ("ant", 3), ("cat", 1)]:
        (root / name).mkdir(parents=True)
        written[name] = []
        for i in range(count):
            pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
            written[name].append(pixels)
    (root / "ant" / ".DS_Store").write_bytes(b"\0junk")  # hidden: skipped
    return written


def test_image_folder_round_trip(tmp_path):
    written = _write_folder(tmp_path / "pets")
    split = images.load_image_folder(tmp_path / "pets", image_size=(4, 6), resize=False)
    assert split.class_names == ("ant", "cat", "zebra") and split.num_classes == 3
    assert split.name == "pets"
    np.testing.assert_array_equal(split.labels_N, [0, 0, 0, 1, 2, 2])
    expected = written["ant"] + written["cat"] + written["zebra"]
    np.testing.assert_array_equal(split.images_NxHxWxC, np.stack(expected))
    gray = images.load_image_folder(tmp_path / "pets", image_size=(4, 6), mode="L")
    assert gray.images_NxHxWxC.shape == (6, 4, 6, 1)
    small = images.load_image_folder(tmp_path / "pets", image_size=3)
    assert small.images_NxHxWxC.shape == (6, 3, 3, 3) and small.images_NxHxWxC.dtype == np.uint8


def test_resize_crops_the_centre_without_stretching():
    # Left third red, middle blue, right third green: a square centre crop is all blue.
    pixels = np.zeros((10, 30, 3), np.uint8)
    pixels[:, :10, 0], pixels[:, 10:20, 2], pixels[:, 20:, 1] = 255, 255, 255
    out = images.fit_image(Image.fromarray(pixels), 5)
    assert out.shape == (5, 5, 3)
    assert (out[..., 2] > 200).all() and (out[..., :2] < 50).all()


def test_exif_orientation_is_applied(tmp_path):
    # Stored 6 wide x 2 high, tagged "rotate 90 degrees": upright it is 2 wide x 6 high.
    pixels = np.zeros((2, 6, 3), np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation
    (tmp_path / "photos" / "a").mkdir(parents=True)
    Image.fromarray(pixels).save(tmp_path / "photos" / "a" / "p.jpg", exif=exif)
    split = images.load_image_folder(tmp_path / "photos", image_size=(6, 2), resize=False)
    assert split.images_NxHxWxC.shape == (1, 6, 2, 3)


def test_image_folder_errors_are_one_clear_line(tmp_path):
    with pytest.raises(DataNotFoundError, match="does not exist"):
        images.load_image_folder(tmp_path / "missing", image_size=4)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="has no class subfolders") as info:
        images.load_image_folder(tmp_path / "empty", image_size=4)
    _one_line(info)
    (tmp_path / "empty" / "cls").mkdir()
    with pytest.raises(DataError, match="class folder .*cls' has no image files"):
        images.load_image_folder(tmp_path / "empty", image_size=4)
    _write_folder(tmp_path / "pets")
    with pytest.raises(DataError, match=r"0.png is 4x6 \(H x W\), expected 4x4") as info:
        images.load_image_folder(tmp_path / "pets", image_size=4, resize=False)
    _one_line(info)
    (tmp_path / "pets" / "cat" / "notes.txt").write_text("not a picture")
    with pytest.raises(DataError, match="notes.txt is not an image PIL can read") as info:
        images.load_image_folder(tmp_path / "pets", image_size=4)
    _one_line(info)
    with pytest.raises(DataError, match="image mode 'CMYK'"):
        images.load_image_folder(tmp_path / "pets", image_size=4, mode="CMYK")


# --- tfds (ImageNette) --------------------------------------------------------------------


def _fake_tfds(monkeypatch, examples, fail=False):
    calls = []

    def load(name, **kwargs):
        calls.append((name, kwargs))
        if fail:
            raise AssertionError("Dataset imagenette: could not find data in /nowhere.\nmore")
        label = types.SimpleNamespace(num_classes=3, names=["tench", "dog", "church"])
        return "ds", types.SimpleNamespace(features={"label": label})

    module = types.ModuleType("tensorflow_datasets")
    module.load, module.as_numpy = load, lambda ds: iter(examples)
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", module)
    return calls


def test_tfds_images_are_resized_and_labelled(monkeypatch):
    rng = np.random.default_rng(2)
    examples = [
        (rng.integers(0, 256, (30, 40, 3), dtype=np.uint8), np.int64(2)),
        (rng.integers(0, 256, (50, 20, 3), dtype=np.uint8), np.int64(0)),
        (rng.integers(0, 256, (8, 8, 1), dtype=np.uint8), np.int64(1)),  # grayscale
    ]
    calls = _fake_tfds(monkeypatch, examples)
    split = images.load_tfds_images(
        images.IMAGENETTE, split="validation", image_size=16, data_dir="/data/tfds"
    )
    assert calls == [
        (
            "imagenette/320px-v2",
            dict(
                split="validation",
                data_dir="/data/tfds",
                as_supervised=True,
                with_info=True,
                download=False,
            ),
        )
    ]
    assert split.images_NxHxWxC.shape == (3, 16, 16, 3)
    np.testing.assert_array_equal(split.labels_N, [2, 0, 1])
    assert split.class_names == ("tench", "dog", "church")
    assert split.name == "imagenette_320px-v2-validation"


def test_tfds_not_prepared_is_one_clear_line(monkeypatch):
    _fake_tfds(monkeypatch, [], fail=True)
    with pytest.raises(DataNotFoundError, match="not prepared in data_dir='/nowhere'") as info:
        images.load_tfds_images("imagenette", split="train", image_size=8, data_dir="/nowhere")
    assert "downloads are off" in _one_line(info)


# --- checks every split passes ------------------------------------------------------------


def test_label_out_of_range_is_one_clear_line():
    images_NxHxWxC = np.zeros((4, 8, 8, 1), np.uint8)
    with pytest.raises(DataError, match=r"label 10 of example 2 is outside \[0, 10\)") as info:
        images.ImageSplit(images_NxHxWxC, np.array([0, 9, 10, -1]), num_classes=10, name="s")
    assert _one_line(info) == "s: label 10 of example 2 is outside [0, 10) (2 labels out of range)"


def test_wrong_image_size_and_dtype_are_one_clear_line():
    split = images.ImageSplit(np.zeros((4, 8, 8, 3), np.uint8), np.zeros(4, np.int64), 10)
    assert split.labels_N.dtype == np.int32 and split.image_shape == (8, 8, 3)
    with pytest.raises(DataError, match=r"images are 8x8x3 \(H x W x C\), expected 28x28x1") as i:
        split.check_shape((28, 28, 1))
    _one_line(i)
    with pytest.raises(DataError, match="must be uint8 N x H x W x C, got float32"):
        images.ImageSplit(np.zeros((4, 8, 8, 3), np.float32), np.zeros(4, np.int32), 10)
    with pytest.raises(DataError, match=r"4 images but labels of shape \(3,\)"):
        images.ImageSplit(np.zeros((4, 8, 8, 3), np.uint8), np.zeros(3, np.int32), 10)
