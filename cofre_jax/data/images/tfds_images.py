"""Labelled images from a tfds dataset, e.g. ImageNette (`imagenette/320px-v2`).

`tfds.load(name, split=..., data_dir=..., as_supervised=True)` gives (image, label)
pairs; each image is cropped and resized like a folder image (`folder.fit_image`).
tensorflow_datasets is imported only here, when called. Downloads are off unless
asked for: the machines here reach only package registries (docs/design.md §4), so
prepare the dataset elsewhere and copy its data_dir.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from cofre_jax.data.errors import DataError, DataNotFoundError
from cofre_jax.data.images.folder import MODES, fit_image
from cofre_jax.data.images.split import ImageSplit

IMAGENETTE = "imagenette/320px-v2"  # 10 ImageNet classes; splits "train" and "validation"


def load_tfds_images(
    name: str,
    *,
    split: str,
    image_size: int | tuple[int, int],
    data_dir: str = "",
    mode: str = "RGB",
    download: bool = False,
) -> ImageSplit:
    """One split of a supervised tfds image dataset, as an ImageSplit."""
    if mode not in MODES:
        raise DataError(f"image mode {mode!r} is not one of {sorted(MODES)}")
    import tensorflow_datasets as tfds

    try:
        ds, info = tfds.load(
            name,
            split=split,
            data_dir=data_dir or None,
            as_supervised=True,
            with_info=True,
            download=download,
        )
    except Exception as e:  # tfds raises several types for "not prepared" / unknown name
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise DataNotFoundError(
            f"tfds dataset {name!r} split {split!r} is not prepared in data_dir={data_dir!r} "
            f"(downloads {'failed' if download else 'are off'}): {type(e).__name__}: {first}"
        ) from e
    label_feature = info.features["label"]
    images: list[np.ndarray] = []
    labels: list[int] = []
    for i, (image_HxWxC, label) in enumerate(tfds.as_numpy(ds)):
        image_HxWxC = np.asarray(image_HxWxC, np.uint8)
        if image_HxWxC.ndim == 3 and image_HxWxC.shape[-1] == 1:
            image_HxWxC = image_HxWxC[..., 0]
        pil = Image.fromarray(image_HxWxC)
        images.append(fit_image(pil, image_size, mode=mode, what=f"{name}[{split}] #{i}"))
        labels.append(int(label))
    if not images:
        raise DataError(f"tfds dataset {name!r} split {split!r} has no examples")
    return ImageSplit(
        np.stack(images),
        np.asarray(labels, np.int32),
        num_classes=int(label_feature.num_classes),
        class_names=tuple(label_feature.names),
        name=f"{name.replace('/', '_')}-{split}",
    )
