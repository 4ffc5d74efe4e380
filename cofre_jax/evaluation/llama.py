"""The Llama family as a scorer LM: a pure-JAX forward pass and two loaders.

Loaders read a Hugging Face folder (config.json + safetensors or PyTorch weights) or a
GGUF file, dequantised by the `gguf` package. GGUF files from llama.cpp's converter
store the Q and K projections with their rows permuted (its `permute`, which turns
Hugging Face's split-halves rotary layout into interleaved pairs); `unpermute_qk` undoes
it, so both loaders give the Hugging Face layout and one forward pass serves both.

Legend: B batch, S tokens, D hidden, H query heads, K key/value heads, E head dim,
F feed-forward width, V vocabulary, N layers.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from cofre_jax.evaluation.hf_folder import ScorerLoadError, read_hf_config, read_hf_weights


@dataclasses.dataclass(frozen=True)
class LlamaConfig:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    rms_norm_eps: float
    rope_theta: float
    max_positions: int

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads


def rms_norm(x_BxSxD, weight_D, eps: float):
    variance_BxSx1 = jnp.mean(jnp.square(x_BxSxD), axis=-1, keepdims=True)
    return x_BxSxD * jax.lax.rsqrt(variance_BxSx1 + eps) * weight_D


def _rotary(S: int, E: int, theta: float):
    inv_freq = 1.0 / (theta ** (np.arange(0, E, 2, dtype=np.float64) / E))
    angles_SxE2 = np.arange(S, dtype=np.float64)[:, None] * inv_freq[None, :]
    angles_SxE = np.concatenate([angles_SxE2, angles_SxE2], axis=-1)
    return jnp.asarray(np.cos(angles_SxE), jnp.float32), jnp.asarray(
        np.sin(angles_SxE), jnp.float32
    )


def _rotate(x_BxSxHxE, cos_SxE, sin_SxE):
    half = x_BxSxHxE.shape[-1] // 2
    rotated = jnp.concatenate([-x_BxSxHxE[..., half:], x_BxSxHxE[..., :half]], axis=-1)
    return x_BxSxHxE * cos_SxE[:, None, :] + rotated * sin_SxE[:, None, :]


def causal_attention(q_BxSxHxE, k_BxSxHxE, v_BxSxHxE):
    S, E = q_BxSxHxE.shape[1], q_BxSxHxE.shape[-1]
    scores_BxHxSxS = jnp.einsum("bqhe,bkhe->bhqk", q_BxSxHxE, k_BxSxHxE) / np.sqrt(E)
    causal_SxS = np.tril(np.ones((S, S), bool))
    scores_BxHxSxS = jnp.where(causal_SxS, scores_BxHxSxS, -jnp.inf)
    weights_BxHxSxS = jax.nn.softmax(scores_BxHxSxS, axis=-1)
    return jnp.einsum("bhqk,bkhe->bqhe", weights_BxHxSxS, v_BxSxHxE)


def llama_logits(params: dict[str, Any], tokens_BxS, cfg: LlamaConfig):
    """Next-token logits (float32). Causal, so right padding never changes real positions."""
    B, S = tokens_BxS.shape
    H, K, E = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    cos_SxE, sin_SxE = _rotary(S, E, cfg.rope_theta)
    h_BxSxD = params["embed_VxD"][tokens_BxS]

    def layer(h_BxSxD, p):
        x_BxSxD = rms_norm(h_BxSxD, p["attn_norm_D"], cfg.rms_norm_eps)
        q_BxSxHxE = (x_BxSxD @ p["wq_DxHE"]).reshape(B, S, H, E)
        k_BxSxKxE = (x_BxSxD @ p["wk_DxKE"]).reshape(B, S, K, E)
        v_BxSxKxE = (x_BxSxD @ p["wv_DxKE"]).reshape(B, S, K, E)
        q_BxSxHxE = _rotate(q_BxSxHxE, cos_SxE, sin_SxE)
        k_BxSxKxE = _rotate(k_BxSxKxE, cos_SxE, sin_SxE)
        # Grouped-query attention: each key/value head serves H / K query heads.
        k_BxSxHxE = jnp.repeat(k_BxSxKxE, H // K, axis=2)
        v_BxSxHxE = jnp.repeat(v_BxSxKxE, H // K, axis=2)
        a_BxSxHxE = causal_attention(q_BxSxHxE, k_BxSxHxE, v_BxSxHxE)
        h_BxSxD = h_BxSxD + a_BxSxHxE.reshape(B, S, H * E) @ p["wo_HExD"]
        x_BxSxD = rms_norm(h_BxSxD, p["ffn_norm_D"], cfg.rms_norm_eps)
        gate_BxSxF = jax.nn.silu(x_BxSxD @ p["w_gate_DxF"])
        h_BxSxD = h_BxSxD + (gate_BxSxF * (x_BxSxD @ p["w_up_DxF"])) @ p["w_down_FxD"]
        return h_BxSxD, None

    h_BxSxD, _ = jax.lax.scan(layer, h_BxSxD, params["layers"])
    h_BxSxD = rms_norm(h_BxSxD, params["final_norm_D"], cfg.rms_norm_eps)
    if params["lm_head_DxV"] is None:  # tied to the embedding
        return h_BxSxD @ params["embed_VxD"].T
    return h_BxSxD @ params["lm_head_DxV"]


# Our per-layer names -> (Hugging Face name, GGUF name). Matrices are stored [out, in]
# by both and used [in, out] here; GGUF's Q and K rows are also permuted (unpermute_qk).
_LAYER_NAMES = {
    "attn_norm_D": ("input_layernorm.weight", "attn_norm.weight"),
    "wq_DxHE": ("self_attn.q_proj.weight", "attn_q.weight"),
    "wk_DxKE": ("self_attn.k_proj.weight", "attn_k.weight"),
    "wv_DxKE": ("self_attn.v_proj.weight", "attn_v.weight"),
    "wo_HExD": ("self_attn.o_proj.weight", "attn_output.weight"),
    "ffn_norm_D": ("post_attention_layernorm.weight", "ffn_norm.weight"),
    "w_gate_DxF": ("mlp.gate_proj.weight", "ffn_gate.weight"),
    "w_up_DxF": ("mlp.up_proj.weight", "ffn_up.weight"),
    "w_down_FxD": ("mlp.down_proj.weight", "ffn_down.weight"),
}


def _layer(get, layout: str, unpermute_heads: dict[str, int] | None = None) -> dict:
    column = {"hf": 0, "gguf": 1}[layout]
    out = {}
    for ours, names in _LAYER_NAMES.items():
        w = get(names[column])
        if ours in (unpermute_heads or {}):
            w = unpermute_qk(w, unpermute_heads[ours])
        out[ours] = w if w.ndim == 1 else w.T
    return out


def _stack_layers(per_layer: list[dict[str, np.ndarray]]) -> dict[str, jnp.ndarray]:
    return {name: jnp.asarray(np.stack([p[name] for p in per_layer])) for name in per_layer[0]}


def _params(embed, final_norm, lm_head, per_layer) -> dict[str, Any]:
    return {
        "embed_VxD": jnp.asarray(embed, jnp.float32),
        "final_norm_D": jnp.asarray(final_norm, jnp.float32),
        "lm_head_DxV": None if lm_head is None else jnp.asarray(lm_head, jnp.float32),
        "layers": _stack_layers(per_layer),
    }


def load_hf_llama(folder: str) -> tuple[LlamaConfig, dict[str, Any]]:
    """A Hugging Face LlamaForCausalLM folder: config.json plus its weight files."""
    hf = read_hf_config(folder)
    num_heads = hf["num_attention_heads"]
    cfg = LlamaConfig(
        vocab_size=hf["vocab_size"],
        hidden_size=hf["hidden_size"],
        intermediate_size=hf["intermediate_size"],
        num_layers=hf["num_hidden_layers"],
        num_heads=num_heads,
        num_kv_heads=hf.get("num_key_value_heads") or num_heads,
        rms_norm_eps=hf.get("rms_norm_eps", 1e-6),
        rope_theta=_hf_rope_theta(hf),
        max_positions=hf.get("max_position_embeddings", 2048),
    )
    w = read_hf_weights(folder)
    w = {name.removeprefix("model."): value for name, value in w.items()}

    def get(name):
        if name not in w:
            raise ScorerLoadError(f"{folder}: weight {name!r} missing (is it a Llama model?)")
        return np.asarray(w[name], np.float32)

    per_layer = [_layer(lambda n, i=i: get(f"layers.{i}.{n}"), "hf") for i in range(cfg.num_layers)]
    embed = get("embed_tokens.weight")
    head = get("lm_head.weight").T if "lm_head.weight" in w else None  # None: tied
    return cfg, _params(embed, get("norm.weight"), head, per_layer)


def _hf_rope_theta(hf: dict) -> float:
    if "rope_theta" in hf:
        return float(hf["rope_theta"])
    scaling = hf.get("rope_parameters") or {}  # newer transformers nest it here
    return float(scaling.get("rope_theta", 10000.0))


def unpermute_qk(w_OxI: np.ndarray, n_heads: int) -> np.ndarray:
    """Inverse of llama.cpp's convert `permute` of a [out, in] Q or K weight."""
    out = w_OxI.shape[0]
    return (
        w_OxI.reshape(n_heads, out // n_heads // 2, 2, *w_OxI.shape[1:])
        .swapaxes(1, 2)
        .reshape(w_OxI.shape)
    )


def gguf_field(reader, key: str, default: Any = None) -> Any:
    field = reader.fields.get(key)
    if field is None:
        if default is None:
            raise ScorerLoadError(f"GGUF metadata lacks {key!r}")
        return default
    return field.contents()


def load_gguf_llama(path: str, reader=None) -> tuple[LlamaConfig, dict[str, Any]]:
    """A llama-architecture GGUF file, every tensor dequantised to float32 by `gguf`."""
    import gguf

    reader = reader or gguf.GGUFReader(path)
    arch = gguf_field(reader, "general.architecture")
    if arch != "llama":
        raise ScorerLoadError(f"{path}: GGUF architecture {arch!r}; only 'llama' is supported")
    tensors = {t.name: t for t in reader.tensors}

    def get(name: str) -> np.ndarray:
        if name not in tensors:
            raise ScorerLoadError(f"{path}: tensor {name!r} missing")
        t = tensors[name]
        # Shapes are stored innermost-first; the reader's arrays are already [out, in].
        return np.asarray(gguf.quants.dequantize(t.data, t.tensor_type), np.float32)

    num_heads = int(gguf_field(reader, "llama.attention.head_count"))
    num_kv_heads = int(gguf_field(reader, "llama.attention.head_count_kv", num_heads))
    embed = get("token_embd.weight")
    cfg = LlamaConfig(
        vocab_size=embed.shape[0],
        hidden_size=int(gguf_field(reader, "llama.embedding_length")),
        intermediate_size=int(gguf_field(reader, "llama.feed_forward_length")),
        num_layers=int(gguf_field(reader, "llama.block_count")),
        num_heads=num_heads,
        num_kv_heads=num_kv_heads,
        rms_norm_eps=float(gguf_field(reader, "llama.attention.layer_norm_rms_epsilon")),
        rope_theta=float(gguf_field(reader, "llama.rope.freq_base", 10000.0)),
        max_positions=int(gguf_field(reader, "llama.context_length", 2048)),
    )
    heads = {"wq_DxHE": num_heads, "wk_DxKE": num_kv_heads}
    per_layer = [
        _layer(lambda n, i=i: get(f"blk.{i}.{n}"), "gguf", unpermute_heads=heads)
        for i in range(cfg.num_layers)
    ]
    head = get("output.weight").T if "output.weight" in tensors else None  # None: tied
    return cfg, _params(embed, get("output_norm.weight"), head, per_layer)
