"""Image data: Fashion-MNIST from a Debian package, image folders, tfds, grain pipelines,
and the image tokenizer's codes cached on disk.

Every loader returns an `ImageSplit` (uint8 N x H x W x C, int32 labels); the pipelines
batch one into {"images", "labels"} (or {"codes", "labels"} with cached codes).
"""

from cofre_jax.data.images.by_config import load_splits
from cofre_jax.data.images.codes import StaleCodesError, cached_codes, fingerprint
from cofre_jax.data.images.folder import fit_image, load_image_folder
from cofre_jax.data.images.idx import (
    FASHION_MNIST,
    FASHION_MNIST_CLASSES,
    load_fashion_mnist,
    parse_idx,
    read_idx,
)
from cofre_jax.data.images.pipeline import make_eval_batches, make_train_iterator
from cofre_jax.data.images.split import ImageSplit, check_images
from cofre_jax.data.images.tfds_images import IMAGENETTE, load_tfds_images

__all__ = [
    "FASHION_MNIST",
    "FASHION_MNIST_CLASSES",
    "IMAGENETTE",
    "ImageSplit",
    "StaleCodesError",
    "cached_codes",
    "check_images",
    "fingerprint",
    "fit_image",
    "load_fashion_mnist",
    "load_image_folder",
    "load_splits",
    "load_tfds_images",
    "make_eval_batches",
    "make_train_iterator",
    "parse_idx",
    "read_idx",
]
