"""--mode=train_tokenizer: trains the VQ tokenizer of data.tokenizer (kind "vq") on the
training split of the config's images, with checkpoints and an exact resume.

The batches come from the grain training iterator (seeded by data.tokenizer.seed); an
orbax checkpoint of the train state and the iterator's position is written every
checkpoint_every steps and at the end (cofre_jax/checkpoint.py), so a run killed at any
point and restarted with the same command ends with the same parameters, bit for bit, as
one that ran through. SIGINT / SIGTERM stop at a step boundary after a checkpoint. At the
end `<workdir>/tokenizer.json` records the held-out reconstruction and codebook use; a
workdir that has it prints it again and trains nothing.

Letters: B batch, H W C image height, width, channels.
"""

from __future__ import annotations

import functools
import json
import math
import os
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from cofre_jax import checkpoint
from cofre_jax.config.checks import ConfigError
from cofre_jax.data.images import ImageSplit, load_splits, make_train_iterator
from cofre_jax.data.images.codes import data_fingerprint
from cofre_jax.io.json_file import write_json
from cofre_jax.train.loop import NonFiniteLossError, process_zero_only
from cofre_jax.train.signals import StopFlag, wait_for
from cofre_jax.vq.model import VQConfig
from cofre_jax.vq.settings import (
    check_or_write_settings,
    training_settings,
    vq_config,
    vq_train_config,
)
from cofre_jax.vq.train import VQTrainConfig, evaluate, init_state, make_optimizer, train_step

REPORT_FILE = "tokenizer.json"
KEEP_CHECKPOINTS = 2


@functools.lru_cache(maxsize=8)
def _program(vq: VQConfig, train: VQTrainConfig, image_size: tuple[int, int]):
    """(optimiser, jitted init of the train state from a key, jitted step), kept per
    settings so a rerun in one process (tests, a resume after a stop) compiles once.
    Flax's init run eagerly would compile every layer's ops one by one."""
    tx = make_optimizer(train)
    init = jax.jit(lambda key: init_state(vq, tx, key, image_size))
    step = jax.jit(functools.partial(train_step, config=vq, tx=tx), donate_argnums=0)
    return tx, init, step


def _abstract_state(init, key: jax.Array):
    # One device, named: orbax restores each array into the sharding it is given.
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    shapes = jax.eval_shape(init, key)
    return jax.tree_util.tree_map(
        lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=device), shapes
    )


def _log_line(step: int, steps: int, metrics: dict[str, float], rate: float) -> str:
    eta_min = (steps - step) / max(rate, 1e-9) / 60
    return (
        f"tokenizer step {step}/{steps} loss {metrics['loss']:.4f} "
        f"recon_mse {metrics['recon_mse']:.4f} codebook_used {metrics['codebook_used']:.3f} "
        f"perplexity {metrics['codebook_perplexity']:.1f} grad_norm {metrics['grad_norm']:.3f} "
        f"{rate:.2f} steps/s ETA {eta_min:.1f} min"
    )


def format_report(report: dict) -> str:
    return (
        f"tokenizer after {report['steps']} steps: held-out reconstruction MSE "
        f"{report['heldout_recon_mse']:.5f} (at init {report['heldout_recon_mse_at_init']:.5f}; "
        f"PSNR {report['heldout_psnr_db']:.2f} dB), codebook used "
        f"{report['heldout_codebook_used']:.1%}, perplexity "
        f"{report['heldout_codebook_perplexity']:.1f} over {report['heldout_images']} images"
    )


def _check_finite(metrics: dict[str, float], step: int) -> None:
    if not all(math.isfinite(v) for v in metrics.values()):
        raise NonFiniteLossError(
            f"non-finite tokenizer loss or gradient at step {step} (no checkpoint was written "
            "after it); lower data.tokenizer.learning_rate or resume from the last checkpoint"
        )


