"""Train step: determinism, 8-device sharding equals 1 device, exact resume after
SIGKILL (also from a corrupted latest checkpoint) and SIGTERM."""

import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import jax
import numpy as np
import pytest
import tiny

from cofre_jax import sharding, tasks, train
from cofre_jax.config.typed import from_config_dict

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _batch(config, seed=0):
    rng = np.random.default_rng(seed)
    shape = (config.train.batch_size, config.data.seq_len)
    return {"tokens": rng.integers(0, config.model.mask_id, size=shape, dtype=np.int32)}


def _run_steps(trainer, config, steps=2):
    state = trainer.init_state()
    for i in range(steps):
        state, metrics = trainer.train_step(
            state, sharding.global_batch(_batch(config, i), trainer.mesh)
        )
    return jax.device_get(state), jax.device_get(metrics)


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    corpus = tiny.write_corpus(tmp_path_factory.mktemp("corpus") / "docs.jsonl")
    return from_config_dict(tiny.tiny_config(corpus))


def test_train_step_is_deterministic(config):
    one_device = sharding.make_mesh(config.mesh, jax.devices()[:1])
    a, ma = _run_steps(train.build_program(config, one_device), config)
    b, mb = _run_steps(train.build_program(config, one_device), config)
    assert int(a.step) == 2 and int(a.nonfinite_steps) == 0
    assert float(ma["loss"]) == float(mb["loss"])
    jax.tree_util.tree_map(np.testing.assert_array_equal, a.params, b.params)


def test_sharded_step_equals_single_device(config):
    assert jax.device_count() == 8, "conftest forces 8 CPU devices"
    one = sharding.make_mesh(config.mesh, jax.devices()[:1])
    eight = sharding.make_mesh(type(config.mesh)(data=2, fsdp=4, tensor=1))
    ref, ref_metrics = _run_steps(train.build_program(config, one), config)
    trainer8 = train.build_program(config, eight)
    got, got_metrics = _run_steps(trainer8, config)
    np.testing.assert_allclose(got_metrics["loss"], ref_metrics["loss"], rtol=1e-5)
    jax.tree_util.tree_map(
        lambda x, y: np.testing.assert_allclose(x, y, rtol=2e-5, atol=2e-6), got.params, ref.params
    )
    # FSDP really splits the parameters: some kernel is sharded over "fsdp".
    specs = jax.tree_util.tree_leaves(
        jax.tree_util.tree_map(lambda s: "fsdp" in str(s.spec), trainer8.state_shardings.params)
    )
    assert any(specs)


def test_nonfinite_loss_skips_update_and_stops(config):
    trainer = train.build_program(config, sharding.make_mesh(config.mesh, jax.devices()[:1]))
    state = trainer.init_state()
    params = jax.device_get(state.params)
    params["output_layer"]["linear"]["bias"] = params["output_layer"]["linear"]["bias"] * np.nan
    state = state.replace(params=params)
    state, metrics = trainer.train_step(state, sharding.global_batch(_batch(config), trainer.mesh))
    assert int(state.nonfinite_steps) == 1
    assert not np.isfinite(float(metrics["loss"]))
    # The update was skipped: every finite parameter is exactly what it was.
    after = jax.device_get(state.params)
    np.testing.assert_array_equal(
        after["blocks_0"]["attn_qkv"]["kernel"], params["blocks_0"]["attn_qkv"]["kernel"]
    )
    np.testing.assert_array_equal(
        after["vocab_embed"]["embedding"], params["vocab_embed"]["embedding"]
    )
    with pytest.raises(train.NonFiniteLossError, match="non-finite loss"):
        train.loop._check_finite(state, 1)


def test_a_signal_stops_after_at_most_one_more_step(config, tmp_path, monkeypatch, capsys):
    """Steps are dispatched ahead of the device; after SIGINT at most one step more than
    the one running at the signal may run before the checkpoint."""
    config = dataclasses.replace(
        config,
        train=dataclasses.replace(
            config.train, num_steps=400, log_every=1000, checkpoint_every=1000
        ),
    )

    def slow(x):  # a device step of 40 ms: dispatch alone would run far ahead of it
        time.sleep(0.04)
        return x

    slow_jit = jax.jit(lambda x: jax.pure_callback(slow, jax.ShapeDtypeStruct((), x.dtype), x))
    dispatched, seen = [], {}
    original = train.TrainProgram.train_step

    def step_then_signal(self, state, batch):
        state, metrics = original(self, state, batch)
        metrics = {**metrics, "loss": slow_jit(metrics["loss"])}
        dispatched.append(metrics["loss"])
        if len(dispatched) == 5:

            def send():
                seen["done"] = sum(m.is_ready() for m in list(dispatched))
                os.kill(os.getpid(), signal.SIGINT)

            threading.Timer(0.3, send).start()
        return state, metrics

    monkeypatch.setattr(train.TrainProgram, "train_step", step_then_signal)
    data = lambda: _data_for(config)  # noqa: E731
    train.train_and_evaluate(config, str(tmp_path), make_data=data)
    out = capsys.readouterr()
    assert "SIGINT received: finishing the step in flight" in out.err
    final = len(dispatched)
    assert f"stopped by signal at step {final}; checkpoint saved" in out.out
    # `done` steps had finished at the signal, one was running; at most one more ran.
    assert final - (seen["done"] + 1) <= 1, (final, seen)
    assert _checkpoint_steps(tmp_path)[-1] == final


