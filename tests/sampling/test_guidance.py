"""Classifier-free guidance: w = 0 is the conditional model exactly (constant or ramped
w), one batched denoiser call per guided call, the combination formula on a hand-made
denoiser, and guided FP sampling (budget of the conditional passes, doubled real cost).

Shape legend: B batch, L length, V vocabulary (MASK included).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sampler_fixtures import SCHEDULE, TOY_ADAPTIVE, TOY_EXACT, TOY_MASK, D, toy_params

from cofre_jax.diffusion import NEG_INF
from cofre_jax.sampling import (
    GUIDANCE_RAMPS,
    AnnealedConfidence,
    Guided,
    HaltonReveal,
    StepCost,
    ancestral_sample,
    ancestral_update,
    block_passes_with_guidance,
    fp_sample,
    guidance_scale,
    make_guided_denoise_fn,
    make_guided_fp_denoise_fn,
    plan_budget,
)

V, L = 5, 3
MASK = V - 1
NULL = 7  # the "no label" id

# Appended to whenever the denoiser is traced (a Python side effect of tracing).
CALLS = []


def labelled_denoiser(params, z_BxL, t_B, cond):
    """Log-probs from a table per label: params["table_CxV"][label], MASK at NEG_INF."""
    CALLS.append(z_BxL.shape[0])
    logits_BxV = params["table_CxV"][cond["label_B"]]
    logits_BxLxV = jnp.broadcast_to(logits_BxV[:, None, :], (*z_BxL.shape, V))
    logits_BxLxV = logits_BxLxV.at[..., MASK].set(-jnp.inf)
    return jnp.maximum(jax.nn.log_softmax(logits_BxLxV, axis=-1), NEG_INF)


def _null(cond):
    return {"label_B": jnp.full_like(cond["label_B"], NULL)}


GUIDED = make_guided_denoise_fn(labelled_denoiser, _null, mask_id=MASK)
PARAMS = {"table_CxV": jax.random.normal(jax.random.PRNGKey(0), (8, V))}
LABELS = {"label_B": jnp.array([0, 3], jnp.int32)}
Z_BxL = jnp.full((2, L), MASK, jnp.int32)
T_B = jnp.full((2,), 0.5)
_guided = jax.jit(GUIDED)


def test_zero_scale_returns_the_conditional_log_probs_exactly():
    cond_BxLxV = labelled_denoiser(PARAMS, Z_BxL, T_B, LABELS)
    guided_BxLxV = _guided(PARAMS, Z_BxL, T_B, Guided(LABELS, jnp.float32(0.0)))
    np.testing.assert_array_equal(guided_BxLxV, cond_BxLxV)


def test_one_batched_denoiser_call_per_guided_call():
    # A fresh guided function, so jit traces it here (traces are cached per function).
    guided = make_guided_denoise_fn(labelled_denoiser, _null, mask_id=MASK)
    CALLS.clear()
    jax.jit(guided).lower(PARAMS, Z_BxL, T_B, Guided(LABELS, jnp.float32(1.5)))
    assert CALLS == [4]  # one call, on the conditional and null rows together
    # In a sampler: one guided call per step is one denoiser call per step.
    guided = make_guided_denoise_fn(labelled_denoiser, _null, mask_id=MASK)
    CALLS.clear()
    out = ancestral_sample(
        guided, PARAMS, jax.random.PRNGKey(1), batch_size=2, seq_len=L, mask_id=MASK,
        steps=4, mask_prob_fn=lambda t: t, reuse_logits=False,
        cond=Guided(LABELS, jnp.float32(2.0)),
    )  # fmt: skip
    assert int(out.network_calls) == 4
    assert CALLS and all(n == 4 for n in CALLS)  # every denoiser trace saw 2 x 2 rows
    assert not (np.asarray(out.tokens_BxL) == MASK).any()


def test_guidance_combines_conditional_and_null_log_probs():
    scale_B = jnp.array([1.5, 3.0])  # one w per row
    guided_BxLxV = np.asarray(_guided(PARAMS, Z_BxL, T_B, Guided(LABELS, scale_B)))
    table_CxV = np.asarray(PARAMS["table_CxV"], np.float64)
    for b, (label, w) in enumerate(zip([0, 3], [1.5, 3.0])):

        def log_p(row):
            logits_V = np.where(np.arange(V) == MASK, -np.inf, table_CxV[row])
            return logits_V - np.log(np.exp(logits_V).sum())

        mixed_V = (1 + w) * log_p(label)[:MASK] - w * log_p(NULL)[:MASK]
        want_V = mixed_V - np.log(np.exp(mixed_V).sum())
        for i in range(L):
            np.testing.assert_allclose(guided_BxLxV[b, i, :MASK], want_V, rtol=1e-5, atol=1e-5)
            assert guided_BxLxV[b, i, MASK] == NEG_INF
    np.testing.assert_allclose(np.exp(guided_BxLxV).sum(-1), 1.0, rtol=1e-6)


def test_zero_scale_is_the_conditional_model_under_a_ramp_too():
    cond_BxLxV = labelled_denoiser(PARAMS, Z_BxL, T_B, LABELS)
    ramped = jax.jit(make_guided_denoise_fn(labelled_denoiser, _null, mask_id=MASK, ramp="linear"))
    for t in (1.0, 0.5, 0.01):
        t_B = jnp.full((2,), t)
        guided_BxLxV = ramped(PARAMS, Z_BxL, t_B, Guided(LABELS, jnp.float32(0.0)))
        np.testing.assert_array_equal(guided_BxLxV, labelled_denoiser(PARAMS, Z_BxL, t_B, LABELS))
    # At t = 1 the linear ramp gives w = 0 whatever w_max: the conditional model.
    first_BxLxV = ramped(PARAMS, Z_BxL, jnp.ones((2,)), Guided(LABELS, jnp.float32(3.0)))
    np.testing.assert_array_equal(first_BxLxV, cond_BxLxV)


def test_linear_ramp_is_w_times_one_minus_t():
    ramped = jax.jit(make_guided_denoise_fn(labelled_denoiser, _null, mask_id=MASK, ramp="linear"))
    t_B = jnp.array([0.25, 0.75])
    got_BxLxV = ramped(PARAMS, Z_BxL, t_B, Guided(LABELS, jnp.float32(2.0)))
    want_BxLxV = _guided(PARAMS, Z_BxL, t_B, Guided(LABELS, jnp.array([1.5, 0.5])))
    np.testing.assert_allclose(got_BxLxV, want_BxLxV, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(guidance_scale(2.0, t_B, "constant"), [2.0, 2.0])
    with pytest.raises(ValueError, match="valid"):
        make_guided_denoise_fn(labelled_denoiser, _null, mask_id=MASK, ramp="cosine")


FP_EXACT, FP_ADAPTIVE = TOY_EXACT, TOY_ADAPTIVE  # the toy FP denoiser, label-shifted
FP_LABELS = {"label_B": jnp.array([0, 3, 5], jnp.int32)}


def _fp_run(denoise_fn, plan, cond, hidden_size, reveal_fn=ancestral_update):
    return fp_sample(
        denoise_fn, toy_params(), jax.random.PRNGKey(4), plan, batch_size=3, seq_len=12,
        hidden_size=hidden_size, mask_id=TOY_MASK, mask_prob_fn=SCHEDULE.mask_prob,
        reveal_fn=reveal_fn, cond=cond,
    )  # fmt: skip


def test_guided_fp_sampling_at_zero_scale_is_the_conditional_run():
    # tol 0: every step runs its cap on every row, so the conditional rows of the doubled
    # batch (each half warm-started from its own h*, 3SR) are the unguided run exactly.
    plan = plan_budget(40, StepCost(2, 1), steps=4, schedule="decreasing")
    plain = _fp_run(FP_EXACT, plan, FP_LABELS, D)
    for ramp in GUIDANCE_RAMPS:
        guided_fn = make_guided_fp_denoise_fn(FP_EXACT, _null, mask_id=TOY_MASK, ramp=ramp)
        guided = _fp_run(guided_fn, plan, Guided(FP_LABELS, jnp.float32(0.0)), 2 * D)
        np.testing.assert_array_equal(guided.tokens_BxL, plain.tokens_BxL)
        np.testing.assert_array_equal(guided.residual_TxB, plain.residual_TxB)
        assert int(guided.block_passes) == int(plain.block_passes)


def test_guided_fp_sampling_stays_within_budget_and_reports_the_doubled_cost():
    cost = StepCost(2, 1)
    guided_fn = make_guided_fp_denoise_fn(FP_ADAPTIVE, _null, mask_id=TOY_MASK, ramp="linear")
    rules = (ancestral_update, HaltonReveal(3, 4, 4), AnnealedConfidence(4, tau=1.0))
    for budget, rule in zip((16, 40, 80), rules):
        plan = plan_budget(budget, cost, steps=4, schedule="decreasing")
        out = _fp_run(guided_fn, plan, Guided(FP_LABELS, jnp.float32(2.0)), 2 * D, rule)
        spent = int(out.block_passes)  # the conditional network's passes
        assert spent == cost.total(4, int(np.sum(out.evals_T))) <= plan.budget
        assert block_passes_with_guidance(spent) == 2 * spent
        assert int(block_passes_with_guidance(out.block_passes)) == 2 * spent
        assert not (np.asarray(out.tokens_BxL) == TOY_MASK).any()
