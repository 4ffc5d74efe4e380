"""The samplers' view of the Flax models: denoiser functions over restored parameters.

    make_mdlm_denoise_fn   DiT (MDLM)  -> `ancestral.DenoiseFn`
                           (params, z_BxL, t_B, cond) -> SUBS log-probs
    make_fp_denoise_fn     FPMDLM      -> `fixed_point.FPDenoiseFn`
                           (params, z_BxL, t_B, cond, h0_fn, num_iterations)
                           -> FPDenoiseOutput
Both map t to sigma = total_noise(t) and hand the sampler's condition `cond` to the
model's one call (`cofre_jax.models`: model(tokens, sigma, condition, ...) ->
DenoiserOutput); the text models take None.

Letters: B batch, L length, V vocabulary (MASK included).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax

from cofre_jax.diffusion import subs_log_probs
from cofre_jax.sampling.ancestral import DenoiseFn
from cofre_jax.sampling.fixed_point import FPDenoiseFn, FPDenoiseOutput


def make_mdlm_denoise_fn(model, total_noise: Callable[[jax.Array], jax.Array]) -> DenoiseFn:
    """`DenoiseFn` of a `DiT` module: sigma = total_noise(t), SUBS log-probs."""
    mask_id = model.config.mask_id

    def denoise_fn(params, z_BxL, t_B, cond):
        out = model.apply({"params": params}, z_BxL, total_noise(t_B), cond, train=False)
        return subs_log_probs(out.logits_BxLxV, z_BxL, mask_id)

    return denoise_fn


def make_fp_denoise_fn(
    model, total_noise: Callable[[jax.Array], jax.Array], *, tol: float | None = None
) -> FPDenoiseFn:
    """`FPDenoiseFn` of an `FPMDLM` module: sigma = total_noise(t), SUBS log-probs.

    tol (None keeps the model's fixed_point.tol) is the per-sequence residual tolerance
    of adaptive stopping; 0 runs every step's cap exactly. Under a budget a sequence
    that misses the tolerance within its cap is expected, not an error, so the
    on_nonconvergence policy "raise" becomes "best" when tol > 0.
    """
    if tol is not None:
        fp = model.fixed_point
        policy = "best" if tol > 0 and fp.on_nonconvergence == "raise" else fp.on_nonconvergence
        fp = dataclasses.replace(fp, tol=float(tol), on_nonconvergence=policy)
        model = model.clone(fixed_point=fp)
    mask_id = model.config.mask_id

    def fp_denoise_fn(params, z_BxL, t_B, cond, h0_fn, num_iterations) -> FPDenoiseOutput:
        out = model.apply(
            {"params": params},
            z_BxL,
            total_noise(t_B),
            cond,
            train=False,
            h0_fn=h0_fn,
            num_iterations=num_iterations,
        )
        return FPDenoiseOutput(
            subs_log_probs(out.logits_BxLxV, z_BxL, mask_id), out.h_star_BxLxD, out.stats
        )

    return fp_denoise_fn
