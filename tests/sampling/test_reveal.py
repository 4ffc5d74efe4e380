"""Reveal rules: MDLM's ancestral posterior and MaskGIT's confidence decoding.

Shape legend: B batch, L length, V vocabulary (MASK included).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sampler_fixtures import SCHEDULE

from cofre_jax.diffusion import NEG_INF
from cofre_jax.sampling import reveal

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
