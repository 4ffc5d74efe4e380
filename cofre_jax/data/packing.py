"""Token streams and packed rows (docs/method.md §2.1).

Every document is followed by one EOS, and the documents of a split are concatenated
into one stream: `doc0 EOS doc1 EOS ... docN EOS`. The stream is cut into consecutive
chunks of seq_len - 2 tokens, each framed as a row `[BOS] + chunk + [EOS]`; row i+1
continues exactly where row i stopped, and only the final partial chunk (fewer than
seq_len - 2 tokens) is dropped.

Legend: L = seq_len, C = L - 2 (tokens of text per row), T = tokens in a stream.
"""

from __future__ import annotations

import bisect
import os
import time
from collections.abc import Iterable, Sequence

import numpy as np

from cofre_jax.data.errors import DataError
from cofre_jax.data.tokenizers import Tokenizer

TOKEN_DTYPE = np.uint16  # both vocabularies (50257, 257) fit; halves memory and disk


def tokenize_documents(
    docs: Iterable[str], tokenizer: Tokenizer, *, chunk_docs: int = 1024, label: str = ""
) -> tuple[np.ndarray, np.ndarray]:
    """Documents -> (tokens_T uint16 with an EOS after each document, doc_ends_N int64).

    doc_ends[i] is the stream offset just past document i's EOS.
    """
    if tokenizer.vocab_size > np.iinfo(TOKEN_DTYPE).max + 1:
        raise DataError(f"tokenizer {tokenizer.name} has too many ids for {TOKEN_DTYPE}")
    eos = np.array([tokenizer.eos_id], TOKEN_DTYPE)
    pieces: list[np.ndarray] = []
    lengths: list[int] = []
    batch: list[str] = []
    start = last_print = time.perf_counter()
    total = 0

    def flush():
        nonlocal last_print, total
        for ids in tokenizer.encode_batch(batch):
            pieces.append(np.asarray(ids, TOKEN_DTYPE))
            pieces.append(eos)
            lengths.append(len(ids) + 1)
            total += len(ids) + 1
        batch.clear()
        now = time.perf_counter()
        if label and now - last_print > 10:  # long corpora: show that work is progressing
            print(
                f"[cofre_jax] tokenizing {label}: {len(lengths)} documents, "
                f"{total} tokens, {now - start:.0f}s",
                flush=True,
            )
            last_print = now

    for doc in docs:
        batch.append(doc)
        if len(batch) >= chunk_docs:
            flush()
    if batch:
        flush()
    tokens_T = np.concatenate(pieces) if pieces else np.zeros((0,), TOKEN_DTYPE)
    return tokens_T, np.cumsum(np.asarray(lengths, np.int64))


def split_last_docs(
    tokens_T: np.ndarray, doc_ends_N: np.ndarray, val_docs: int, what: str
) -> tuple[np.ndarray, np.ndarray]:
    """(train stream, validation stream): the last `val_docs` documents are validation."""
    num_docs = len(doc_ends_N)
    if num_docs == 0:
        raise DataError(f"corpus {what} is empty: it has no documents")
    if num_docs <= val_docs:
        raise DataError(
            f"corpus {what} has {num_docs} documents, but data.val_docs={val_docs} are held "
            f"out for validation; use a larger corpus or set data.val_docs < {num_docs}"
        )
    cut = int(doc_ends_N[num_docs - val_docs - 1])
    return tokens_T[:cut], tokens_T[cut:]


class TokenStream:
    """A read-only concatenation of token arrays, in memory or memory-mapped .npy files.

    Files are opened lazily and reopened after pickling, so grain worker processes get
    paths, not copies of a multi-gigabyte stream.
    """

    def __init__(self, parts: Sequence[np.ndarray | str | os.PathLike], lengths=None):
        self._parts = [p if isinstance(p, np.ndarray) else os.fspath(p) for p in parts]
        self._arrays: list[np.ndarray] | None = None
        if lengths is None:
            lengths = [len(a) for a in self._load()]
        self._starts = [0, *np.cumsum(lengths).tolist()]

    def _load(self) -> list[np.ndarray]:
        if self._arrays is None:
            self._arrays = [
                p if isinstance(p, np.ndarray) else np.load(p, mmap_mode="r") for p in self._parts
            ]
        return self._arrays

    def __getstate__(self):
        return {"_parts": self._parts, "_arrays": None, "_starts": self._starts}

    def __len__(self) -> int:
        return self._starts[-1]

    def read(self, start: int, stop: int) -> np.ndarray:
        """Tokens [start, stop) of the concatenation (may span several parts)."""
        arrays = self._load()
        out = []
        part = bisect.bisect_right(self._starts, start) - 1
        while start < stop:
            offset = start - self._starts[part]
            take = min(stop, self._starts[part + 1]) - start
            out.append(arrays[part][offset : offset + take])
            start += take
            part += 1
        return np.concatenate(out) if len(out) != 1 else np.asarray(out[0])


class PackedRows:
    """Random-access rows `[BOS] + stream[i*C:(i+1)*C] + [EOS]` as int32 arrays [L]."""

    def __init__(self, stream: TokenStream, seq_len: int, bos_id: int, eos_id: int):
        if seq_len < 3:
            raise DataError(f"seq_len={seq_len} leaves no room for text between BOS and EOS")
        self.stream, self.seq_len, self.bos_id, self.eos_id = stream, seq_len, bos_id, eos_id
        self.chunk = seq_len - 2

    def __len__(self) -> int:
        return len(self.stream) // self.chunk

    def __getitem__(self, index: int) -> np.ndarray:
        index = int(index)
        if not 0 <= index < len(self):
            raise IndexError(f"row {index} out of range [0, {len(self)})")
        row_L = np.empty((self.seq_len,), np.int32)
        row_L[0], row_L[-1] = self.bos_id, self.eos_id
        row_L[1:-1] = self.stream.read(index * self.chunk, (index + 1) * self.chunk)
        return row_L
