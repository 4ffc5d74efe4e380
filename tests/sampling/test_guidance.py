"""Classifier-free guidance: w = 0 is the conditional model exactly, one batched denoiser
call per guided call, and the combination formula on a hand-made denoiser.

Shape legend: B batch, L length, V vocabulary (MASK included).
"""

import jax
import jax.numpy as jnp
import numpy as np

from cofre_jax.diffusion import NEG_INF
from cofre_jax.sampling import Guided, ancestral_sample, make_guided_denoise_fn

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
