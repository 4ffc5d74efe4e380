"""One split of a labelled image dataset as two arrays, checked once when it is built.

Every loader (Fashion-MNIST, an image folder, tfds) returns an `ImageSplit`; the grain
pipelines and the code cache take one. Images are uint8 with a channel axis even for
grayscale (C = 1), labels are int32 class indices in [0, num_classes).

Legend: N = examples, H x W = image size, C = channels (1 or 3).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from cofre_jax.data.errors import DataError


def _shape_text(shape: tuple[int, ...]) -> str:
    return "x".join(str(d) for d in shape)


def check_images(
    images_NxHxWxC: np.ndarray,
    labels_N: np.ndarray,
    *,
    num_classes: int,
    image_shape: tuple[int, int, int] | None = None,
    what: str = "images",
) -> None:
    """One clear DataError line for anything a pipeline could not batch or train on."""
    if images_NxHxWxC.dtype != np.uint8 or images_NxHxWxC.ndim != 4:
        raise DataError(
            f"{what}: images must be uint8 N x H x W x C, got {images_NxHxWxC.dtype} "
            f"of shape {images_NxHxWxC.shape}"
        )
    if images_NxHxWxC.shape[-1] not in (1, 3):
        raise DataError(f"{what}: images have {images_NxHxWxC.shape[-1]} channels, expected 1 or 3")
    if image_shape is not None and tuple(images_NxHxWxC.shape[1:]) != tuple(image_shape):
        raise DataError(
            f"{what}: images are {_shape_text(images_NxHxWxC.shape[1:])} (H x W x C), "
            f"expected {_shape_text(tuple(image_shape))}"
        )
    if labels_N.ndim != 1 or len(labels_N) != len(images_NxHxWxC):
        raise DataError(
            f"{what}: {len(images_NxHxWxC)} images but labels of shape {labels_N.shape}"
        )
    if not np.issubdtype(labels_N.dtype, np.integer):
        raise DataError(f"{what}: labels must be integers, got {labels_N.dtype}")
    if num_classes < 1:
        raise DataError(f"{what}: num_classes={num_classes} must be at least 1")
    bad = np.flatnonzero((labels_N < 0) | (labels_N >= num_classes))
    if bad.size:
        raise DataError(
            f"{what}: label {int(labels_N[bad[0]])} of example {int(bad[0])} is outside "
            f"[0, {num_classes}) ({bad.size} labels out of range)"
        )


@dataclasses.dataclass(frozen=True, eq=False)
class ImageSplit:
    """uint8 images N x H x W x C and their int32 labels, checked on construction."""

    images_NxHxWxC: np.ndarray
    labels_N: np.ndarray
    num_classes: int
    class_names: tuple[str, ...] = ()
    name: str = "images"  # for messages and cache file names

    def __post_init__(self) -> None:
        check_images(
            self.images_NxHxWxC, self.labels_N, num_classes=self.num_classes, what=self.name
        )
        if self.class_names and len(self.class_names) != self.num_classes:
            raise DataError(
                f"{self.name}: {len(self.class_names)} class names for "
                f"num_classes={self.num_classes}"
            )
        object.__setattr__(self, "labels_N", self.labels_N.astype(np.int32, copy=False))

    def __len__(self) -> int:
        return len(self.labels_N)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.images_NxHxWxC.shape[1:])

    def check_shape(self, image_shape: tuple[int, int, int]) -> None:
        """A DataError unless the images are H x W x C = `image_shape`."""
        check_images(
            self.images_NxHxWxC,
            self.labels_N,
            num_classes=self.num_classes,
            image_shape=image_shape,
            what=self.name,
        )
