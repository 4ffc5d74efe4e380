"""Stages in the training loop: starting from another run, lambda in the logged metrics,
and the early-stop rule that keeps the last good checkpoint."""

import json
import logging

import jax
import numpy as np
import pytest
import tiny

from cofre_jax import checkpoint, data, sharding, train
from cofre_jax.config.typed import from_config_dict


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return tiny.write_corpus(tmp_path_factory.mktemp("corpus") / "docs.jsonl")


def _make_data(config):
    def make():
        tokenizer = data.make_tokenizer(config.data)
        train_iter = data.make_train_iterator(
            config.data, tokenizer, batch_size=config.train.batch_size, seed=0
        )
        eval_batches = data.make_eval_batches(
            config.data, tokenizer, batch_size=config.train.batch_size, num_batches=1
        )
        return train_iter, eval_batches

    return make


@pytest.fixture(scope="module")
def pretrained(corpus, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("pretrain")
    config = from_config_dict(tiny.tiny_config(corpus, train__num_steps=2))
    train.train_and_evaluate(config, str(workdir), make_data=_make_data(config), log=lambda _: 0)
    return str(workdir)


def _stage_config(corpus, pretrained, **overrides):
    return from_config_dict(
        tiny.tiny_config(
            corpus,
            stage__kind="consistency",
            stage__init_from=pretrained,
            stage__lambda_warmup_steps=4,
            **overrides,
        )
    )


def test_stage_starts_from_init_from_ema_params(corpus, pretrained, tmp_path, caplog):
    config = _stage_config(corpus, pretrained)
    trainer = train.build_program(config)
    lines = []
    with caplog.at_level(logging.WARNING):
        state = train.loop._start_state(trainer, config, str(tmp_path), lines.append)
        ema, step = checkpoint.restore_params(pretrained, trainer.abstract_state.params)
    # orbax's expected read-only and "data not restored" warnings are not shown.
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    assert step == 2 and int(state.step) == 0
    jax.tree_util.tree_map(np.testing.assert_array_equal, state.params, ema)
    jax.tree_util.tree_map(np.testing.assert_array_equal, state.ema_params, ema)
    assert "from the EMA parameters of" in lines[0]


def test_train_step_logs_lambda_and_divergence(corpus, pretrained):
    config = _stage_config(corpus, pretrained)
    trainer = train.build_program(config)
    state = trainer.init_state()
    rng = np.random.default_rng(0)
    logged = []
    for _ in range(3):
        tokens = rng.integers(0, 256, (config.train.batch_size, config.data.seq_len))
        batch = sharding.global_batch({"tokens": tokens.astype(np.int32)}, trainer.mesh)
        state, metrics = trainer.train_step(state, batch)
        logged.append(jax.device_get(metrics))
    np.testing.assert_allclose([m["lambda"] for m in logged], [0.0, 0.025, 0.05], rtol=1e-6)
    for m in logged:
        assert m["divergence"] > 0 and 0.05 <= m["drawn_gap"] <= 0.3
        assert m["teacher_masked_fraction"] < m["masked_fraction"]
        total = m["base_loss"] + m["lambda"] * m["divergence"]
        np.testing.assert_allclose(m["loss"], total, rtol=1e-5)


def test_early_stop_keeps_last_good_checkpoint(corpus, pretrained, tmp_path, monkeypatch):
    config = _stage_config(corpus, pretrained, train__num_steps=10, train__checkpoint_every=2)
    # Scripted validation perplexities: start, then the checkpoints at steps 2, 4, 6.
    scripted = iter([10.0, 10.5, 11.4, 11.6, 99.0])
    monkeypatch.setattr(
        train.loop,
        "evaluate",
        lambda task, mesh, params, batches: {"perplexity": next(scripted), "nats_per_token": 0.0},
    )
    lines = []
    train.train_and_evaluate(config, str(tmp_path), make_data=_make_data(config), log=lines.append)
    record = json.loads((tmp_path / train.EARLY_STOP_FILE).read_text())
    assert record["step"] == 6 and record["last_good_step"] == 4
    assert record["start_perplexity"] == 10.0 and record["perplexity"] == 11.6
    assert any(line.startswith("early stop at step 6") for line in lines)
    manager = checkpoint.make_manager(str(tmp_path), keep=10)
    assert manager.latest_step() == 4 and 6 not in manager.all_steps()
    final = json.loads((tmp_path / "final_metrics.json").read_text())
    assert final["early_stopped"] and final["step"] == 4 and final["perplexity"] == 11.4
    # A rerun does not train past the stop.
    lines.clear()
    result = train.train_and_evaluate(
        config, str(tmp_path), make_data=_make_data(config), log=lines.append
    )
    assert result["perplexity"] == 11.4 and "stopped early before" in lines[0]
    assert checkpoint.make_manager(str(tmp_path), keep=10).latest_step() == 4
