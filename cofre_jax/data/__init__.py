"""Text data: tokenizers, document sources, packed-row grain pipelines, OWT shards."""

from cofre_jax.data.assets import cache_dir, fetch_pypi_file, fetch_pypi_files
from cofre_jax.data.owt import load_shards, prepare_owt
from cofre_jax.data.packing import PackedRows, TokenStream, split_last_docs, tokenize_documents
from cofre_jax.data.pipeline import (
    describe,
    load_token_splits,
    make_eval_batches,
    make_train_iterator,
)
from cofre_jax.data.sources import SOURCES, iter_documents, load_documents
from cofre_jax.data.tokenizers import ByteTokenizer, GPT2Tokenizer, Tokenizer, make_tokenizer

__all__ = [
    "SOURCES",
    "ByteTokenizer",
    "GPT2Tokenizer",
    "PackedRows",
    "TokenStream",
    "Tokenizer",
    "cache_dir",
    "describe",
    "fetch_pypi_file",
    "fetch_pypi_files",
    "iter_documents",
    "load_documents",
    "load_shards",
    "load_token_splits",
    "make_eval_batches",
    "make_tokenizer",
    "make_train_iterator",
    "prepare_owt",
    "split_last_docs",
    "tokenize_documents",
]
