"""Diffusion math: schedules, time sampling, masking, SUBS, and the NELBO estimator."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cofre_jax import diffusion
from cofre_jax.config.typed import DiffusionConfig
from cofre_jax.models import DenoiserOutput

EPS = 1e-3
NAMES = diffusion.SCHEDULES


def _alpha_np(name: str, t: np.ndarray) -> np.ndarray:
    """alpha_t = 1 - P(mask) written out independently of the module, in float64."""
    if name == "loglinear":
        return 1.0 - (1.0 - EPS) * t
    if name == "linear":
        return EPS**t
    if name == "cosine":
        return EPS + (1.0 - EPS) * np.cos(0.5 * np.pi * t)
    raise AssertionError(name)


# ---------------------------------------------------------------------------- schedules


def test_unknown_schedule_names_the_valid_ones():
    with pytest.raises(ValueError, match="loglinear.*linear.*cosine"):
        diffusion.make_schedule("sqrt", EPS)


@pytest.mark.parametrize("name", NAMES)
def test_schedule_endpoints_and_monotonicity(name):
    s = diffusion.make_schedule(name, EPS)
    assert float(s.total_noise(jnp.float32(0.0))) == 0.0
    assert float(s.mask_prob(jnp.float32(0.0))) == 0.0
    np.testing.assert_allclose(float(s.mask_prob(jnp.float32(1.0))), 1.0 - EPS, rtol=1e-5)
    t = jnp.linspace(0.0, 1.0, 257)
    assert bool(jnp.all(jnp.diff(s.total_noise(t)) > 0))
    assert bool(jnp.all(jnp.diff(s.mask_prob(t)) > 0))
    np.testing.assert_allclose(s.mask_prob(t), 1.0 - _alpha_np(name, np.asarray(t)), atol=2e-6)
    assert bool(jnp.all(s.loss_weight(t[1:]) > 0))


@pytest.mark.parametrize("name", NAMES)
def test_schedule_derivatives(name):
    s = diffusion.make_schedule(name, EPS)
    t = jnp.linspace(0.02, 0.98, 49)
    # rate_noise is d sigma / dt.
    dsigma = jax.vmap(jax.grad(s.total_noise))(t)
    np.testing.assert_allclose(s.rate_noise(t), dsigma, rtol=1e-4)
    # loss_weight is -alpha'_t / (1 - alpha_t).
    alpha = lambda t: 1.0 - s.mask_prob(t)
    expected = -jax.vmap(jax.grad(alpha))(t) / s.mask_prob(t)
    np.testing.assert_allclose(s.loss_weight(t), expected, rtol=1e-4)


def test_loglinear_is_mdlm():
    s = diffusion.make_schedule("loglinear", EPS)
    t = jnp.linspace(1e-3, 1.0, 101)
    np.testing.assert_allclose(s.mask_prob(t), (1.0 - EPS) * t, rtol=1e-5)
    np.testing.assert_allclose(s.loss_weight(t), 1.0 / t, rtol=1e-4)  # w(t) = 1/t exactly


# ---------------------------------------------------------------------------- sampling


def test_antithetic_times_are_stratified_and_in_range():
    batch, sampling_eps = 64, 1e-3
    for seed in range(3):
        t = diffusion.sample_times(
            jax.random.PRNGKey(seed), batch, antithetic=True, sampling_eps=sampling_eps
        )
        assert t.shape == (batch,) and t.dtype == jnp.float32
        u = (np.asarray(t, np.float64) - sampling_eps) / (1.0 - sampling_eps)
        assert np.all((u >= 0) & (u < 1 + 1e-6))
        # One sample per stratum [i/B, (i+1)/B), in order.
        centres = np.arange(batch) + 0.5
        assert np.all(np.abs(u * batch - centres) <= 0.5 + 1e-4)


def test_iid_times_are_in_range_and_not_stratified():
    t = diffusion.sample_times(jax.random.PRNGKey(0), 64, antithetic=False, sampling_eps=0.1)
    assert float(t.min()) >= 0.1 and float(t.max()) <= 1.0
    strata = np.floor((np.asarray(t) - 0.1) / 0.9 * 64)
    assert len(set(strata.tolist())) < 64


def test_mask_tokens_only_masks_and_at_the_right_rate():
    s = diffusion.make_schedule("loglinear", EPS)
    tokens_BxL = jax.random.randint(jax.random.PRNGKey(0), (4, 4096), 0, 50)
    t_B = jnp.array([0.0, 0.25, 0.5, 1.0])
    z_BxL = diffusion.mask_tokens(jax.random.PRNGKey(1), tokens_BxL, t_B, s, mask_id=50)
    masked_BxL = z_BxL == 50
    assert bool(jnp.all(masked_BxL | (z_BxL == tokens_BxL)))
    rate_B = np.asarray(masked_BxL.mean(axis=1))
    p_B = np.asarray(s.mask_prob(t_B))
    np.testing.assert_allclose(rate_B, p_B, atol=4 * 0.5 / math.sqrt(4096))
    assert rate_B[0] == 0.0


def test_shared_uniforms_give_nested_masks():
    s = diffusion.make_schedule("cosine", EPS)
    tokens_BxL = jnp.zeros((3, 256), jnp.int32)
    u_BxL = jax.random.uniform(jax.random.PRNGKey(0), tokens_BxL.shape)
    early = diffusion.mask_with_uniforms(tokens_BxL, u_BxL, jnp.full((3,), 0.3), s, 9) == 9
    late = diffusion.mask_with_uniforms(tokens_BxL, u_BxL, jnp.full((3,), 0.6), s, 9) == 9
    assert bool(jnp.all(late | ~early))
    assert int(late.sum()) > int(early.sum())


# ---------------------------------------------------------------------------- SUBS


def _subs_case():
    V, mask_id = 7, 6
    logits_BxLxV = 3.0 * jax.random.normal(jax.random.PRNGKey(0), (2, 5, V))
    logits_BxLxV = logits_BxLxV.at[..., mask_id].set(50.0)  # MASK strongly preferred raw
    tokens_BxL = jax.random.randint(jax.random.PRNGKey(1), (2, 5), 0, mask_id)
    z_BxL = tokens_BxL.at[:, ::2].set(mask_id)
    return logits_BxLxV, tokens_BxL, z_BxL, mask_id


def test_subs_invariants():
    logits_BxLxV, tokens_BxL, z_BxL, mask_id = _subs_case()
    log_probs = diffusion.subs_log_probs(logits_BxLxV, z_BxL, mask_id)
    probs = np.asarray(jnp.exp(log_probs))
    assert log_probs.dtype == jnp.float32
    # Rows are distributions and MASK is never predicted, even with a huge raw logit.
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(probs[..., mask_id], 0.0)
    # Visible tokens are carried over exactly.
    visible = np.asarray(z_BxL != mask_id)
    onehot = np.eye(logits_BxLxV.shape[-1])[np.asarray(z_BxL)]
    np.testing.assert_array_equal(probs[visible], onehot[visible])
    np.testing.assert_array_equal(np.asarray(log_probs)[visible][onehot[visible] == 1], 0.0)
    # Masked positions: softmax over the non-MASK logits.
    raw = np.asarray(logits_BxLxV, np.float64)[..., :mask_id]
    ref = np.exp(raw - raw.max(-1, keepdims=True))
    ref /= ref.sum(-1, keepdims=True)
    np.testing.assert_allclose(probs[~visible][:, :mask_id], ref[~visible], rtol=1e-5)


def test_subs_outputs_are_nan_safe_in_products():
    # An entropy over SUBS outputs multiplies zero probabilities by the impossible
    # log-probabilities; with a finite NEG_INF neither it nor its gradient is NaN.
    logits_BxLxV, _, z_BxL, mask_id = _subs_case()

    def entropy(logits):
        lp = diffusion.subs_log_probs(logits, z_BxL, mask_id)
        return -jnp.sum(jnp.exp(lp) * lp)

    value, grad = jax.value_and_grad(entropy)(logits_BxLxV)
    assert bool(jnp.isfinite(value)) and bool(jnp.all(jnp.isfinite(grad)))


def test_nelbo_per_token_counts_masked_positions_only():
    logits_BxLxV, tokens_BxL, z_BxL, mask_id = _subs_case()
    s = diffusion.make_schedule("loglinear", EPS)
    t_B = jnp.array([0.25, 0.5])
    log_probs = diffusion.subs_log_probs(logits_BxLxV, z_BxL, mask_id)
    loss_BxL = diffusion.nelbo_per_token(log_probs, tokens_BxL, z_BxL, t_B, s, mask_id)
    masked = np.asarray(z_BxL == mask_id)
    np.testing.assert_array_equal(np.asarray(loss_BxL)[~masked], 0.0)
    log_p = np.take_along_axis(np.asarray(log_probs), np.asarray(tokens_BxL)[..., None], -1)
    expected = -log_p[..., 0] / np.array([0.25, 0.5])[:, None]
    np.testing.assert_allclose(np.asarray(loss_BxL)[masked], expected[masked], rtol=1e-5)


def test_fused_nll_matches_subs_path_with_exact_gradient():
    logits_BxLxV, tokens_BxL, z_BxL, mask_id = _subs_case()
    s = diffusion.make_schedule("loglinear", EPS)
    ones_B = jnp.ones((2,))  # w(1) = 1 for log-linear

    def via_subs(logits):
        lp = diffusion.subs_log_probs(logits, z_BxL, mask_id)
        return diffusion.nelbo_per_token(lp, tokens_BxL, z_BxL, ones_B, s, mask_id).sum()

    def fused(logits):
        return diffusion._masked_nll(logits, tokens_BxL, z_BxL, mask_id).sum()

    np.testing.assert_allclose(fused(logits_BxLxV), via_subs(logits_BxLxV), rtol=1e-6)
    # d(-log p_x)/d logits = softmax over non-MASK - onehot(x) at masked rows, 0 elsewhere.
    probs = np.asarray(jnp.exp(diffusion.subs_log_probs(logits_BxLxV, z_BxL, mask_id)))
    onehot = np.eye(logits_BxLxV.shape[-1])[np.asarray(tokens_BxL)]
    masked = np.asarray(z_BxL == mask_id)[..., None]
    expected = np.where(masked, probs - onehot, 0.0)
    for fn in (fused, via_subs):
        np.testing.assert_allclose(jax.grad(fn)(logits_BxLxV), expected, atol=1e-6)


def test_fused_nll_masks_by_addition_bit_for_bit_as_a_where():
    """Adding NEG_INF to the MASK logit (which XLA fuses into the head) gives the very
    bits, value and gradient, of replacing it with NEG_INF, also for a large MASK logit."""
    B, L, V = 4, 16, 300
    mask_id = V - 1
    k1, k2, k3, k4 = jax.random.split(jax.random.PRNGKey(3), 4)
    logits = 8.0 * jax.random.normal(k1, (B, L, V))
    logits = logits.at[0, :, mask_id].set(1000.0)
    tokens = jax.random.randint(k2, (B, L), 0, mask_id)
    z = jnp.where(jax.random.uniform(k3, (B, L)) < 0.5, mask_id, tokens)
    w_BxL = jax.random.uniform(k4, (B, L))

    def by_where(logits):
        logits = jnp.where(jnp.arange(V) == mask_id, diffusion.NEG_INF, logits)
        target = jnp.take_along_axis(logits, tokens[..., None], axis=-1)[..., 0]
        nll = jax.nn.logsumexp(logits, axis=-1) - target
        return jnp.sum(w_BxL * jnp.where(z == mask_id, nll, 0.0))

    def fused(logits):
        return jnp.sum(w_BxL * diffusion._masked_nll(logits, tokens, z, mask_id))

    for fn in (jax.value_and_grad, lambda f: jax.jit(jax.value_and_grad(f))):
        (value, grad), (ref_value, ref_grad) = fn(fused)(logits), fn(by_where)(logits)
        np.testing.assert_array_equal(value, ref_value)
        np.testing.assert_array_equal(grad, ref_grad)


# ---------------------------------------------------------------------------- NELBO


def _cfg(name, antithetic=True, sampling_eps=1e-3):
    return DiffusionConfig(schedule=name, eps=EPS, antithetic=antithetic, sampling_eps=sampling_eps)


# A toy denoiser whose logits depend on the noise level but not on z: factorised over
# positions, so its continuous-time NELBO is a one-dimensional integral per position.
V_TOY, L_TOY, MASK_TOY = 5, 6, 5
_A = np.asarray(jax.random.normal(jax.random.PRNGKey(10), (L_TOY, V_TOY + 1)), np.float64)
_S = 3.0 * np.asarray(jax.random.normal(jax.random.PRNGKey(11), (L_TOY, V_TOY + 1)), np.float64)
_X = np.array([0, 1, 2, 3, 4, 0])


def _toy_apply(params, z_BxL, sigma_B, *, train, rngs):
    del train, rngs
    a, s = params
    logits = a[None] + jnp.tanh(sigma_B)[:, None, None] * s[None]
    logits_BxLxV = jnp.broadcast_to(logits, (*z_BxL.shape, V_TOY + 1))
    return DenoiserOutput(logits_BxLxV, logits_BxLxV)


def _quadrature_nelbo(name, sampling_eps):
    """(1/(1-eps_s)) int_{eps_s}^1 w(t) P(mask | t) sum_i c_i(t) dt / L, where
    w(t) P(mask | t) = -alpha'_t, by Gauss-Legendre in float64."""
    nodes, weights = np.polynomial.legendre.leggauss(200)
    t = 0.5 * (1 - sampling_eps) * nodes + 0.5 * (1 + sampling_eps)
    weights = 0.5 * (1 - sampling_eps) * weights
    h = 1e-6
    minus_dalpha = -(_alpha_np(name, t + h) - _alpha_np(name, t - h)) / (2 * h)
    sigma = -np.log(_alpha_np(name, t))
    logits = _A[None] + np.tanh(sigma)[:, None, None] * _S[None]  # T x L x V+1
    logits = logits[..., :V_TOY]  # SUBS drops MASK
    m = logits.max(-1, keepdims=True)
    log_z = (m + np.log(np.exp(logits - m).sum(-1, keepdims=True)))[..., 0]
    nll_TxL = log_z - logits[:, np.arange(L_TOY), _X]
    integrand = minus_dalpha * nll_TxL.mean(-1)
    return float(np.sum(weights * integrand) / (1 - sampling_eps))


