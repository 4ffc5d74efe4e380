"""The image task's networks and loss: MaskGIT and FP-MaskGIT through the one denoiser
call, the class condition, warm starts over the register tokens, training through the
shared program, and the image config's checks."""

import dataclasses
import pathlib
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cofre_jax import sharding, tasks, train
from cofre_jax.config.typed import ConfigError, from_config_dict
from cofre_jax.models import DenoiserOutput, count_params, param_groups
from cofre_jax.tasks.image import arccos_mask_ratio, mask_codes
from configs import image_base, quickstart_images

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _config(kind="fp_maskgit", **overrides):
    cfg = quickstart_images.get_config()
    cfg.model.kind = kind
    cfg.model.hidden_size, cfg.model.num_heads, cfg.model.num_layers = 32, 2, 2
    cfg.model.k_pre, cfg.model.k_post, cfg.model.codebook_size = 1, 1, 16
    cfg.data.image_size, cfg.data.grid_size = 16, 4
    cfg.train.batch_size = 4
    for dotted, value in overrides.items():
        section, key = dotted.split(".")
        cfg[section][key] = value
    return from_config_dict(cfg)


def _perturbed(task, scale=0.05):
    params = task.init_params(jax.random.PRNGKey(0))
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(1), len(leaves))
    return jax.tree.unflatten(
        treedef, [x + scale * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)]
    )


def _codes(config, batch=4, seed=2):
    return jax.random.randint(
        jax.random.PRNGKey(seed), (batch, config.data.seq_len), 0, config.model.codebook_size
    )


@pytest.mark.parametrize("kind", ["maskgit", "fp_maskgit"])
def test_call_returns_a_denoiser_output_and_uses_the_label(kind):
    config = _config(kind)
    task = tasks.get_task(config)
    params = _perturbed(task)
    codes = _codes(config)
    sigma = jnp.zeros((4,))
    run = jax.jit(lambda p, labels: task.apply(p, codes, sigma, labels, train=False))
    out = run(params, jnp.array([0, 1, 2, 3]))
    assert isinstance(out, DenoiserOutput)
    assert out.logits_BxLxV.shape == (4, config.data.seq_len, config.model.vocab_size)
    assert out.hidden_BxLxD.shape == (4, config.data.seq_len, config.model.hidden_size)
    # None is the null class, and the label changes the prediction.
    null = task.apply(params, codes, sigma, None, train=False)
    explicit = run(params, jnp.full((4,), config.model.null_class))
    np.testing.assert_allclose(null.logits_BxLxV, explicit.logits_BxLxV, rtol=1e-5, atol=1e-6)
    assert not np.allclose(out.logits_BxLxV, explicit.logits_BxLxV)
    if kind == "fp_maskgit":
        assert out.h_star_BxLxD.shape == out.hidden_BxLxD.shape
        assert out.stats is not None
    with pytest.raises(ValueError, match="labels must be integers"):
        task.apply(params, codes, sigma, jnp.zeros((3,), jnp.int32), train=False)


def test_fp_warm_start_acts_on_the_codes_and_registers_restart():
    config = _config("fp_maskgit")
    task = tasks.get_task(config)
    params, codes, sigma = _perturbed(task), _codes(config), jnp.zeros((4,))
    run = jax.jit(
        lambda p, n, h0: task.apply(p, codes, sigma, None, train=False, num_iterations=n,
                                    h0_BxLxD=h0)
    )  # fmt: skip
    cold = jax.jit(lambda p, n: task.apply(p, codes, sigma, None, train=False, num_iterations=n))
    two, three = cold(params, 2), cold(params, 3)
    # Zero iterations from a given start returns that start at the code positions.
    start = jnp.ones_like(two.h_star_BxLxD)
    np.testing.assert_array_equal(run(params, 0, start).h_star_BxLxD, start)
    assert int(three.stats.evals) == 3
    assert not np.allclose(two.h_star_BxLxD, three.h_star_BxLxD)


def test_block_costs_and_components():
    fp, mg = _config("fp_maskgit"), _config("maskgit")
    assert set(param_groups(tasks.get_task(fp).abstract_params())) == {
        "inputs", "pre_blocks", "injection", "fp_cell", "post_blocks", "head",
    }  # fmt: skip
    assert set(param_groups(tasks.get_task(mg).abstract_params())) == {"inputs", "blocks", "head"}
    from cofre_jax.models import block_cost

    assert block_cost(fp.model) == (2, 1) and block_cost(mg.model) == (2, 0)


def test_arccos_masking():
    np.testing.assert_allclose(arccos_mask_ratio(jnp.array([0.0, 0.5, 1.0])), [1.0, 2 / 3, 0.0],
                               atol=1e-6)  # fmt: skip
    codes = jnp.zeros((256, 49), jnp.int32)
    z, masked = mask_codes(jax.random.PRNGKey(0), codes, mask_id=16)
    assert bool(jnp.all((z == 16) == masked))
    # E[arccos(r) / (pi/2)] over r ~ U(0, 1) is 2 / pi.
    assert abs(float(masked.mean()) - 2 / np.pi) < 0.02


