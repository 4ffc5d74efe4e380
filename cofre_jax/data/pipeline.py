"""grain pipelines: packed training rows forever, and fixed validation batches.

Training: rows (random access over the train token stream) -> shuffle(seed) -> repeat
(grain reseeds the shuffle each epoch) -> this process's slice [p::P] -> batch. Each
process reads only its own rows, and the P slices of an epoch are disjoint and cover
it. The iterator's position is a small dict (`get_state` / `set_state`), saved with
the checkpoint, so a resumed run sees exactly the batches it would have seen.

The training iterator reads at most `data.prefetch_batches` batches ahead (grain's
default of 500 is about 1 GiB of OWT batches per host). A run tokenises its corpus
once: `load_token_splits` gives both splits, and both builders accept them (`splits=`).

Validation: the first rows of the validation stream, in order, sliced the same way.
If the split is too small for `num_batches` batches, rows are reused cyclically (with
a printed note) rather than failing: a small eval set is still a valid estimate.

Legend: B = batch size per process, L = seq_len.
"""

from __future__ import annotations

import io
import pathlib

import grain
import numpy as np

from cofre_jax.config.typed import DataConfig
from cofre_jax.data import assets, embedded, owt, packing, sources, synthetic
from cofre_jax.data.errors import DataError
from cofre_jax.data.tokenizers import Tokenizer


def _cached_embedded(
    name: str, tokenizer: Tokenizer, data_cfg: DataConfig
) -> tuple[np.ndarray, np.ndarray]:
    """Tokenized embedded corpus, cached as .npy so later runs skip tokenization."""
    cache = assets.cache_dir(data_cfg)
    stem = cache / "tokens" / f"{name}-{tokenizer.name}-v{embedded.PARSER_VERSION}"
    tokens_path, ends_path = pathlib.Path(f"{stem}.tokens.npy"), pathlib.Path(f"{stem}.ends.npy")
    if tokens_path.exists() and ends_path.exists():
        return np.load(tokens_path), np.load(ends_path)
    docs = embedded.corpus_documents(name, cache)
    tokens_T, ends_N = packing.tokenize_documents(docs, tokenizer, label=name)
    for path, array in ((ends_path, ends_N), (tokens_path, tokens_T)):
        buffer = io.BytesIO()
        np.save(buffer, array)
        assets.atomic_write_bytes(path, buffer.getvalue())
    return tokens_T, ends_N


def load_token_splits(
    data_cfg: DataConfig, tokenizer: Tokenizer
) -> tuple[packing.TokenStream, packing.TokenStream]:
    """(train, validation) token streams of `data.source`; last `val_docs` docs validate."""
    if data_cfg.source == "owt":
        return owt.load_shards(data_cfg, tokenizer)
    if data_cfg.source == "synthetic":
        train_T, val_T = synthetic.token_splits(data_cfg)
        return packing.TokenStream([train_T]), packing.TokenStream([val_T])
    if data_cfg.source == "embedded":
        parts = [
            _cached_embedded(n, tokenizer, data_cfg) for n in embedded.corpus_names(data_cfg.path)
        ]
        offsets = np.cumsum([0] + [len(t) for t, _ in parts[:-1]])
        tokens_T = np.concatenate([t for t, _ in parts])
        ends_N = np.concatenate([e + o for (_, e), o in zip(parts, offsets)])
    elif data_cfg.source in sources.SOURCES:
        docs = sources.load_documents(data_cfg)
        tokens_T, ends_N = packing.tokenize_documents(docs, tokenizer, label=data_cfg.source)
    else:
        valid = (*sources.SOURCES, "owt", "synthetic")
        raise DataError(f"unknown data.source {data_cfg.source!r}; valid choices: {valid}")
    what = f"{data_cfg.source}:{sources.source_location(data_cfg) or 'wiki'}"
    train_T, val_T = packing.split_last_docs(tokens_T, ends_N, data_cfg.val_docs, what)
    return packing.TokenStream([train_T]), packing.TokenStream([val_T])


