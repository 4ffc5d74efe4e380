"""OpenWebText-style prepared shards: `--mode=prepare` writes them, source "owt" reads them.

Layout of `data.path` after `prepare_owt`:
    train-00000.npy ...   uint16 token streams (each document followed by EOS)
    val-00000.npy ...     the last `data.val_docs` documents, same format
    index.json            written last; lists shards with document and token counts

Documents stream through: only the last `val_docs` tokenized documents are held in
memory (they are not known to be validation until the input ends). Every file is
written under a temporary name and renamed, and index.json marks completion, so an
interrupted run leaves no index and is simply started again; a finished one is a no-op.
"""

from __future__ import annotations

import collections
import io
import json
import pathlib
import time

import numpy as np

from cofre_jax.config.typed import DataConfig
from cofre_jax.data import assets, packing, sources
from cofre_jax.data.errors import DataError, DataNotFoundError
from cofre_jax.data.tokenizers import Tokenizer

INDEX = "index.json"
FORMAT_VERSION = 1
DEFAULT_SHARD_TOKENS = 1 << 26  # 128 MiB of uint16 per shard


class _ShardWriter:
    """Accumulates documents' tokens and writes `<prefix>-NNNNN.npy` shards atomically."""

    def __init__(self, folder: pathlib.Path, prefix: str, shard_tokens: int):
        self.folder, self.prefix, self.shard_tokens = folder, prefix, shard_tokens
        self.pieces: list[np.ndarray] = []
        self.tokens = self.docs = 0
        self.shards: list[dict] = []

    def add(self, doc_tokens: np.ndarray) -> None:
        self.pieces.append(doc_tokens)
        self.tokens += len(doc_tokens)
        self.docs += 1
        if self.tokens >= self.shard_tokens:
            self.flush()

    def flush(self) -> None:
        if not self.pieces:
            return
        name = f"{self.prefix}-{len(self.shards):05d}.npy"
        buffer = io.BytesIO()
        np.save(buffer, np.concatenate(self.pieces).astype(packing.TOKEN_DTYPE))
        assets.atomic_write_bytes(self.folder / name, buffer.getvalue())
        self.shards.append({"file": name, "docs": self.docs, "tokens": self.tokens})
        self.pieces, self.tokens, self.docs = [], 0, 0


def _recipe(data_cfg: DataConfig, tokenizer: Tokenizer) -> dict:
    """What determines the shards' contents; a finished folder must match it."""
    return {
        "format": FORMAT_VERSION,
        "raw_source": data_cfg.raw_source,
        "raw_path": data_cfg.raw_path,
        "text_key": data_cfg.text_key,
        "tokenizer": tokenizer.name,
        "val_docs": data_cfg.val_docs,
    }


def prepare_owt(
    data_cfg: DataConfig, tokenizer: Tokenizer, *, shard_tokens: int = DEFAULT_SHARD_TOKENS
) -> pathlib.Path:
    """Tokenizes `data.raw_source` at `data.raw_path` into shards under `data.path`."""
    if not data_cfg.path:
        raise DataError("data.path must name the folder that prepare writes shards into")
    if not data_cfg.raw_path:
        raise DataError(f"data.raw_path must say where the raw {data_cfg.raw_source} data is")
    out = pathlib.Path(data_cfg.path).expanduser()
    recipe = _recipe(data_cfg, tokenizer)
    if (out / INDEX).exists():
        done = json.loads((out / INDEX).read_text())
        if done["recipe"] != recipe:
            raise DataError(
                f"{out} already holds shards prepared as {done['recipe']}, not {recipe}; "
                "delete the folder or choose another data.path"
            )
        print(f"[cofre_jax] {out} is already prepared ({done['num_docs']} documents); skipping")
        return out
    out.mkdir(parents=True, exist_ok=True)
    for stale in [*out.glob("train-*.npy"), *out.glob("val-*.npy"), *out.glob(".*.tmp")]:
        stale.unlink()  # leftovers of an interrupted run
    print(f"[cofre_jax] preparing {data_cfg.raw_source}:{data_cfg.raw_path} -> {out}", flush=True)

    train = _ShardWriter(out, "train", shard_tokens)
    held: collections.deque[np.ndarray] = collections.deque()
    docs = sources.iter_documents(data_cfg.raw_source, data_cfg.raw_path, data_cfg)
    num_docs, start = 0, time.perf_counter()
    last_print = start  # the first progress line after 10 s, once there is progress
    while True:
        chunk = [doc for _, doc in zip(range(1024), docs)]
        if not chunk:
            break
        tokens_T, ends_N = packing.tokenize_documents(chunk, tokenizer)
        for doc_tokens in np.split(tokens_T, ends_N[:-1]):
            held.append(doc_tokens)
            if len(held) > data_cfg.val_docs:
                train.add(held.popleft())
        num_docs += len(chunk)
        if time.perf_counter() - last_print > 10:
            last_print = time.perf_counter()
            print(
                f"[cofre_jax] prepare: {num_docs} documents, {len(train.shards)} train shards "
                f"written, {last_print - start:.0f}s",
                flush=True,
            )
    if num_docs <= data_cfg.val_docs:
        raise DataError(
            f"raw corpus {data_cfg.raw_path!r} has {num_docs} documents, but "
            f"data.val_docs={data_cfg.val_docs} are held out; nothing would be left to train on"
        )
    train.flush()
    val = _ShardWriter(out, "val", shard_tokens)
    for doc_tokens in held:
        val.add(doc_tokens)
    val.flush()
    index = {"recipe": recipe, "num_docs": num_docs, "train": train.shards, "val": val.shards}
    assets.atomic_write_bytes(out / INDEX, json.dumps(index, indent=1).encode())
    total = sum(s["tokens"] for s in train.shards + val.shards)
    print(
        f"[cofre_jax] prepared {num_docs} documents ({total} tokens; last {data_cfg.val_docs} "
        f"for validation) in {time.perf_counter() - start:.0f}s",
        flush=True,
    )
    return out


def load_shards(
    data_cfg: DataConfig, tokenizer: Tokenizer
) -> tuple[packing.TokenStream, packing.TokenStream]:
    """(train, validation) streams over the memory-mapped shards in `data.path`."""
    folder = pathlib.Path(data_cfg.path).expanduser()
    if not (folder / INDEX).exists():
        raise DataNotFoundError(
            f"{folder} has no {INDEX}: prepare the shards first with --mode=prepare "
            "(data.raw_source / data.raw_path say where the raw documents are)"
        )
    index = json.loads((folder / INDEX).read_text())
    recipe = index["recipe"]
    if recipe["tokenizer"] != tokenizer.name or recipe["val_docs"] != data_cfg.val_docs:
        raise DataError(
            f"shards in {folder} were prepared with tokenizer={recipe['tokenizer']!r}, "
            f"val_docs={recipe['val_docs']}; the config asks for tokenizer={tokenizer.name!r}, "
            f"val_docs={data_cfg.val_docs}"
        )

    def stream(split: str) -> packing.TokenStream:
        shards = index[split]
        return packing.TokenStream(
            [folder / s["file"] for s in shards], lengths=[s["tokens"] for s in shards]
        )

    return stream("train"), stream("val")
