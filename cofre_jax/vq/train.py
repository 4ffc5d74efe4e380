"""Trains the VQ tokenizer (cofre_jax/vq/model.py) on in-memory uint8 images.

`train_step(state, batch, *, config, tx)` is a pure module-level function of
(state, batch) with batch = {"images": uint8 BxHxWxC}, jitted once by `make_train_step`,
so the generic trainer (cofre_jax/train) can take it over later; `train_vq` is a plain
host loop over arrays with a progress callback (no CLI mode, no checkpointing). The loss
is MSE + the VQ terms only (see model.py).

Letters: B batch, N images, H W C image height, width, channels, h w code grid.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from cofre_jax.vq.model import (
    VQConfig,
    VQModel,
    codebook_usage,
    images_to_model,
    init_params,
    vq_loss,
)


@dataclasses.dataclass(frozen=True)
class VQTrainConfig:
    steps: int = 2000
    batch_size: int = 64
    learning_rate: float = 1e-3
    warmup_steps: int = 100
    b1: float = 0.9
    b2: float = 0.95  # LlamaGen's tokenizer training
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    seed: int = 0
    log_every: int = 100
    eval_batch_size: int = 256


@flax.struct.dataclass
class VQTrainState:
    step: jax.Array
    params: Any
    opt_state: Any


@dataclasses.dataclass(frozen=True)
class VQTrainReport:
    steps: int
    seconds: float
    train_metrics: dict[str, float]  # the last step's
    heldout_recon_mse_at_init: float
    heldout_recon_mse: float  # mean over held-out pixels, images in [-1, 1]
    heldout_codebook_used: float  # fraction of the K codes the held-out images use
    heldout_codebook_perplexity: float


def make_optimizer(train: VQTrainConfig) -> optax.GradientTransformation:
    """AdamW with linear warm-up then cosine decay to 0, after global-norm clipping."""
    warmup = max(min(train.warmup_steps, train.steps - 1), 1)  # fits runs shorter than it
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, train.learning_rate, warmup, max(train.steps, warmup + 1)
    )
    return optax.chain(
        optax.clip_by_global_norm(train.grad_clip),
        optax.adamw(schedule, b1=train.b1, b2=train.b2, weight_decay=train.weight_decay),
    )


def init_state(
    config: VQConfig, tx: optax.GradientTransformation, key: jax.Array, image_size: tuple[int, int]
) -> VQTrainState:
    params = init_params(config, key, image_size)
    return VQTrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))


def train_step(
    state: VQTrainState, batch: dict[str, jax.Array], *, config: VQConfig, tx
) -> tuple[VQTrainState, dict[str, jax.Array]]:
    """One optimiser step on batch["images"] (uint8 BxHxWxC, scaled to [-1, 1] here)."""
    images_BxHxWxC = images_to_model(batch["images"])
    loss_of = lambda p: vq_loss(p, config, images_BxHxWxC)
    (_, metrics), grads = jax.value_and_grad(loss_of, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {**metrics, "grad_norm": optax.global_norm(grads)}
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics


def make_train_step(config: VQConfig, tx: optax.GradientTransformation) -> Callable:
    """`train_step` jitted for this config and optimiser; the state is donated."""
    return jax.jit(functools.partial(train_step, config=config, tx=tx), donate_argnums=0)


@functools.partial(jax.jit, static_argnums=1)
def _eval_batch(params, config: VQConfig, images_BxHxWxC: jax.Array):
    images = images_to_model(images_BxHxWxC)
    out = VQModel(config).apply({"params": params}, images)
    sq_err_B = jnp.mean((out.images_BxHxWxC - images) ** 2, axis=(1, 2, 3))
    return sq_err_B, out.codes_Bxhxw


def evaluate(
    params: Any, config: VQConfig, images_NxHxWxC: np.ndarray, batch_size: int = 256
) -> dict[str, float]:
    """Reconstruction MSE (images in [-1, 1]) and codebook usage over all `images`.

    Batches are padded to one shape, so evaluation compiles once."""
    n = len(images_NxHxWxC)
    if n == 0:
        raise ValueError("evaluate needs at least one image")
    batch_size = min(batch_size, n)
    errors, codes = [], []
    for start in range(0, n, batch_size):
        chunk = images_NxHxWxC[start : start + batch_size]
        pad = batch_size - len(chunk)
        if pad:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], pad, axis=0)])
        sq_err_B, codes_Bxhxw = _eval_batch(params, config, jnp.asarray(chunk))
        errors.append(np.asarray(sq_err_B)[: batch_size - pad])
        codes.append(np.asarray(codes_Bxhxw)[: batch_size - pad])
    usage = codebook_usage(jnp.asarray(np.concatenate(codes)), config.codebook_size)
    return {
        "recon_mse": float(np.mean(np.concatenate(errors))),
        **{k: float(v) for k, v in usage.items()},
    }


def _check_images(images: np.ndarray, config: VQConfig, what: str) -> None:
    f = config.downsample_factor
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != config.in_channels:
        raise ValueError(
            f"{what} must be uint8 NxHxWx{config.in_channels}, got {images.dtype} {images.shape}"
        )
    if images.shape[1] % f or images.shape[2] % f:
        raise ValueError(f"{what}: H and W {images.shape[1:3]} must be multiples of {f}")


def train_vq(
    config: VQConfig,
    train: VQTrainConfig,
    train_images: np.ndarray,
    heldout_images: np.ndarray,
    *,
    callback: Callable[[int, dict[str, float]], None] | None = None,
) -> tuple[Any, VQTrainReport]:
    """Trains from scratch on uint8 NxHxWxC arrays; returns (params, report).

    Batches are drawn without replacement, reshuffled each epoch (numpy, seeded by
    `train.seed`). `callback(step, metrics)` receives the training metrics every
    `train.log_every` steps and at the last step."""
    _check_images(train_images, config, "train_images")
    _check_images(heldout_images, config, "heldout_images")
    rng = np.random.default_rng(train.seed)
    tx = make_optimizer(train)
    state = init_state(config, tx, jax.random.PRNGKey(train.seed), train_images.shape[1:3])
    at_init = evaluate(state.params, config, heldout_images, train.eval_batch_size)
    step_fn = make_train_step(config, tx)
    batch_size = min(train.batch_size, len(train_images))
    order, cursor, metrics = rng.permutation(len(train_images)), 0, {}
    started = time.perf_counter()
    for step in range(1, train.steps + 1):
        if cursor + batch_size > len(order):
            order, cursor = rng.permutation(len(train_images)), 0
        batch = {"images": jnp.asarray(train_images[order[cursor : cursor + batch_size]])}
        cursor += batch_size
        state, metrics = step_fn(state, batch)
        if callback is not None and (step % max(train.log_every, 1) == 0 or step == train.steps):
            callback(step, {k: float(v) for k, v in metrics.items()})
    jax.block_until_ready(state.params)
    seconds = time.perf_counter() - started
    final = evaluate(state.params, config, heldout_images, train.eval_batch_size)
    report = VQTrainReport(
        steps=train.steps,
        seconds=seconds,
        train_metrics={k: float(v) for k, v in metrics.items()},
        heldout_recon_mse_at_init=at_init["recon_mse"],
        heldout_recon_mse=final["recon_mse"],
        heldout_codebook_used=final["codebook_used"],
        heldout_codebook_perplexity=final["codebook_perplexity"],
    )
    return state.params, report
