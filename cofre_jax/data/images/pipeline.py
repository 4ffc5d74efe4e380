"""grain pipelines over an ImageSplit: labelled batches forever, and fixed eval batches.

The same mechanism as the text pipeline (cofre_jax/data/pipeline.py): examples (random
access over the arrays) -> shuffle(seed) -> repeat (grain reseeds the shuffle each
epoch) -> this process's slice [p::P] -> batch. The P slices of an epoch are disjoint
and cover it; the iterator's position is a small dict (`get_state` / `set_state`) that
cofre_jax/checkpoint.py saves with grain's CheckpointHandler, so a resumed run sees
exactly the batches it would have seen.

Batches are {"images": uint8 B x H x W x C, "labels": int32 B}, or, when the
tokenizer's codes are given (`codes.cached_codes`), {"codes": int32 B x h x w,
"labels": int32 B}: model training then never runs the encoder.

Legend: B = batch size per process, N = examples, h x w = code grid.
"""

from __future__ import annotations

import grain
import numpy as np

from cofre_jax.data.errors import DataError
from cofre_jax.data.images.split import ImageSplit


class _Examples:
    """Random access to example i as {"images" or "codes": array, "labels": int32}."""

    def __init__(self, arrays: dict[str, np.ndarray]):
        self._arrays = arrays
        self._len = len(arrays["labels"])

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        return {key: array[index] for key, array in self._arrays.items()}


def _arrays(
    split: ImageSplit,
    codes_NxHxW: np.ndarray | None,
    image_shape: tuple[int, int, int] | None,
) -> dict[str, np.ndarray]:
    if image_shape is not None:
        split.check_shape(image_shape)
    if codes_NxHxW is None:
        return {"images": split.images_NxHxWxC, "labels": split.labels_N}
    if codes_NxHxW.ndim != 3 or len(codes_NxHxW) != len(split):
        raise DataError(
            f"{split.name}: codes of shape {codes_NxHxW.shape} do not fit {len(split)} images "
            "(expected N x h x w)"
        )
    return {"codes": codes_NxHxW.astype(np.int32, copy=False), "labels": split.labels_N}


def _check_process(process_index: int, process_count: int) -> None:
    if not 0 <= process_index < process_count:
        raise DataError(f"process_index={process_index} is not in [0, {process_count})")


def _check_enough(split: ImageSplit, what: str, batch_size: int, process_count: int) -> None:
    if len(split) // process_count < batch_size:
        raise DataError(
            f"the {what} split {split.name} has {len(split)} examples, fewer than one batch "
            f"of {batch_size} for each of {process_count} process(es); lower the batch size"
        )


def make_train_iterator(
    split: ImageSplit,
    *,
    batch_size: int,
    seed: int,
    process_index: int = 0,
    process_count: int = 1,
    codes_NxHxW: np.ndarray | None = None,
    image_shape: tuple[int, int, int] | None = None,
    prefetch_batches: int = 4,
    worker_count: int = 0,
) -> grain.DatasetIterator:
    """Endless, checkpointable iterator of this process's batches of `split`.

    `image_shape` (H, W, C), when given, must be the images' shape (a clear error
    otherwise); `codes_NxHxW` switches the batches from images to codes."""
    _check_process(process_index, process_count)
    arrays = _arrays(split, codes_NxHxW, image_shape)
    _check_enough(split, "training", batch_size, process_count)
    dataset = (
        grain.MapDataset.source(_Examples(arrays))
        .shuffle(seed=seed)
        .repeat(None)
        .slice(slice(process_index, None, process_count))
        .batch(batch_size, drop_remainder=True)
        .to_iter_dataset(
            grain.ReadOptions(num_threads=prefetch_batches, prefetch_buffer_size=prefetch_batches)
        )
    )
    if worker_count > 0:
        dataset = dataset.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count))
    return iter(dataset)


def make_eval_batches(
    split: ImageSplit,
    *,
    batch_size: int,
    num_batches: int,
    process_index: int = 0,
    process_count: int = 1,
    codes_NxHxW: np.ndarray | None = None,
    image_shape: tuple[int, int, int] | None = None,
) -> list[dict[str, np.ndarray]]:
    """The same `num_batches` batches every call: this process's slice [p::P] of the
    split in order, reused cyclically (with a printed note) when it is too short."""
    _check_process(process_index, process_count)
    arrays = _arrays(split, codes_NxHxW, image_shape)
    _check_enough(split, "evaluation", batch_size, process_count)
    mine_M = np.arange(process_index, len(split), process_count)
    needed = batch_size * num_batches
    if len(mine_M) < needed and process_index == 0:
        print(
            f"[cofre_jax] note: {split.name} has {len(mine_M)} examples per process, fewer "
            f"than {num_batches} batches x {batch_size}; examples are reused cyclically",
            flush=True,
        )
    picked_KxB = mine_M[np.arange(needed) % len(mine_M)].reshape(num_batches, batch_size)
    return [{key: array[rows_B] for key, array in arrays.items()} for rows_B in picked_KxB]