def _data_for(config):
    from cofre_jax import data

    tokenizer = data.make_tokenizer(config.data)
    train_iter = data.make_train_iterator(
        config.data, tokenizer, batch_size=config.train.batch_size, seed=0
    )
    evals = data.make_eval_batches(
        config.data, tokenizer, batch_size=config.train.batch_size, num_batches=1
    )
    return train_iter, evals


def _train_cmd(corpus, workdir, num_steps):
    return [
        sys.executable,
        "-m",
        "cofre_jax.main",
        "--config=configs/quickstart_mdlm.py",
        f"--workdir={workdir}",
        "--config.model.hidden_size=32",
        "--config.model.num_layers=2",
        "--config.model.num_heads=2",
        "--config.model.cond_dim=16",
        "--config.model.dropout=0.1",
        "--config.data.source=text_files",
        f"--config.data.path={corpus}",
        "--config.data.seq_len=32",
        "--config.data.val_docs=40",
        "--config.train.batch_size=8",
        f"--config.train.num_steps={num_steps}",
        "--config.train.log_every=5",
        "--config.train.eval_every=1000",
        "--config.train.eval_batches=1",
        "--config.train.checkpoint_every=5",
    ]


def _final_params(config_dict, workdir):
    config = from_config_dict(config_dict)
    params, step = tasks.restore_model_params(config, str(workdir), use_ema=False)
    return jax.device_get(params), step


ENV = {**os.environ, "XLA_FLAGS": "", "JAX_PLATFORMS": "cpu"}
NUM_STEPS = 40


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """An uninterrupted 40-step run: (corpus, its final parameters)."""
    root = tmp_path_factory.mktemp("straight")
    corpus = tiny.write_corpus(root / "docs.jsonl")
    subprocess.run(
        _train_cmd(corpus, root / "run", NUM_STEPS), env=ENV, check=True, timeout=600, cwd=ROOT
    )
    want, step = _final_params(tiny.tiny_config(corpus, train__num_steps=NUM_STEPS), root / "run")
    assert step == NUM_STEPS
    return corpus, want


def _interrupt_after_checkpoint(corpus, workdir, sig) -> subprocess.Popen:
    """Starts training and sends `sig` once a checkpoint at step >= 15 exists."""
    proc = subprocess.Popen(
        _train_cmd(corpus, workdir, NUM_STEPS),
        env=ENV,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    ckpt_dir = workdir / "checkpoints"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        done = [p for p in ckpt_dir.glob("*") if p.name.isdigit()] if ckpt_dir.exists() else []
        if any(int(p.name) >= 15 for p in done):
            break
        time.sleep(0.05)
    assert proc.poll() is None, "training finished before it could be interrupted"
    proc.send_signal(sig)
    return proc


def _rerun_and_compare(corpus, workdir, want) -> str:
    rerun = subprocess.run(
        _train_cmd(corpus, workdir, NUM_STEPS),
        env=ENV,
        check=True,
        timeout=600,
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    got, step = _final_params(tiny.tiny_config(corpus, train__num_steps=NUM_STEPS), workdir)
    assert step == NUM_STEPS
    jax.tree_util.tree_map(np.testing.assert_array_equal, got, want)
    return rerun.stdout + rerun.stderr


def _checkpoint_steps(workdir) -> list[int]:
    return sorted(int(p.name) for p in (workdir / "checkpoints").glob("*") if p.name.isdigit())


def test_sigterm_checkpoints_the_current_step_and_exits_cleanly(straight, tmp_path):
    corpus, want = straight
    proc = _interrupt_after_checkpoint(corpus, tmp_path, signal.SIGTERM)
    stdout, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0
    stopped = [line for line in stdout.splitlines() if line.startswith("stopped by signal")]
    step = int(stopped[0].split("at step ")[1].split(";")[0])
    # Nothing completed is lost: the step the signal interrupted is the latest checkpoint.
    assert _checkpoint_steps(tmp_path)[-1] == step < NUM_STEPS
    log = _rerun_and_compare(corpus, tmp_path, want)
    assert f"resumed from checkpoint at step {step}" in log


def test_sigkill_then_rerun_equals_uninterrupted_also_with_corrupted_latest(straight, tmp_path):
    """One killed run, two reruns: as killed, and with its latest checkpoint corrupted
    and a partial save left behind (one interrupted run serves both checks)."""
    corpus, want = straight
    killed, corrupted = tmp_path / "killed", tmp_path / "corrupted"
    proc = _interrupt_after_checkpoint(corpus, killed, signal.SIGKILL)
    proc.wait()
    steps = _checkpoint_steps(killed)
    latest, previous = steps[-1], steps[-2]
    assert latest < NUM_STEPS
    shutil.copytree(killed, corrupted)

    log = _rerun_and_compare(corpus, killed, want)
    assert f"resumed from checkpoint at step {latest}" in log

    for path in (corrupted / "checkpoints" / str(latest) / "state").rglob("*"):
        if path.is_file():
            path.write_bytes(b"\x00garbage")
    # What a kill in the middle of a later save leaves: orbax's temporary folder, which
    # becomes a step only when renamed after a complete write.
    partial = corrupted / "checkpoints" / f"{latest + 5}.orbax-checkpoint-tmp-1"
    shutil.copytree(corrupted / "checkpoints" / str(previous), partial)
    for path in list(partial.rglob("*"))[::2]:
        if path.is_file():
            path.unlink()
    log = _rerun_and_compare(corpus, corrupted, want)
    assert f"checkpoint step {latest} in" in log and "cannot be read" in log
    assert f"resumed from checkpoint at step {previous}" in log
    assert (corrupted / "checkpoints" / f"{latest}.corrupt").is_dir()
