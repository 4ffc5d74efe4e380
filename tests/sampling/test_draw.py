"""Drawing samples from a config and a model handle: compiled once per settings, framed
rows, and --mode=sample's one budget interface for MDLM and FP-MDLM."""

import json

import jax
import numpy as np
import pytest
import tiny
from tiny import fp_config, perturbed_init

from cofre_jax import modes, tasks
from cofre_jax.config.typed import from_config_dict
from cofre_jax.models import build_model
from cofre_jax.sampling import ancestral_sample, draw_samples, fp_sample_jit, sample_plan


@pytest.mark.parametrize("kind", ["mdlm", "fp_mdlm"])
def test_repeated_draws_reuse_the_compiled_sampler(kind, tmp_path):
    overrides = {"model__kind": kind, "fixed_point__eval_iterations": 2}
    config = from_config_dict(
        tiny.tiny_config(tiny.write_corpus(tmp_path / "c.jsonl"), **overrides)
    )
    jitted = ancestral_sample if kind == "mdlm" else fp_sample_jit
    plan = sample_plan(config, total=8 if kind == "mdlm" else 12, steps=2)
    outputs, compiles = [], []
    for _ in range(2):
        # New parameters each time, as --mode=eval and the benchmarks restore them per run.
        params = tasks.get_task(config).init_params(jax.random.PRNGKey(0))
        before = jitted._cache_size()
        outputs.append(draw_samples(config, params, plan, 2, seed=0))
        compiles.append(jitted._cache_size() - before)
    assert compiles[1] == 0, compiles
    np.testing.assert_array_equal(outputs[1].tokens_BxL, outputs[0].tokens_BxL)


def test_frame_keeps_bos_and_eos_visible(tmp_path):
    cfg = tiny.tiny_config(tiny.write_corpus(tmp_path / "c.jsonl"))
    cfg.sample.frame = True
    config = from_config_dict(cfg)
    params = tasks.get_task(config).init_params(jax.random.PRNGKey(0))
    plan = sample_plan(config, total=8, steps=4)
    drawn = draw_samples(config, params, plan, 4, 0)
    bos = config.model.mask_id - 1
    assert (drawn.tokens_BxL[:, 0] == bos).all() and (drawn.tokens_BxL[:, -1] == bos).all()
    assert (drawn.tokens_BxL != config.model.mask_id).all()


@pytest.mark.parametrize(
    "kind",
    ["fp_mdlm", pytest.param("mdlm", marks=pytest.mark.slow)],  # MDLM: test_cli too
)
def test_sample_mode_spends_and_prints_the_budget(kind, tmp_path, monkeypatch, capsys):
    config = fp_config(**{"model.kind": kind, "model.num_layers": 3, "sample.num_samples": 8,
                           "sample.budget": 30, "sample.adaptive_tol": 1e-2})  # fmt: skip

    def fake_restore(config, workdir, use_ema=True, mesh=None):  # run_sample's, no checkpoint
        model = build_model(config.model, config.fixed_point)
        return perturbed_init(model, config.data.seq_len), 0

    monkeypatch.setattr(tasks, "restore_model_params", fake_restore)
    modes.run("sample", config, str(tmp_path))
    stdout = capsys.readouterr().out
    assert "budget: 30\n" in stdout
    used = int(stdout.split("block_passes_used: ")[1].split()[0])
    report = json.loads((tmp_path / "samples_step0.json").read_text())
    assert report["block_passes_used"] == used and report["budget"] == 30
    assert len(report["samples"]) == 8
    if kind == "mdlm":  # 3 blocks per call: 10 steps; calls skipped by the cache not spent
        assert report["steps"] == 10 and used == 3 * report["network_calls"] <= 30
    else:  # T = 30 // (2 + 8) = 3 steps of 1 + N + 1
        assert report["steps"] == 3 and used <= 30
        assert sum(report["planned_iterations_per_step"]) == 24
        assert used == 6 + sum(report["iterations_per_step"])
