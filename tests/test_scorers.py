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


def _llama_model(tie: bool):
    torch.manual_seed(1)
    cfg = transformers.LlamaConfig(
        vocab_size=96,
        hidden_size=48,
        intermediate_size=80,
        num_hidden_layers=2,
        num_attention_heads=6,
        num_key_value_heads=2,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        max_position_embeddings=64,
        tie_word_embeddings=tie,
    )
    model = transformers.LlamaForCausalLM(cfg).eval()
    with torch.no_grad():  # random norms, so a swapped or missing norm weight shows up
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(0.3 * torch.randn_like(p))
    return model


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
    model = _llama_model(tie)
    model.save_pretrained(tmp_path)
    cfg, params = llama.load_hf_llama(str(tmp_path))
    assert (params["lm_head_DxV"] is None) == tie
    ours = np.asarray(llama.llama_logits(params, TOKENS_BxS, cfg))
    np.testing.assert_allclose(ours, _torch_logits(model, TOKENS_BxS), rtol=1e-4, atol=1e-4)


def _llama_cpp_permute(w_OxI, n_head):
    """llama.cpp's convert_hf_to_gguf `LlamaModel.permute` of a Q or K weight."""
    return (
        w_OxI.reshape(n_head, 2, w_OxI.shape[0] // n_head // 2, *w_OxI.shape[1:])
        .swapaxes(1, 2)
        .reshape(w_OxI.shape)
    )


def _write_gguf(model, path, vocab=None):
    """The model as llama.cpp's converter lays it out: names, metadata, Q/K permuted."""
    c = model.config
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(c.num_hidden_layers)
    w.add_context_length(c.max_position_embeddings)
    w.add_embedding_length(c.hidden_size)
    w.add_feed_forward_length(c.intermediate_size)
    w.add_head_count(c.num_attention_heads)
    w.add_head_count_kv(c.num_key_value_heads)
    w.add_layer_norm_rms_eps(c.rms_norm_eps)
    w.add_rope_freq_base(c.rope_theta if hasattr(c, "rope_theta") else 10000.0)
    if vocab is not None:
        tokens, merges, types = vocab
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre("gpt-2")
        w.add_token_list(tokens)
        w.add_token_merges(merges)
        w.add_token_types(types)
        w.add_eos_token_id(0)
    sd = {k: v.numpy().astype(np.float32) for k, v in model.state_dict().items()}
    H, K = c.num_attention_heads, c.num_key_value_heads
    names = {
        "input_layernorm": "attn_norm",
        "self_attn.q_proj": "attn_q",
        "self_attn.k_proj": "attn_k",
        "self_attn.v_proj": "attn_v",
        "self_attn.o_proj": "attn_output",
        "post_attention_layernorm": "ffn_norm",
        "mlp.gate_proj": "ffn_gate",
        "mlp.up_proj": "ffn_up",
        "mlp.down_proj": "ffn_down",
    }
    w.add_tensor("token_embd.weight", sd["model.embed_tokens.weight"])
    for i in range(c.num_hidden_layers):
        for hf, ours in names.items():
            t = sd[f"model.layers.{i}.{hf}.weight"]
            if ours == "attn_q":
                t = _llama_cpp_permute(t, H)
            elif ours == "attn_k":
                t = _llama_cpp_permute(t, K)
            w.add_tensor(f"blk.{i}.{ours}.weight", np.ascontiguousarray(t))
    w.add_tensor("output_norm.weight", sd["model.norm.weight"])
    if not c.tie_word_embeddings:
        w.add_tensor("output.weight", sd["lm_head.weight"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


@pytest.mark.parametrize("tie", [False, True])
def test_gguf_and_folder_loaders_agree(tmp_path, tie):
    model = _llama_model(tie)
    model.save_pretrained(tmp_path / "hf")
    _write_gguf(model, tmp_path / "m.gguf")
    cfg_hf, params_hf = llama.load_hf_llama(str(tmp_path / "hf"))
    cfg_gguf, params_gguf = llama.load_gguf_llama(str(tmp_path / "m.gguf"))
    # GGUF stores the epsilon as float32; everything else is exact.
    assert dataclasses.replace(cfg_gguf, rms_norm_eps=cfg_hf.rms_norm_eps) == cfg_hf
    np.testing.assert_allclose(cfg_gguf.rms_norm_eps, cfg_hf.rms_norm_eps, rtol=1e-7)
    logits_hf = np.asarray(llama.llama_logits(params_hf, TOKENS_BxS, cfg_hf))
    logits_gguf = np.asarray(llama.llama_logits(params_gguf, TOKENS_BxS, cfg_gguf))
    np.testing.assert_allclose(logits_gguf, logits_hf, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(logits_gguf, _torch_logits(model, TOKENS_BxS), rtol=1e-4, atol=1e-4)


def test_unpermute_inverts_llama_cpp_permute():
    w_OxI = np.arange(24 * 5, dtype=np.float32).reshape(24, 5)
    for heads in (1, 2, 3, 6):
        permuted = _llama_cpp_permute(w_OxI, heads)
        assert not np.array_equal(permuted, w_OxI)
        np.testing.assert_array_equal(llama.unpermute_qk(permuted, heads), w_OxI)


def test_gguf_tokenizer_equals_the_bpe_it_was_written_from(tmp_path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    corpus = [
        "The quick brown fox jumps over the lazy dog. " * 3,
        "Masked diffusion models reveal tokens step by step, 1234 times!",
        "It's a test: they're here, we'll see.",
    ]
    bpe.train_from_iterator(
        corpus,
        trainers.BpeTrainer(
            vocab_size=300,
            special_tokens=["<|endoftext|>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        ),
    )
    state = json.loads(bpe.to_str())["model"]
    vocab = sorted(state["vocab"].items(), key=lambda kv: kv[1])
    tokens = [t for t, _ in vocab]
    assert [i for _, i in vocab] == list(range(len(tokens)))
    merges = [m if isinstance(m, str) else " ".join(m) for m in state["merges"]]
    types = [3] + [1] * (len(tokens) - 1)
    _write_gguf(_llama_model(True), tmp_path / "v.gguf", (tokens, merges, types))
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
            "Ids", (), {"encode": staticmethod(lambda text: [int(t) for t in text.split()])}
        )
        self.scorer = scorer.Scorer("uniform", "test", {}, logits_fn, tokenizer, eos_id, context, 0)


def test_gen_ppl_of_a_uniform_scorer_is_the_vocabulary_size():
    s = _Uniform(V=50).scorer
    out = scorer.generative_perplexity(s, ["1 2 3 4 5", "7 8 9"], max_length=100, batch_size=4)
    assert out["scored_tokens"] == 4 + 2
    # Per-token log-probs are float32 (summed in float64), hence float32's tolerance.
    np.testing.assert_allclose(out["gen_ppl"], 50.0, rtol=1e-6)
    np.testing.assert_allclose(out["gen_nll_per_token"], np.log(50.0), rtol=1e-6)


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
            os.path.dirname(__file__), "..", ".cache"
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
