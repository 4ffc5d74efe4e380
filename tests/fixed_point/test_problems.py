"""Test problems for the fixed-point core, and the diagnostics checked on them.

The problems are imported by the other tests of this folder: (a) a random
contractive linear map, (b) a small tanh network, (c) a pre-LN transformer block with
input injection in the docs/method.md §2.2 style (cofre_jax/fixed_point/reference_block.py,
shared with benchmarks/solvers.py).

Letters: B batch, L length, D hidden, C conditioning width, H heads.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cofre_jax.fixed_point import jacobian_frobenius_sq, spectral_radius
from cofre_jax.fixed_point.reference_block import InjectedBlock


@pytest.fixture(autouse=True, scope="module")
def x64():
    """float64 for this module only; restored so other modules keep float32."""
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", previous)


def _orthogonal_scaled(rng: np.random.Generator, d: int, radius: float) -> np.ndarray:
    """A symmetric matrix with eigenvalues spread in [-radius, radius], max |.| = radius."""
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    eig = np.linspace(-radius, radius, d)
    return (q * eig) @ q.T


def linear_problem(batch: int = 3, d: int = 6, radius: float = 0.8, seed: int = 0):
    """f(h) = h W + x U + b with a symmetric W of spectral radius `radius`."""
    rng = np.random.default_rng(seed)
    params = {
        "W": jnp.asarray(_orthogonal_scaled(rng, d, radius)),
        "U": jnp.asarray(rng.normal(size=(d, d)) / np.sqrt(d)),
        "b": jnp.asarray(rng.normal(size=(d,)) * 0.1),
    }
    x_BxD = jnp.asarray(rng.normal(size=(batch, d)))

    def f(p, h_BxD, x_BxD):
        return h_BxD @ p["W"] + x_BxD @ p["U"] + p["b"]

    return f, params, jnp.zeros((batch, d)), x_BxD


def tanh_problem(batch: int = 3, d: int = 5, radius: float = 0.9, seed: int = 1):
    """f(h) = tanh(h W + x U + b): contractive since |tanh'| <= 1."""
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(d, d))
    params = {
        "W": jnp.asarray(w * radius / np.linalg.norm(w, 2)),
        "U": jnp.asarray(rng.normal(size=(d, d)) / np.sqrt(d)),
        "b": jnp.asarray(rng.normal(size=(d,)) * 0.3),
    }
    x_BxD = jnp.asarray(rng.normal(size=(batch, d)))

    def f(p, h_BxD, x_BxD):
        return jnp.tanh(h_BxD @ p["W"] + x_BxD @ p["U"] + p["b"])

    return f, params, jnp.zeros((batch, d)), x_BxD


@functools.cache  # compiling the init is the slow part on a shared 2-core machine
def transformer_problem(
    batch: int = 2,
    length: int = 4,
    hidden: int = 8,
    heads: int = 2,
    cond: int = 3,
    contraction: float = 0.3,
    dtype=jnp.float64,
    seed: int = 2,
):
    """(f, params, h0, x) for InjectedBlock.apply with x = (u_BxLxD, cond_BxC)."""
    block = InjectedBlock(hidden, heads, contraction, dtype=dtype, param_dtype=dtype)
    rng = np.random.default_rng(seed)
    h0_BxLxD = jnp.asarray(rng.normal(size=(batch, length, hidden)), dtype)
    x = (
        jnp.asarray(rng.normal(size=(batch, length, hidden)), dtype),
        jnp.asarray(rng.normal(size=(batch, cond)), dtype),
    )
    params = jax.jit(block.init)(jax.random.key(seed), h0_BxLxD, x)
    return block.apply, params, h0_BxLxD, x


# ----------------------------------------------------------------------------- diagnostics


def test_spectral_radius_matches_eigenvalues_of_linear_map():
    f, params, h0, x = linear_problem(radius=0.7)
    rho_B = jax.jit(spectral_radius, static_argnums=(0, 5))(
        f, params, h0, x, jax.random.key(0), 200
    )
    # Symmetric W: the dominant pair +-0.7 alternates sign but not modulus.
    np.testing.assert_allclose(rho_B, 0.7, rtol=1e-6)


def test_spectral_radius_of_transformer_block_below_one():
    """The block the other tests iterate must contract, or their solves mean nothing."""
    f, params, h0, x = transformer_problem()
    rho_B = jax.jit(spectral_radius, static_argnums=(0, 5))(f, params, h0, x, jax.random.key(0), 50)
    assert rho_B.shape == (2,)
    assert np.all(rho_B < 0.9) and np.all(rho_B > 0.05), rho_B


def test_hutchinson_estimates_frobenius_norm():
    f, params, h0, x = tanh_problem()
    est_B = jax.jit(jacobian_frobenius_sq, static_argnums=(0, 5))(
        f, params, h0, x, jax.random.key(1), 4000
    )
    jac_BxDxD = jax.vmap(jax.jacobian(lambda h, xx: f(params, h, xx)))(h0, x)
    exact_B = np.sum(np.square(jac_BxDxD), axis=(1, 2))
    # 4000 Rademacher probes: relative standard error ~ 1/sqrt(4000) ~ 1.6%.
    np.testing.assert_allclose(est_B, exact_B, rtol=0.08)


def test_hutchinson_is_differentiable_in_params():
    f, params, h0, x = linear_problem(radius=0.5)
    key = jax.random.key(3)

    def reg(p):
        return jnp.mean(jacobian_frobenius_sq(f, p, h0, x, key, num_samples=2))

    grad_w = jax.jit(jax.grad(reg))(params)["W"]
    # Rademacher probes e: E||e W||^2 = ||W||_F^2, gradient 2W; with 2 probes the
    # estimate is exactly 2 W averaged over probes' outer products, close to 2W.
    assert np.all(np.isfinite(grad_w))
    assert float(jnp.sum(grad_w * params["W"])) > 0.0


def test_diagnostics_reject_bad_counts():
    f, params, h0, x = linear_problem()
    with pytest.raises(ValueError, match="num_samples"):
        jacobian_frobenius_sq(f, params, h0, x, jax.random.key(0), num_samples=0)
    with pytest.raises(ValueError, match="num_iters"):
        spectral_radius(f, params, h0, x, jax.random.key(0), num_iters=1)
