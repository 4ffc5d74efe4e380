"""Jacobian diagnostics of h -> f(params, h, x) at a point, per example.

- `jacobian_frobenius_sq`: Hutchinson estimate of ||J_h||_F^2, differentiable in
  params, usable as a regulariser (divide by the state size for a size-free weight).
- `spectral_radius`: power-iteration estimate of the largest |eigenvalue| of J_h;
  below 1 the Picard iteration contracts locally.

Both assume f treats examples independently (true for a transformer block), so one
batched Jacobian-vector product gives every example's own product.

Letters: B batch, S probe samples, N flattened per-example state size.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from cofre_jax.fixed_point.state import BlockFn, PyTree, check_block_shapes, flat_state


def _linearized(f: BlockFn, params: PyTree, h: PyTree, x: PyTree):
    """Returns (state, jvp on flat z_BxN), evaluating f once."""
    check_block_shapes(f, params, h, x)
    state = flat_state(h)
    _, jvp = jax.linearize(lambda hh: f(params, hh, x), h)

    def jvp_flat(v_BxN):
        return state.flatten(jvp(state.unflatten(v_BxN)))

    return state, jvp_flat


def jacobian_frobenius_sq(
    f: BlockFn, params: PyTree, h: PyTree, x: PyTree, key: jax.Array, num_samples: int = 1
) -> jax.Array:
    """Unbiased per-example estimate of ||df/dh||_F^2 (shape (B,)), Rademacher probes."""
    if num_samples < 1:
        raise ValueError(f"num_samples = {num_samples} is invalid: allowed >= 1")
    state, jvp_flat = _linearized(f, params, h, x)
    z_BxN = state.flatten(h)
    probes_SxBxN = jax.random.rademacher(key, (num_samples,) + z_BxN.shape, z_BxN.dtype)
    # The dtype round trip through h's leaves is exact for +-1 probes.
    sq_SxB = jax.vmap(lambda p_BxN: jnp.sum(jnp.square(jvp_flat(p_BxN)), axis=1))(probes_SxBxN)
    return jnp.mean(sq_SxB, axis=0).astype(jnp.float32)


def spectral_radius(
    f: BlockFn, params: PyTree, h: PyTree, x: PyTree, key: jax.Array, num_iters: int = 20
) -> jax.Array:
    """Per-example power-iteration estimate of the spectral radius of df/dh, shape (B,).

    Exact for a dominant real eigenvalue; with a complex dominant pair it reports the
    geometric mean growth over the last two steps, which still tracks its modulus.
    """
    if num_iters < 2:
        raise ValueError(f"num_iters = {num_iters} is invalid: allowed >= 2")
    state, jvp_flat = _linearized(f, params, h, x)
    z_BxN = state.flatten(h)

    def normalize(v_BxN):
        return v_BxN / (jnp.linalg.norm(v_BxN, axis=1, keepdims=True) + 1e-30)

    def body(_, carry):
        v_BxN, _, growth_B = carry
        w_BxN = jvp_flat(v_BxN)
        return normalize(w_BxN), growth_B, jnp.linalg.norm(w_BxN, axis=1)

    v0_BxN = normalize(jax.random.normal(key, z_BxN.shape, z_BxN.dtype))
    zeros_B = jnp.zeros(z_BxN.shape[:1], z_BxN.dtype)
    _, prev_B, last_B = jax.lax.fori_loop(0, num_iters, body, (v0_BxN, zeros_B, zeros_B))
    return jnp.sqrt(prev_B * last_B).astype(jnp.float32)
