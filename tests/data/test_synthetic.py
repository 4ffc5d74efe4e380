"""The synthetic corpus: exact likelihood, entropy, the oracle scorer, and the pipeline."""

import itertools
import json
import math
import pathlib

import numpy as np
import pytest

from cofre_jax.config.typed import ConfigError, from_config_dict
from cofre_jax.data import pipeline, synthetic
from cofre_jax.data.tokenizers import make_tokenizer
from cofre_jax.evaluation import oracle
from configs import synthetic_mdlm

TINY_SPEC = synthetic.HMMSpec(num_states=3, vocab=4, branching=2, emissions=2, noise=0.05, seed=7)


def _brute_force_log_prob(hmm: synthetic.SparseHMM, x_C) -> float:
    """Sum over every hidden path of p(path, x): exponential, for tiny instances only."""
    total = 0.0
    for path in itertools.product(range(hmm.spec.num_states), repeat=len(x_C)):
        p = hmm.init_S[path[0]] * hmm.emit_SxV[path[0], x_C[0]]
        for c in range(1, len(x_C)):
            p *= hmm.trans_SxS[path[c - 1], path[c]] * hmm.emit_SxV[path[c], x_C[c]]
        total += p
    return math.log(total)


def test_exact_likelihood_equals_enumeration_and_normalises():
    hmm = synthetic.SparseHMM(TINY_SPEC)
    length = 4
    all_x = np.array(list(itertools.product(range(TINY_SPEC.vocab), repeat=length)))
    logp = hmm.log_prob(all_x)
    for x_C, lp in zip(all_x[::17], logp[::17]):
        assert lp == pytest.approx(_brute_force_log_prob(hmm, x_C), rel=1e-12)
    assert np.exp(logp).sum() == pytest.approx(1.0, abs=1e-12)


def test_generator_structure():
    hmm = synthetic.SparseHMM(TINY_SPEC)
    np.testing.assert_allclose(hmm.trans_SxS.sum(1), 1.0)
    np.testing.assert_allclose(hmm.emit_SxV.sum(1), 1.0)
    assert ((hmm.trans_SxS > 0).sum(1) == TINY_SPEC.branching).all()
    np.testing.assert_allclose(hmm.init_S @ hmm.trans_SxS, hmm.init_S, atol=1e-12)
    # Every sequence has finite likelihood (the noise floor); out-of-alphabet ids do not.
    assert np.isfinite(hmm.log_prob(np.zeros((1, 5), int))).all()
    assert hmm.log_prob(np.array([[0, 4, 1]]))[0] == -np.inf
    floor = hmm.log_prob(np.array([[0, 4, 1]]), invalid_prob=0.01)[0]
    assert np.isfinite(floor) and floor < hmm.log_prob(np.array([[0, 1]]))[0]


def test_sampling_is_seeded_and_matches_the_likelihood():
    hmm = synthetic.SparseHMM(TINY_SPEC)
    x = hmm.sample(40_000, 3, seed=1)
    np.testing.assert_array_equal(x, hmm.sample(40_000, 3, seed=1))
    assert not np.array_equal(x, hmm.sample(40_000, 3, seed=2))
    # Empirical frequencies of the 64 possible rows against their exact probabilities.
    all_x = np.array(list(itertools.product(range(4), repeat=3)))
    codes = (x * np.array([16, 4, 1])).sum(1)
    empirical = np.bincount(codes, minlength=64) / len(x)
    exact = np.exp(hmm.log_prob(all_x))
    se = np.sqrt(exact * (1 - exact) / len(x))
    assert (np.abs(empirical - exact) <= 5 * se + 1e-9).all()


def test_entropy_estimate_agrees_with_exact_enumeration():
    length = 4
    hmm = synthetic.SparseHMM(TINY_SPEC)
    all_x = np.array(list(itertools.product(range(4), repeat=length)))
    p = np.exp(hmm.log_prob(all_x))
    exact = -(p * np.log(p)).sum() / length
    est = synthetic.estimate_entropy(TINY_SPEC, length, num_rows=20_000)
    assert abs(est.nll_per_token - exact) < 3 * est.nll_se
    assert abs(est.predictive_per_token - exact) < 3 * est.predictive_se + 1e-3


def _data_cfg(**overrides):
    cfg = synthetic_mdlm.get_config()
    cfg.data.synthetic_train_rows = 64
    cfg.data.val_docs = 32
    cfg.data.seq_len = 18
    for key, value in overrides.items():
        cfg.data[key] = value
    return from_config_dict(cfg).data


