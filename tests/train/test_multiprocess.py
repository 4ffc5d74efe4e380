"""Two processes on localhost (CPU collectives over gloo), 4 simulated devices each,
train to the same loss and parameters as one process with 8 devices, and only process 0
prints progress.

The one-process reference runs in the test process itself (conftest's 8 CPU devices,
`modes.run` as `python -m cofre_jax.main` calls it), which saves a third interpreter
start-up (JAX, TensorFlow, orbax imports) on 2 cores.
"""

import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import tiny

from cofre_jax import checkpoint, modes, train
from cofre_jax.config.typed import from_config_dict
from cofre_jax.train import learning_rate_schedule
from configs import quickstart_mdlm

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FLAGS = [
    "--config=configs/quickstart_mdlm.py",
    "--config.model.hidden_size=32",
    "--config.model.num_layers=2",
    "--config.model.num_heads=2",
    "--config.model.cond_dim=16",
    "--config.model.dropout=0.1",
    "--config.data.source=text_files",
    "--config.data.seq_len=32",
    "--config.data.val_docs=40",
    "--config.train.batch_size=8",
    "--config.train.num_steps=3",
    "--config.train.log_every=1",
    "--config.train.eval_batches=2",
    "--config.mesh.data=2",
    "--config.mesh.fsdp=4",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _command(corpus, workdir, *extra):
    return [
        sys.executable,
        "-m",
        "cofre_jax.main",
        *FLAGS,
        f"--config.data.path={corpus}",
        f"--workdir={workdir}",
        *extra,
    ]


def _env(devices: int):
    flags = f"--xla_force_host_platform_device_count={devices}"
    return {**os.environ, "XLA_FLAGS": flags, "JAX_PLATFORMS": "cpu"}


def _flag_config(corpus):
    """The ConfigDict the FLAGS give `python -m cofre_jax.main`."""
    cfg = quickstart_mdlm.get_config()
    for flag in [*FLAGS[1:], f"--config.data.path={corpus}"]:
        dotted, value = flag[len("--config.") :].split("=", 1)
        section, key = dotted.split(".")
        cfg[section][key] = type(cfg[section][key])(value)
    return cfg


def _losses(stdout: str) -> list[str]:
    return [line.split(" grad_norm")[0] for line in stdout.splitlines() if line.startswith("step ")]


# About 2 minutes on 2 cores: two processes and the in-process reference run.
def test_two_processes_equal_one_process(tmp_path, capsys):
    corpus = tiny.write_corpus(tmp_path / "docs.jsonl")
    assert jax.device_count() == 8, "conftest forces 8 CPU devices"
    modes.run("train", from_config_dict(_flag_config(corpus)), str(tmp_path / "one"))
    one_stdout = capsys.readouterr().out

    port = _free_port()
    procs = [
        subprocess.Popen(
            _command(
                corpus,
                tmp_path / "two",
                "--distributed=on",
                f"--coordinator=localhost:{port}",
                "--num_processes=2",
                f"--process_id={i}",
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env=_env(4),
        )
        for i in range(2)
    ]
    outputs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outputs):
        assert p.returncode == 0, err[-3000:]

    # Same loss lines (values printed to 4 decimals) and the same final validation;
    # process 1 prints no progress of its own.
    assert _losses(outputs[0][0]) == _losses(one_stdout) and len(_losses(one_stdout)) == 3
    assert "final validation" in outputs[0][0]
    assert _losses(outputs[1][0]) == [] and "validation" not in outputs[1][0]
    final_one = json.loads((tmp_path / "one" / "final_metrics.json").read_text())
    final_two = json.loads((tmp_path / "two" / "final_metrics.json").read_text())
    np.testing.assert_allclose(final_two["nats_per_token"], final_one["nats_per_token"], rtol=1e-5)

    # The parameters the two-process job checkpointed collectively equal the single run's
    # up to the reduction order of the cross-process all-reduce. AdamW divides by the
    # root of the second moment, so where a gradient is ~0 (e.g. the head bias of bytes
    # absent from the batch) its last bits decide the sign of an update of size ~lr:
    # such entries may differ by up to the summed learning rates, twice.
    config = from_config_dict(_flag_config(corpus))
    schedule = learning_rate_schedule(config.optim, config.train.num_steps)
    bound = 2 * sum(float(schedule(i)) for i in range(3))
    abstract = train.build_program(config).abstract_state.params
    got, step_two = checkpoint.restore_params(str(tmp_path / "two"), abstract, use_ema=False)
    want, step_one = checkpoint.restore_params(str(tmp_path / "one"), abstract, use_ema=False)
    assert step_one == step_two == 3
    jax.tree_util.tree_map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=bound), got, want
    )
    # Nearly all entries agree far more closely than that bound.
    diffs = np.concatenate(
        [np.abs(np.ravel(a) - np.ravel(b)) for a, b in zip(*map(jax.tree.leaves, (got, want)))]
    )
    assert np.mean(diffs < 1e-6) > 0.95  # 0.986 measured
