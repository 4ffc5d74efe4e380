"""A user's own images: one subfolder per class, decoded with PIL.

    root/
      cat/   0001.png 0002.jpg ...
      dog/   ...

Class index = position of the subfolder name in sorted order; files are read in
sorted path order (subfolders of a class folder included), so the arrays are the
same on every machine. Hidden files (".DS_Store") are skipped; any other file must be
an image PIL can decode. Each image is converted to RGB or L (grayscale) and, with
`resize`, centre-cropped to the target aspect ratio and resized; without it, every
image must already have the target size.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from cofre_jax.data.errors import DataError, DataNotFoundError
from cofre_jax.data.images.split import ImageSplit

MODES = {"RGB": 3, "L": 1}


def as_hw(image_size: int | tuple[int, int]) -> tuple[int, int]:
    """(height, width) from a side length or a pair."""
    height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
    if height < 1 or width < 1:
        raise DataError(f"image_size {image_size} must be positive")
    return int(height), int(width)


def fit_image(
    image: Image.Image,
    image_size: int | tuple[int, int],
    *,
    mode: str = "RGB",
    resize: bool = True,
    what: str = "image",
) -> np.ndarray:
    """uint8 H x W x C array of `image` in `mode`, cropped and resized to `image_size`."""
    if mode not in MODES:
        raise DataError(f"image mode {mode!r} is not one of {sorted(MODES)}")
    height, width = as_hw(image_size)
    image = ImageOps.exif_transpose(image).convert(mode)  # camera photos: upright first
    if image.size != (width, height):
        if not resize:
            raise DataError(
                f"{what} is {image.height}x{image.width} (H x W), expected {height}x{width}; "
                "resize the images or turn resizing on"
            )
        # Centre crop to the target aspect ratio, so nothing is stretched.
        scale = min(image.width / width, image.height / height)
        crop_w, crop_h = round(width * scale), round(height * scale)
        left, top = (image.width - crop_w) // 2, (image.height - crop_h) // 2
        box = (left, top, left + crop_w, top + crop_h)
        image = image.resize((width, height), Image.Resampling.BICUBIC, box=box)
    return np.asarray(image, np.uint8).reshape(height, width, MODES[mode])


def _class_dirs(root: Path) -> list[Path]:
    if not root.is_dir():
        raise DataNotFoundError(f"image folder {str(root)!r} does not exist")
    dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not dirs:
        raise DataError(
            f"image folder {str(root)!r} has no class subfolders (expected root/<class>/<image>)"
        )
    return dirs


def _image_files(class_dir: Path) -> list[Path]:
    files = sorted(
        p
        for p in class_dir.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(class_dir).parts)
    )
    if not files:
        raise DataError(f"class folder {str(class_dir)!r} has no image files")
    return files


def _decode(path: Path, image_size, mode: str, resize: bool) -> np.ndarray:
    try:
        with Image.open(path) as image:
            return fit_image(image, image_size, mode=mode, resize=resize, what=str(path))
    except (UnidentifiedImageError, OSError) as e:
        raise DataError(f"{path} is not an image PIL can read ({type(e).__name__})") from e


def load_image_folder(
    root: str | Path,
    *,
    image_size: int | tuple[int, int],
    mode: str = "RGB",
    resize: bool = True,
    name: str = "",
) -> ImageSplit:
    """All images under `root/<class>/`, as an ImageSplit of N x H x W x (3 for RGB, 1 for L)."""
    if mode not in MODES:
        raise DataError(f"image mode {mode!r} is not one of {sorted(MODES)}")
    root = Path(root).expanduser()
    class_dirs = _class_dirs(root)
    images: list[np.ndarray] = []
    labels: list[int] = []
    for label, class_dir in enumerate(class_dirs):
        for path in _image_files(class_dir):
            images.append(_decode(path, image_size, mode, resize))
            labels.append(label)
    return ImageSplit(
        np.stack(images),
        np.asarray(labels, np.int32),
        num_classes=len(class_dirs),
        class_names=tuple(d.name for d in class_dirs),
        name=name or root.name,
    )
