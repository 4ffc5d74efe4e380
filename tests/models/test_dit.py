"""MDLM DiT: structure, parameter counts, invariants, and a NumPy reference forward."""

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cofre_jax.config.typed import ModelConfig
from cofre_jax.models import DiT, build_model, count_params, param_groups
from cofre_jax.models.layers import apply_rotary, rotary_tables

TINY = ModelConfig(
    kind="mdlm",
    vocab_size=11,  # 10 tokens + MASK
    hidden_size=32,
    num_layers=2,
    num_heads=4,
    mlp_ratio=4,
    cond_dim=16,
    time_conditioning=True,
    dropout=0.1,
    dtype="float32",
    param_dtype="float32",
    k_pre=1,  # fp_mdlm fields, unused by the MDLM stack
    k_fp=1,
    k_post=1,
    injection="fpdm",
)
B, L = 2, 8


def _inputs(seed=0):
    tokens_BxL = jax.random.randint(jax.random.PRNGKey(seed), (B, L), 0, TINY.vocab_size)
    sigma_B = jnp.array([0.3, 2.0], jnp.float32)
    return tokens_BxL, sigma_B


@functools.cache
def _init(config=TINY):
    tokens_BxL, sigma_B = _inputs()
    init = jax.jit(lambda key: DiT(config).init(key, tokens_BxL, sigma_B, train=False))
    return init(jax.random.PRNGKey(1))["params"]


def _randomized(params, seed=2, scale=0.3):
    """Adds noise to every parameter: the zero-initialised adaLN and head would otherwise
    make most invariants hold trivially. NumPy noise: no per-shape compiles."""
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_map(
        lambda x: x + jnp.asarray(scale * rng.standard_normal(x.shape), x.dtype), params
    )


@functools.partial(jax.jit, static_argnums=0, static_argnames=("train", "return_hidden"))
def _apply(config, params, tokens_BxL, sigma_B, *, train, return_hidden=False, rngs=None):
    out = DiT(config).apply({"params": params}, tokens_BxL, sigma_B, train=train, rngs=rngs)
    return (out.logits_BxLxV, out.hidden_BxLxD) if return_hidden else out.logits_BxLxV


# ---------------------------------------------------------------------------- structure


def test_parameter_names_mirror_mdlm():
    params = _init()
    D, C, V = TINY.hidden_size, TINY.cond_dim, TINY.vocab_size
    assert set(params) == {"vocab_embed", "sigma_map", "blocks_0", "blocks_1", "output_layer"}
    shapes = jax.tree_util.tree_map(lambda x: x.shape, params)
    assert shapes["vocab_embed"] == {"embedding": (V, D)}
    assert shapes["sigma_map"] == {
        "mlp_0": {"kernel": (256, C), "bias": (C,)},
        "mlp_2": {"kernel": (C, C), "bias": (C,)},
    }
    assert shapes["blocks_0"] == {
        "norm1": {"scale": (D,)},
        "attn_qkv": {"kernel": (D, 3 * D)},
        "attn_out": {"kernel": (D, D)},
        "norm2": {"scale": (D,)},
        "mlp_0": {"kernel": (D, 4 * D), "bias": (4 * D,)},
        "mlp_2": {"kernel": (4 * D, D), "bias": (D,)},
        "adaLN_modulation": {"kernel": (C, 6 * D), "bias": (6 * D,)},
    }
    assert shapes["output_layer"] == {
        "norm_final": {"scale": (D,)},
        "linear": {"kernel": (D, V), "bias": (V,)},
        "adaLN_modulation": {"kernel": (C, 2 * D), "bias": (2 * D,)},
    }


