"""The generic training loop: exact resume, signals, logging, checkpoints, validation.

What differs between stages reaches the loop as the task's loss (in the jitted step)
and as a stage policy hook (`cofre_jax.train.early_stop`); the loop has no stage
branches.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from clu import metric_writers

from cofre_jax import checkpoint, sharding
from cofre_jax.config.typed import Config
from cofre_jax.io.json_file import write_json
from cofre_jax.train.early_stop import format_metrics, stage_policy
from cofre_jax.train.signals import StopFlag, wait_for
from cofre_jax.train.step import TrainProgram, TrainState, build_program, evaluate


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN/Inf loss or gradient."""


def _check_finite(state: TrainState, step: int) -> None:
    bad = int(state.nonfinite_steps)
    if bad:
        raise NonFiniteLossError(
            f"non-finite loss or gradient in {bad} step(s) up to step {step}; their updates "
            "were skipped and no checkpoint was written after them. Lower optim.lr, check "
            "the data, or resume from the last checkpoint."
        )


def _start_state(program: TrainProgram, config: Config, workdir: str, log) -> TrainState:
    """A fresh state, with the parameters of stage.init_from's latest checkpoint if set."""
    state = program.init_state()
    source = config.stage.init_from
    if not source:
        log(f"starting from scratch in {workdir}")
        return state
    params, step = checkpoint.restore_params(
        source, program.abstract_state.params, use_ema=config.stage.init_from_ema
    )
    which = "EMA parameters" if config.stage.init_from_ema else "parameters"
    log(f"starting stage '{config.stage.kind}' from the {which} of {source} at step {step}")
    # AdamW's fresh moments do not depend on parameter values, so only params change.
    return _with_params(state, params)


def _with_params(state: TrainState, params) -> TrainState:
    # Separate buffers: the train step donates its state, and one buffer donated twice
    # (as params and as EMA) would be freed under the other.
    return state.replace(params=params, ema_params=jax.tree_util.tree_map(jnp.copy, params))


def _log_line(step: int, num_steps: int, scalars: dict[str, float], eta_s: float) -> str:
    parts = [f"step {step}/{num_steps}", f"loss {scalars['loss']:.4f}"]
    names = ("base_loss", "divergence", "lambda", "time_gap")
    for name in (*names, "fp_iterations", "fp_residual", "fp_residual_max"):
        if name in scalars:
            parts.append(f"{name} {scalars[name]:.4g}")
    parts.append(f"grad_norm {scalars['grad_norm']:.3f}")
    parts.append(f"{scalars['steps_per_sec']:.2f} steps/s ETA {eta_s / 60:.1f} min")
    return " ".join(parts)


def process_zero_only(log: Callable[[str], None]) -> Callable[[str], None]:
    """`log` on process 0 only: a multi-process job prints one copy of its progress."""

    def log_on_process_zero(message: str) -> None:
        if jax.process_index() == 0:
            log(message)

    return log_on_process_zero


