"""Tokenizers: GPT-2 BPE (tiktoken, from a local file) and UTF-8 bytes.

Both share one id for BOS and EOS, as GPT-2's <|endoftext|> does, and both report
`vocab_size` equal to `TOKENIZER_VOCAB_SIZES[name]`; the model adds MASK after that.
`decode` is for reading model output, so it drops ids outside the tokenizer (MASK)
and the BOS/EOS id, and replaces invalid UTF-8 instead of raising.
"""

from __future__ import annotations

import base64
import os
import pathlib
from collections.abc import Sequence
from typing import Protocol

from cofre_jax.config.choices import TOKENIZERS
from cofre_jax.config.typed import TOKENIZER_VOCAB_SIZES, DataConfig
from cofre_jax.data import assets
from cofre_jax.data.errors import DataError, DataNotFoundError

# GPT-2's pre-tokenisation regex (contractions, letter runs, digit runs, punctuation
# runs, whitespace), as used by r50k_base.
_GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
_GPT2_EOT = "<|endoftext|>"


class Tokenizer(Protocol):
    name: str
    vocab_size: int  # ids the tokenizer emits; BOS/EOS included, MASK not
    bos_id: int
    eos_id: int

    def encode(self, text: str) -> list[int]: ...

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]: ...

    def decode(self, ids: Sequence[int]) -> str: ...


class ByteTokenizer:
    """UTF-8 bytes 0..255 plus one BOS/EOS id 256: tiny vocabulary for CPU runs."""

    name = "byte"
    vocab_size = TOKENIZER_VOCAB_SIZES["byte"]
    bos_id = eos_id = 256

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [list(t.encode("utf-8")) for t in texts]

    def decode(self, ids: Sequence[int]) -> str:
        return bytes(int(i) for i in ids if 0 <= int(i) < 256).decode("utf-8", errors="replace")


class GPT2Tokenizer:
    """GPT-2 BPE through tiktoken, built from a local ranks file (never downloaded by tiktoken).

    Documents are encoded as ordinary text: a literal "<|endoftext|>" inside a document
    is spelled out, never turned into the separator id.
    """

    name = "gpt2"
    vocab_size = TOKENIZER_VOCAB_SIZES["gpt2"]
    bos_id = eos_id = 50256

    def __init__(self, ranks_path: str | os.PathLike):
        import tiktoken

        ranks = load_ranks(pathlib.Path(ranks_path))
        if len(ranks) != self.eos_id:
            raise DataError(
                f"{ranks_path} has {len(ranks)} BPE ranks; GPT-2 has {self.eos_id} "
                "(is it the gpt2 / r50k_base .tiktoken file?)"
            )
        self._enc = tiktoken.Encoding(
            name="gpt2_local",
            pat_str=_GPT2_PATTERN,
            mergeable_ranks=ranks,
            special_tokens={_GPT2_EOT: self.eos_id},
        )

    def encode(self, text: str) -> list[int]:
        return self._enc.encode_ordinary(text)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return self._enc.encode_ordinary_batch(list(texts))

    def decode(self, ids: Sequence[int]) -> str:
        kept = [int(i) for i in ids if 0 <= int(i) < self.eos_id]
        return self._enc.decode(kept, errors="replace")


def load_ranks(path: pathlib.Path) -> dict[bytes, int]:
    """Reads a .tiktoken file: one `base64(token) rank` pair per line."""
    if not path.is_file():
        raise DataNotFoundError(f"GPT-2 BPE file {path} does not exist")
    ranks = {}
    for line in path.read_bytes().splitlines():
        if line.strip():
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


def gpt2_ranks_path(data_cfg: DataConfig) -> pathlib.Path:
    """`data.tokenizer_path` if set, else the cached copy, else fetched from openai-whisper."""
    if data_cfg.tokenizer_path:
        path = pathlib.Path(data_cfg.tokenizer_path).expanduser()
        if not path.is_file():
            raise DataNotFoundError(
                f"data.tokenizer_path={data_cfg.tokenizer_path!r} is not a file"
            )
        return path
    # The ranks ship inside the openai-whisper sdist (docs/design.md §4), byte-identical to
    # tiktoken's r50k_base; the pinned sha256 is checked when the file is fetched.
    bpe = assets.GPT2_BPE
    return assets.fetch_pypi_file(
        bpe.package,
        bpe.version,
        bpe.member,
        assets.cache_dir(data_cfg),
        sha256=bpe.sha256,
        sdist=True,
    )


def make_tokenizer(data_cfg: DataConfig) -> Tokenizer:
    """The tokenizer `data.tokenizer` names: "gpt2" or "byte"."""
    if data_cfg.tokenizer == "byte":
        return ByteTokenizer()
    if data_cfg.tokenizer == "gpt2":
        return GPT2Tokenizer(gpt2_ranks_path(data_cfg))
    if data_cfg.tokenizer == "synthetic":
        from cofre_jax.data.synthetic import SyntheticTokenizer

        return SyntheticTokenizer(data_cfg.synthetic_vocab)
    raise DataError(f"unknown tokenizer {data_cfg.tokenizer!r}; valid choices: {TOKENIZERS}")
