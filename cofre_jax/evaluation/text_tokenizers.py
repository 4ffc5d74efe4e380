"""Scorer-LM tokenizers: byte-level BPE rebuilt from GGUF metadata or read from a
Hugging Face folder's tokenizer.json (through the `tokenizers` package), and GPT-2's
BPE resolved offline (cofre_jax.data.tokenizers, docs/design.md §4)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Protocol

from cofre_jax.evaluation.hf_folder import ScorerLoadError

# GGUF token types (gguf.TokenType): 3 is CONTROL, a special token such as <|im_end|>.
_CONTROL = 3
# Pre-tokenisers of byte-level BPE vocabularies in GGUF files (llama.cpp's
# tokenizer.ggml.pre names) that we rebuild exactly.
GGUF_PRE_TOKENIZERS = ("gpt-2", "default", "smollm")


class TextTokenizer(Protocol):
    def encode(self, text: str) -> list[int]: ...

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]: ...

    def decode(self, ids: Sequence[int]) -> str: ...


class HFTokenizer:
    """A `tokenizers.Tokenizer`, encoding plain text (no BOS/EOS added)."""

    def __init__(self, tokenizer):
        self._tok = tokenizer

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        encoded = self._tok.encode_batch(list(texts), add_special_tokens=False)
        return [e.ids for e in encoded]

    def decode(self, ids: Sequence[int]) -> str:
        return self._tok.decode(list(ids))


def tokenizer_from_gguf(reader, path: str) -> HFTokenizer:
    """The byte-level BPE of a GGUF file's metadata (tokenizer.ggml.*)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    from cofre_jax.evaluation.llama import gguf_field

    model_name = gguf_field(reader, "tokenizer.ggml.model")
    pre = gguf_field(reader, "tokenizer.ggml.pre", "default")
    if model_name != "gpt2" or pre not in GGUF_PRE_TOKENIZERS:
        raise ScorerLoadError(
            f"{path}: tokenizer {model_name!r} with pre-tokenizer {pre!r} is not supported "
            f"(byte-level BPE 'gpt2' with {GGUF_PRE_TOKENIZERS}); give a Hugging Face "
            "folder with tokenizer.json instead"
        )
    tokens = list(gguf_field(reader, "tokenizer.ggml.tokens"))
    merges = [tuple(m.split(" ", 1)) for m in gguf_field(reader, "tokenizer.ggml.merges")]
    types = list(gguf_field(reader, "tokenizer.ggml.token_type", [1] * len(tokens)))
    tok = Tokenizer(models.BPE({t: i for i, t in enumerate(tokens)}, merges))
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if pre == "smollm":  # SmolLM splits every digit off before GPT-2's regex
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Digits(individual_digits=True), byte_level]
        )
    else:
        tok.pre_tokenizer = byte_level
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([t for t, token_type in zip(tokens, types) if token_type == _CONTROL])
    return HFTokenizer(tok)


def tokenizer_from_folder(folder: str) -> HFTokenizer:
    from tokenizers import Tokenizer

    path = os.path.join(folder, "tokenizer.json")
    if not os.path.isfile(path):
        raise ScorerLoadError(f"{folder}: no tokenizer.json for the scorer's tokenizer")
    return HFTokenizer(Tokenizer.from_file(path))
