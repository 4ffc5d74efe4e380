"""Building blocks of MDLM's DiT, shared by the MDLM stack and the fixed-point denoiser.

Module and parameter names mirror MDLM's PyTorch `models/dit.py` (`vocab_embed`,
`sigma_map/mlp_0`, `blocks_i/attn_qkv`, `adaLN_modulation`, ...) so a state-dict
importer maps one to one (PyTorch `weight` -> Flax `kernel` transposed, LayerNorm
`weight` -> `scale`).

Precision follows MDLM's autocast: matmuls run in the compute dtype, while the
residual stream, LayerNorms, modulation and the conditioning vector stay float32.

Letters: B batch, L length, D hidden, H heads, K head dim, C cond dim, M MLP width,
F frequency embedding width, V vocabulary.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from cofre_jax.config.typed import ModelConfig

FREQUENCY_EMBEDDING_SIZE = 256  # MDLM's TimestepEmbedder default
ROTARY_BASE = 10_000.0
LAYER_NORM_EPS = 1e-5  # torch.nn.functional.layer_norm default


def torch_linear_init(fan_in: int):
    """PyTorch nn.Linear's default init, U(-1/sqrt(fan_in), 1/sqrt(fan_in)), for kernel and
    bias, so training from scratch starts where MDLM starts."""
    bound = 1.0 / math.sqrt(fan_in)

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def dense(
    config: ModelConfig,
    features: int,
    fan_in: int,
    *,
    name: str,
    use_bias: bool = True,
    zero_init: bool = False,
) -> nn.Dense:
    init = nn.initializers.zeros_init() if zero_init else torch_linear_init(fan_in)
    return nn.Dense(
        features,
        use_bias=use_bias,
        dtype=jnp.dtype(config.dtype),
        param_dtype=jnp.dtype(config.param_dtype),
        kernel_init=init,
        bias_init=init,
        name=name,
    )


# nn.LayerNorm under jax.checkpoint, with the same parameter names (see layer_norm).
RematLayerNorm = nn.remat(nn.LayerNorm)


def layer_norm(config: ModelConfig, name: str) -> nn.LayerNorm:
    """MDLM's LayerNorm: weight only, no bias, always computed in float32.

    Rematerialised: the backward pass recomputes the normalisation from its input (kept
    anyway, it is the residual stream) instead of storing the normalised states beside
    the weighted ones. Same parameters and bits; about 100 MiB less compiled temp memory
    in benchmarks/versus_md4.py's 6-block step at L = 256 for a few MFLOPs."""
    return RematLayerNorm(
        epsilon=LAYER_NORM_EPS,
        use_bias=False,
        dtype=jnp.float32,
        param_dtype=jnp.dtype(config.param_dtype),
        name=name,
    )


def adaln_modulations(config: ModelConfig, cond_BxC: jax.Array, chunks: int) -> list[jax.Array]:
    """adaLN-zero: `chunks` float32 (B, D) modulations (shifts, scales, gates) from the
    condition by one zero-initialised dense layer named `adaLN_modulation`, built in the
    calling module."""
    D = config.hidden_size
    mods_BxND = dense(config, chunks * D, config.cond_dim, name="adaLN_modulation", zero_init=True)(
        cond_BxC
    )
    return jnp.split(mods_BxND.astype(jnp.float32), chunks, axis=-1)


def modulate(x_BxLxD: jax.Array, shift_BxD: jax.Array, scale_BxD: jax.Array) -> jax.Array:
    """adaLN modulation in MDLM's form x * (1 + scale) + shift, in float32."""
    shift_Bx1xD = shift_BxD.astype(jnp.float32)[:, None, :]
    scale_Bx1xD = scale_BxD.astype(jnp.float32)[:, None, :]
    return x_BxLxD.astype(jnp.float32) * (1.0 + scale_Bx1xD) + shift_Bx1xD


# ---------------------------------------------------------------------------- rotary


