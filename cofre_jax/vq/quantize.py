"""The nearest-code quantiser of the VQ tokenizer (cofre_jax/vq/model.py), as LlamaGen's
`VectorQuantizer`: with `l2_normalised`, inputs and codes are l2-normalised before the
nearest-code search, the losses and the straight-through estimator.

Letters: B batch, h w code grid, D code dim, K codebook size, N flattened positions.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp


def l2_normalise(x: jax.Array, eps: float = 1e-12) -> jax.Array:
    """torch.nn.functional.normalize: x / max(||x||, eps) over the last axis."""
    return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), eps)


def nearest_codes(z_NxD: jax.Array, codebook_KxD: jax.Array) -> jax.Array:
    """argmin_k ||z - e_k||^2, via ||z||^2 + ||e||^2 - 2 z.e as LlamaGen; float32, full
    precision (a reduced-precision matmul flips near ties)."""
    z_NxD, codebook_KxD = z_NxD.astype(jnp.float32), codebook_KxD.astype(jnp.float32)
    zz_Nx1 = jnp.sum(z_NxD**2, axis=-1, keepdims=True)
    ee_K = jnp.sum(codebook_KxD**2, axis=-1)
    ze_NxK = jnp.matmul(z_NxD, codebook_KxD.T, precision=jax.lax.Precision.HIGHEST)
    return jnp.argmin(zz_Nx1 + ee_K[None, :] - 2.0 * ze_NxK, axis=-1).astype(jnp.int32)


class VectorQuantizer(nn.Module):
    """The codebook `embedding` (K x D, LlamaGen's `quantize.embedding.weight`)."""

    codebook_size: int
    code_dim: int
    l2_normalised: bool

    def setup(self):
        def init(key, shape, dtype=jnp.float32):  # LlamaGen: U(-1/K, 1/K), then normalised
            e = jax.random.uniform(key, shape, dtype, -1.0 / shape[0], 1.0 / shape[0])
            return l2_normalise(e) if self.l2_normalised else e

        self.embedding = self.param("embedding", init, (self.codebook_size, self.code_dim))

    def codebook(self) -> jax.Array:
        e_KxD = self.embedding.astype(jnp.float32)
        return l2_normalise(e_KxD) if self.l2_normalised else e_KxD

    def lookup(self, codes_Bxhxw: jax.Array) -> jax.Array:
        return jnp.take(self.codebook(), codes_Bxhxw, axis=0)

    def __call__(self, z_BxhxwxD: jax.Array):
        """(straight-through quantised latents, codes, codebook loss, commitment loss)."""
        z = z_BxhxwxD.astype(jnp.float32)
        if self.l2_normalised:
            z = l2_normalise(z)
        codebook_KxD = self.codebook()
        codes_Bxhxw = nearest_codes(z.reshape(-1, z.shape[-1]), codebook_KxD).reshape(z.shape[:-1])
        zq = jnp.take(codebook_KxD, codes_Bxhxw, axis=0)
        codebook_loss = jnp.mean((zq - jax.lax.stop_gradient(z)) ** 2)
        commitment_loss = jnp.mean((jax.lax.stop_gradient(zq) - z) ** 2)
        zq_st = z + jax.lax.stop_gradient(zq - z)  # straight-through estimator
        return zq_st, codes_Bxhxw, codebook_loss, commitment_loss


def codebook_usage(codes: jax.Array, codebook_size: int) -> dict[str, jax.Array]:
    """Fraction of the K codes used at least once, and the perplexity exp(H(p)) of the
    empirical code distribution p (1 for one code, K for uniform use)."""
    counts_K = jnp.bincount(codes.reshape(-1), length=codebook_size).astype(jnp.float32)
    p_K = counts_K / jnp.maximum(jnp.sum(counts_K), 1.0)
    entropy = -jnp.sum(jnp.where(p_K > 0, p_K * jnp.log(jnp.where(p_K > 0, p_K, 1.0)), 0.0))
    return {"codebook_used": jnp.mean(counts_K > 0), "codebook_perplexity": jnp.exp(entropy)}
