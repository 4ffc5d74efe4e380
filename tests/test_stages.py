"""The consistency and distillation objectives: nested masks, stop-gradient teachers,
the lambda schedule and the divergences."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tiny

from cofre_jax import diffusion, stages, tasks
from cofre_jax.models import DenoiserOutput

MASK = 9
SCHEDULE = diffusion.make_schedule("loglinear", 1e-3)


def test_correlated_masks_nested_and_differ_in_one_position():
    key_t, key_gap, key_u, key_x = jax.random.split(jax.random.PRNGKey(0), 4)
    batch, length = 4096, 12
    t_s_B = jax.random.uniform(key_t, (batch,))
    # gap_min = 0 draws gaps so small that the nested sets often coincide.
    t_c_B, gap_B = stages.teacher_times(key_gap, t_s_B, 0.0, 0.3)
    u_BxL = jax.random.uniform(key_u, (batch, length))
    tokens_BxL = jax.random.randint(key_x, (batch, length), 0, MASK)
    z_s, z_c = stages.correlated_masks(tokens_BxL, u_BxL, t_s_B, t_c_B, SCHEDULE, MASK)
    m_s, m_c = np.asarray(z_s == MASK), np.asarray(z_c == MASK)
    assert np.all(m_c <= m_s), "teacher-masked positions must be student-masked"
    has_mask = m_s.any(axis=1)
    assert np.all((m_s != m_c).sum(axis=1)[has_mask] >= 1)
    # Without the extra reveal many rows would have equal sets: the rule is exercised.
    plain_c = np.asarray(u_BxL < SCHEDULE.mask_prob(t_c_B)[:, None])
    assert np.sum(np.all(plain_c == m_s, axis=1) & has_mask) > 50
    # Visible positions keep their tokens; t_c = max(t_s - gap, 0).
    np.testing.assert_array_equal(np.where(m_s, tokens_BxL, z_s), tokens_BxL)
    np.testing.assert_array_equal(np.where(m_c, tokens_BxL, z_c), tokens_BxL)
    np.testing.assert_allclose(t_c_B, np.maximum(t_s_B - gap_B, 0.0))
    assert float(gap_B.min()) >= 0.0 and float(gap_B.max()) <= 0.3


def test_equal_sets_reveal_the_largest_uniform():
    tokens = jnp.arange(6)[None]
    u = jnp.array([[0.05, 0.9, 0.3, 0.2, 0.6, 0.1]])
    t = jnp.array([0.5])  # mask_prob ~ 0.5: positions 0, 2, 3, 5 masked
    z_s, z_c = stages.correlated_masks(tokens, u, t, t, SCHEDULE, MASK)
    np.testing.assert_array_equal(z_s[0], [MASK, 1, MASK, MASK, 4, MASK])
    np.testing.assert_array_equal(z_c[0], [MASK, 1, 2, MASK, 4, MASK])  # u=0.3 revealed


def test_lambda_schedule():
    values = [float(stages.lambda_at(s, 0.1, 5000)) for s in (0, 1250, 2500, 5000, 9000)]
    np.testing.assert_allclose(values, [0.0, 0.025, 0.05, 0.1, 0.1], rtol=1e-6)
    assert float(stages.lambda_at(0, 0.1, 0)) == pytest.approx(0.1)
    traced = jax.jit(lambda s: stages.lambda_at(s, 0.2, 10))(jnp.int32(5))
    assert float(traced) == pytest.approx(0.1)


def test_divergences_on_handcrafted_states():
    h_s = jnp.array([[[1.0, 0.0], [3.0, 4.0], [1.0, 1.0]]])
    h_c = jnp.array([[[0.0, 0.0], [0.0, 4.0], [2.0, 2.0]]])
    masked = jnp.array([[True, True, False]])
    assert float(stages.hidden_mse(h_s, h_c, masked)) == pytest.approx((1.0 + 9.0) / 2)
    cos = stages.hidden_cosine(h_s, h_c, jnp.array([[False, True, True]]))
    assert float(cos) == pytest.approx(((1 - 0.8) + 0.0) / 2, abs=1e-6)


def test_normalized_mse_ignores_scale_and_is_bounded():
    key_s, key_c = jax.random.split(jax.random.PRNGKey(3))
    h_s = jax.random.normal(key_s, (2, 5, 8))
    h_c = jax.random.normal(key_c, (2, 5, 8))
    masked = jnp.ones((2, 5), bool)
    base = float(stages.normalized_hidden_mse(h_s, h_c, masked))
    # Scaling or shifting a token's state changes nothing; the raw MSE grows with scale.
    scaled = float(stages.normalized_hidden_mse(1e4 * h_s + 3.0, 0.1 * h_c, masked))
    assert scaled == pytest.approx(base, rel=1e-4)
    assert float(stages.hidden_mse(1e4 * h_s, h_c, masked)) > 1e7
    # Standardised vectors have squared norm D, so the distance is at most 4 D.
    assert float(stages.normalized_hidden_mse(h_s, -h_s, masked)) == pytest.approx(4 * 8, 1e-4)
    assert float(stages.normalized_hidden_mse(h_s, h_s, masked)) == pytest.approx(0.0, abs=1e-9)


def test_tempered_kl_zero_for_equal_inputs_and_cross_entropy_for_visible():
    logits = jax.random.normal(jax.random.PRNGKey(1), (1, 3, MASK + 1))
    z = jnp.array([[MASK, MASK, 2]])
    masked = z == MASK
    kl = stages.tempered_kl(logits, z, logits, z, masked, mask_id=MASK, tau=1.5)
    assert float(kl) == pytest.approx(0.0, abs=1e-6)
    # The teacher sees position 1 (token 4): its term is tau^2 * CE of the tempered student.
    z_c = jnp.array([[MASK, 4, 2]])
    kl = stages.tempered_kl(logits, z, logits, z_c, masked, mask_id=MASK, tau=1.5)
    log_p = jax.nn.log_softmax(diffusion.subs_log_probs(logits, z, MASK) / 1.5)
    assert float(kl) == pytest.approx(1.5**2 * float(-log_p[0, 1, 4]) / 2, rel=1e-5)


def _tiny(model_kind="fp_mdlm", **stage):
    overrides = {f"stage.{key}": value for key, value in stage.items()}
    config = tiny.fp_config(**{"model.kind": model_kind, "model.num_layers": 2, **overrides})
    task = tasks.get_task(config)
    tokens = jax.random.randint(jax.random.PRNGKey(2), (4, 16), 0, config.model.mask_id)
    return config, task.apply, jax.jit(task.init_params)(jax.random.PRNGKey(0)), tokens


def _loss(config, forward, params, tokens, teacher_forward, teacher_params):
    loss, _ = stages.stage_loss(
        forward,
        params,
        tokens,
        jax.random.PRNGKey(3),
        jnp.int32(10_000),
        stage=config.stage,
        divergence_kind="kl" if config.stage.kind == "distill" else config.stage.divergence,
        diffusion_cfg=config.diffusion,
        mask_id=config.model.mask_id,
        teacher_forward=teacher_forward,
        teacher_params=teacher_params,
        rngs={"dropout": jax.random.PRNGKey(4), "fixed_point": jax.random.PRNGKey(5)},
    )
    return loss


@pytest.mark.parametrize(
    "model_kind, divergence", [("fp_mdlm", "mse"), ("mdlm", "kl"), ("mdlm", "cosine")]
)
def test_consistency_teacher_gets_no_gradient(model_kind, divergence):
    """The gradient with the live stop-gradient teacher equals the gradient with the
    teacher's outputs frozen as constants."""
    config, forward, params, tokens = _tiny(model_kind, kind="consistency", divergence=divergence)

    @jax.jit
    def teacher_output(p):
        seen = {}

        def recording(p, z, sigma, *, train, rngs=None):
            seen["out"] = forward(p, z, sigma, train=train, rngs=rngs)
            return seen["out"]

        _loss(config, forward, p, tokens, recording, p)
        return seen["out"]

    frozen = jax.tree_util.tree_map(np.asarray, teacher_output(params))
    constant = lambda p, z, sigma, *, train, rngs=None: DenoiserOutput(*frozen)

    live = jax.jit(jax.grad(lambda p: _loss(config, forward, p, tokens, forward, p)))(params)
    fixed = jax.jit(jax.grad(lambda p: _loss(config, forward, p, tokens, constant, None)))(params)
    for a, b in zip(jax.tree_util.tree_leaves(live), jax.tree_util.tree_leaves(fixed)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    # And the term is not trivially zero: the teacher sees a different input.
    assert np.any(frozen.hidden_BxLxD != 0)


def test_distillation_teacher_gradient_is_exactly_zero():
    config, forward, params, tokens = _tiny(kind="distill")
    mdlm = tasks.get_task(config).teacher()
    mdlm_params = jax.jit(mdlm.init_params)(jax.random.PRNGKey(7))
    teacher = mdlm.apply
    loss_and_grads = jax.jit(
        jax.value_and_grad(lambda tp: _loss(config, forward, params, tokens, teacher, tp))
    )
    loss, grads = loss_and_grads(mdlm_params)
    assert all(not np.any(np.asarray(g)) for g in jax.tree_util.tree_leaves(grads))
    assert float(loss) > 0
