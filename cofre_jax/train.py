"""Train state, the jitted sharded train/eval steps, and the training loop.

Letters: B batch, L length, V vocabulary.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax
from absl import logging
from clu import metric_writers

from cofre_jax import checkpoint, diffusion, sharding
from cofre_jax.config.typed import Config, OptimConfig
from cofre_jax.models import build_model


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN/Inf loss or gradient."""


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: Any
    opt_state: Any
    ema_params: Any
    rng: jax.Array  # raw uint32[2] key; per-step keys are fold_in(rng, step)
    # Steps whose loss or gradient was not finite; their update was skipped.
    nonfinite_steps: jax.Array


def learning_rate_schedule(optim: OptimConfig, num_steps: int) -> optax.Schedule:
    warmup = optax.linear_schedule(0.0, optim.lr, max(optim.warmup_steps, 1))
    if optim.lr_schedule == "constant":
        after = optax.constant_schedule(optim.lr)
    elif optim.lr_schedule == "cosine":
        after = optax.cosine_decay_schedule(optim.lr, max(num_steps - optim.warmup_steps, 1))
    else:
        raise ValueError(f"unknown lr_schedule {optim.lr_schedule!r}; valid: constant, cosine")
    return optax.join_schedules([warmup, after], [optim.warmup_steps])


def _decay_mask(params):
    """Weight decay on matrices only: never on biases, norms, or embeddings."""

    def decays(path, leaf):
        return leaf.ndim >= 2 and "embed" not in jax.tree_util.keystr(path)

    return jax.tree_util.tree_map_with_path(decays, params)


def make_optimizer(optim: OptimConfig, num_steps: int) -> optax.GradientTransformation:
    adamw = optax.adamw(
        learning_rate_schedule(optim, num_steps),
        b1=optim.b1,
        b2=optim.b2,
        weight_decay=optim.weight_decay,
        mask=_decay_mask,
    )
    if optim.grad_clip > 0:
        return optax.chain(optax.clip_by_global_norm(optim.grad_clip), adamw)
    return adamw


