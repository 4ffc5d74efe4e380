"""The image model's reveal rules (cofre_jax/sampling/halton.py): the Halton order, the
arccos counts, the Halton rule and MaskGIT's annealed confidence, alone and in both
samplers; the rules by name (cofre_jax/sampling/rules.py).

Shape legend: B batch, L length (H W), V vocabulary (MASK included), T steps.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sampler_fixtures import SCHEDULE, TOY_ADAPTIVE, TOY_MASK, D, toy_params

from cofre_jax.diffusion import NEG_INF
from cofre_jax.sampling import (
    REVEAL_RULES,
    AnnealedConfidence,
    HaltonReveal,
    StepCost,
    ancestral_sample,
    ancestral_times,
    ancestral_update,
    arccos_mask_counts,
    arccos_reveal_counts,
    fp_sample,
    halton_order,
    make_reveal_fn,
    plan_budget,
    step_of_time,
)
from cofre_jax.sampling import rules as rules_module

V = 6
MASK = V - 1


@pytest.mark.parametrize("height, width", [(7, 7), (14, 14), (16, 16), (16, 8), (1, 5)])
def test_halton_order_is_a_permutation(height, width):
    order_L = halton_order(height, width)
    assert order_L.shape == (height * width,)
    np.testing.assert_array_equal(np.sort(order_L), np.arange(height * width))


def test_halton_order_starts_with_the_halton_points():
    # n = 1: (1/2, 1/3) -> cell (8, 5); n = 2: (1/4, 2/3) -> (4, 10); n = 3: (3/4, 1/9)
    # -> (12, 1); n = 4: (1/8, 4/9) -> (2, 7). Row-major positions on a 16 x 16 grid.
    np.testing.assert_array_equal(halton_order(16, 16)[:4], [133, 74, 193, 39])


# Worst |points in a block - n / 4^k| over every prefix n of a 16 x 16 order, the grid
# cut into 2^k x 2^k blocks. Measured for the Halton order: 3.75, 3.5625, 1.84375;
# row-major order: 34, 12.75, 3.71875.
DISCREPANCY_BOUNDS = {1: 4.0, 2: 4.0, 3: 2.0}


def _block_discrepancy(order_L, side, k):
    blocks, block_side = 2**k, side // 2**k
    rows_L, cols_L = order_L // side, order_L % side
    block_L = (rows_L // block_side) * blocks + cols_L // block_side
    worst = 0.0
    for n in range(1, order_L.shape[0] + 1):
        count = np.bincount(block_L[:n], minlength=blocks * blocks)
        worst = max(worst, float(np.abs(count - n / blocks**2).max()))
    return worst


def test_halton_order_prefixes_cover_the_grid_evenly():
    halton_L, row_major_L = halton_order(16, 16), np.arange(256)
    for k, bound in DISCREPANCY_BOUNDS.items():
        assert _block_discrepancy(halton_L, 16, k) <= bound
        assert _block_discrepancy(row_major_L, 16, k) > bound  # the test has teeth


@pytest.mark.parametrize("length, steps", [(256, 1), (256, 8), (256, 32), (256, 200), (256, 256),
                                           (49, 7), (196, 12), (12, 4)])  # fmt: skip
def test_arccos_counts_follow_the_formula(length, steps):
    masks_T1 = arccos_mask_counts(length, steps)
    reveal_T = arccos_reveal_counts(length, steps)
    assert masks_T1[0] == length and masks_T1[-1] == 0
    assert reveal_T.sum() == length and (reveal_T >= 1).all()
    # M_i = min(L - floor(L (1 - arccos(i/T) / (pi/2))), M_{i-1} - 1).
    for i in range(1, steps + 1):
        real = length * (1 - np.arccos(i / steps) / (np.pi / 2))
        raw = length - int(np.floor(real + 1e-9))
        assert masks_T1[i] == min(raw, masks_T1[i - 1] - 1)
    if steps == length:
        np.testing.assert_array_equal(reveal_T, 1)


@pytest.mark.parametrize("length, steps", [(256, 8), (256, 64), (256, 256), (6, 2), (49, 49)])
def test_arccos_counts_equal_halton_maskgit_s(length, steps):
    # Halton-MaskGIT reveals max(i, int((1 - r(i)) L)) tokens by step i; (6, 2) has the
    # integer value L / 3 at i / T = 1/2, which the guard floors to 2, not 1.
    revealed_T = [
        max(i, int((1 - np.arccos(i / steps) / (np.pi / 2)) * length + 1e-9))
        for i in range(1, steps + 1)
    ]
    np.testing.assert_array_equal(length - arccos_mask_counts(length, steps)[1:], revealed_T)
    with pytest.raises(ValueError, match="steps <= length"):
        arccos_mask_counts(12, 13)


def test_step_of_time_counts_the_steps_of_the_grid():
    for steps in (1, 4, 64, 256):
        times_T1 = ancestral_times(steps, 1e-5)
        np.testing.assert_array_equal(step_of_time(times_T1, steps), np.arange(steps + 1))


def _log_probs(key, batch, length):
    log_probs_BxLxV = jax.nn.log_softmax(
        jax.random.normal(jax.random.PRNGKey(key), (batch, length, V))
    )
    return log_probs_BxLxV.at[..., MASK].set(NEG_INF)


def _run_rule(rule, z_BxL, steps, seed=0):
    """The rule alone over the samplers' time grid: the z after each step."""
    times_T1 = ancestral_times(steps, 1e-5)
    step = jax.jit(lambda key, z, lp, t, s: rule(key, z, lp, t, s, mask_prob_fn=SCHEDULE.mask_prob,
                                                 mask_id=MASK))  # fmt: skip
    out = [z_BxL]
    for i in range(steps):
        lp = _log_probs(100 + i, *z_BxL.shape)
        out.append(step(jax.random.PRNGKey(seed + i), out[-1], lp, times_T1[i], times_T1[i + 1]))
    return [np.asarray(z) for z in out]