def test_default_corpus_entropy_estimators_agree():
    """The two estimators (sampled -log p and the predictive-entropy sum) of the default
    corpus's entropy agree: an independent check of the scorer's reference value."""
    spec = synthetic.HMMSpec.from_data_config(_data_cfg())
    est = synthetic.estimate_entropy(spec, 62, num_rows=4000)
    assert abs(est.nll_per_token - est.predictive_per_token) < 3 * math.hypot(
        est.nll_se, est.predictive_se
    )
    # Sparse transitions: far below the row's own symbol entropy (structure to learn).
    assert est.nll_per_token < est.unigram_entropy - 0.5


def test_oracle_scores_generator_samples_at_zero_excess():
    data_cfg = _data_cfg(seq_len=64)
    spec = synthetic.HMMSpec.from_data_config(data_cfg)
    x = synthetic.SparseHMM(spec).sample(512, 62, seed=12345)
    bos = spec.vocab
    tokens = np.concatenate([np.full((512, 1), bos), x, np.full((512, 1), bos)], axis=1)
    scores = oracle.score_samples(data_cfg, tokens)
    assert abs(scores["excess_nll"]) < 3 * scores["excess_nll_se"]
    assert scores["invalid_fraction"] == 0.0
    assert abs(scores["sample_unigram_entropy"] - scores["data_unigram_entropy"]) < 3 * math.hypot(
        scores["sample_unigram_entropy_se"], scores["data_unigram_entropy_se"]
    )
    # Uniform noise is far from the corpus, and MASK ids inside a row are counted.
    rng = np.random.default_rng(0)
    noise = tokens.copy()
    noise[:, 1:-1] = rng.integers(0, spec.vocab, x.shape)
    assert oracle.score_samples(data_cfg, noise)["excess_nll"] > 1.0
    masked = tokens.copy()
    masked[:, 5] = spec.vocab + 1
    assert oracle.score_samples(data_cfg, masked)["invalid_fraction"] == pytest.approx(1 / 62)
    # The order-blind reference: the data's own symbol frequencies, no order. Its rows
    # match the data's unigram entropy but score far from 0, and below uniform noise.
    uni = oracle.unigram_reference(spec, 62)
    assert 0.5 < uni["excess_nll"] < oracle.score_samples(data_cfg, noise)["excess_nll"]
    assert uni["excess_nll_se"] < 0.05
    assert uni == oracle.unigram_reference(spec, 62, num_rows=1024)  # seeded


def test_pipeline_rows_are_generator_rows_and_resume_exactly():
    data_cfg = _data_cfg()
    tokenizer = make_tokenizer(data_cfg)
    assert tokenizer.vocab_size == 65 and tokenizer.bos_id == 64
    train, val = pipeline.load_token_splits(data_cfg, tokenizer)
    assert (len(train), len(val)) == (64 * 16, 32 * 16)
    spec = synthetic.HMMSpec.from_data_config(data_cfg)
    hmm = synthetic.SparseHMM(spec)
    first_rows = hmm.sample(64, 16, seed=(spec.seed, synthetic.GENERATOR_VERSION, 0))
    it = pipeline.make_train_iterator(data_cfg, tokenizer, batch_size=8, seed=3)
    batch = next(it)["tokens"]
    assert (batch[:, 0] == 64).all() and (batch[:, -1] == 64).all()
    rows = {tuple(r) for r in first_rows.tolist()}
    assert all(tuple(r) in rows for r in batch[:, 1:-1].tolist())
    state = json.loads(json.dumps(it.get_state()))
    expected = [next(it)["tokens"] for _ in range(3)]
    resumed = pipeline.make_train_iterator(data_cfg, tokenizer, batch_size=8, seed=3)
    resumed.set_state(state)
    for want in expected:
        np.testing.assert_array_equal(next(resumed)["tokens"], want)
    text = tokenizer.decode(batch[0])
    assert text.startswith("<eos> s") and tokenizer.encode(text) == batch[0].tolist()
    assert tokenizer.encode("s3 <mask> <eos>") == [3, 65, 64]
    with pytest.raises(ValueError, match="not a symbol"):
        tokenizer.encode("s64")


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"synthetic_branching": 99}, "data.synthetic_branching"),
        ({"synthetic_noise": 0.0}, "data.synthetic_noise"),
        ({"synthetic_vocab": 1}, "data.synthetic_vocab"),
        ({"tokenizer": "byte"}, "data.tokenizer"),
    ],
)
def test_bad_synthetic_settings_name_the_field(overrides, field):
    with pytest.raises(ConfigError, match=f"'{field}'"):
        _data_cfg(**overrides)


