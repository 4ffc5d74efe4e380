"""The GPT-2 family as a scorer LM (GPT-2 Large is the published one): a pure-JAX forward
pass and a loader of Hugging Face folders (config.json plus safetensors or PyTorch
weights; GPT-2's Conv1D stores its matrices [in, out], as this code uses them).

Legend: B batch, S tokens, D hidden, H heads, E head dim, V vocabulary, N layers.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from cofre_jax.evaluation.hf_folder import ScorerLoadError, read_hf_config, read_hf_weights
from cofre_jax.evaluation.llama import causal_attention


@dataclasses.dataclass(frozen=True)
class GPT2Config:
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    layer_norm_eps: float
    max_positions: int


def layer_norm(x_BxSxD, scale_D, bias_D, eps: float):
    mean_BxSx1 = jnp.mean(x_BxSxD, axis=-1, keepdims=True)
    var_BxSx1 = jnp.mean(jnp.square(x_BxSxD - mean_BxSx1), axis=-1, keepdims=True)
    return (x_BxSxD - mean_BxSx1) * jax.lax.rsqrt(var_BxSx1 + eps) * scale_D + bias_D


def gpt2_logits(params: dict[str, Any], tokens_BxS, cfg: GPT2Config):
    """Next-token logits (float32), causal; the head is tied to the token embedding."""
    B, S = tokens_BxS.shape
    H, E, eps = cfg.num_heads, cfg.hidden_size // cfg.num_heads, cfg.layer_norm_eps
    h_BxSxD = params["wte_VxD"][tokens_BxS] + params["wpe_PxD"][:S]

    def layer(h_BxSxD, p):
        x_BxSxD = layer_norm(h_BxSxD, p["ln1_scale_D"], p["ln1_bias_D"], eps)
        qkv_BxSx3D = x_BxSxD @ p["attn_w_Dx3D"] + p["attn_b_3D"]
        q_BxSxD, k_BxSxD, v_BxSxD = jnp.split(qkv_BxSx3D, 3, axis=-1)
        heads = lambda x: x.reshape(B, S, H, E)  # noqa: E731
        a_BxSxHxE = causal_attention(heads(q_BxSxD), heads(k_BxSxD), heads(v_BxSxD))
        h_BxSxD = h_BxSxD + a_BxSxHxE.reshape(B, S, H * E) @ p["proj_w_DxD"] + p["proj_b_D"]
        x_BxSxD = layer_norm(h_BxSxD, p["ln2_scale_D"], p["ln2_bias_D"], eps)
        # GPT-2's "gelu_new" is the tanh approximation.
        u_BxSx4D = jax.nn.gelu(x_BxSxD @ p["fc_w_Dx4D"] + p["fc_b_4D"], approximate=True)
        h_BxSxD = h_BxSxD + u_BxSx4D @ p["fc_proj_w_4DxD"] + p["fc_proj_b_D"]
        return h_BxSxD, None

    h_BxSxD, _ = jax.lax.scan(layer, h_BxSxD, params["layers"])
    h_BxSxD = layer_norm(h_BxSxD, params["lnf_scale_D"], params["lnf_bias_D"], eps)
    return h_BxSxD @ params["wte_VxD"].T


_LAYER_NAMES = {  # our name -> Hugging Face name under h.<i>.
    "ln1_scale_D": "ln_1.weight",
    "ln1_bias_D": "ln_1.bias",
    "attn_w_Dx3D": "attn.c_attn.weight",
    "attn_b_3D": "attn.c_attn.bias",
    "proj_w_DxD": "attn.c_proj.weight",
    "proj_b_D": "attn.c_proj.bias",
    "ln2_scale_D": "ln_2.weight",
    "ln2_bias_D": "ln_2.bias",
    "fc_w_Dx4D": "mlp.c_fc.weight",
    "fc_b_4D": "mlp.c_fc.bias",
    "fc_proj_w_4DxD": "mlp.c_proj.weight",
    "fc_proj_b_D": "mlp.c_proj.bias",
}


def load_hf_gpt2(folder: str) -> tuple[GPT2Config, dict[str, Any]]:
    """A Hugging Face GPT2LMHeadModel (or GPT2Model) folder."""
    hf = read_hf_config(folder)
    cfg = GPT2Config(
        vocab_size=hf["vocab_size"],
        hidden_size=hf["n_embd"],
        num_layers=hf["n_layer"],
        num_heads=hf["n_head"],
        layer_norm_eps=hf.get("layer_norm_epsilon", 1e-5),
        max_positions=hf["n_positions"],
    )
    w = {k.removeprefix("transformer."): v for k, v in read_hf_weights(folder).items()}

    def get(name):
        if name not in w:
            raise ScorerLoadError(f"{folder}: weight {name!r} missing (is it a GPT-2 model?)")
        return np.asarray(w[name], np.float32)

    layers = [
        {ours: get(f"h.{i}.{theirs}") for ours, theirs in _LAYER_NAMES.items()}
        for i in range(cfg.num_layers)
    ]
    params = {
        "wte_VxD": jnp.asarray(get("wte.weight")),
        "wpe_PxD": jnp.asarray(get("wpe.weight")),
        "lnf_scale_D": jnp.asarray(get("ln_f.weight")),
        "lnf_bias_D": jnp.asarray(get("ln_f.bias")),
        "layers": {k: jnp.asarray(np.stack([p[k] for p in layers])) for k in _LAYER_NAMES},
    }
    return cfg, params
