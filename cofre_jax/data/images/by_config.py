"""The config's image dataset as (train, test) ImageSplits, checked against the config.

    fashion_mnist  the Debian package's 60k / 10k split (offline, cached once)
    image_folder   data.path/<class>/*; every 20th image of each class (sorted by
                   name) is held out as the test split, so the split is deterministic
    tfds           data.tfds_name's "train" and "validation" splits (ImageNette)

The images must be data.image_size square with data.channels channels and their labels
in [0, data.num_classes): anything else is one DataError line naming the field.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cofre_jax.data.errors import DataError
from cofre_jax.data.images.folder import load_image_folder
from cofre_jax.data.images.idx import load_fashion_mnist
from cofre_jax.data.images.split import ImageSplit
from cofre_jax.data.images.tfds_images import load_tfds_images

HOLDOUT_EVERY = 20  # image_folder: the test split is every 20th image of each class


def _mode(channels: int) -> str:
    return "L" if channels == 1 else "RGB"


def _holdout(split: ImageSplit) -> tuple[ImageSplit, ImageSplit]:
    rank_N = np.zeros(len(split), np.int64)
    for label in range(split.num_classes):
        rows = np.flatnonzero(split.labels_N == label)
        rank_N[rows] = np.arange(len(rows))
    test_N = rank_N % HOLDOUT_EVERY == HOLDOUT_EVERY - 1
    if not test_N.any():
        raise DataError(
            f"{split.name}: too few images to hold out a test split (every "
            f"{HOLDOUT_EVERY}th image of a class); add images"
        )

    def part(rows, suffix):
        return ImageSplit(
            split.images_NxHxWxC[rows],
            split.labels_N[rows],
            num_classes=split.num_classes,
            class_names=split.class_names,
            name=f"{split.name}-{suffix}",
        )

    return part(~test_N, "train"), part(test_N, "test")


def _load(data: Any) -> tuple[ImageSplit, ImageSplit]:
    if data.source == "fashion_mnist":
        return load_fashion_mnist(data.cache_dir)
    if data.source == "image_folder":
        return _holdout(
            load_image_folder(data.path, image_size=data.image_size, mode=_mode(data.channels))
        )
    if data.source == "tfds":
        load = lambda split: load_tfds_images(  # noqa: E731
            data.tfds_name,
            split=split,
            image_size=data.image_size,
            data_dir=data.tfds_data_dir,
            mode=_mode(data.channels),
        )
        return load("train"), load("validation")
    raise DataError(f"unknown image data.source {data.source!r}")


def load_splits(data: Any) -> tuple[ImageSplit, ImageSplit]:
    """(train, test) of the image data section `data` (cofre_jax.config.image)."""
    train, test = _load(data)
    if train.num_classes != data.num_classes:
        raise DataError(
            f"config field 'data.num_classes' is {data.num_classes} but {train.name} has "
            f"{train.num_classes} classes"
        )
    shape = (data.image_size, data.image_size, data.channels)
    for split in (train, test):
        if split.image_shape != shape:
            raise DataError(
                f"config fields 'data.image_size'/'data.channels' give images of "
                f"{'x'.join(map(str, shape))} but {split.name} has "
                f"{'x'.join(map(str, split.image_shape))}"
            )
    return train, test