def rotary_tables(length: int, head_dim: int) -> tuple[jax.Array, jax.Array]:
    """(cos_LxK, sin_LxK) in float32, laid out as MDLM's `Rotary`: the K/2 frequencies
    repeated twice (cat(freqs, freqs)), i.e. the rotate-half (non-interleaved) convention."""
    inv_freq = 1.0 / (ROTARY_BASE ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))
    freqs_LxK2 = jnp.arange(length, dtype=jnp.float32)[:, None] * inv_freq[None, :]
    emb_LxK = jnp.concatenate([freqs_LxK2, freqs_LxK2], axis=-1)
    return jnp.cos(emb_LxK), jnp.sin(emb_LxK)


def apply_rotary(x_BxLxHxK: jax.Array, cos_LxK: jax.Array, sin_LxK: jax.Array) -> jax.Array:
    """Rotates dimension pairs (m, m + K/2) by position * frequency_m.

    Computed in float32 (as flash-attn's rotary kernel does) and cast back."""
    x = x_BxLxHxK.astype(jnp.float32)
    half = x.shape[-1] // 2
    rotated_half = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    cos_1xLx1xK = cos_LxK[None, :, None, :]
    sin_1xLx1xK = sin_LxK[None, :, None, :]
    return (x * cos_1xLx1xK + rotated_half * sin_1xLx1xK).astype(x_BxLxHxK.dtype)


# ---------------------------------------------------------------------------- modules


class EmbeddingLayer(nn.Module):
    """Token embedding with MDLM's init (kaiming_uniform(a=sqrt 5) on a VxD tensor)."""

    config: ModelConfig

    @nn.compact
    def __call__(self, tokens_BxL: jax.Array) -> jax.Array:
        cfg = self.config
        # variance_scaling(1/3, fan_in=D, uniform) is U(-1/sqrt(D), 1/sqrt(D)), which is
        # what kaiming_uniform(a=sqrt(5)) gives for a (V, D) tensor whose fan_in is D.
        init = nn.initializers.variance_scaling(
            1.0 / 3.0, "fan_in", "uniform", in_axis=-1, out_axis=-2
        )
        embedding_VxD = self.param(
            "embedding", init, (cfg.vocab_size, cfg.hidden_size), jnp.dtype(cfg.param_dtype)
        )
        return jnp.take(embedding_VxD, tokens_BxL, axis=0).astype(jnp.float32)


def timestep_frequencies(t_B: jax.Array, dim: int, max_period: float = 10_000.0) -> jax.Array:
    """Sinusoidal embedding [cos(t f), sin(t f)] of MDLM/GLIDE, f geometric in [1/max_period, 1]."""
    half = dim // 2
    freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
    args_BxF2 = t_B.astype(jnp.float32)[:, None] * freqs[None, :]
    emb_BxF = jnp.concatenate([jnp.cos(args_BxF2), jnp.sin(args_BxF2)], axis=-1)
    if dim % 2:
        emb_BxF = jnp.pad(emb_BxF, ((0, 0), (0, 1)))
    return emb_BxF


class TimestepEmbedder(nn.Module):
    """sigma -> 256 sinusoidal features -> Linear -> SiLU -> Linear, width cond_dim.

    Kept in float32 like MDLM (its sigma_map runs outside autocast)."""

    config: ModelConfig

    @nn.compact
    def __call__(self, sigma_B: jax.Array) -> jax.Array:
        cfg = self.config
        param_dtype = jnp.dtype(cfg.param_dtype)
        f_BxF = timestep_frequencies(sigma_B, FREQUENCY_EMBEDDING_SIZE)
        mlp_0 = nn.Dense(
            cfg.cond_dim,
            dtype=jnp.float32,
            param_dtype=param_dtype,
            kernel_init=torch_linear_init(FREQUENCY_EMBEDDING_SIZE),
            bias_init=torch_linear_init(FREQUENCY_EMBEDDING_SIZE),
            name="mlp_0",
        )
        mlp_2 = nn.Dense(
            cfg.cond_dim,
            dtype=jnp.float32,
            param_dtype=param_dtype,
            kernel_init=torch_linear_init(cfg.cond_dim),
            bias_init=torch_linear_init(cfg.cond_dim),
            name="mlp_2",
        )
        return mlp_2(nn.silu(mlp_0(f_BxF)))


