"""The train step's update rule: a non-finite step leaves the state untouched, a disabled
EMA (optim.ema_decay = 0) equals the parameters exactly, and the compiled step updates
the donated optimiser state in place instead of copying it."""

import re

import jax
import numpy as np
import pytest
import tiny

from cofre_jax import sharding, train
from cofre_jax.config.typed import from_config_dict


def _program(corpus, **overrides):
    config = from_config_dict(tiny.tiny_config(corpus, **overrides))
    mesh = sharding.make_mesh(config.mesh, jax.devices()[:1])
    return train.build_program(config, mesh), config


def _batch(program, config, seed=0):
    rng = np.random.default_rng(seed)
    shape = (config.train.batch_size, config.data.seq_len)
    tokens = rng.integers(0, config.model.mask_id, size=shape, dtype=np.int32)
    return sharding.global_batch({"tokens": tokens}, program.mesh)


def _assert_trees_equal(a, b):
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
    jax.tree_util.tree_map(np.testing.assert_array_equal, a, b)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return tiny.write_corpus(tmp_path_factory.mktemp("corpus") / "docs.jsonl")


@pytest.mark.parametrize("ema_decay", [0.0, 0.99])
def test_nonfinite_step_leaves_the_state_unchanged(corpus, ema_decay):
    program, config = _program(corpus, optim__ema_decay=ema_decay)
    state = program.init_state()
    state, _ = program.train_step(state, _batch(program, config, 0))  # Adam moments != 0
    before = jax.device_get(state)
    params = jax.device_get(state.params)
    params["output_layer"]["linear"]["bias"] = params["output_layer"]["linear"]["bias"] * np.nan
    # The poisoned parameters are the state's: a skipped step must hand them back as given.
    before = before.replace(params=params)
    state = jax.device_put(before, program.state_shardings)
    state, metrics = program.train_step(state, _batch(program, config, 1))
    after = jax.device_get(state)
    assert not np.isfinite(float(metrics["loss"]))
    assert int(after.step) == int(before.step) + 1
    assert int(after.nonfinite_steps) == int(before.nonfinite_steps) + 1
    _assert_trees_equal(after.params, before.params)
    _assert_trees_equal(after.opt_state, before.opt_state)
    _assert_trees_equal(after.ema_params, before.ema_params)
    np.testing.assert_array_equal(after.rng, before.rng)


def test_disabled_ema_equals_the_parameters(corpus):
    program, config = _program(corpus, optim__ema_decay=0.0)
    state = program.init_state()
    for i in range(2):
        state, _ = program.train_step(state, _batch(program, config, i))
    state = jax.device_get(state)
    assert int(state.nonfinite_steps) == 0
    _assert_trees_equal(state.ema_params, state.params)
    # The disabled EMA still trains the same parameters as an enabled one.
    enabled, _ = _program(corpus, optim__ema_decay=0.99)
    other = enabled.init_state()
    for i in range(2):
        other, _ = enabled.train_step(other, _batch(enabled, config, i))
    _assert_trees_equal(jax.device_get(other.params), state.params)


def _copied_float_bytes_outside_the_model(program, config) -> int:
    """Bytes written by float `copy` ops of the compiled step that carry no op_name, i.e.
    that XLA inserted around the state update rather than inside the model's (derivative)
    computation, whose layout copies all name a traced op."""
    hlo = program.lower_train_step(
        program.abstract_state, program.task.abstract_batch(config.train.batch_size)
    ).compile().as_text()  # fmt: skip
    total = 0
    for line in hlo.splitlines():
        match = re.search(r"= (f32|bf16)\[([\d,]*)\]\S* copy\(", line)
        if match and "op_name" not in line:
            size = int(np.prod([int(d) for d in match.group(2).split(",") if d] or [1]))
            total += size * (4 if match.group(1) == "f32" else 2)
    return total


@pytest.mark.parametrize("ema_decay", [0.0, 0.99])
def test_compiled_step_does_not_copy_the_optimiser_state(corpus, ema_decay):
    """A select per leaf between the new and old state made XLA copy both Adam moments
    every step (2x the parameters' bytes); one cond updates them in place. With the EMA
    disabled the only copy left is the parameters into the EMA's buffer (1x)."""
    program, config = _program(corpus, optim__ema_decay=ema_decay)
    param_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree_util.tree_leaves(
        program.abstract_state.params))  # fmt: skip
    copied = _copied_float_bytes_outside_the_model(program, config)
    allowed = param_bytes if ema_decay == 0.0 else 0
    assert copied <= allowed + 0.05 * param_bytes, (copied, param_bytes)
