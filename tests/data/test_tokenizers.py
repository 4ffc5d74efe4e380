"""Tokenizers: vocabulary sizes, round trips, golden GPT-2 ids, decode of model output."""

import dataclasses

import pytest
from test_pipeline import data_cfg

from cofre_jax import data
from cofre_jax.config.typed import TOKENIZER_VOCAB_SIZES

TEXT = "Fixed points, façades and 🙂 emoji.\n\tTabs, 'quotes' & digits 12345."


@pytest.fixture(scope="module")
def gpt2():
    # First use fetches the openai-whisper sdist from PyPI into the cache (~1 MB).
    return data.make_tokenizer(data_cfg(tokenizer="gpt2"))


def test_byte_tokenizer_round_trip_and_ids():
    tok = data.make_tokenizer(data_cfg(tokenizer="byte"))
    assert tok.vocab_size == TOKENIZER_VOCAB_SIZES["byte"] == 257
    assert tok.bos_id == tok.eos_id == 256
    ids = tok.encode(TEXT)
    assert ids == list(TEXT.encode("utf-8")) and max(ids) < 256
    assert tok.decode(ids) == TEXT
    assert tok.encode_batch([TEXT, "ab"]) == [ids, [97, 98]]


def test_byte_decode_drops_specials_and_replaces_bad_utf8():
    tok = data.ByteTokenizer()
    mask = tok.vocab_size  # the model's MASK id comes right after the tokenizer's ids
    assert tok.decode([256, 104, mask, 105, 256]) == "hi"
    assert tok.decode([104, 0xFF, 105]) == "h\ufffdi"


def test_gpt2_golden_ids_and_round_trip(gpt2):
    # Golden ids of GPT-2 BPE; they change only if the ranks file or pattern is wrong.
    assert gpt2.encode("Hello world") == [15496, 995]
    assert gpt2.vocab_size == TOKENIZER_VOCAB_SIZES["gpt2"] == 50257
    assert gpt2.bos_id == gpt2.eos_id == 50256
    ids = gpt2.encode(TEXT)
    assert gpt2.decode(ids) == TEXT
    assert gpt2.encode_batch([TEXT, "Hello world"]) == [ids, [15496, 995]]


def test_gpt2_treats_endoftext_in_documents_as_text(gpt2):
    ids = gpt2.encode("a<|endoftext|>b")
    assert gpt2.eos_id not in ids
    assert gpt2.decode(ids) == "a<|endoftext|>b"


def test_gpt2_decode_drops_specials_and_replaces_bad_utf8(gpt2):
    mask = gpt2.vocab_size
    hello = gpt2.encode("Hello world")
    assert gpt2.decode([gpt2.bos_id, *hello, mask, gpt2.eos_id]) == "Hello world"
    # The first byte-token of a 4-byte emoji alone is invalid UTF-8.
    partial = gpt2.encode("🙂")[:1]
    assert "\ufffd" in gpt2.decode(partial)


def test_gpt2_tokenizer_path_override(gpt2, tmp_path):
    ranks = data.tokenizers.gpt2_ranks_path(data_cfg(tokenizer="gpt2"))
    copy = tmp_path / "my.tiktoken"
    copy.write_bytes(ranks.read_bytes())
    tok = data.make_tokenizer(data_cfg(tokenizer="gpt2", tokenizer_path=str(copy)))
    assert tok.encode("Hello world") == [15496, 995]
    with pytest.raises(FileNotFoundError, match="tokenizer_path"):
        data.make_tokenizer(data_cfg(tokenizer="gpt2", tokenizer_path=str(tmp_path / "no")))
    copy.write_bytes(b"SGVsbG8= 0\n")  # a valid file with one rank is not GPT-2
    with pytest.raises(ValueError, match="BPE ranks"):
        data.make_tokenizer(data_cfg(tokenizer="gpt2", tokenizer_path=str(copy)))


def test_unknown_tokenizer_is_a_clear_error():
    cfg = dataclasses.replace(data_cfg(), tokenizer="sentencepiece")
    with pytest.raises(ValueError, match=r"unknown tokenizer 'sentencepiece'.*gpt2.*byte"):
        data.make_tokenizer(cfg)