def _rows(stream: packing.TokenStream, data_cfg: DataConfig, tokenizer: Tokenizer):
    return packing.PackedRows(stream, data_cfg.seq_len, tokenizer.bos_id, tokenizer.eos_id)


def _check_enough_rows(
    rows: packing.PackedRows, split: str, batch_size: int, process_count: int
) -> None:
    if len(rows) // process_count < batch_size:
        raise DataError(
            f"the {split} split has {len(rows.stream)} tokens = {len(rows)} rows of "
            f"seq_len={rows.seq_len}, fewer than one batch of {batch_size} rows for each of "
            f"{process_count} process(es); lower data.seq_len or the batch size, or use more data"
        )


def _as_example(tokens_BxL: np.ndarray) -> dict[str, np.ndarray]:
    return {"tokens": tokens_BxL}


def make_train_iterator(
    data_cfg: DataConfig,
    tokenizer: Tokenizer,
    *,
    batch_size: int,
    seed: int,
    process_index: int = 0,
    process_count: int = 1,
    splits: tuple[packing.TokenStream, packing.TokenStream] | None = None,
) -> grain.DatasetIterator:
    """Endless, checkpointable iterator of {"tokens": int32 [batch_size, seq_len]}.

    `splits` (from `load_token_splits`) saves tokenising the corpus again."""
    if not 0 <= process_index < process_count:
        raise DataError(f"process_index={process_index} is not in [0, {process_count})")
    train_stream, _ = splits or load_token_splits(data_cfg, tokenizer)
    rows = _rows(train_stream, data_cfg, tokenizer)
    _check_enough_rows(rows, "training", batch_size, process_count)
    dataset = (
        grain.MapDataset.source(rows)
        .shuffle(seed=seed)
        .repeat(None)
        .slice(slice(process_index, None, process_count))
        .batch(batch_size, drop_remainder=True)
        .map(_as_example)
        .to_iter_dataset(
            grain.ReadOptions(
                num_threads=data_cfg.prefetch_batches,
                prefetch_buffer_size=data_cfg.prefetch_batches,
            )
        )
    )
    if data_cfg.worker_count > 0:
        dataset = dataset.mp_prefetch(
            grain.MultiprocessingOptions(num_workers=data_cfg.worker_count)
        )
    return iter(dataset)


def make_eval_batches(
    data_cfg: DataConfig,
    tokenizer: Tokenizer,
    *,
    batch_size: int,
    num_batches: int,
    process_index: int = 0,
    process_count: int = 1,
    splits: tuple[packing.TokenStream, packing.TokenStream] | None = None,
) -> list[dict[str, np.ndarray]]:
    """The same `num_batches` validation batches every call (this process's slice);
    `splits` as in `make_train_iterator`."""
    if not 0 <= process_index < process_count:
        raise DataError(f"process_index={process_index} is not in [0, {process_count})")
    _, val_stream = splits or load_token_splits(data_cfg, tokenizer)
    rows = _rows(val_stream, data_cfg, tokenizer)
    _check_enough_rows(rows, "validation", batch_size, process_count)
    mine = range(process_index, len(rows), process_count)
    needed = batch_size * num_batches
    if len(mine) < needed and process_index == 0:
        print(
            f"[cofre_jax] note: the validation split has {len(mine)} rows per process, fewer "
            f"than {num_batches} batches x {batch_size}; rows are reused cyclically",
            flush=True,
        )
    picked = [mine[i % len(mine)] for i in range(needed)]
    return [
        {"tokens": np.stack([rows[r] for r in picked[b * batch_size : (b + 1) * batch_size]])}
        for b in range(num_batches)
    ]


def describe(data_cfg: DataConfig, tokenizer: Tokenizer) -> dict[str, int]:
    """Token and row counts of both splits (for logs and sanity checks)."""
    train_stream, val_stream = load_token_splits(data_cfg, tokenizer)
    return {
        "train_tokens": len(train_stream),
        "val_tokens": len(val_stream),
        "train_rows": len(_rows(train_stream, data_cfg, tokenizer)),
        "val_rows": len(_rows(val_stream, data_cfg, tokenizer)),
    }