class Trainer:
    """Builds the model, optimiser, mesh and jitted steps for one config."""

    def __init__(self, config: Config, mesh: jax.sharding.Mesh | None = None):
        self.config = config
        self.model = build_model(config.model, config.fixed_point)
        self.schedule = diffusion.make_schedule(config.diffusion.schedule, config.diffusion.eps)
        self.tx = make_optimizer(config.optim, config.train.num_steps)
        self.mesh = mesh if mesh is not None else sharding.make_mesh(config.mesh)
        self.abstract_state = jax.eval_shape(self._init_state)
        self.state_shardings = sharding.tree_shardings(self.abstract_state, self.mesh)
        self.abstract_state = jax.tree_util.tree_map(
            lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
            self.abstract_state,
            self.state_shardings,
        )
        batch_sharding = sharding.batch_sharding(self.mesh)
        replicated = sharding.replicated(self.mesh)
        self.init_state = jax.jit(self._init_state, out_shardings=self.state_shardings)
        self.train_step = jax.jit(
            self._train_step,
            in_shardings=(self.state_shardings, batch_sharding),
            out_shardings=(self.state_shardings, replicated),
            donate_argnums=(0,),
        )
        self.eval_step = jax.jit(
            self._eval_step,
            in_shardings=(self.state_shardings.ema_params, batch_sharding, replicated),
            out_shardings=replicated,
        )

    # ---- pure functions that get jitted ----

    def _dummy_inputs(self):
        tokens_BxL = jnp.zeros((1, self.config.data.seq_len), jnp.int32)
        return tokens_BxL, jnp.zeros((1,), jnp.float32)

    def _init_state(self) -> TrainState:
        init_key, rng = jax.random.split(jax.random.PRNGKey(self.config.train.seed))
        params = self.model.init(init_key, *self._dummy_inputs(), train=False)["params"]
        return TrainState(
            step=jnp.zeros((), jnp.int32),
            params=params,
            opt_state=self.tx.init(params),
            ema_params=params,
            rng=rng,
            nonfinite_steps=jnp.zeros((), jnp.int32),
        )

    def apply_fn(self, params, z_BxL, sigma_B, *, train: bool, rngs=None):
        return self.model.apply({"params": params}, z_BxL, sigma_B, train=train, rngs=rngs)

    def _train_step(self, state: TrainState, batch):
        loss_key, dropout_key, solver_key = jax.random.split(
            jax.random.fold_in(state.rng, state.step), 3
        )

        def loss_fn(params):
            return diffusion.diffusion_loss(
                self.apply_fn,
                params,
                batch["tokens"],
                loss_key,
                self.config.diffusion,
                self.config.model.mask_id,
                train=True,
                rngs={"dropout": dropout_key, "fixed_point": solver_key},
            )

        (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        grad_norm = optax.global_norm(grads)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        updates, opt_state = self.tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        # A non-finite step leaves params and optimiser untouched, so the state stays
        # checkpointable; the host sees nonfinite_steps grow and stops the run.
        keep = lambda new, old: jax.tree_util.tree_map(
            lambda n, o: jnp.where(finite, n, o), new, old
        )
        params = keep(params, state.params)
        opt_state = keep(opt_state, state.opt_state)
        decay = self.config.optim.ema_decay
        ema = jax.tree_util.tree_map(
            lambda e, p: decay * e + (1.0 - decay) * p, state.ema_params, params
        )
        new_state = state.replace(
            step=state.step + 1,
            params=params,
            opt_state=opt_state,
            ema_params=ema,
            nonfinite_steps=state.nonfinite_steps + (~finite).astype(jnp.int32),
        )
        metrics = {
            "loss": loss,
            "grad_norm": grad_norm,
            "masked_fraction": aux["masked_fraction"],
            "learning_rate": learning_rate_schedule(self.config.optim, self.config.train.num_steps)(
                state.step
            ),
        }
        return new_state, metrics

    def _eval_step(self, params, batch, key):
        _, aux = diffusion.diffusion_loss(
            self.apply_fn,
            params,
            batch["tokens"],
            key,
            self.config.diffusion,
            self.config.model.mask_id,
            train=False,
            rngs=None,
        )
        return {"nll_sum": aux["nll_sum"], "token_count": aux["token_count"]}

    # ---- host-side helpers ----

    def evaluate(self, params, eval_batches: list[dict]) -> dict[str, float]:
        """Validation NELBO over fixed batches with fixed keys (comparable across runs)."""
        nll_sum, token_count = 0.0, 0.0
        base = jax.random.PRNGKey(self.config.train.seed + 1)
        for i, batch in enumerate(eval_batches):
            key = jax.random.fold_in(base, i)
            out = self.eval_step(params, sharding.global_batch(batch, self.mesh), key)
            nll_sum += float(out["nll_sum"])
            token_count += float(out["token_count"])
        return {k: float(v) for k, v in diffusion.nelbo_metrics(nll_sum, token_count).items()}


class _StopFlag:
    """Turns SIGTERM/SIGINT into a checkpoint-and-exit at the next step boundary."""

    def __init__(self):
        self.requested = False
        self._previous = {}

    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        logging.warning("signal %d received: checkpointing and stopping", signum)
        self.requested = True

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def write_json(path: str, payload: dict) -> None:
    if jax.process_index() != 0:
        return
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(payload, f, indent=2, sort_keys=True)
    os.replace(tmp, path)


def _check_finite(state: TrainState, step: int) -> None:
    bad = int(state.nonfinite_steps)
    if bad:
        raise NonFiniteLossError(
            f"non-finite loss or gradient in {bad} step(s) up to step {step}; their updates "
            "were skipped and no checkpoint was written after them. Lower optim.lr, check "
            "the data, or resume from the last checkpoint."
        )


def train_and_evaluate(
    config: Config,
    workdir: str,
    *,
    make_data: Callable[[], tuple[Any, list[dict]]],
    log: Callable[[str], None] = print,
) -> dict[str, float]:
    """Trains to config.train.num_steps, resuming from the latest checkpoint in workdir.

    `make_data()` returns (train iterator of per-process batches, eval batches).
    Returns the final validation metrics.
    """
    tc = config.train
    trainer = Trainer(config)
    train_iter, eval_batches = make_data()
    manager = checkpoint.make_manager(workdir, keep=tc.keep_checkpoints)
    restored = checkpoint.restore(manager, trainer.abstract_state, train_iter)
    if restored is None:
        state = trainer.init_state()
        log(f"starting from scratch in {workdir}")
    else:
        state, step = restored
        log(f"resumed from checkpoint at step {step} in {workdir}")
    writer = metric_writers.create_default_writer(
        os.path.join(workdir, "tensorboard"), just_logging=jax.process_index() > 0
    )
    step = int(state.step)
    tokens_per_step = tc.batch_size * config.data.seq_len
    window_start, window_step = time.perf_counter(), step
    last_metrics = None
    with _StopFlag() as stop:
        while step < tc.num_steps and not stop.requested:
            batch = sharding.global_batch(next(train_iter), trainer.mesh)
            state, last_metrics = trainer.train_step(state, batch)
            step += 1
            if step % tc.log_every == 0 or step == tc.num_steps:
                _check_finite(state, step)
                scalars = {k: float(v) for k, v in jax.device_get(last_metrics).items()}
                elapsed = time.perf_counter() - window_start
                steps_per_sec = (step - window_step) / max(elapsed, 1e-9)
                scalars["steps_per_sec"] = steps_per_sec
                scalars["tokens_per_sec"] = steps_per_sec * tokens_per_step
                writer.write_scalars(step, scalars)
                eta = (tc.num_steps - step) / max(steps_per_sec, 1e-9)
                log(
                    f"step {step}/{tc.num_steps} loss {scalars['loss']:.4f} "
                    f"grad_norm {scalars['grad_norm']:.3f} {steps_per_sec:.2f} steps/s "
                    f"ETA {eta / 60:.1f} min"
                )
                window_start, window_step = time.perf_counter(), step
            if step % tc.eval_every == 0 and step != tc.num_steps:
                val = trainer.evaluate(state.ema_params, eval_batches)
                writer.write_scalars(step, {f"val_{k}": v for k, v in val.items()})
                log(f"step {step} validation {_format(val)}")
            if step % tc.checkpoint_every == 0:
                _check_finite(state, step)
                checkpoint.save(manager, step, state, train_iter)
    _check_finite(state, step)
    if manager.latest_step() != step:
        checkpoint.save(manager, step, state, train_iter)
    manager.wait_until_finished()
    if stop.requested:
        log(f"stopped by signal at step {step}; checkpoint saved")
        return {}
    val = trainer.evaluate(state.ema_params, eval_batches)
    writer.write_scalars(step, {f"val_{k}": v for k, v in val.items()})
    writer.flush()
    log(f"final validation (EMA params, step {step}): {_format(val)}")
    write_json(os.path.join(workdir, "final_metrics.json"), {"step": step, **val})
    return val


def _format(metrics: dict[str, float]) -> str:
    return " ".join(f"{k} {v:.4f}" for k, v in sorted(metrics.items()))


def restore_params(config: Config, workdir: str, *, use_ema: bool = True):
    """Loads the latest checkpoint's (EMA) parameters for eval / sampling."""
    trainer = Trainer(config)
    manager = checkpoint.make_manager(workdir, keep=config.train.keep_checkpoints)
    restored = checkpoint.restore(manager, trainer.abstract_state)
    if restored is None:
        raise FileNotFoundError(
            f"no checkpoint in {os.path.join(workdir, 'checkpoints')}; train first "
            "(--mode=train) with the same --workdir"
        )
    state, step = restored
    return trainer, (state.ema_params if use_ema else state.params), step