class DiTBlock(nn.Module):
    """MDLM's DDiTBlock: adaLN-modulated pre-norm attention and tanh-GELU MLP.

    Residual branches are `residual + gate * dropout(branch)` (MDLM's
    bias_dropout_add_scale); the residual stream is float32.
    """

    config: ModelConfig

    @nn.compact
    def __call__(
        self,
        h_BxLxD: jax.Array,
        cond_BxC: jax.Array,
        rotary: tuple[jax.Array, jax.Array],
        *,
        train: bool,
    ) -> jax.Array:
        cfg = self.config
        D, H, K = cfg.hidden_size, cfg.num_heads, cfg.head_dim
        B, L, _ = h_BxLxD.shape
        compute_dtype = jnp.dtype(cfg.dtype)
        dropout = nn.Dropout(cfg.dropout, deterministic=not train)

        # MDLM's chunk order.
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = adaln_modulations(
            cfg, cond_BxC, 6
        )

        # Attention. qkv columns are laid out (three, heads, head_dim) as in MDLM's
        # rearrange 'b s (three h d) -> b s three h d'.
        h_BxLxD = h_BxLxD.astype(jnp.float32)
        x_BxLxD = modulate(layer_norm(cfg, "norm1")(h_BxLxD), shift_msa, scale_msa)
        qkv_BxLx3D = dense(cfg, 3 * D, D, name="attn_qkv", use_bias=False)(x_BxLxD)
        qkv_BxLx3xHxK = qkv_BxLx3D.reshape(B, L, 3, H, K)
        cos_LxK, sin_LxK = rotary
        q_BxLxHxK = apply_rotary(qkv_BxLx3xHxK[:, :, 0], cos_LxK, sin_LxK)
        k_BxLxHxK = apply_rotary(qkv_BxLx3xHxK[:, :, 1], cos_LxK, sin_LxK)
        v_BxLxHxK = qkv_BxLx3xHxK[:, :, 2]
        # JAX's XLA attention computes scores and softmax in float32 for bf16 inputs
        # (MDLM: flash-attn, whose softmax is also float32).
        attn_BxLxHxK = jax.nn.dot_product_attention(
            q_BxLxHxK.astype(compute_dtype),
            k_BxLxHxK.astype(compute_dtype),
            v_BxLxHxK.astype(compute_dtype),
            is_causal=False,
        )
        attn_BxLxD = dense(cfg, D, D, name="attn_out", use_bias=False)(
            attn_BxLxHxK.reshape(B, L, D)
        )
        h_BxLxD = h_BxLxD + gate_msa[:, None, :] * dropout(attn_BxLxD).astype(jnp.float32)

        # MLP.
        x_BxLxD = modulate(layer_norm(cfg, "norm2")(h_BxLxD), shift_mlp, scale_mlp)
        width = cfg.mlp_ratio * D
        x_BxLxM = dense(cfg, width, D, name="mlp_0")(x_BxLxD)
        x_BxLxM = nn.gelu(x_BxLxM, approximate=True)
        x_BxLxD = dense(cfg, D, width, name="mlp_2")(x_BxLxM)
        return h_BxLxD + gate_mlp[:, None, :] * dropout(x_BxLxD).astype(jnp.float32)


class FinalLayer(nn.Module):
    """MDLM's DDitFinalLayer: adaLN-modulated LayerNorm then a zero-initialised head."""

    config: ModelConfig

    @nn.compact
    def __call__(self, h_BxLxD: jax.Array, cond_BxC: jax.Array) -> jax.Array:
        cfg = self.config
        D = cfg.hidden_size
        shift_BxD, scale_BxD = adaln_modulations(cfg, cond_BxC, 2)
        x_BxLxD = modulate(layer_norm(cfg, "norm_final")(h_BxLxD), shift_BxD, scale_BxD)
        logits_BxLxV = dense(cfg, cfg.vocab_size, D, name="linear", zero_init=True)(x_BxLxD)
        return logits_BxLxV.astype(jnp.float32)
