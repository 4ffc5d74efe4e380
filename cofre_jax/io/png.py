"""A dependency-free PNG writer (zlib and struct only) and a grid of images to put in one.

PNG layout (RFC 2083): the 8-byte signature, then chunks of (length, type, data, CRC-32
of type + data): IHDR (width, height, bit depth 8, colour type 0 grayscale or 2 RGB,
deflate, adaptive filtering, no interlace), one IDAT holding the zlib stream of the rows,
each row prefixed by its filter byte (0: none), and an empty IEND.

Legend: N images, H/W height/width, C channels (1 or 3).
"""

from __future__ import annotations

import os
import struct
import tempfile
import zlib

import numpy as np

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_COLOUR_TYPES = {1: 0, 3: 2}  # channels -> PNG colour type (grayscale, truecolour)


def _chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def _as_hwc(image) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[..., None]
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] not in _COLOUR_TYPES:
        raise ValueError(
            f"a PNG image must be uint8 H x W, H x W x 1 or H x W x 3, got {image.dtype} "
            f"{image.shape}"
        )
    if min(image.shape[:2]) < 1:
        raise ValueError(f"a PNG image needs at least one pixel, got {image.shape}")
    return image


def encode_png(image_HxWxC, level: int = 6) -> bytes:
    """The PNG file of a uint8 image, H x W (grayscale) or H x W x C with C 1 or 3."""
    image = _as_hwc(image_HxWxC)
    height, width, channels = image.shape
    header = struct.pack(">IIBBBBB", width, height, 8, _COLOUR_TYPES[channels], 0, 0, 0)
    rows_Hx1 = np.zeros((height, 1), np.uint8)  # filter type 0 before every row
    raw = np.concatenate([rows_Hx1, image.reshape(height, width * channels)], axis=1)
    return b"".join(
        [
            PNG_SIGNATURE,
            _chunk(b"IHDR", header),
            _chunk(b"IDAT", zlib.compress(raw.tobytes(), level)),
            _chunk(b"IEND", b""),
        ]
    )


def write_png(path: str, image_HxWxC) -> None:
    """Writes the PNG through a temporary file, so a reader never sees half an image."""
    data = encode_png(image_HxWxC)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".png_", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def image_grid(images_NxHxWxC, rows: int, cols: int, pad: int = 2, pad_value: int = 255):
    """One uint8 image of the N images laid out row-major in rows x cols cells, with
    `pad` pixels of `pad_value` between and around them; cells past N stay blank."""
    images = np.asarray(images_NxHxWxC)
    if images.ndim == 3:
        images = images[..., None]
    if images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError(f"images must be uint8 N x H x W x C, got {images.dtype} {images.shape}")
    n, h, w, c = images.shape
    if rows < 1 or cols < 1 or n > rows * cols:
        raise ValueError(f"{n} images do not fit a grid of {rows} x {cols}")
    if pad < 0 or not 0 <= pad_value <= 255:
        raise ValueError(f"need pad >= 0 and pad_value in [0, 255], got {pad}, {pad_value}")
    grid = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, c), pad_value, np.uint8)
    for i in range(n):
        top, left = pad + (i // cols) * (h + pad), pad + (i % cols) * (w + pad)
        grid[top : top + h, left : left + w] = images[i]
    return grid
