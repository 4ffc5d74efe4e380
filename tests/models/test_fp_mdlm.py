"""FP-MDLM denoiser: structure, what it exposes, and that training reaches every part."""

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tiny

from cofre_jax import diffusion
from cofre_jax.models import (
    DenoiserOutput,
    block_cost,
    build_model,
    fixed_point_stack,
    param_groups,
)
from cofre_jax.models.layers import DiTBlock, dense


def _config(**fixed_point):
    return tiny.fp_config(**{f"fixed_point.{key}": value for key, value in fixed_point.items()})


def _init(config, batch=2):
    model = build_model(config.model, config.fixed_point)
    tokens = jax.random.randint(jax.random.PRNGKey(1), (batch, 16), 0, config.model.mask_id)
    sigma = jnp.full((batch,), 0.5)
    params = model.init(jax.random.PRNGKey(0), tokens, sigma, train=False)["params"]
    return model, params, tokens, sigma


def test_components_and_block_pass_accounting():
    config = _config()
    _, params, _, _ = _init(config)
    assert set(param_groups(params)) == {
        "vocab_embed", "sigma_map", "pre_blocks", "injection", "fp_cell", "post_blocks",
        "output_layer",
    }  # fmt: skip
    assert set(params["fp_cell"]) == {"fc1", "fc2", "blocks_0"}
    assert params["fp_cell"]["fc1"]["kernel"].shape == (64, 64)  # 2D -> 2D
    assert params["fp_cell"]["fc2"]["kernel"].shape == (64, 32)  # 2D -> D
    base, per_iteration = block_cost(config.model)
    assert base + 10 * per_iteration == 12  # 1 + 10 * 1 + 1: budget 96 = 8 steps
    assert config.fixed_point.mean_train_iterations() == 6.5  # E[U{0..4}] + E[U{3..6}]


def test_eval_forward_exposes_states_and_follows_the_iteration_count():
    config = _config()
    model, params, tokens, sigma = _init(config)
    run = jax.jit(
        lambda p, n: model.apply({"params": p}, tokens, sigma, train=False, num_iterations=n,
                                 capture_intermediates=True)
    )  # fmt: skip
    out0, seen = run(params, 0)
    assert isinstance(out0, DenoiserOutput)
    h_pre = seen["intermediates"][f"pre_blocks_{config.model.k_pre - 1}"]["__call__"][0]
    # Zero iterations: the solve returns its cold start, h_pre.
    np.testing.assert_array_equal(out0.h_star_BxLxD, h_pre)
    assert int(out0.stats.evals) == 0
    out3, _ = run(params, 3)  # same compiled function, traced count
    assert int(out3.stats.evals) == 3
    assert not np.allclose(out3.h_star_BxLxD, h_pre)
    # Warm start: starting from h* after 2 iterations and running 1 more equals 3.
    out2, _ = run(params, 2)
    warm = jax.jit(
        lambda p, h0: model.apply({"params": p}, tokens, sigma, train=False, num_iterations=1,
                                  h0_BxLxD=h0)
    )  # fmt: skip
    out_warm = warm(params, out2.h_star_BxLxD)
    np.testing.assert_allclose(out_warm.h_star_BxLxD, out3.h_star_BxLxD, rtol=1e-5, atol=1e-5)
    assert out0.logits_BxLxV.shape == out3.logits_BxLxV.shape == (2, 16, config.model.vocab_size)


