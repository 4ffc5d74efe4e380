"""Each dispatch on a config value covers exactly the config's allowed values
(cofre_jax/config/choices.py): every allowed value dispatches, and a value outside the
tuple is refused. Dict registries are compared key for key."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cofre_jax import diffusion, fixed_point, modes, sampling, stages, tasks, train
from cofre_jax.config import choices
from cofre_jax.config.typed import from_config_dict
from cofre_jax.data import sources
from cofre_jax.evaluation import image_features, scorer
from cofre_jax.fixed_point import solvers
from cofre_jax.models import MODELS, DenoiserOutput, build_model, fixed_point_stack
from cofre_jax.sampling import budget
from cofre_jax.sampling.warm_start import ReuseCoefficients, warm_start_gamma
from cofre_jax.tasks import text as text_task
from configs import quickstart


@pytest.fixture(scope="module")
def config():
    return from_config_dict(quickstart.get_config())


def test_dict_registries_match_their_tuples():
    assert all(set(modes.SHARED_MODES).isdisjoint(m) for m in modes.TASK_MODES.values())
    every_mode = set(modes.SHARED_MODES).union(*modes.TASK_MODES.values())
    assert every_mode == set(choices.MODES)
    assert tuple(modes.TASK_MODES) == choices.TASKS
    assert tuple(MODELS) == choices.MODEL_KINDS
    assert tuple(tasks.TASK_TYPES) == choices.TASKS
    assert tuple(stages.STAGES) == choices.STAGE_KINDS
    assert tuple(text_task._STAGE_LOSSES) == choices.STAGE_KINDS
    assert set(stages._DIVERGENCES) == set(choices.DIVERGENCES)
    assert tuple(sampling.rules._REVEAL_RULES) == choices.REVEAL_RULES
    assert set(modes.modes_of("text")) == set(choices.MODES) - {"train_tokenizer"}
    assert tuple(sampling.guidance._RAMPS) == choices.GUIDANCE_RAMPS
    assert tuple(image_features._FEATURES) == choices.FID_FEATURES
    assert tuple(solvers._METHODS) == choices.SOLVER_METHODS
    # Document sources: what --mode=prepare reads (data.raw_source) plus the embedded
    # corpus; owt and synthetic are read by cofre_jax.data.pipeline itself.
    assert set(sources.SOURCES) == {*choices.RAW_SOURCES, "embedded"}
    assert set(sources.SOURCES) <= set(choices.DATA_SOURCES)


def test_model_kinds(config):
    for kind in choices.MODEL_KINDS:
        model_cfg = dataclasses.replace(config.model, kind=kind)
        assert build_model(model_cfg, config.fixed_point) is not None
    with pytest.raises(ValueError, match="valid kinds"):
        build_model(dataclasses.replace(config.model, kind="rnn"), config.fixed_point)


def test_injections(config):
    params = {"fc1": {"kernel": jnp.zeros((8, 8)), "bias": jnp.zeros(8)}}
    model_cfg = dataclasses.replace(config.model, hidden_size=4, dtype="float32")
    u_BxLxD = jnp.ones((1, 2, 4))
    for injection in choices.INJECTIONS:
        cfg = dataclasses.replace(model_cfg, injection=injection)
        assert fixed_point_stack.injection_term(cfg, params, u_BxLxD).shape[:2] == (1, 2)
    with pytest.raises(ValueError, match="unknown injection"):
        fixed_point_stack.injection_term(
            dataclasses.replace(model_cfg, injection="mul"), params, u_BxLxD
        )


def test_noise_schedules():
    for name in choices.SCHEDULES:
        schedule = diffusion.make_schedule(name, 1e-3)
        assert np.isfinite(float(schedule.mask_prob(jnp.float32(0.5))))
    with pytest.raises(ValueError, match="valid schedules"):
        diffusion.make_schedule("sqrt", 1e-3)


def test_allocation_schedules():
    for name in choices.ALLOCATION_SCHEDULES:
        assert (budget.schedule_weights(name, 4) > 0).all()
    with pytest.raises(ValueError, match="unknown allocation schedule"):
        budget.schedule_weights("random", 4)


def test_divergences():
    B, L, D, V = 1, 3, 4, 5
    key1, key2 = jax.random.split(jax.random.PRNGKey(0))
    out = DenoiserOutput(
        jax.random.normal(key1, (B, L, V)), jax.random.normal(key2, (B, L, D)), None
    )
    z_BxL = jnp.array([[0, V - 1, V - 1]])
    for kind in choices.DIVERGENCES:
        value = stages.divergence(kind, out, out, z_BxL, z_BxL, mask_id=V - 1, tau=1.0)
        assert np.isfinite(float(value))
    with pytest.raises(ValueError, match="unknown divergence"):
        stages.divergence("l1", out, out, z_BxL, z_BxL, mask_id=V - 1, tau=1.0)


def test_warm_starts():
    z_BxL = jnp.zeros((1, 3), jnp.int32)
    coefficients = ReuseCoefficients()
    for warm_start in choices.WARM_STARTS:
        warm_start_gamma(warm_start, jnp.bool_(False), z_BxL, z_BxL, coefficients, mask_id=7)
    with pytest.raises(ValueError, match="unknown warm_start"):
        warm_start_gamma("hot", jnp.bool_(False), z_BxL, z_BxL, coefficients, 7)


def test_gradient_methods():
    def f(params, h, x):
        return params * h + x

    solver = fixed_point.SolverSpec(method="picard", max_iter=4, tol=0.0)
    h0, x = jnp.zeros((2, 3)), jnp.ones((2, 3))
    for method in choices.GRADIENT_METHODS:
        gradient = fixed_point.GradientSpec(method=method, unrolled_steps=2, phantom_steps=2)
        h, _ = fixed_point.fixed_point(
            f, jnp.float32(0.5), h0, x, solver, gradient, key=jax.random.PRNGKey(0)
        )
        assert h.shape == (2, 3)
    with pytest.raises(ValueError, match="one of"):
        fixed_point.GradientSpec(method="exact").validate()


def test_lr_schedules(config):
    for name in choices.LR_SCHEDULES:
        optim = dataclasses.replace(config.optim, lr_schedule=name)
        assert float(train.learning_rate_schedule(optim, 10)(5)) > 0
    with pytest.raises(ValueError, match="unknown lr_schedule"):
        train.learning_rate_schedule(dataclasses.replace(config.optim, lr_schedule="step"), 10)


def test_named_scorers():
    for name in choices.NAMED_SCORERS:
        assert scorer.scorer_kind(name) == name
    with pytest.raises(scorer.ScorerLoadError):
        scorer.scorer_kind("gpt-5")