@pytest.mark.parametrize("height, width, steps", [(3, 4, 4), (7, 7, 7), (4, 4, 16)])
def test_halton_rule_reveals_exactly_its_scheduled_positions(height, width, steps):
    rule = HaltonReveal(height, width, steps)
    zs = _run_rule(rule, jnp.full((2, height * width), MASK, jnp.int32), steps)
    for i in range(steps):
        newly_BxL = (zs[i] == MASK) & (zs[i + 1] != MASK)
        np.testing.assert_array_equal(
            newly_BxL, np.broadcast_to(rule.scheduled_L(i), newly_BxL.shape)
        )
        visible_BxL = zs[i] != MASK
        np.testing.assert_array_equal(zs[i + 1][visible_BxL], zs[i][visible_BxL])
        assert (zs[i + 1] == MASK).sum(1).tolist() == [
            arccos_mask_counts(height * width, steps)[i + 1]
        ] * 2
    assert not (zs[-1] == MASK).any()


def test_halton_rule_keeps_visible_tokens_of_a_partial_start():
    rule = HaltonReveal(3, 4, 4)
    z_BxL = np.full((2, 12), MASK, np.int32)
    z_BxL[:, [0, 5, 11]] = [[1, 2, 3], [4, 0, 1]]
    zs = _run_rule(rule, jnp.asarray(z_BxL), 4)
    for z in zs:
        np.testing.assert_array_equal(z[:, [0, 5, 11]], z_BxL[:, [0, 5, 11]])
    assert not (zs[-1] == MASK).any()