@pytest.mark.parametrize("gradient", ["sjfb", "implicit", "jfb", "unrolled"])
def test_training_gradient_reaches_every_component(gradient):
    config = _config(gradient=gradient, unrolled_steps=3, solver="anderson", tol=1e-4,
                     eval_iterations=20)  # fmt: skip
    model, params, tokens, _ = _init(config)
    # Zero-initialised adaLN and head block most gradients at init; perturb them so
    # every component's gradient is generically non-zero.
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(3), len(leaves))
    params = jax.tree.unflatten(
        treedef, [x + 0.02 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)]
    )

    def apply_fn(p, z, s, *, train, rngs=None):
        return model.apply({"params": p}, z, s, train=train, rngs=rngs)

    def loss(p):
        value, _ = diffusion.diffusion_loss(
            apply_fn, p, tokens, jax.random.PRNGKey(4), config.diffusion,
            config.model.mask_id, train=True,
            rngs={"dropout": jax.random.PRNGKey(5), "fixed_point": jax.random.PRNGKey(6)},
        )  # fmt: skip
        return value

    value, grads = jax.jit(jax.value_and_grad(loss))(params)
    assert np.isfinite(float(value))
    for name, subtree in grads.items():
        norm = float(jnp.sqrt(sum(jnp.sum(g**2) for g in jax.tree.leaves(subtree))))
        assert np.isfinite(norm) and norm > 0, (gradient, name, norm)


def test_remat_gives_the_same_loss_and_gradients():
    """fixed_point.remat recomputes each differentiated step in the backward pass instead
    of storing its activations: the same computation, so the same values (dropout on, so
    the recomputed F must redraw the same mask)."""
    grads = {}
    for remat in (False, True):
        config = _config(gradient="sjfb", remat=remat)
        config = dataclasses.replace(config, model=dataclasses.replace(config.model, dropout=0.1))
        model, params, tokens, _ = _init(config)
        leaves, treedef = jax.tree.flatten(params)
        keys = jax.random.split(jax.random.PRNGKey(3), len(leaves))
        params = jax.tree.unflatten(
            treedef, [x + 0.02 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)]
        )

        def apply_fn(p, z, s, *, train, rngs=None, model=model):
            return model.apply({"params": p}, z, s, train=train, rngs=rngs)

        def loss(p, apply_fn=apply_fn, config=config, tokens=tokens):
            value, _ = diffusion.diffusion_loss(
                apply_fn, p, tokens, jax.random.PRNGKey(4), config.diffusion,
                config.model.mask_id, train=True,
                rngs={"dropout": jax.random.PRNGKey(5), "fixed_point": jax.random.PRNGKey(6)},
            )  # fmt: skip
            return value

        grads[remat] = jax.jit(jax.value_and_grad(loss))(params)
    (v0, g0), (v1, g1) = grads[False], grads[True]
    np.testing.assert_allclose(v1, v0, rtol=1e-6, atol=1e-6)
    for a, b in zip(jax.tree.leaves(g0), jax.tree.leaves(g1), strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-6)


def test_fp_model_needs_its_fixed_point_section():
    config = _config()
    with pytest.raises(ValueError, match="fixed_point"):
        build_model(config.model)


def test_diverging_solve_is_logged_and_never_reaches_the_parameters():
    """A weight-tied block blown up 1e4x makes the SJFB solve diverge: the step reports
    its residual and, if the loss is not finite, skips the update (no NaN parameters)."""
    from cofre_jax import sharding, train

    config = tiny.fp_config(**{"train.batch_size": 2})
    program = train.build_program(config, sharding.make_mesh(config.mesh, jax.devices()[:1]))
    state = program.init_state()
    params = jax.device_get(state.params)
    params["fp_cell"] = jax.tree_util.tree_map(lambda p: p * 1e4 + 1.0, params["fp_cell"])
    state = state.replace(params=params)
    tokens = {"tokens": np.zeros((2, 16), np.int32)}
    state, metrics = program.train_step(state, sharding.global_batch(tokens, program.mesh))
    metrics = jax.device_get(metrics)
    assert "fp_residual" in metrics and "fp_iterations" in metrics
    assert not np.isfinite(metrics["fp_residual_max"]) or metrics["fp_residual_max"] > 1.0
    after = jax.device_get(state.params)
    assert all(np.all(np.isfinite(x)) for x in jax.tree_util.tree_leaves(after))
    if not np.isfinite(metrics["loss"]):
        assert int(state.nonfinite_steps) == 1
        jax.tree_util.tree_map(np.testing.assert_array_equal, after, params)


