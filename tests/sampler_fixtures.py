"""Shared pieces of the sampler tests (tests/sampling/) and the runaway tests: a toy
fixed-point denoiser with t-dependent convergence (the tiny configs are tests/tiny.py).

Shape legend: B batch, L length, D hidden, V vocabulary (MASK included).
"""

import functools

import jax
import jax.numpy as jnp

from cofre_jax import diffusion, fixed_point
from cofre_jax.sampling import FPDenoiseOutput

SCHEDULE = diffusion.make_schedule("loglinear", 1e-3)
V, D = 6, 8
TOY_MASK = V - 1


def toy_params():
    k1, k2 = jax.random.split(jax.random.PRNGKey(0))
    return {"embed_VxD": jax.random.normal(k1, (V, D)), "head_DxV": jax.random.normal(k2, (D, V))}


def toy_fp_denoiser(params, z_BxL, t_B, cond, h0_fn, num_iterations, *, tol):
    """h = c(t) h + h_pre, c = 0.01 for t > 0.4 (2 or 3 evaluations to tol 1e-3) and 0.9
    below (about 60): early steps finish early, late steps want more than planned. A
    condition {"label_B": ...} shifts h_pre by 0.1 x label (the guidance tests')."""
    h_pre_BxLxD = params["embed_VxD"][z_BxL]
    if cond is not None:
        h_pre_BxLxD = h_pre_BxLxD + 0.1 * cond["label_B"][:, None, None]
    c_Bx1x1 = jnp.where(t_B > 0.4, 0.01, 0.9)[:, None, None]
    h0_BxLxD = h_pre_BxLxD if h0_fn is None else h0_fn(h_pre_BxLxD)
    spec = fixed_point.SolverSpec(method="picard", tol=tol, max_iter=1)
    h_BxLxD, stats = fixed_point.solve(
        lambda p, h, x: x[1] * h + x[0], None, h0_BxLxD, (h_pre_BxLxD, c_Bx1x1), spec,
        max_iter=num_iterations,
    )  # fmt: skip
    logits_BxLxV = jnp.einsum("bld,dv->blv", h_BxLxD, params["head_DxV"])
    log_probs = diffusion.subs_log_probs(logits_BxLxV, z_BxL, TOY_MASK)
    return FPDenoiseOutput(log_probs, h_BxLxD, stats)


TOY_EXACT = functools.partial(toy_fp_denoiser, tol=0.0)
TOY_ADAPTIVE = functools.partial(toy_fp_denoiser, tol=1e-3)