def test_owt_small_parameter_count_golden():
    # Changes only if the architecture changes. By hand, V=50258, D=768, C=128, 12 blocks:
    #   vocab_embed   V*D                                   = 38,598,144
    #   sigma_map     256*C + C + C*C + C                   =     49,408
    #   one block     2*D (norms) + 3D*D + D*D + (4D*D + 4D) + (4D*D + D) + (6D*C + 6D)
    #                 = 1,536 + 1,769,472 + 589,824 + 2,362,368 + 2,360,064 + 594,432
    #                 = 7,677,696;  x 12                    = 92,132,352
    #   output_layer  D + (D*V + V) + (2D*C + 2D)           = 38,847,314
    #   total                                               = 169,627,218  (~170M, method §2.1)
    config = dataclasses.replace(
        TINY,
        vocab_size=50258,
        hidden_size=768,
        num_layers=12,
        num_heads=12,
        cond_dim=128,
        dtype="bfloat16",
    )
    model = build_model(config)
    params = jax.eval_shape(
        lambda: model.init(
            jax.random.PRNGKey(0),
            jnp.zeros((1, 16), jnp.int32),
            jnp.zeros((1,), jnp.float32),
            train=False,
        )
    )["params"]
    assert count_params(params) == 169_627_218
    assert param_groups(params) == {
        "blocks": 92_132_352,
        "output_layer": 38_847_314,
        "sigma_map": 49_408,
        "vocab_embed": 38_598_144,
    }


def test_param_groups_partition_the_count():
    params = _init()
    groups = param_groups({"params": params})
    assert sum(groups.values()) == count_params(params)
    assert set(groups) == {"blocks", "output_layer", "sigma_map", "vocab_embed"}


def test_unknown_model_kind_names_valid_kinds():
    with pytest.raises(ValueError, match="mdlm"):
        build_model(dataclasses.replace(TINY, kind="gpt"))


# ---------------------------------------------------------------------------- behaviour


def test_shapes_dtypes_and_hidden():
    params = _init()
    tokens_BxL, sigma_B = _inputs()
    logits_BxLxV, hidden_BxLxD = _apply(
        TINY, params, tokens_BxL, sigma_B, train=False, return_hidden=True
    )
    assert logits_BxLxV.shape == (B, L, TINY.vocab_size)
    assert hidden_BxLxD.shape == (B, L, TINY.hidden_size)
    assert logits_BxLxV.dtype == hidden_BxLxD.dtype == jnp.float32


def test_zero_init_gives_uniform_logits_and_identity_blocks():
    params = _init()
    tokens_BxL, sigma_B = _inputs()
    logits_BxLxV, hidden_BxLxD = _apply(
        TINY, params, tokens_BxL, sigma_B, train=False, return_hidden=True
    )
    np.testing.assert_array_equal(logits_BxLxV, 0.0)
    # Zero gates make every block the identity, so the hidden state is the embedding.
    embedding_VxD = params["vocab_embed"]["embedding"]
    np.testing.assert_array_equal(hidden_BxLxD, embedding_VxD[tokens_BxL])
    # MDLM's embedding init: U(-1/sqrt(D), 1/sqrt(D)).
    bound = 1.0 / math.sqrt(TINY.hidden_size)
    assert float(jnp.max(jnp.abs(embedding_VxD))) <= bound
    assert float(jnp.max(jnp.abs(embedding_VxD))) > 0.8 * bound


