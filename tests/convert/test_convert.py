"""MDLM -> FP-MDLM conversion: the layer map, the near-identity injection, and the
teacher loaded from a PyTorch MDLM checkpoint."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_torch_import import CONFIG as TORCH_CONFIG
from test_torch_import import random_torch_model, save_lightning

from cofre_jax.config.typed import ConfigError, ConvertConfig, from_config_dict
from cofre_jax.convert import (
    LayerMapError,
    abstract_params,
    convert_mdlm,
    fp_params_from_mdlm,
    split_layer_map,
)
from cofre_jax.models import build_model
from cofre_jax.models.fixed_point_stack import FPCell
from cofre_jax.models.layers import DiTBlock, rotary_tables
from configs import quickstart

L = 16


def _configs(injection="fpdm", teacher_layers=12):
    cfg = quickstart.get_config()
    cfg.model.hidden_size, cfg.model.num_heads, cfg.model.cond_dim = 32, 2, 16
    cfg.model.injection = injection
    cfg.model.time_conditioning = True
    cfg.data.seq_len = L
    config = from_config_dict(cfg)
    teacher = dataclasses.replace(config.model, kind="mdlm", num_layers=teacher_layers)
    return config, teacher


def _init(model_config, fixed_point=None, seed=0):
    model = build_model(model_config, fixed_point)
    tokens = jnp.zeros((1, L), jnp.int32)
    init = jax.jit(lambda k: model.init(k, tokens, jnp.zeros((1,)), train=False)["params"])
    params = init(jax.random.PRNGKey(seed))
    # Randomise MDLM's zero-initialised adaLN and head so every copy is visible.
    leaves, treedef = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(seed + 1), len(leaves))
    leaves = [0.2 * jax.random.normal(k, x.shape, x.dtype) for k, x in zip(keys, leaves)]
    return model, jax.tree_util.tree_unflatten(treedef, leaves)


def _convert(config, mdlm_params, layer_map=(1, 6, 12), scale=0.1):
    template = abstract_params(config, config.model)
    return fp_params_from_mdlm(mdlm_params, template, config.model, layer_map, scale)


def test_layer_map_copies_the_mapped_blocks():
    config, teacher = _configs()
    _, mdlm = _init(teacher)
    fp = _convert(config, mdlm)
    same = lambda a, b: jax.tree_util.tree_map(np.testing.assert_array_equal, a, b)
    same(fp["pre_blocks_0"], mdlm["blocks_0"])
    same(fp["fp_cell"]["blocks_0"], mdlm["blocks_5"])
    same(fp["post_blocks_0"], mdlm["blocks_11"])
    for name in ("vocab_embed", "sigma_map", "output_layer"):
        same(fp[name], mdlm[name])
    assert split_layer_map(config.model, (1, 6, 12)) == {
        "pre_blocks": [0],
        "fp_blocks": [5],
        "post_blocks": [11],
    }


@pytest.mark.parametrize("injection", ["fpdm", "add"])
def test_near_identity_injection(injection):
    """F(h; u) equals the copied block applied to h + s * h_pre, with u = G(h_pre)."""
    config, teacher = _configs(injection)
    _, mdlm = _init(teacher)
    scale = 0.3
    fp = _convert(config, mdlm, scale=scale)
    kernel = fp["injection"]["kernel"]
    want_kernel = (1.0 if injection == "fpdm" else scale) * np.eye(32, dtype=np.float32)
    np.testing.assert_array_equal(kernel, want_kernel)
    keys = jax.random.split(jax.random.PRNGKey(3), 3)
    h, h_pre = (jax.random.normal(k, (2, L, 32)) for k in keys[:2])
    cond = jax.random.normal(keys[2], (2, 16))
    cos, sin = rotary_tables(L, config.model.head_dim)
    u = h_pre @ fp["injection"]["kernel"] + fp["injection"]["bias"]
    got = FPCell(config.model).apply({"params": fp["fp_cell"]}, h, u, cond, cos, sin, train=False)
    want = DiTBlock(config.model).apply(
        {"params": mdlm["blocks_5"]}, h + scale * h_pre, cond, (cos, sin), train=False
    )
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_zero_scale_one_iteration_equals_the_mapped_mdlm():
    """With s = 0 and one fixed-point iteration the FP-MDLM is the 3-block MDLM made of
    teacher blocks 1, 6 and 12."""
    config, teacher = _configs()
    _, mdlm = _init(teacher)
    fp = _convert(config, mdlm, scale=0.0)
    tokens = jax.random.randint(jax.random.PRNGKey(4), (2, L), 0, config.model.mask_id + 1)
    sigma = jnp.array([0.3, 2.0])
    fp_model = build_model(config.model, config.fixed_point)
    got = fp_model.apply({"params": fp}, tokens, sigma, train=False, num_iterations=1).logits_BxLxV
    three = dataclasses.replace(teacher, num_layers=3)
    small = {k: v for k, v in mdlm.items() if not k.startswith("blocks_")}
    small.update(blocks_0=mdlm["blocks_0"], blocks_1=mdlm["blocks_5"], blocks_2=mdlm["blocks_11"])
    want = build_model(three).apply({"params": small}, tokens, sigma, train=False).logits_BxLxV
    assert np.abs(np.asarray(want)).max() > 0.5
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_layer_map_errors():
    config, teacher = _configs(teacher_layers=4)
    _, mdlm = _init(teacher)
    with pytest.raises(LayerMapError, match="has 2 entries"):
        _convert(config, mdlm, layer_map=(1, 2))
    with pytest.raises(LayerMapError, match="names teacher block 6, but the MDLM has 4"):
        _convert(config, mdlm, layer_map=(1, 6, 4))
    cfg = quickstart.get_config()
    parsed = ConvertConfig(teacher="", teacher_num_layers=4, layer_map="1, 3,4", injection_scale=0)
    assert parsed.layer_map == (1, 3, 4)
    cfg.convert.layer_map = (1, 13, 12)
    with pytest.raises(ConfigError, match="convert.layer_map"):
        from_config_dict(cfg)
    cfg.convert.layer_map = (1, 2)
    cfg.stage.kind = "distill"
    with pytest.raises(ConfigError, match="3 entries"):
        from_config_dict(cfg)


def test_convert_from_a_pytorch_mdlm_checkpoint(tmp_path):
    path = save_lightning(random_torch_model(), tmp_path / "mdlm.ckpt", global_step=3)
    config, _ = _configs()
    student = dataclasses.replace(TORCH_CONFIG, kind="fp_mdlm")
    config = dataclasses.replace(
        config,
        model=student,
        convert=dataclasses.replace(
            config.convert, teacher=path, teacher_num_layers=2, layer_map=(1, 2, 2)
        ),
    )
    teacher, fp, report = convert_mdlm(config)
    jax.tree_util.tree_map(np.testing.assert_array_equal, fp["post_blocks_0"], teacher["blocks_1"])
    jax.tree_util.tree_map(
        np.testing.assert_array_equal, fp["fp_cell"]["blocks_0"], teacher["blocks_1"]
    )
    assert report["layer_map"] == [1, 2, 2] and report["teacher_step"] is None
    assert report["student_params"] > 0 and report["teacher_params"] > 0
