"""Class-conditional image sampling from a config (cofre_jax/sampling/images.py): the
sample section's reveal rule and guidance, the budget of the conditional network, the
guidance pass reported apart, and compiled samplers reused across draws."""

import dataclasses

import numpy as np
import pytest
from tiny import image_config, image_params

from cofre_jax.config.typed import ConfigError
from cofre_jax.sampling import ancestral_sample, draw_samples, fp_sample_jit, sample_plan
from cofre_jax.sampling.images import draw_image_samples, image_reveal_fn

LABELS_B = np.array([0, 1, 2, 2, 1, 0], np.int32)
# (total, steps): MaskGIT 2 blocks x 4 steps; FP-MaskGIT 3 steps of 1 + N + 1.
PLANS = {"maskgit": (8, 4), "fp_maskgit": (15, 3)}


def _setup(kind, **overrides):
    config = image_config(kind, **overrides)
    params = image_params(config)
    return config, params, sample_plan(config, *PLANS[kind])


def _with_scale(config, w):
    return dataclasses.replace(config, sample=dataclasses.replace(config.sample, guidance_scale=w))


@pytest.mark.parametrize("kind", ["maskgit", "fp_maskgit"])
def test_zero_guidance_is_the_unguided_draw_and_guidance_changes_it(kind):
    config, params, plan = _setup(kind, **{"sample.guidance_scale": 0.0})
    drawn = draw_image_samples(config, params, plan, LABELS_B, seed=3)
    reveal_fn = image_reveal_fn(config, plan.steps)
    plain = draw_samples(config, params, plan, 6, 3, cond=LABELS_B, reveal_fn=reveal_fn)
    np.testing.assert_array_equal(drawn.tokens_BxL, plain.tokens_BxL)
    assert drawn.block_passes == plain.block_passes
    assert drawn.details["block_passes_with_guidance"] == drawn.block_passes
    guided = draw_image_samples(_with_scale(config, 3.0), params, plan, LABELS_B, seed=3)
    assert (guided.tokens_BxL != drawn.tokens_BxL).any()  # w reaches the samples


@pytest.mark.parametrize("kind", ["maskgit", "fp_maskgit"])
def test_guided_draws_keep_the_budget_report_twice_the_passes_and_compile_once(kind):
    config, params, plan = _setup(kind, **{"sample.guidance_scale": 3.0})
    jitted = ancestral_sample if kind == "maskgit" else fp_sample_jit
    compiles, draws = [], []
    for w, labels_B in ((3.0, LABELS_B), (1.5, LABELS_B[::-1])):  # w and labels are traced
        before = jitted._cache_size()
        draws.append(draw_image_samples(_with_scale(config, w), params, plan, labels_B, 0))
        compiles.append(jitted._cache_size() - before)
    assert compiles[1] == 0, compiles
    for drawn in draws:
        assert 0 < drawn.block_passes <= plan.budget
        assert drawn.details["block_passes"] == drawn.block_passes
        assert drawn.details["block_passes_with_guidance"] == 2 * drawn.block_passes
        assert drawn.tokens_BxL.shape == (6, 16)
        assert ((drawn.tokens_BxL >= 0) & (drawn.tokens_BxL < 16)).all()  # no MASK left
    if kind == "fp_maskgit":  # the FP steps ran their planned iterations
        assert draws[0].details["iterations_per_step"] == list(plan.iterations_T)


def test_bad_labels_and_too_many_steps_are_one_line_errors():
    config, params, plan = _setup("maskgit")
    with pytest.raises(ValueError, match=r"labels_B must be classes in \[0, 3\)") as err:
        draw_image_samples(config, params, plan, np.array([0, 3]), 0)
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="cannot sample 17 steps over 16 codes") as err:
        image_reveal_fn(config, 17)
    assert "\n" not in str(err.value)


def test_sample_mode_writes_a_class_row_grid_within_the_budget(tmp_path, monkeypatch, capsys):
    """--mode=sample for images: class-balanced samples, one grid row per class, the
    budget's passes and the passes with guidance in the report (restore and tokenizer
    stubbed: the decoder maps code k to a flat image of grey level 16 k)."""
    import json

    from PIL import Image

    from cofre_jax import modes, tasks
    from cofre_jax.tasks.image import ImageTask

    config = image_config(
        "fp_maskgit",
        **{"sample.num_samples": 6, "sample.budget": 15, "sample.budget_steps": 3},
    )

    class FlatDecoder:
        grid = (4, 4)

        @staticmethod
        def decode(codes_Bxhxw):
            grey_B = (16 * np.asarray(codes_Bxhxw)[:, 0, 0]).astype(np.uint8)
            return np.broadcast_to(grey_B[:, None, None, None], (len(grey_B), 8, 8, 1))

    monkeypatch.setattr(tasks, "restore_model_params", lambda *a, **k: (image_params(config), 7))
    monkeypatch.setattr(ImageTask, "tokenizer", lambda self: FlatDecoder())
    modes.run("sample", config, str(tmp_path))
    out = capsys.readouterr().out
    report = json.loads((tmp_path / "samples_step7.json").read_text())
    assert report["labels"] == [0, 0, 1, 1, 2, 2]
    assert report["block_passes_used"] <= report["budget"] == 15
    assert report["block_passes_with_guidance"] == 2 * report["block_passes_used"]
    grid = np.asarray(Image.open(report["grid"]))
    assert grid.shape[0] > 3 * 8 and f"grid (3 rows, one per class): {report['grid']}" in out