def test_halton_rule_token_temperature():
    # A tiny temperature is the argmax; the rule's draw is otherwise random.
    cold = HaltonReveal(3, 4, 2, temperature=(1e-4, 1e-4))
    z_BxL = jnp.full((64, 12), MASK, jnp.int32)
    lp = _log_probs(3, 64, 12)
    out_BxL = cold(jax.random.PRNGKey(0), z_BxL, lp, 1.0, 0.0, mask_prob_fn=None, mask_id=MASK)
    np.testing.assert_array_equal(out_BxL, jnp.argmax(lp, -1))
    warm = HaltonReveal(3, 4, 2)
    out_BxL = warm(jax.random.PRNGKey(0), z_BxL, lp, 1.0, 0.0, mask_prob_fn=None, mask_id=MASK)
    assert not np.array_equal(out_BxL, jnp.argmax(lp, -1))
    assert HaltonReveal(3, 4, 2, temperature=[2, 0.5]).temperature == (2.0, 0.5)  # hashable
    with pytest.raises(ValueError, match="temperature"):
        HaltonReveal(3, 4, 2, temperature=(1.0, 0.0))


def test_annealed_confidence_keeps_the_arccos_counts():
    steps, length = 5, 12
    rule = AnnealedConfidence(steps, tau=2.0, temperature=(1.5, 0.5))
    zs = _run_rule(rule, jnp.full((4, length), MASK, jnp.int32), steps)
    masks_T1 = arccos_mask_counts(length, steps)
    for i in range(steps):
        assert (zs[i + 1] == MASK).sum(1).tolist() == [masks_T1[i + 1]] * 4
        visible_BxL = zs[i] != MASK
        np.testing.assert_array_equal(zs[i + 1][visible_BxL], zs[i][visible_BxL])


def _flat_denoiser(params, z_BxL, t_B, cond):
    return jnp.broadcast_to(params, (*z_BxL.shape, V))


def test_both_samplers_take_the_image_rules():
    steps, (height, width) = 4, (3, 4)
    lp_V = jax.nn.log_softmax(jnp.arange(V, dtype=jnp.float32)).at[MASK].set(NEG_INF)
    for rule in (HaltonReveal(height, width, steps), AnnealedConfidence(steps)):
        out = ancestral_sample(_flat_denoiser, lp_V, jax.random.PRNGKey(0), batch_size=2,
                               seq_len=12, mask_id=MASK, steps=steps,
                               mask_prob_fn=SCHEDULE.mask_prob, reveal_fn=rule)  # fmt: skip
        assert int(out.network_calls) == steps and not (np.asarray(out.tokens_BxL) == MASK).any()
        plan = plan_budget(4 * 6, StepCost(2, 1), steps=steps, schedule="decreasing")
        fp = fp_sample(TOY_ADAPTIVE, toy_params(), jax.random.PRNGKey(0), plan, batch_size=2,
                       seq_len=12, hidden_size=D, mask_id=TOY_MASK,
                       mask_prob_fn=SCHEDULE.mask_prob, reveal_fn=rule)  # fmt: skip
        assert int(fp.block_passes) <= plan.budget
        assert not (np.asarray(fp.tokens_BxL) == TOY_MASK).any()
    with pytest.raises(ValueError, match="built for 4 steps but the sampler runs 5"):
        ancestral_sample(_flat_denoiser, lp_V, jax.random.PRNGKey(0), batch_size=2, seq_len=12,
                         mask_id=MASK, steps=5, mask_prob_fn=SCHEDULE.mask_prob,
                         reveal_fn=HaltonReveal(height, width, steps))  # fmt: skip


def test_rules_by_name():
    assert (
        tuple(rules_module._REVEAL_RULES) == REVEAL_RULES == ("ancestral", "confidence", "halton")
    )
    assert make_reveal_fn("ancestral", steps=8) is ancestral_update
    assert make_reveal_fn("confidence", steps=8, tau=2.0) == AnnealedConfidence(8, tau=2.0)
    halton = make_reveal_fn("halton", steps=8, grid=(16, 16))
    assert halton == HaltonReveal(16, 16, 8) and hash(halton) == hash(HaltonReveal(16, 16, 8))
    with pytest.raises(ValueError, match="grid"):
        make_reveal_fn("halton", steps=8)
    with pytest.raises(ValueError, match="valid"):
        make_reveal_fn("random", steps=8)
