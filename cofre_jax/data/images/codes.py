"""The image tokenizer's codes of a split, computed once and cached as .npy.

`cached_codes(split, encode_fn, encoder_fingerprint=..., cache_dir=...)` runs
`encode_fn(images_BxHxWxC) -> codes_BxHxW` over the split in fixed-size batches (the
last one padded, so a jitted encoder compiles once) and writes the int32 codes to

    <cache_dir>/image_codes/<split name>-<encoder fingerprint>-<data fingerprint>.npy

with a .json sidecar naming both fingerprints; every write is atomic. A changed
tokenizer (another fingerprint) or changed images therefore never find stale codes.
`fingerprint(...)` hashes the tokenizer's parameters and settings into the encoder
fingerprint. A cached file that is reused is checked first: its sidecar must match,
its shape must fit the split, and the first batch, encoded again, must agree with it
(this catches an encoder that changed while its fingerprint did not).

Legend: N = examples, B = encode batch, h x w = code grid.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from cofre_jax.data.assets import atomic_write_bytes, resolve_cache_dir
from cofre_jax.data.errors import DataError
from cofre_jax.data.images.split import ImageSplit

CODES_VERSION = 1  # bump when the file layout changes
_MIN_AGREEMENT = 0.99  # float ties may flip a few codes on other hardware


class StaleCodesError(DataError):
    """A cached code file does not belong to this encoder and these images."""


def _update(hasher, part: Any) -> None:
    if isinstance(part, dict):
        for key in sorted(part, key=str):
            hasher.update(f"<{key}>".encode())
            _update(hasher, part[key])
    elif isinstance(part, list | tuple):
        hasher.update(f"[{len(part)}]".encode())
        for item in part:
            _update(hasher, item)
    elif isinstance(part, str | bytes | int | float | bool) or part is None:
        data = part if isinstance(part, bytes) else repr(part).encode()
        hasher.update(f"{type(part).__name__}:{len(data)}:".encode() + data)
    else:  # an array (numpy or jax)
        array = np.ascontiguousarray(np.asarray(part))
        hasher.update(f"array:{array.dtype.name}:{array.dtype.str}:{array.shape}:".encode())
        hasher.update(array.tobytes())


def fingerprint(*parts: Any) -> str:
    """sha256 hex of strings, numbers, arrays and dicts / lists of them (e.g. a params
    tree of nested dicts), including every key, dtype and shape."""
    hasher = hashlib.sha256()
    for part in parts:
        _update(hasher, part)
    return hasher.hexdigest()


def data_fingerprint(split: ImageSplit) -> str:
    """sha256 of the split's images (labels do not change codes)."""
    return fingerprint(split.images_NxHxWxC)


def _encode(
    encode_fn: Callable[[np.ndarray], Any], images_BxHxWxC: np.ndarray, batch_size: int
) -> np.ndarray:
    count = len(images_BxHxWxC)
    padded = images_BxHxWxC
    if count < batch_size:
        pad = np.repeat(images_BxHxWxC[-1:], batch_size - count, axis=0)
        padded = np.concatenate([images_BxHxWxC, pad])
    codes = np.asarray(encode_fn(padded))
    if codes.ndim != 3 or len(codes) != batch_size:
        raise DataError(
            f"encode_fn gave codes of shape {codes.shape} for {batch_size} images; "
            "expected B x h x w"
        )
    if not np.issubdtype(codes.dtype, np.integer):
        raise DataError(f"encode_fn gave {codes.dtype} codes; expected integer token ids")
    return codes[:count].astype(np.int32)


def _save_npy(path: Path, array: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.save(buffer, array)
    atomic_write_bytes(path, buffer.getvalue())


def _check_cached(
    codes_NxHxW: np.ndarray,
    meta_path: Path,
    expected: dict[str, Any],
    first_B: np.ndarray,
    path: Path,
) -> None:
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    for key in ("version", "encoder", "data"):
        if meta.get(key) != expected[key]:
            raise StaleCodesError(
                f"{path}: cached codes were made with {key}={meta.get(key)!r}, not "
                f"{expected[key]!r}; delete the file to recompute"
            )
    if codes_NxHxW.ndim != 3 or len(codes_NxHxW) != expected["count"]:
        raise StaleCodesError(
            f"{path}: cached codes of shape {codes_NxHxW.shape} do not fit "
            f"{expected['count']} images; delete the file to recompute"
        )
    if not len(first_B):
        return
    same_grid = first_B.shape[1:] == codes_NxHxW.shape[1:]
    agreement = float(np.mean(codes_NxHxW[: len(first_B)] == first_B)) if same_grid else 0.0
    if agreement < _MIN_AGREEMENT:
        raise StaleCodesError(
            f"{path}: the encoder's codes for the first images differ from the cached ones "
            f"({agreement:.1%} agree): the encoder changed but its fingerprint did not; "
            "give a fingerprint that covers its parameters, or delete the file"
        )


def _file_stem(split: ImageSplit) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", split.name)


def cached_codes(
    split: ImageSplit,
    encode_fn: Callable[[np.ndarray], Any],
    *,
    encoder_fingerprint: str,
    cache_dir: str | Path = "",
    batch_size: int = 256,
    check_batch: int = 8,
) -> np.ndarray:
    """int32 codes N x h x w of `split`, from the cache or computed once and cached.

    `encoder_fingerprint` must change whenever the encoder's output can change (use
    `fingerprint(params, settings)`); `check_batch` images are re-encoded to verify a
    reused file (0 skips the check). `cache_dir` "" means $COFRE_CACHE or
    ~/.cache/cofre_jax."""
    if not re.fullmatch(r"[0-9a-zA-Z_-]{8,}", encoder_fingerprint):
        raise DataError(
            f"encoder_fingerprint {encoder_fingerprint!r} must be at least 8 letters, digits, "
            "'-' or '_' (e.g. fingerprint(params, settings))"
        )
    data_fp = data_fingerprint(split)
    stem = f"{_file_stem(split)}-{encoder_fingerprint[:16]}-{data_fp[:16]}"
    path = resolve_cache_dir(os.fspath(cache_dir)) / "image_codes" / f"{stem}.npy"
    meta_path = path.with_suffix(".json")
    expected = {
        "version": CODES_VERSION,
        "encoder": encoder_fingerprint,
        "data": data_fp,
        "count": len(split),
    }
    images_NxHxWxC = split.images_NxHxWxC
    if path.is_file():
        codes_NxHxW = np.load(path)
        first_B = np.zeros((0, *codes_NxHxW.shape[1:]), np.int32)
        if check_batch > 0:
            # Padded to the same batch size: the same program as the first encode.
            first = images_NxHxWxC[: min(check_batch, batch_size)]
            first_B = _encode(encode_fn, first, batch_size)
        _check_cached(codes_NxHxW, meta_path, expected, first_B, path)
        return codes_NxHxW
    print(f"[cofre_jax] encoding {len(split)} images of {split.name} into {path}", flush=True)
    codes_NxHxW = np.concatenate(
        [
            _encode(encode_fn, images_NxHxWxC[start : start + batch_size], batch_size)
            for start in range(0, len(split), batch_size)
        ]
    )
    # The sidecar first: a codes file is never visible without its description.
    atomic_write_bytes(meta_path, json.dumps({**expected, "shape": codes_NxHxW.shape}).encode())
    _save_npy(path, codes_NxHxW)
    return codes_NxHxW