def test_oracle_scorer_needs_the_synthetic_corpus():
    cfg = synthetic_mdlm.get_config()
    cfg.data.source, cfg.data.tokenizer, cfg.data.path = "embedded", "byte", "wiki"
    with pytest.raises(ConfigError, match="'eval.scorer' = 'oracle'"):
        from_config_dict(cfg)
    cfg = synthetic_mdlm.get_config()
    cfg.eval.scorer, cfg.eval.reference = "none", "benchmarks/results/quality_vs_budget.json"
    with pytest.raises(ConfigError, match="'eval.reference'"):
        from_config_dict(cfg)


def test_eval_mode_reports_the_exact_scores(tmp_path, capsys):
    """--mode=eval on a tiny model of the synthetic corpus: per budget, the oracle's
    excess NLL over the entropy, equal to scoring the saved samples again."""
    from cofre_jax import modes
    from cofre_jax.evaluation import oracle

    cfg = synthetic_mdlm.get_config()
    cfg.model.hidden_size, cfg.model.num_layers, cfg.model.num_heads = 32, 2, 2
    cfg.model.cond_dim = 16
    cfg.data.seq_len, cfg.data.val_docs, cfg.data.synthetic_train_rows = 18, 64, 512
    cfg.train.batch_size, cfg.train.num_steps, cfg.train.eval_batches = 8, 4, 2
    cfg.train.log_every, cfg.train.checkpoint_every, cfg.optim.warmup_steps = 2, 2, 2
    cfg.eval.budgets, cfg.eval.budget_steps, cfg.eval.num_samples = (8,), (4,), 8
    # A benchmark JSON shaped like quality_vs_budget.json: its figures at budget 8 print.
    bench = {
        "runs": {"mdlm": {"step": 2000}},
        "best": {
            "MDLM": {"8": {"excess_nll": 1.25, "excess_nll_se": 0.03}},
            "CoFRe": {"8": {"excess_nll": 1.125, "excess_nll_se": 0.02}, "96": {}},
        },
    }
    (tmp_path / "bench.json").write_text(json.dumps(bench))
    cfg.eval.reference = str(tmp_path / "bench.json")
    config = from_config_dict(cfg)
    modes.run("train", config, str(tmp_path / "run"))
    modes.run("eval", config, str(tmp_path / "run"))
    out = capsys.readouterr().out
    assert "excess over the entropy" in out
    assert "rows of i.i.d. symbols with the data's frequencies score" in out
    assert "MDLM-12 trained 2000 steps): MDLM 1.2500 +- 0.0300, CoFRe 1.1250 +- 0.0200" in out
    report = json.loads((tmp_path / "run" / "eval_step4.json").read_text())
    assert report["reference"]["unigram_iid"]["excess_nll"] > 0.5
    entry = report["budgets"]["8"]
    tokenizer = make_tokenizer(config.data)
    rows = np.array([tokenizer.encode(text) for text in entry["samples"]])
    again = oracle.score_samples(config.data, rows)
    assert entry["excess_nll"] == pytest.approx(again["excess_nll"], rel=1e-9)
    assert entry["excess_nll"] > 0 and (rows[:, 0] == 64).all() and (rows[:, -1] == 64).all()


def test_make_run_demo_has_its_references():
    """`make run` (configs/synthetic.py, then configs/synthetic_demo_cofre.py) is the
    committed comparison's CoFRe, and prints the benchmark's MDLM and CoFRe figures at
    its own budgets: the file it names holds both at each budget."""
    from configs import synthetic, synthetic_cofre, synthetic_demo_cofre

    train_cfg = from_config_dict(synthetic.get_config())
    stage_cfg = from_config_dict(synthetic_demo_cofre.get_config())
    assert train_cfg.model.kind == "fp_mdlm" and stage_cfg.stage.kind == "consistency"
    assert stage_cfg.stage.init_from == "runs/synthetic"
    # The committed stage itself: only the eval and sampler seed differ.
    committed = from_config_dict(synthetic_cofre.get_config())
    assert (stage_cfg.stage, stage_cfg.model, stage_cfg.optim, stage_cfg.train) == (
        committed.stage,
        committed.model,
        committed.optim,
        committed.train,
    )
    assert stage_cfg.data == train_cfg.data and stage_cfg.eval.scorer == "oracle"
    root = pathlib.Path(__file__).resolve().parents[2]
    bench = json.loads((root / stage_cfg.eval.reference).read_text())
    for budget in stage_cfg.eval.budgets:
        for method in ("MDLM", "CoFRe"):
            assert bench["best"][method][str(budget)]["excess_nll"] > 0