@pytest.mark.parametrize(
    "name,antithetic", [("loglinear", True), ("linear", True), ("cosine", False)]
)
def test_nelbo_estimator_matches_quadrature(name, antithetic):
    cfg = _cfg(name, antithetic=antithetic, sampling_eps=1e-3)
    params = (jnp.asarray(_A, jnp.float32), jnp.asarray(_S, jnp.float32))
    tokens_BxL = jnp.broadcast_to(jnp.asarray(_X), (8, L_TOY))

    @jax.jit
    def draws(keys):
        def one(key):
            loss, _ = diffusion.diffusion_loss(
                _toy_apply, params, tokens_BxL, key, cfg, MASK_TOY, train=False, rngs=None
            )
            return loss

        return jax.vmap(one)(keys)

    losses = np.asarray(draws(jax.random.split(jax.random.PRNGKey(0), 20_000)), np.float64)
    exact = _quadrature_nelbo(name, cfg.sampling_eps)
    stderr = losses.std() / math.sqrt(len(losses))
    assert abs(losses.mean() - exact) < 4 * stderr, (losses.mean(), exact, stderr)
    assert stderr < 0.01 * exact  # the check has teeth: the tolerance is under 4%


def test_diffusion_loss_metrics_and_gradient():
    cfg = _cfg("loglinear")
    params = (jnp.asarray(_A, jnp.float32), jnp.asarray(_S, jnp.float32))
    tokens_BxL = jnp.broadcast_to(jnp.asarray(_X), (4, L_TOY))

    def loss_fn(p):
        return diffusion.diffusion_loss(
            _toy_apply, p, tokens_BxL, jax.random.PRNGKey(3), cfg, MASK_TOY, train=True
        )

    (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    assert set(metrics) == {"nll_sum", "token_count", "masked_fraction", "stats"}
    assert metrics["stats"] is None  # an explicit stack: no solver
    assert float(metrics["token_count"]) == 4 * L_TOY
    np.testing.assert_allclose(loss, metrics["nll_sum"] / metrics["token_count"], rtol=1e-6)
    assert 0.0 < float(metrics["masked_fraction"]) < 1.0
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in grads)
    assert float(jnp.abs(grads[0]).sum()) > 0.0


def test_nelbo_metrics_golden():
    # 10 tokens at 3 bits each: exact by definition, never expected to change.
    out = diffusion.nelbo_metrics(10 * 3 * math.log(2.0), 10)
    np.testing.assert_allclose(out["nats_per_token"], 3 * math.log(2.0), rtol=1e-6)
    np.testing.assert_allclose(out["bits_per_token"], 3.0, rtol=1e-6)
    np.testing.assert_allclose(out["perplexity"], 8.0, rtol=1e-6)
