"""Reveal rules: MDLM's ancestral posterior and MaskGIT's confidence decoding (the
time-driven rule, and its annealed step-indexed form `halton.AnnealedConfidence`).

Shape legend: B batch, L length, V vocabulary (MASK included).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sampler_fixtures import SCHEDULE

from cofre_jax.diffusion import NEG_INF
from cofre_jax.sampling import AnnealedConfidence, ancestral_times, reveal

V = 6
MASK = V - 1


def _loglinear(t):
    return (1.0 - 1e-3) * t


_jitted_update = jax.jit(
    lambda key, z, log_probs, t, s: reveal.ancestral_update(
        key, z, log_probs, t, s, mask_prob_fn=_loglinear, mask_id=MASK
    )
)


@pytest.mark.parametrize("t, s, expected", [(1.0, 0.5, 0.5), (0.8, 0.6, 0.25), (0.1, 0.0, 1.0)])
def test_reveal_fraction_matches_schedule(t, s, expected):
    """A mask is revealed w.p. (t - s) / t under the log-linear schedule; s = 0 reveals all."""
    batch, length = 64, 32
    z_BxL = jnp.full((batch, length), MASK, jnp.int32)
    log_probs_BxLxV = jnp.zeros((batch, length, V)).at[..., MASK].set(NEG_INF)
    new_BxL = _jitted_update(jax.random.PRNGKey(5), z_BxL, log_probs_BxLxV, t, s)
    n = batch * length
    revealed = int((np.asarray(new_BxL) != MASK).sum())
    assert abs(revealed - n * expected) <= 5 * np.sqrt(n * expected * (1 - expected))


_confidence_step = jax.jit(
    lambda key, z, log_probs, t, s: reveal.confidence_update(
        key, z, log_probs, t, s, mask_prob_fn=SCHEDULE.mask_prob, mask_id=MASK
    )
)


def test_confidence_rule_follows_the_mask_schedule():
    """MaskGIT's rule keeps exactly floor(m(s) L) masks (the loop structure is shared)."""
    length = 12
    z_BxL = jnp.full((2, length), MASK, jnp.int32)
    log_probs_BxLxV = jax.nn.log_softmax(jax.random.normal(jax.random.PRNGKey(0), (2, length, V)))
    log_probs_BxLxV = log_probs_BxLxV.at[..., MASK].set(NEG_INF)
    for t, s in ((1.0, 0.75), (0.75, 0.5), (0.5, 0.2), (0.2, 0.0)):
        new_BxL = _confidence_step(jax.random.PRNGKey(1), z_BxL, log_probs_BxLxV, t, s)
        expected = 0 if s == 0.0 else int(np.floor(float(SCHEDULE.mask_prob(s)) * length))
        np.testing.assert_array_equal((np.asarray(new_BxL) == MASK).sum(1), [expected] * 2)
        kept_BxL = np.asarray(z_BxL) != MASK
        np.testing.assert_array_equal(np.asarray(new_BxL)[kept_BxL], np.asarray(z_BxL)[kept_BxL])
        z_BxL = new_BxL


def _log_probs(key, batch, length):
    log_probs_BxLxV = jax.nn.log_softmax(
        jax.random.normal(jax.random.PRNGKey(key), (batch, length, V))
    )
    return log_probs_BxLxV.at[..., MASK].set(NEG_INF)


def _run_rule(rule, z_BxL, steps):
    """The rule alone over the samplers' time grid: the z after each step."""
    times_T1 = ancestral_times(steps, 1e-5)
    step = jax.jit(
        lambda key, z, lp, t, s: rule(
            key, z, lp, t, s, mask_prob_fn=SCHEDULE.mask_prob, mask_id=MASK
        )
    )
    out = [z_BxL]
    for i in range(steps):
        lp = _log_probs(100 + i, *z_BxL.shape)
        out.append(step(jax.random.PRNGKey(i), out[-1], lp, times_T1[i], times_T1[i + 1]))
    return [np.asarray(z) for z in out]


def test_annealed_confidence_at_tau_0_is_greedy_confidence_exactly():
    steps, length = 4, 12
    rule = AnnealedConfidence(steps, tau=0.0, counts="schedule")
    greedy = lambda *a, **k: reveal.confidence_update(*a, **k, temperature=0.0)  # noqa: E731
    z_BxL = jnp.full((3, length), MASK, jnp.int32)
    greedy_zs = _run_rule(greedy, z_BxL, steps)
    for a, b in zip(_run_rule(rule, z_BxL, steps), greedy_zs):
        np.testing.assert_array_equal(a, b)
    # Not vacuous: with noise the chosen positions differ.
    noisy_zs = _run_rule(AnnealedConfidence(steps, tau=4.5, counts="schedule"), z_BxL, steps)
    assert any(not np.array_equal(a, b) for a, b in zip(noisy_zs, greedy_zs))


def test_confidence_update_defaults_are_the_time_driven_rule():
    z_BxL = jnp.full((3, 12), MASK, jnp.int32).at[:, 0].set(1)
    lp, key, t, s = _log_probs(7, 3, 12), jax.random.PRNGKey(2), 0.6, 0.3
    kw = dict(mask_prob_fn=SCHEDULE.mask_prob, mask_id=MASK)
    default = reveal.confidence_update(key, z_BxL, lp, t, s, **kw)
    keep = jnp.floor(SCHEDULE.mask_prob(jnp.float32(s)) * 12)
    explicit = reveal.confidence_update(
        key, z_BxL, lp, t, s, **kw, noise_scale=4.5 * jnp.float32(t), keep=keep
    )
    np.testing.assert_array_equal(default, explicit)
