"""Warm starts of the fixed-point solve: the 3SR rule on handcrafted transitions.

Shape legend: B batch, L length.
"""

import jax.numpy as jnp
import numpy as np

from cofre_jax.sampling import warm_start
from cofre_jax.sampling.warm_start import ReuseCoefficients

M = 9  # MASK id of the handcrafted sequences


def test_three_state_gamma_matches_the_rule_on_handcrafted_transitions():
    z_prev_BxL = np.array([
        [M, M, M, M, M, M, M, M, M, M],  # nothing visible before
        [1, 2, M, M, M, M, M, M, M, M],
        [1, 2, 3, 4, 5, M, M, M, M, M],
        [1, 2, 3, 4, 5, 6, 7, 8, 0, 1],  # everything visible, unchanged
    ])  # fmt: skip
    z_BxL = np.array([
        [5, M, M, M, M, M, M, M, M, M],  # one revealed: v = 0.1
        [1, 2, 3, M, M, M, M, M, M, M],  # v = 0.3
        [1, 2, 3, 4, 5, 6, 7, M, M, M],  # v = 0.7
        [1, 2, 3, 4, 5, 6, 7, 8, 0, 1],  # v = 1
    ])  # fmt: skip
    for coeffs in (ReuseCoefficients(), ReuseCoefficients(0.9, 0.1, 0.5, 0.3)):
        vis, lo, hi, changed = coeffs
        masked = [lo + (hi - lo) * v for v in (0.1, 0.3, 0.7)]
        expected_BxL = np.array([
            [changed] + [masked[0]] * 9,
            [vis, vis, changed] + [masked[1]] * 7,
            [vis] * 5 + [changed] * 2 + [masked[2]] * 3,
            [vis] * 10,
        ])  # fmt: skip
        gamma_BxL = warm_start.three_state_gamma(jnp.asarray(z_BxL), jnp.asarray(z_prev_BxL),
                                                  coeffs, M)  # fmt: skip
        np.testing.assert_allclose(gamma_BxL, expected_BxL, rtol=1e-6)
    # Every mode starts cold: gamma is 0 on the first step whatever the tokens.
    for mode in ("reuse", "3sr"):
        gamma_BxL = warm_start.warm_start_gamma(mode, jnp.asarray(True), z_BxL, z_prev_BxL,
                                                 ReuseCoefficients(), M)  # fmt: skip
        assert not np.asarray(gamma_BxL).any()
    assert warm_start.warm_start_gamma("cold", False, z_BxL, z_prev_BxL, (), M) is None