def train_and_evaluate(
    config: Config,
    workdir: str,
    *,
    make_data: Callable[[], tuple[Any, list[dict]]],
    log: Callable[[str], None] = print,
    teacher_params: Any = None,
    init_params: Any = None,
) -> dict[str, float]:
    """Trains to config.train.num_steps, resuming from the latest checkpoint in workdir.

    `make_data()` returns (train iterator of per-process batches, eval batches);
    `teacher_params` are the frozen MDLM's for stage.kind 'distill'; `init_params`
    (e.g. a converted MDLM) start a run whose workdir has no checkpoint yet. The stage
    policy (`cofre_jax.train.early_stop`) may end the run early at a checkpoint.
    Returns the final validation metrics (of the last good checkpoint after an early
    stop). Only process 0 calls `log`.
    """
    log = process_zero_only(log)
    tc = config.train
    policy = stage_policy(config, workdir)
    previous = policy.previous_result(log)
    if previous is not None:
        return previous
    program = build_program(config)
    if teacher_params is not None:
        program = program.with_teacher(teacher_params)
    task, mesh = program.task, program.mesh
    train_iter, eval_batches = make_data()
    validate = lambda params: evaluate(task, mesh, params, eval_batches)
    manager = checkpoint.make_manager(workdir, keep=tc.keep_checkpoints)
    restored = checkpoint.restore(manager, program.abstract_state, train_iter)
    if restored is None and init_params is not None:
        state = program.init_state()
        state = _with_params(state, jax.device_put(init_params, program.state_shardings.params))
        val = validate(state.ema_params)
        log(f"given initial parameters, before training: {format_metrics(val)}")
    elif restored is None:
        state = _start_state(program, config, workdir, log)
    else:
        state, step = restored
        log(f"resumed from checkpoint at step {step} in {workdir}")
    writer = metric_writers.create_default_writer(
        os.path.join(workdir, "tensorboard"), just_logging=jax.process_index() > 0
    )
    step = int(state.step)
    if policy.begin(step, lambda: validate(state.ema_params), log) is not None:
        checkpoint.save(manager, step, state, train_iter)  # a fresh stage's first good state

    def evaluate_latest():
        manager.wait_until_finished()
        latest, latest_step = checkpoint.restore(manager, program.abstract_state)
        return latest_step, validate(latest.ema_params)

    stopped_early = False
    tokens_per_step = tc.batch_size * config.data.seq_len
    window_start, window_step = time.perf_counter(), step
    pending_metrics = None  # of the step dispatched before the current one
    with StopFlag() as stop:
        while step < tc.num_steps and not stop.requested:
            batch = sharding.global_batch(next(train_iter), mesh)
            state, last_metrics = program.train_step(state, batch)
            step += 1
            # Dispatch runs ahead of the device: without this wait the loop queues tens
            # of steps, and a stop would run them all first. Waiting for the previous
            # step keeps one step queued behind the running one (the device never idles
            # on the host) and at most one more step after a signal.
            if pending_metrics is not None:
                wait_for(pending_metrics)
            pending_metrics = last_metrics
            if step % tc.log_every == 0 or step == tc.num_steps:
                _check_finite(state, step)
                scalars = {k: float(v) for k, v in jax.device_get(last_metrics).items()}
                elapsed = time.perf_counter() - window_start
                steps_per_sec = (step - window_step) / max(elapsed, 1e-9)
                scalars["steps_per_sec"] = steps_per_sec
                scalars["tokens_per_sec"] = steps_per_sec * tokens_per_step
                writer.write_scalars(step, scalars)
                eta = (tc.num_steps - step) / max(steps_per_sec, 1e-9)
                log(_log_line(step, tc.num_steps, scalars, eta))
                window_start, window_step = time.perf_counter(), step
            at_checkpoint = step % tc.checkpoint_every == 0
            val = None
            policy_eval = policy.evaluates_checkpoints and at_checkpoint
            if (step % tc.eval_every == 0 or policy_eval) and step != tc.num_steps:
                val = validate(state.ema_params)
                writer.write_scalars(step, {f"val_{k}": v for k, v in val.items()})
                log(f"step {step} validation {format_metrics(val)}")
            if at_checkpoint or step == tc.num_steps:
                _check_finite(state, step)
                if policy.evaluates_checkpoints:
                    val = val or validate(state.ema_params)
                    if policy.stops_at(step, val, evaluate_latest, log):
                        stopped_early = True
                        break
                checkpoint.save(manager, step, state, train_iter)
    _check_finite(state, step)
    if not stopped_early and manager.latest_step() != step:
        checkpoint.save(manager, step, state, train_iter)
    manager.wait_until_finished()
    if stop.requested:
        log(f"stopped by signal at step {step}; checkpoint saved")
        return {}
    final_path = os.path.join(workdir, "final_metrics.json")
    if stopped_early:
        writer.flush()
        good_step, val = policy.last_good
        write_json(final_path, {"step": good_step, "early_stopped": True, **val})
        return val
    if policy.last_good is not None and policy.last_good[0] == step:
        val = policy.last_good[1]
    else:
        val = validate(state.ema_params)
    writer.write_scalars(step, {f"val_{k}": v for k, v in val.items()})
    writer.flush()
    log(f"final validation (EMA params, step {step}): {format_metrics(val)}")
    write_json(final_path, {"step": step, **val})
    return val
