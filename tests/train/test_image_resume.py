"""The image model resumes exactly after SIGKILL, like the text model: a tiny FP-MaskGIT
on an image folder, through the CLI (tokenizer stage, then training), killed after a
checkpoint and rerun, ends with the parameters of an uninterrupted run."""

import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from PIL import Image

from cofre_jax import tasks
from cofre_jax.config.typed import from_config_dict
from configs import quickstart_images

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENV = {**os.environ, "XLA_FLAGS": "", "JAX_PLATFORMS": "cpu"}
NUM_STEPS = 30
CLASSES = 2


def _write_folder(root) -> None:
    """Two classes of 16 x 16 grayscale images: bright squares and dark bars."""
    rng = np.random.default_rng(0)
    for label in range(CLASSES):
        (root / f"class{label}").mkdir(parents=True)
        for i in range(100):
            pixels = rng.integers(0, 60, (16, 16), dtype=np.uint8)
            if label == 0:
                pixels[4:12, 4:12] += 180
            else:
                pixels[:, 6:10] += 150
            Image.fromarray(pixels).save(root / f"class{label}" / f"{i}.png")


def _overrides(root) -> dict[str, object]:
    return {
        "data.source": "image_folder",
        "data.path": str(root / "images"),
        "data.cache_dir": str(root / "cache"),
        "data.image_size": 16,
        "data.grid_size": 4,
        "data.num_classes": CLASSES,
        "data.tokenizer_path": str(root / "tokenizer"),
        "data.tokenizer.base_channels": 8,
        "data.tokenizer.z_channels": 8,
        "data.tokenizer.code_dim": 4,
        "data.tokenizer.norm_groups": 4,
        "data.tokenizer.steps": 4,
        "data.tokenizer.batch_size": 16,
        "data.tokenizer.log_every": 2,
        "data.tokenizer.checkpoint_every": 2,
        "model.num_classes": CLASSES,
        "model.codebook_size": 16,
        "model.hidden_size": 32,
        "model.num_heads": 2,
        "model.k_pre": 1,
        "model.k_post": 1,
        "model.dropout": 0.1,
        "train.batch_size": 8,
        "train.num_steps": NUM_STEPS,
        "train.log_every": 5,
        "train.eval_every": 1000,
        "train.eval_batches": 1,
        "train.checkpoint_every": 5,
    }


def _command(root, workdir, mode="train") -> list[str]:
    flags = [f"--config.{k}={v}" for k, v in _overrides(root).items()]
    return [
        sys.executable,
        "-m",
        "cofre_jax.main",
        "--config=configs/quickstart_images.py",
        f"--workdir={workdir}",
        f"--mode={mode}",
        *flags,
    ]


def _typed(root):
    cfg = quickstart_images.get_config()
    for dotted, value in _overrides(root).items():
        *path, name = dotted.split(".")
        section = cfg
        for part in path:
            section = section[part]
        section[name] = value
    return from_config_dict(cfg)


def _params(root, workdir):
    params, step = tasks.restore_model_params(_typed(root), str(workdir), use_ema=False)
    return jax.device_get(params), step


def _run(command, **kwargs):
    return subprocess.run(command, env=ENV, cwd=ROOT, timeout=600, check=True, **kwargs)


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """The images, their tokenizer and an uninterrupted run: (root, final params)."""
    root = tmp_path_factory.mktemp("image_resume")
    _write_folder(root / "images")
    _run(_command(root, root / "tokenizer", mode="train_tokenizer"))
    _run(_command(root, root / "straight"))
    params, step = _params(root, root / "straight")
    assert step == NUM_STEPS
    return root, params


def test_image_training_resumes_exactly_after_sigkill(straight):
    root, want = straight
    workdir = root / "killed"
    proc = subprocess.Popen(
        _command(root, workdir),
        env=ENV,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    ckpt_dir = workdir / "checkpoints"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        done = [p for p in ckpt_dir.glob("*") if p.name.isdigit()] if ckpt_dir.exists() else []
        if any(int(p.name) >= 10 for p in done):
            break
        time.sleep(0.05)
    assert proc.poll() is None, "training finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    steps = sorted(int(p.name) for p in ckpt_dir.glob("*") if p.name.isdigit())
    assert steps and steps[-1] < NUM_STEPS
    rerun = _run(_command(root, workdir), capture_output=True, text=True)
    assert f"resumed from checkpoint at step {steps[-1]}" in rerun.stdout + rerun.stderr
    got, step = _params(root, workdir)
    assert step == NUM_STEPS
    jax.tree_util.tree_map(np.testing.assert_array_equal, got, want)
