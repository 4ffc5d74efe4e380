"""Small scorer LMs for tests: random `transformers` Llama models, written as llama.cpp's
converter writes GGUF files, with byte-level BPE vocabularies trained on the spot."""

import gguf
import numpy as np
import torch
import transformers


def llama_model(tie: bool, vocab_size: int = 96):
    torch.manual_seed(1)
    cfg = transformers.LlamaConfig(
        vocab_size=vocab_size,
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


def llama_cpp_permute(w_OxI, n_head):
    """llama.cpp's convert_hf_to_gguf `LlamaModel.permute` of a Q or K weight."""
    return (
        w_OxI.reshape(n_head, 2, w_OxI.shape[0] // n_head // 2, *w_OxI.shape[1:])
        .swapaxes(1, 2)
        .reshape(w_OxI.shape)
    )


def write_gguf(model, path, vocab=None):
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
                t = llama_cpp_permute(t, H)
            elif ours == "attn_k":
                t = llama_cpp_permute(t, K)
            w.add_tensor(f"blk.{i}.{ours}.weight", np.ascontiguousarray(t))
    w.add_tensor("output_norm.weight", sd["model.norm.weight"])
    if not c.tie_word_embeddings:
        w.add_tensor("output.weight", sd["lm_head.weight"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def train_bpe(texts, vocab_size: int = 300):
    """A byte-level BPE (`tokenizers`) trained on `texts`, and its GGUF vocabulary
    (tokens, merges, token types) with <|endoftext|> as the one control token."""
    import json

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(
        texts,
        trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=["<|endoftext|>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        ),
    )
    state = json.loads(bpe.to_str())["model"]
    vocab = sorted(state["vocab"].items(), key=lambda kv: kv[1])
    tokens = [t for t, _ in vocab]
    assert [i for _, i in vocab] == list(range(len(tokens)))
    merges = [m if isinstance(m, str) else " ".join(m) for m in state["merges"]]
    return bpe, (tokens, merges, [3] + [1] * (len(tokens) - 1))


def write_tiny_scorer(path, texts) -> str:
    """A random tiny Llama with a BPE trained on `texts`, as one GGUF file."""
    bpe, vocab = train_bpe(texts)
    write_gguf(llama_model(True, vocab_size=len(vocab[0])), path, vocab)
    return str(path)