def _read_report(path: str) -> dict | None:
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def train_tokenizer(
    config: Any,
    workdir: str,
    log: Callable[[str], None] = print,
    *,
    splits: tuple[ImageSplit, ImageSplit] | None = None,
) -> dict:
    """Trains data.tokenizer in `workdir` (resuming from its latest checkpoint) and
    returns the report written to `<workdir>/tokenizer.json`; a run stopped by a signal
    returns {"stopped_at_step": k, "steps": n}. `splits` (train, held-out) replace
    `load_splits(config.data)`, e.g. in tests."""
    tok = config.data.tokenizer
    if tok.kind != "vq":
        raise ConfigError(
            f"config field 'data.tokenizer.kind' = {tok.kind!r} is invalid for "
            "--mode=train_tokenizer: allowed 'vq' (a 'llamagen' tokenizer is imported from "
            "data.tokenizer_path, not trained)"
        )
    if not workdir:
        raise ConfigError("--mode=train_tokenizer needs --workdir=DIR, the tokenizer's folder")
    if jax.process_count() > 1:
        raise ConfigError("--mode=train_tokenizer runs on one process; start it without others")
    log = process_zero_only(log)
    train_split, heldout = splits if splits is not None else load_splits(config.data)
    image_shape = (config.data.image_size, config.data.image_size, config.data.channels)
    for split in (train_split, heldout):
        split.check_shape(image_shape)
    os.makedirs(workdir, exist_ok=True)
    settings = training_settings(config, image_shape[:2], data_fingerprint(train_split))
    check_or_write_settings(workdir, settings)
    report_path = os.path.join(workdir, REPORT_FILE)
    report = _read_report(report_path)
    if report is not None:
        log(f"{workdir} holds a trained tokenizer; nothing to train")
        log(format_report(report))
        return report
    report = _train(config, workdir, log, train_split, heldout)
    if "stopped_at_step" not in report:
        report["settings"] = settings
        write_json(report_path, report)
        log(format_report(report))
    return report


def _train(config, workdir, log, train_split, heldout) -> dict:
    tok, data = config.data.tokenizer, config.data
    vq, train = vq_config(config), vq_train_config(config)
    image_size = (data.image_size, data.image_size)
    _, init, step_fn = _program(vq, train, image_size)
    key = jax.random.PRNGKey(tok.seed)
    train_iter = make_train_iterator(
        train_split,
        batch_size=tok.batch_size,
        seed=tok.seed,
        image_shape=(*image_size, data.channels),
        prefetch_batches=data.prefetch_batches,
        worker_count=data.worker_count,
    )
    manager = checkpoint.make_manager(workdir, keep=KEEP_CHECKPOINTS)
    restored = checkpoint.restore(manager, _abstract_state(init, key), train_iter)
    if restored is None:
        state, step = init(key), 0
        log(f"training the tokenizer from scratch in {workdir}")
    else:
        state, step = restored
        log(f"resumed the tokenizer from checkpoint at step {step} in {workdir}")
    first_step, started = step, time.perf_counter()
    window_start, window_step, pending = started, step, None
    with StopFlag() as stop:
        while step < tok.steps and not stop.requested:
            batch = next(train_iter)
            state, metrics = step_fn(state, {"images": jnp.asarray(batch["images"])})
            step += 1
            # Keeps one step queued behind the running one, so a signal waits for at
            # most one more step (as cofre_jax/train/loop.py).
            if pending is not None:
                wait_for(pending)
            pending = metrics
            at_checkpoint = step % tok.checkpoint_every == 0 or step == tok.steps
            if step % tok.log_every == 0 or at_checkpoint:
                scalars = {k: float(v) for k, v in jax.device_get(metrics).items()}
                _check_finite(scalars, step)
                if step % tok.log_every == 0 or step == tok.steps:
                    rate = (step - window_step) / max(time.perf_counter() - window_start, 1e-9)
                    log(_log_line(step, tok.steps, scalars, rate))
                    window_start, window_step = time.perf_counter(), step
            if at_checkpoint:
                checkpoint.save(manager, step, state, train_iter)
    if manager.latest_step() != step:
        _check_finite({k: float(v) for k, v in jax.device_get(pending or {}).items()}, step)
        checkpoint.save(manager, step, state, train_iter)
    manager.wait_until_finished()
    seconds = time.perf_counter() - started
    if step < tok.steps:
        log(f"stopped by signal at step {step}; checkpoint saved, rerun to resume")
        return {"stopped_at_step": step, "steps": tok.steps}
    report = _report(vq, train, state.params, init(key).params, heldout, step, first_step)
    report["seconds"] = seconds
    return report


def _report(vq, train, params, params_at_init, heldout, step, first_step) -> dict[str, Any]:
    images = heldout.images_NxHxWxC
    at_init = evaluate(params_at_init, vq, images, train.eval_batch_size)
    final = evaluate(params, vq, images, train.eval_batch_size)
    mse = final["recon_mse"]
    return {
        "steps": step,
        "resumed_from_step": first_step,  # seconds count this last run only
        "heldout_images": len(images),
        "heldout_split": heldout.name,
        "heldout_recon_mse": mse,  # per pixel, images scaled to [-1, 1]
        "heldout_recon_mse_at_init": at_init["recon_mse"],
        "heldout_psnr_db": float(10 * np.log10(4.0 / max(mse, 1e-12))),  # peak-to-peak 2
        "heldout_codebook_used": final["codebook_used"],
        "heldout_codebook_perplexity": final["codebook_perplexity"],
        "codebook_size": vq.codebook_size,
        "grid": [s // vq.downsample_factor for s in images.shape[1:3]],
    }
