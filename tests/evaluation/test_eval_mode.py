"""--mode=eval: the report's parts, scored samples per budget, and resuming."""

import json

import numpy as np
import pytest
import tiny
from scorer_fixtures import write_tiny_scorer

from cofre_jax import modes, sampling, train
from cofre_jax.config.typed import from_config_dict
from cofre_jax.evaluation import scorer as scorer_lib


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    corpus = tiny.write_corpus(root / "docs.jsonl")
    texts = [json.loads(line)["text"] for line in (root / "docs.jsonl").read_text().splitlines()]
    scorer_path = write_tiny_scorer(root / "scorer.gguf", texts)
    config = from_config_dict(tiny.tiny_config(corpus, train__num_steps=4))
    workdir = root / "run"
    modes.run("train", config, str(workdir))
    return corpus, scorer_path, workdir


def _config(corpus, scorer_path, **overrides):
    return from_config_dict(
        tiny.tiny_config(
            corpus,
            **{
                "train__num_steps": 4,
                "eval__budgets": (8, 16),
                "eval__budget_steps": (4, 8),
                "eval__num_samples": 4,
                "eval__scorer": scorer_path,
                "eval__scorer_batch_size": 3,
                **overrides,
            },
        )
    )


def test_report_has_likelihood_costs_and_scored_budgets(trained, capsys):
    corpus, scorer_path, workdir = trained
    config = _config(corpus, scorer_path)
    modes.run("eval", config, str(workdir))
    assert "budget 16: gen PPL" in capsys.readouterr().out
    report = json.loads((workdir / "eval_step4.json").read_text())
    final = json.loads((workdir / "final_metrics.json").read_text())
    # Same EMA params, same fixed eval keys and batches: the numbers agree.
    assert report["likelihood"]["nats_per_token"] == pytest.approx(final["nats_per_token"], 1e-6)
    assert report["costs"]["params"] > 0 and report["costs"]["train_step"]["flops"] > 0
    assert report["scorer"]["family"] == "llama"
    for budget, steps in ((8, 4), (16, 8)):
        entry = report["budgets"][str(budget)]
        assert entry["steps"] == steps and entry["block_passes_used"] <= budget
        assert len(entry["samples"]) == 4
        assert 0.0 < entry["entropy"] <= np.log(config.data.seq_len)
        # The reported gen PPL is the scorer's on exactly the saved samples.
        scorer = scorer_lib.load_scorer(scorer_path, config.data)
        again = scorer_lib.generative_perplexity(scorer, entry["samples"], max_length=32)
        assert entry["gen_ppl"] == pytest.approx(again["gen_ppl"], rel=1e-5)
        assert entry["scored_tokens"] == again["scored_tokens"] > 0


def test_resume_redoes_only_missing_budgets(trained, monkeypatch):
    corpus, scorer_path, workdir = trained
    config = _config(corpus, scorer_path, eval__report="resume", eval__scorer="none")
    modes.run("eval", config, str(workdir))
    path = workdir / "resume_step4.json"
    report = json.loads(path.read_text())
    assert "gen_ppl" not in report["budgets"]["8"]  # scorer "none": entropy only
    del report["budgets"]["16"]  # as if interrupted before budget 16 was done
    report["parts"] = [p for p in report["parts"] if p["key"]["budget"] != 16]
    path.write_text(json.dumps(report))
    calls = []
    original = sampling.draw_samples
    monkeypatch.setattr(
        sampling, "draw_samples", lambda *a, **k: calls.append(a[2].budget) or original(*a, **k)
    )
    monkeypatch.setattr(
        train, "evaluate", lambda *a: pytest.fail("likelihood was already in the report")
    )
    modes.run("eval", config, str(workdir))
    assert calls == [16]
    assert set(json.loads(path.read_text())["budgets"]) == {"8", "16"}
    # Other sampler settings: the old parts no longer apply; new ones are added.
    monkeypatch.undo()
    modes.run(
        "eval",
        _config(corpus, scorer_path, eval__report="resume", eval__scorer="none", sample__seed=1),
        str(workdir),
    )
    report = json.loads(path.read_text())
    assert report["settings"]["sample"]["seed"] == 1
    assert sorted(p["key"]["sample"]["seed"] for p in report["parts"]) == [0, 0, 1, 1]


def test_scored_parts_survive_other_settings(trained, monkeypatch, capsys):
    """An entropy-only rerun and a changed budget list add to the report, never erase."""
    corpus, scorer_path, workdir = trained
    path = workdir / "kept_step4.json"
    modes.run("eval", _config(corpus, scorer_path, eval__report="kept"), str(workdir))
    scored = json.loads(path.read_text())["budgets"]
    assert all("gen_ppl" in e for e in scored.values())
    calls = []
    original = sampling.draw_samples
    monkeypatch.setattr(
        sampling, "draw_samples", lambda *a, **k: calls.append(a[2].budget) or original(*a, **k)
    )
    # Entropy only, one budget added: the scored parts serve it, only budget 12 is drawn.
    modes.run(
        "eval",
        _config(
            corpus,
            scorer_path,
            eval__report="kept",
            eval__scorer="none",
            eval__budgets=(12, 8, 16),
            eval__budget_steps=(4, 4, 8),
        ),
        str(workdir),
    )
    assert calls == [12]
    report = json.loads(path.read_text())
    assert set(report["budgets"]) == {"12", "8", "16"}
    summary = [x for x in capsys.readouterr().out.splitlines() if x.startswith("budget ")]
    assert [x.split(":")[0] for x in summary[-3:]] == ["budget 12", "budget 8", "budget 16"]
    assert report["budgets"]["8"]["gen_ppl"] == scored["8"]["gen_ppl"]
    assert "gen_ppl" not in report["budgets"]["12"]
    # Back to the first settings: everything is still there, nothing is redone.
    calls.clear()
    modes.run("eval", _config(corpus, scorer_path, eval__report="kept"), str(workdir))
    assert calls == []
    assert json.loads(path.read_text())["budgets"] == scored


def test_budget_below_one_step_is_a_config_error(trained):
    corpus, scorer_path, workdir = trained
    config = _config(corpus, scorer_path, eval__budgets=(3,), eval__budget_steps=(4,))
    with pytest.raises(SystemExit, match="eval.budgets"):
        modes.run("eval", config, str(workdir))
