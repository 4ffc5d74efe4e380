"""Fashion-MNIST, the offline image default: idx files from a pinned Debian package.

The package `dataset-fashion-mnist` carries the four original gzip idx files under
usr/share/datasets/fashion-mnist/; they are fetched once into the cache
(`cofre_jax.data.deb`) and parsed here. An idx file is a 4-byte magic number
(0x0000 0x08=uint8, number of dimensions), one big-endian uint32 per dimension, then
the values in C order. Images are 0x00000803 (N x 28 x 28), labels 0x00000801 (N).
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

from cofre_jax.data import assets, deb
from cofre_jax.data.errors import DataError
from cofre_jax.data.images.split import ImageSplit

IDX_IMAGES_MAGIC = 0x00000803
IDX_LABELS_MAGIC = 0x00000801
_GZIP_MAGIC = b"\x1f\x8b"

_DIR = "usr/share/datasets/fashion-mnist"
# Debian bookworm's package (dataset-fashion-mnist_0.0~git20200523.55506a9-1_all.deb,
# 30.9 MB, sha256 39e172fe32dd318ebb3e512220c3beea2fa47d7e20bab348fb4e0922d6beefc0);
# the files are Zalando's originals (MIT licensed).
# Pinned so the bytes never change; bump deliberately, with new hashes.
FASHION_MNIST = deb.DebianAsset(
    "dataset-fashion-mnist",
    "0.0~git20200523.55506a9-1",
    (
        (
            f"{_DIR}/train-images-idx3-ubyte.gz",
            "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
        ),
        (
            f"{_DIR}/train-labels-idx1-ubyte.gz",
            "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
        ),
        (
            f"{_DIR}/t10k-images-idx3-ubyte.gz",
            "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
        ),
        (
            f"{_DIR}/t10k-labels-idx1-ubyte.gz",
            "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
        ),
    ),
    "pool/main/d/dataset-fashion-mnist/dataset-fashion-mnist_0.0~git20200523.55506a9-1_all.deb",
)
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)


def parse_idx(data: bytes, *, magic: int, what: str = "idx file") -> np.ndarray:
    """uint8 array of an idx file's bytes (gzip or raw) with the expected magic number."""
    if data[:2] == _GZIP_MAGIC:
        data = gzip.decompress(data)
    if len(data) < 4:
        raise DataError(f"{what}: too short for an idx file ({len(data)} bytes)")
    found = int.from_bytes(data[:4], "big")
    if found != magic:
        raise DataError(f"{what}: idx magic number 0x{found:08x}, expected 0x{magic:08x}")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{what}: idx header cut short ({len(data)} bytes)")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(shape))
    if len(data) != expected:
        raise DataError(
            f"{what}: idx shape {shape} needs {expected} bytes, the file has {len(data)}"
        )
    return np.frombuffer(data, np.uint8, offset=header).reshape(shape)


def read_idx(path: Path, *, magic: int) -> np.ndarray:
    """`parse_idx` of a file."""
    return parse_idx(Path(path).read_bytes(), magic=magic, what=str(path))


def idx_split(images_path: Path, labels_path: Path, name: str) -> ImageSplit:
    """An ImageSplit (N x H x W x 1) from an idx images file and its labels file."""
    images_NxHxW = read_idx(images_path, magic=IDX_IMAGES_MAGIC)
    labels_N = read_idx(labels_path, magic=IDX_LABELS_MAGIC)
    if len(images_NxHxW) != len(labels_N):
        raise DataError(
            f"{name}: {images_path} has {len(images_NxHxW)} images, {labels_path} has "
            f"{len(labels_N)} labels"
        )
    return ImageSplit(
        images_NxHxW[..., None],
        labels_N.astype(np.int32),
        num_classes=len(FASHION_MNIST_CLASSES),
        class_names=FASHION_MNIST_CLASSES,
        name=name,
    )


def load_fashion_mnist(
    cache_dir: str | Path = "", *, deb_file: str | Path = ""
) -> tuple[ImageSplit, ImageSplit]:
    """(train 60000 x 28 x 28 x 1, test 10000 x 28 x 28 x 1), fetched once into the cache.

    `cache_dir` "" means $COFRE_CACHE or ~/.cache/cofre_jax; `deb_file` is a copy of the
    pinned .deb to read instead of running `apt-get download`."""
    cache = assets.resolve_cache_dir(os.fspath(cache_dir))
    paths = deb.fetch_debian_asset(FASHION_MNIST, cache, deb_file=deb_file)
    train = idx_split(
        paths[f"{_DIR}/train-images-idx3-ubyte.gz"],
        paths[f"{_DIR}/train-labels-idx1-ubyte.gz"],
        "fashion_mnist-train",
    )
    test = idx_split(
        paths[f"{_DIR}/t10k-images-idx3-ubyte.gz"],
        paths[f"{_DIR}/t10k-labels-idx1-ubyte.gz"],
        "fashion_mnist-test",
    )
    return train, test