def test_dropout_only_in_training():
    params = _randomized(_init())
    tokens_BxL, sigma_B = _inputs()
    eval_1 = _apply(TINY, params, tokens_BxL, sigma_B, train=False)
    eval_2 = _apply(TINY, params, tokens_BxL, sigma_B, train=False)
    np.testing.assert_array_equal(eval_1, eval_2)

    def train_run(seed, config=TINY):
        rngs = {"dropout": jax.random.PRNGKey(seed)}
        return _apply(config, params, tokens_BxL, sigma_B, train=True, rngs=rngs)

    np.testing.assert_array_equal(train_run(0), train_run(0))
    assert not np.allclose(train_run(0), train_run(1))
    assert not np.allclose(train_run(0), eval_1)
    no_dropout = dataclasses.replace(TINY, dropout=0.0)
    np.testing.assert_allclose(train_run(0, no_dropout), eval_1, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("time_conditioning", [False, True])
def test_time_conditioning_switch(time_conditioning):
    config = dataclasses.replace(TINY, time_conditioning=time_conditioning)
    params = _randomized(_init())  # the switch does not change the parameter tree
    tokens_BxL, _ = _inputs()
    low = _apply(config, params, tokens_BxL, jnp.array([0.1, 0.1]), train=False)
    high = _apply(config, params, tokens_BxL, jnp.array([3.0, 3.0]), train=False)
    if time_conditioning:
        assert not np.allclose(low, high)
    else:
        np.testing.assert_array_equal(low, high)


def test_attention_is_bidirectional():
    params = _randomized(_init())
    tokens_BxL, sigma_B = _inputs()
    changed_BxL = tokens_BxL.at[:, -1].set((tokens_BxL[:, -1] + 1) % TINY.vocab_size)
    before = _apply(TINY, params, tokens_BxL, sigma_B, train=False)
    after = _apply(TINY, params, changed_BxL, sigma_B, train=False)
    assert not np.allclose(before[:, 0], after[:, 0])


def test_bf16_compute_tracks_fp32():
    params = _randomized(_init())
    tokens_BxL, sigma_B = _inputs()
    bf16 = dataclasses.replace(TINY, dtype="bfloat16")
    ref = _apply(TINY, params, tokens_BxL, sigma_B, train=False)
    out = _apply(bf16, params, tokens_BxL, sigma_B, train=False)
    assert out.dtype == jnp.float32
    # bf16 keeps 8 mantissa bits (~0.4% per rounding); through two blocks with these
    # weights the logits drift ~1-2% relative (measured 1.7%).
    relative_error = float(jnp.linalg.norm(out - ref) / jnp.linalg.norm(ref))
    assert relative_error < 0.04
    assert relative_error > 1e-4  # bf16 really was used


def test_bf16_parameters_store_bf16_and_return_fp32_logits():
    config = dataclasses.replace(TINY, dtype="bfloat16", param_dtype="bfloat16")
    tokens_BxL, sigma_B = _inputs()
    abstract = jax.eval_shape(
        lambda: DiT(config).init(jax.random.PRNGKey(1), tokens_BxL, sigma_B, train=False)
    )
    assert {x.dtype for x in jax.tree_util.tree_leaves(abstract)} == {jnp.dtype(jnp.bfloat16)}
    params = jax.tree_util.tree_map(lambda x: x.astype(jnp.bfloat16), _randomized(_init()))
    logits, hidden = _apply(config, params, tokens_BxL, sigma_B, train=False, return_hidden=True)
    assert logits.dtype == hidden.dtype == jnp.float32
    assert bool(jnp.all(jnp.isfinite(logits)))


# ---------------------------------------------------------------------------- rotary


def test_rotary_matches_complex_rotation():
    # MDLM/flash-attn non-interleaved layout: dims (m, m + K/2) form the complex number
    # x_m + i x_{m+K/2}, rotated by angle pos * 10000^(-2m/K).
    length, K = 5, 8
    x = np.asarray(jax.random.normal(jax.random.PRNGKey(0), (1, length, 1, K)))
    cos_LxK, sin_LxK = rotary_tables(length, K)
    out = np.asarray(apply_rotary(jnp.asarray(x), cos_LxK, sin_LxK))
    theta = 10000.0 ** (-np.arange(0, K, 2) / K)
    angle = np.arange(length)[:, None] * theta[None, :]
    z = (x[0, :, 0, : K // 2] + 1j * x[0, :, 0, K // 2 :]) * np.exp(1j * angle)
    np.testing.assert_allclose(out[0, :, 0, : K // 2], z.real, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out[0, :, 0, K // 2 :], z.imag, rtol=1e-5, atol=1e-5)


def test_rotary_scores_depend_only_on_relative_position():
    length, K = 12, 16
    q_K, k_K = jax.random.normal(jax.random.PRNGKey(3), (2, K))
    cos_LxK, sin_LxK = rotary_tables(length, K)
    q_1xLx1xK = apply_rotary(jnp.broadcast_to(q_K, (1, length, 1, K)), cos_LxK, sin_LxK)
    k_1xLx1xK = apply_rotary(jnp.broadcast_to(k_K, (1, length, 1, K)), cos_LxK, sin_LxK)
    scores_LxL = np.asarray(jnp.einsum("qk,sk->qs", q_1xLx1xK[0, :, 0], k_1xLx1xK[0, :, 0]))
    # Toeplitz: score(i, j) == score(i + 1, j + 1).
    np.testing.assert_allclose(scores_LxL[1:, 1:], scores_LxL[:-1, :-1], rtol=1e-4, atol=1e-4)
    # ...and it is not trivially constant.
    assert np.ptp(scores_LxL[0]) > 1e-2


# ---------------------------------------------------------------------------- reference


def _np_forward(p, tokens, sigma, cfg):
    """Float64 NumPy transcription of MDLM's DIT.forward (eval mode)."""
    f = lambda a: np.asarray(a, np.float64)
    D, H, K = cfg.hidden_size, cfg.num_heads, cfg.head_dim
    silu = lambda a: a / (1.0 + np.exp(-a))

    def ln(x, w):
        mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + 1e-5) * f(w)

    def linear(x, q):
        return x @ f(q["kernel"]) + (f(q["bias"]) if "bias" in q else 0.0)

    x = f(p["vocab_embed"]["embedding"])[tokens]
    half = 128
    freqs = np.exp(-math.log(10000.0) * np.arange(half) / half)
    args = f(sigma)[:, None] * freqs[None]
    t_freq = np.concatenate([np.cos(args), np.sin(args)], -1)
    c = silu(linear(silu(linear(t_freq, p["sigma_map"]["mlp_0"])), p["sigma_map"]["mlp_2"]))
    inv = 1.0 / 10000.0 ** (np.arange(0, K, 2) / K)
    fr = np.arange(tokens.shape[1])[:, None] * inv[None]
    emb = np.concatenate([fr, fr], -1)
    cos, sin = np.cos(emb)[None, :, None], np.sin(emb)[None, :, None]
    rot = lambda a: a * cos + np.concatenate([-a[..., K // 2 :], a[..., : K // 2]], -1) * sin
    for i in range(cfg.num_layers):
        blk = p[f"blocks_{i}"]
        m = np.split(linear(c, blk["adaLN_modulation"])[:, None], 6, axis=-1)
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = m
        y = ln(x, blk["norm1"]["scale"]) * (1 + scale_msa) + shift_msa
        qkv = linear(y, blk["attn_qkv"]).reshape(x.shape[0], x.shape[1], 3, H, K)
        q, k, v = rot(qkv[:, :, 0]), rot(qkv[:, :, 1]), qkv[:, :, 2]
        s = np.einsum("bqhk,bshk->bhqs", q, k) / math.sqrt(K)
        a = np.exp(s - s.max(-1, keepdims=True))
        a /= a.sum(-1, keepdims=True)
        o = np.einsum("bhqs,bshk->bqhk", a, v).reshape(x.shape[0], x.shape[1], D)
        x = x + gate_msa * linear(o, blk["attn_out"])
        y = ln(x, blk["norm2"]["scale"]) * (1 + scale_mlp) + shift_mlp
        g = linear(y, blk["mlp_0"])
        g = 0.5 * g * (1 + np.tanh(math.sqrt(2 / math.pi) * (g + 0.044715 * g**3)))
        x = x + gate_mlp * linear(g, blk["mlp_2"])
    out = p["output_layer"]
    shift, scale = np.split(linear(c, out["adaLN_modulation"])[:, None], 2, axis=-1)
    return linear(ln(x, out["norm_final"]["scale"]) * (1 + scale) + shift, out["linear"])


def test_forward_matches_numpy_transcription_of_mdlm():
    params = _randomized(_init(), scale=0.2)
    tokens_BxL, sigma_B = _inputs(seed=5)
    out = _apply(TINY, params, tokens_BxL, sigma_B, train=False)
    ref = _np_forward(jax.device_get(params), np.asarray(tokens_BxL), np.asarray(sigma_B), TINY)
    np.testing.assert_allclose(np.asarray(out), ref, rtol=2e-4, atol=2e-4)
