"""End to end through the entry point: train -> sample -> eval -> describe, on a tiny
offline corpus; plus the mismatched-restore error."""

import json
import os
import subprocess
import sys

import pytest
import tiny

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_FLAGS = [
    "--config.model.hidden_size=32",
    "--config.model.num_layers=2",
    "--config.model.num_heads=2",
    "--config.model.cond_dim=16",
    "--config.data.source=text_files",
    "--config.data.seq_len=32",
    "--config.data.val_docs=40",
    "--config.train.batch_size=8",
    "--config.train.num_steps=4",
    "--config.train.log_every=2",
    "--config.train.eval_batches=2",
    "--config.sample.num_samples=2",
    "--config.sample.steps=16",
    "--config.eval.budgets=()",
    "--config.eval.budget_steps=()",
    "--config.eval.scorer=none",
]


def _main(*args, check=True):
    env = {**os.environ, "XLA_FLAGS": "", "JAX_PLATFORMS": "cpu"}
    if not any(a.startswith("--config=") for a in args):
        args = ("--config=configs/quickstart_mdlm.py", *args)
    out = subprocess.run(
        [sys.executable, "-m", "cofre_jax.main", *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
        env=env,
    )
    if check and out.returncode != 0:
        raise AssertionError(f"exit {out.returncode}\n{out.stdout}\n{out.stderr[-3000:]}")
    return out


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    corpus = tiny.write_corpus(root / "docs.jsonl")
    flags = [*TINY_FLAGS, f"--config.data.path={corpus}", f"--workdir={root / 'run'}"]
    train = _main(*flags)
    return root / "run", flags, train.stdout


def test_train_reports_validation_nelbo(trained):
    workdir, _, stdout = trained
    assert "final validation (EMA params, step 4)" in stdout
    metrics = json.loads((workdir / "final_metrics.json").read_text())
    assert metrics["step"] == 4
    assert metrics["perplexity"] > 1.0
    assert abs(metrics["bits_per_token"] * 0.6931471805599453 - metrics["nats_per_token"]) < 1e-6


def test_sample_prints_and_writes_samples(trained):
    workdir, flags, _ = trained
    out = _main(*flags, "--mode=sample")
    assert "--- sample 1 ---" in out.stdout
    assert "block_passes_used:" in out.stdout
    report = json.loads((workdir / "samples_step4.json").read_text())
    assert len(report["samples"]) == 2
    assert 1 <= report["network_calls"] <= 16
    assert report["block_passes_used"] == report["network_calls"] * 2  # 2 MDLM blocks


def test_eval_writes_report(trained):
    workdir, flags, _ = trained
    out = _main(*flags, "--mode=eval", "--config.eval.budgets=8", "--config.eval.scorer=none")
    assert "val nats/token" in out.stdout and "budget 8: entropy" in out.stdout
    report = json.loads((workdir / "eval_step4.json").read_text())
    final = json.loads((workdir / "final_metrics.json").read_text())
    # Same EMA params, same fixed eval keys and batches: the numbers agree exactly.
    like = report["likelihood"]
    assert like["nats_per_token"] == pytest.approx(final["nats_per_token"], rel=1e-6)
    assert report["budgets"]["8"]["block_passes_used"] <= 8


def test_restore_into_other_model_is_clear_error(trained):
    _, flags, _ = trained
    out = _main(*flags, "--mode=eval", "--config.model.hidden_size=64", check=False)
    assert out.returncode != 0
    # Eval reads only the parameters, so the optimiser is not part of the message.
    assert "ema_params of checkpoint step 4" in out.stderr
    assert "do not match the configured model (" in out.stderr and "shape changes" in out.stderr


def test_rerun_of_finished_training_does_not_train_again(trained):
    _, flags, _ = trained
    out = _main(*flags)
    assert "resumed from checkpoint at step 4" in out.stdout
    assert "step 2/4" not in out.stdout


def test_describe_full_owt_configs():
    mdlm = _main("--config=configs/owt_mdlm.py", "--mode=describe").stdout
    fp = _main("--config=configs/owt.py", "--mode=describe").stdout
    facts = {}
    for name, text in (("mdlm", mdlm), ("fp", fp)):
        facts[name] = dict(line.split(": ", 1) for line in text.splitlines() if ": " in line)
    # Golden counts: they change only if the architecture changes (docs/method.md §2.1-2.2).
    assert int(facts["mdlm"]["total_params"]) == 169_627_218
    assert int(facts["fp"]["total_params"]) == 104_659_794
    assert facts["mdlm"]["block_passes_per_step"] == "12"
    assert facts["fp"]["block_passes_per_step"].startswith("1 + 1*N + 1")


def _without_workdir(flags):
    return [f for f in flags if not f.startswith("--workdir=")]


@pytest.fixture(scope="module")
def converted(trained):
    """--mode=convert on the trained 2-block MDLM: FP-MDLM from blocks 1, 2, 2."""
    mdlm_workdir, flags, _ = trained
    workdir = mdlm_workdir.parent / "converted"
    out = _main(
        "--config=configs/quickstart.py",
        "--mode=convert",
        *_without_workdir(flags),
        f"--workdir={workdir}",
        f"--config.convert.teacher={mdlm_workdir}",
        "--config.convert.teacher_num_layers=2",
        "--config.convert.layer_map=1,2,2",
        "--config.train.num_steps=2",
        "--config.train.log_every=1",
    )
    return workdir, out.stdout


# Convert -> stage -> sample through the CLI costs about 4 minutes; the pieces are
# tested in process (test_convert.py, test_stage_runs.py), so the chain runs with -m slow.
@pytest.mark.slow
def test_convert_runs_distillation_from_the_mdlm_run(converted):
    workdir, stdout = converted
    assert "converted" in stdout and "with layer map [1, 2, 2]" in stdout
    assert "given initial parameters, before training" in stdout
    assert "divergence" in stdout and "fp_iterations" in stdout
    report = json.loads((workdir / "convert.json").read_text())
    assert report["layer_map"] == [1, 2, 2] and report["teacher_step"] == 4
    assert json.loads((workdir / "config.json").read_text())["stage"]["kind"] == "distill"
    assert json.loads((workdir / "final_metrics.json").read_text())["step"] == 2


@pytest.mark.slow
def test_consistency_stage_from_converted_run_then_sample(converted):
    fp_workdir, _ = converted
    corpus = fp_workdir.parent / "docs.jsonl"
    workdir = fp_workdir.parent / "cofre"
    stage_flags = [
        "--config=configs/quickstart_cofre.py",
        *TINY_FLAGS,
        f"--config.data.path={corpus}",
        f"--workdir={workdir}",
        f"--config.stage.init_from={fp_workdir}",
        "--config.train.num_steps=2",
        "--config.train.log_every=1",
        "--config.train.checkpoint_every=2",
    ]
    stdout = _main(*stage_flags).stdout
    assert f"starting stage 'consistency' from the EMA parameters of {fp_workdir}" in stdout
    assert "stage start validation" in stdout
    assert "lambda" in stdout and "divergence" in stdout
    assert json.loads((workdir / "final_metrics.json").read_text())["step"] == 2
    assert (workdir / "stage_start.json").exists()
    out = _main(*stage_flags, "--mode=sample")
    assert "--- sample 1 ---" in out.stdout


def test_convert_without_teacher_is_clear_error(tmp_path):
    out = _main(
        "--mode=convert", "--config=configs/quickstart.py", f"--workdir={tmp_path}", check=False
    )
    assert out.returncode != 0
    assert "--mode=convert needs the MDLM teacher" in out.stderr