@pytest.mark.parametrize("kind", ["maskgit", "fp_maskgit"])
def test_training_steps_through_the_shared_program(kind):
    config = _config(kind, **{"optim.lr": 3e-3, "optim.warmup_steps": 1})
    program = train.build_program(config, sharding.make_mesh(config.mesh, jax.devices()[:1]))
    state = program.init_state()
    batch = {"codes": np.asarray(_codes(config), np.int32), "labels": np.arange(4, dtype=np.int32)}
    batch = sharding.global_batch(batch, program.mesh)
    losses = []
    for _ in range(8):  # one batch over and over: the loss must fall
        state, metrics = program.train_step(state, batch)
        losses.append(float(metrics["loss"]))
    assert np.isfinite(losses).all() and losses[-1] < losses[0]
    if kind == "fp_maskgit":
        assert "fp_iterations" in metrics
    val = train.evaluate(program.task, program.mesh, state.ema_params, [jax.device_get(batch)])
    assert set(val) == {"nats_per_code", "perplexity"} and np.isfinite(val["perplexity"])


def test_image_config_errors():
    with pytest.raises(ConfigError, match="data.grid_size"):
        _config(**{"data.grid_size": 5})
    with pytest.raises(ConfigError, match="model.num_classes"):
        _config(**{"model.num_classes": 7})
    with pytest.raises(ConfigError, match="stage.kind"):
        _config(**{"stage.kind": "distill"})
    with pytest.raises(ConfigError, match="data.source"):
        _config(**{"data.source": "cifar"})
    with pytest.raises(ConfigError, match="unknown config key 'data.text_key'"):
        _config(**{"data.text_key": "text"})


def test_published_image_configs_describe(capsys):
    from cofre_jax import modes
    from configs import imagenette, imagenette_maskgit

    modes.run_describe(from_config_dict(imagenette.get_config()), None)
    fp = capsys.readouterr().out
    assert "block_passes_per_step: 4 + 1*N + 4 for N fixed-point iterations" in fp
    modes.run_describe(from_config_dict(imagenette_maskgit.get_config()), None)
    large = capsys.readouterr().out
    assert "block_passes_per_step: 24\n" in large
    assert "seq_len: 256" in large and "vocab_size: 4097" in large


@pytest.mark.parametrize("qk_norm", ["joint", "per_head"])
def test_qk_norm_variants(qk_norm):
    """joint: queries and keys normalised over all heads' D dims, no parameters (Halton-
    MaskGIT); per_head: over each head's K dims, with a learned K-wide scale."""
    from cofre_jax.models.maskgit import qk_norm as apply_qk_norm

    config = _config("maskgit", **{"model.qk_norm": qk_norm}).model
    B, S, H, K = 2, 3, config.num_heads, config.head_dim
    x_BxSxHxK = (
        jax.random.normal(jax.random.PRNGKey(0), (B, S, H, K)) * jnp.arange(1, H + 1)[:, None]
    )

    class Norm(nn.Module):
        @nn.compact
        def __call__(self, x):
            return apply_qk_norm(config, "q_norm", x)

    variables = Norm().init(jax.random.PRNGKey(1), x_BxSxHxK)
    out_BxSxHxK = Norm().apply(variables, x_BxSxHxK)
    if qk_norm == "joint":
        assert not jax.tree.leaves(variables)
        rms_BxS = jnp.sqrt(jnp.mean(out_BxSxHxK.reshape(B, S, H * K) ** 2, axis=-1))
        np.testing.assert_allclose(rms_BxS, 1.0, rtol=1e-4)
        # The heads keep their relative scale (they are normalised together).
        head_rms_H = jnp.sqrt(jnp.mean(out_BxSxHxK**2, axis=(0, 1, 3)))
        assert head_rms_H[-1] > 1.5 * head_rms_H[0]
    else:
        assert variables["params"]["q_norm"]["scale"].shape == (K,)
        np.testing.assert_allclose(jnp.sqrt(jnp.mean(out_BxSxHxK**2, -1)), 1.0, rtol=1e-4)