class _ConcatCell(nn.Module):
    """F as it was before the hoisting: fc1(concat[h, u]) inside every iteration."""

    config: Any
    block: Any = DiTBlock

    @nn.compact
    def __call__(self, h_BxLxD, u_BxLxD, cond_BxC, cos_LxK, sin_LxK, *, train, injected=False):
        cfg, D = self.config, self.config.hidden_size
        hu_BxLx2D = jnp.concatenate([h_BxLxD, u_BxLxD], axis=-1)
        x_BxLx2D = nn.gelu(dense(cfg, 2 * D, 2 * D, name="fc1")(hu_BxLx2D), approximate=True)
        x_BxLxD = dense(cfg, D, 2 * D, name="fc2")(x_BxLx2D).astype(jnp.float32)
        for i in range(cfg.k_fp):
            x_BxLxD = DiTBlock(cfg, name=f"blocks_{i}")(
                x_BxLxD, cond_BxC, (cos_LxK, sin_LxK), train=train
            )
        return x_BxLxD


def _perturbed(params, scale=0.02):
    # Zero-initialised adaLN and head would hide most of F; random params exercise it all.
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(3), len(leaves))
    return jax.tree.unflatten(
        treedef, [x + scale * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)]
    )


def test_hoisted_injection_matches_the_concat_formulation(monkeypatch):
    """W_u u + b computed once outside the loop gives the logits of fc1(concat[h, u])
    inside every iteration, eval solve and the training (SJFB) forward alike, from the
    same parameters (names and shapes unchanged, so checkpoints load)."""
    config = _config()
    model, params, tokens, sigma = _init(config)
    params = _perturbed(params)
    rngs = {"dropout": jax.random.PRNGKey(5), "fixed_point": jax.random.PRNGKey(6)}

    def run(train):
        return jax.jit(
            lambda p: model.apply({"params": p}, tokens, sigma, train=train, num_iterations=
                                  None if train else 6, rngs=rngs if train else None)
        )(params).logits_BxLxV  # fmt: skip

    hoisted = [run(False), run(True)]
    monkeypatch.setattr(fixed_point_stack, "FPCell", _ConcatCell)
    monkeypatch.setattr(fixed_point_stack, "injection_term", lambda cfg, p, u: u)
    concat = [run(False), run(True)]
    for got, want in zip(hoisted, concat):
        assert float(jnp.max(jnp.abs(want))) > 0.1
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * float(jnp.max(jnp.abs(want))))


@pytest.mark.parametrize("injection", ["fpdm", "add"])
def test_sjfb_gradient_reaches_the_whole_fc1_kernel(injection):
    """Both halves of fc1 (W_h in the loop, W_u hoisted out of it) and its bias get
    gradient under SJFB; with additive injection there is no fc1."""
    config = _config(gradient="sjfb")
    model_cfg = dataclasses.replace(config.model, injection=injection)
    config = dataclasses.replace(config, model=model_cfg)
    model, params, tokens, sigma = _init(config)
    params = _perturbed(params)
    rngs = {"dropout": jax.random.PRNGKey(5), "fixed_point": jax.random.PRNGKey(6)}

    def loss(p):
        logits = model.apply({"params": p}, tokens, sigma, train=True, rngs=rngs).logits_BxLxV
        return jnp.mean(jax.nn.log_softmax(logits)[..., 0])

    grads = jax.jit(jax.grad(loss))(params)["fp_cell"]
    if injection == "add":
        assert "fc1" not in grads
        return
    D = config.model.hidden_size
    kernel = np.asarray(grads["fc1"]["kernel"])
    for name, part in (("W_h", kernel[:D]), ("W_u", kernel[D:]), ("bias", grads["fc1"]["bias"])):
        assert np.all(np.isfinite(part)) and float(np.abs(part).max()) > 0, name
    # Every row of the kernel (each input feature of [h, u]) is reached.
    assert np.all(np.abs(kernel).max(axis=1) > 0)