def test_maskgit_large_matches_halton_maskgit_parameter_count():
    """MaskGIT-Large's parameters against Halton-MaskGIT's Transformer (valeoai, the
    published baseline's code) at width 1024, 24 blocks, 4096 codes, 10 classes, 16 x 16
    codes, one register, written out from that code's layers."""
    from configs import imagenette_maskgit

    config = from_config_dict(imagenette_maskgit.get_config())
    params = tasks.get_task(config).abstract_params()
    D, V, L, R, N = 1024, 4097, 256, 1, 11  # codes + MASK, grid, registers, classes + null
    M = 256 * -(-int(2 * 4 * D / 3) // 256)  # FeedForward: 2/3 of 4D, up to a multiple of 256
    assert M == config.model.mlp_width == 2816
    adaln, attention, norms, swiglu = 6 * D * D + 6 * D, 4 * D * D, 2 * D, 3 * D * M
    per_block = adaln + attention + norms + swiglu
    assert count_params(params["blocks_0"]) == per_block == 19_144_704
    final_adaln = 2 * D * D + 2 * D
    halton = 24 * per_block + N * D + V * D + V + L * D + R * D + final_adaln + 2 * D
    # Ours learns a position for the register too (+R*D); the final RMSNorm feeds an
    # adaLN modulation, so it has no scale and bias of its own (-2D).
    assert count_params(params) == halton + R * D - 2 * D == 466_048_001 + R * D - 2 * D


def test_every_image_field_is_documented_in_image_base():
    text = (ROOT / "configs" / "image_base.py").read_text()
    body = text.split("def get_config")[1].split("    return cfg\n")[0].splitlines()
    assigned = {}
    for i, line in enumerate(body):
        match = re.match(r"\s*cfg\.(model|data)\.(\w+) = ", line)
        if match:
            above = i - 1
            while re.match(r"\s*cfg\.\w+\.\w+ = ", body[above]):
                above -= 1
            assigned[match.groups()] = body[above].strip().startswith("#")
    config = from_config_dict(image_base.get_config())
    fields = {
        (name, f.name)
        for name in ("model", "data")
        for f in dataclasses.fields(getattr(config, name))
    }
    assert set(assigned) == fields
    assert all(assigned.values()), sorted(k for k, ok in assigned.items() if not ok)


def test_text_only_modes_refuse_images_in_one_line(tmp_path):
    from cofre_jax import modes

    with pytest.raises(SystemExit, match="--mode=convert is not available for the image task"):
        modes.run("convert", _config(), str(tmp_path))


def _stage(kind="maskgit", **overrides):
    return _config(
        kind,
        **{"stage.kind": "consistency", "stage.lambda_warmup_steps": 0, "model.dropout": 0.0},
        **overrides,
    )


def test_image_consistency_loss_parts():
    from cofre_jax.tasks import image as image_task

    batch = {"codes": _codes(_stage()), "labels": jnp.arange(4, dtype=jnp.int32)}
    key, rngs = jax.random.PRNGKey(5), {"dropout": jax.random.PRNGKey(6)}
    # With no gap the teacher sees the student's input; a MaskGIT without dropout is
    # then its own target exactly, so the divergence is 0 and the loss the base loss.
    no_dropout = {"model.label_dropout": 0.0, "sample.guidance_scale": 0.0}
    config = _stage(**{"stage.gap_min": 0.0, "stage.gap_max": 0.0, **no_dropout})
    task = tasks.get_task(config)
    params = _perturbed(task)
    loss, metrics = image_task.consistency_loss(task, params, batch, key, 0, rngs)
    assert float(metrics["divergence"]) == 0.0
    assert float(loss) == float(metrics["base_loss"]) > 0
    # With a gap the teacher's masks are a strict subset on average and the divergence
    # is positive; lambda scales it into the loss.
    config = _stage(**{"stage.gap_min": 0.3, "stage.gap_max": 0.3, "stage.lambda_max": 0.5})
    task = tasks.get_task(config)
    loss, metrics = image_task.consistency_loss(task, params, batch, key, 0, rngs)
    assert float(metrics["teacher_masked_fraction"]) < 1.0 and float(metrics["time_gap"]) > 0
    assert float(metrics["divergence"]) > 0
    np.testing.assert_allclose(
        float(loss), float(metrics["base_loss"]) + 0.5 * float(metrics["divergence"]), rtol=1e-6
    )


def test_image_consistency_masks_are_nested():
    from cofre_jax.tasks.image import mask_ratio_at

    t = jnp.linspace(0.0, 1.0, 11)
    ratio = mask_ratio_at(t)
    assert float(ratio[0]) == 0.0 and abs(float(ratio[-1]) - 1.0) < 1e-6
    assert bool(jnp.all(jnp.diff(ratio) > 0))  # t_c <= t_s masks a subset of the codes


def test_image_consistency_stage_trains_through_the_program():
    config = _stage("fp_maskgit", **{"optim.lr": 3e-3, "optim.warmup_steps": 1})
    program = train.build_program(config, sharding.make_mesh(config.mesh, jax.devices()[:1]))
    state = program.init_state()
    batch = {"codes": np.asarray(_codes(config), np.int32), "labels": np.arange(4, dtype=np.int32)}
    state, metrics = program.train_step(state, sharding.global_batch(batch, program.mesh))
    assert np.isfinite(float(metrics["loss"])) and "divergence" in metrics
