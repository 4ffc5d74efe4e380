"""Train state, the jitted sharded train/eval steps, and the training loop.

Letters: B batch, L length, V vocabulary.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax
from clu import metric_writers

from cofre_jax import checkpoint, diffusion, sharding, stages
from cofre_jax.config.choices import LR_SCHEDULES
from cofre_jax.config.typed import Config, OptimConfig
from cofre_jax.convert.from_mdlm import teacher_model_config
from cofre_jax.models import build_model, make_forward


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
        raise ValueError(
            f"unknown lr_schedule {optim.lr_schedule!r}; valid: {', '.join(LR_SCHEDULES)}"
        )
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


def solver_metrics(stats, prefix: str) -> dict[str, jax.Array]:
    """Mean/max iterations and residuals of a fixed-point solve, for the logs."""
    if stats is None:
        return {}
    residual_B = stats.residual_B.astype(jnp.float32)
    return {
        f"{prefix}iterations": jnp.mean(stats.iterations_B.astype(jnp.float32)),
        f"{prefix}residual": jnp.mean(residual_B),
        f"{prefix}residual_max": jnp.max(residual_B),
    }


class Trainer:
    """Builds the model, optimiser, mesh and jitted steps for one config.

    The loss follows config.stage.kind: the MDLM loss ("pretrain"), plus the
    cross-step consistency term ("consistency") or distillation from a frozen MDLM
    teacher ("distill", whose parameters are given with `set_teacher`).
    """

    def __init__(self, config: Config, mesh: jax.sharding.Mesh | None = None):
        self.config = config
        self.model = build_model(config.model, config.fixed_point)
        self.forward = make_forward(self.model)
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
        self.teacher_params = None
        teacher_shardings = None
        if config.stage.kind == "distill":
            teacher = build_model(teacher_model_config(config))
            self.teacher_forward = make_forward(teacher)
            tokens_BxL, sigma_B = self._dummy_inputs()
            self.abstract_teacher = jax.eval_shape(
                lambda: teacher.init(jax.random.PRNGKey(0), tokens_BxL, sigma_B, train=False)[
                    "params"
                ]
            )
            teacher_shardings = sharding.tree_shardings(self.abstract_teacher, self.mesh)
            self._teacher_shardings = teacher_shardings
        self._train_step_jit = jax.jit(
            self._train_step,
            in_shardings=(self.state_shardings, batch_sharding, teacher_shardings),
            out_shardings=(self.state_shardings, replicated),
            donate_argnums=(0,),
        )
        self.eval_step = jax.jit(
            self._eval_step,
            in_shardings=(self.state_shardings.ema_params, batch_sharding, replicated),
            out_shardings=replicated,
        )

    def set_teacher(self, teacher_params) -> None:
        """Places the frozen distillation teacher's parameters on the mesh."""
        if self.config.stage.kind != "distill":
            raise ValueError("a teacher is used only by stage.kind 'distill' (--mode=convert)")
        self.teacher_params = jax.device_put(teacher_params, self._teacher_shardings)

    def train_step(self, state: TrainState, batch) -> tuple[TrainState, dict]:
        if self.config.stage.kind == "distill" and self.teacher_params is None:
            raise ValueError("distillation needs the teacher's parameters: call set_teacher")
        return self._train_step_jit(state, batch, self.teacher_params)

    def lower_train_step(self, state, batch):
        """The jitted step lowered for `state` and `batch` (arrays or ShapeDtypeStructs),
        for compiled cost and memory analyses."""
        teacher = self.teacher_params
        if teacher is None and self.config.stage.kind == "distill":
            teacher = self.abstract_teacher
        return self._train_step_jit.lower(state, batch, teacher)

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

    def _loss(self, params, tokens_BxL, key, step, rngs, teacher_params):
        """(loss, metrics) of the configured stage; metrics keep the solver stats."""
        cfg = self.config
        mask_id = cfg.model.mask_id
        if cfg.stage.kind == "pretrain":
            t_B, z_BxL = diffusion.draw_noisy_tokens(
                key, tokens_BxL, cfg.diffusion, self.schedule, mask_id
            )
            out = self.forward(params, z_BxL, self.schedule.total_noise(t_B), train=True, rngs=rngs)
            loss, metrics = diffusion.masked_diffusion_loss(
                out.logits_BxLxV, tokens_BxL, z_BxL, t_B, self.schedule, mask_id
            )
            return loss, {**metrics, "student_stats": out.stats, "teacher_stats": None}
        if cfg.stage.kind == "consistency":
            teacher_forward, teacher_params = self.forward, params
        else:
            teacher_forward = self.teacher_forward
        return stages.stage_loss(
            self.forward,
            params,
            tokens_BxL,
            key,
            step,
            stage=cfg.stage,
            diffusion_cfg=cfg.diffusion,
            mask_id=mask_id,
            teacher_forward=teacher_forward,
            teacher_params=teacher_params,
            rngs=rngs,
        )

    def _train_step(self, state: TrainState, batch, teacher_params):
        loss_key, dropout_key, solver_key = jax.random.split(
            jax.random.fold_in(state.rng, state.step), 3
        )
        rngs = {"dropout": dropout_key, "fixed_point": solver_key}
        loss_fn = lambda p: self._loss(
            p, batch["tokens"], loss_key, state.step, rngs, teacher_params
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
            "learning_rate": learning_rate_schedule(self.config.optim, self.config.train.num_steps)(
                state.step
            ),
            **solver_metrics(aux.pop("student_stats"), "fp_"),
            **solver_metrics(aux.pop("teacher_stats"), "teacher_fp_"),
        }
        aux.pop("nll_sum"), aux.pop("token_count")
        metrics.update(aux)
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
    """Turns SIGTERM/SIGINT into a checkpoint-and-exit at the next step boundary.

    Python runs a signal handler only between bytecodes of the main thread, so not
    during a compile, an evaluation or a wait inside XLA. The signal also writes its
    number to a wakeup pipe (`signal.set_wakeup_fd`), and a thread reading that pipe
    says at once that the run is stopping: a silent wait invites a second Ctrl-C.
    """

    def __init__(self):
        self.requested = False
        self._previous = {}

    def __enter__(self):
        self._read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._write_fd, False)
        self._previous_wakeup = signal.set_wakeup_fd(self._write_fd, warn_on_full_buffer=False)
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._handle)
        self._announcer = threading.Thread(target=self._announce, daemon=True)
        self._announcer.start()
        return self

    def _handle(self, signum, frame):
        self.requested = True

    def _announce(self) -> None:
        seen = 0
        while True:
            try:
                signals = os.read(self._read_fd, 64)
            except OSError:
                return
            if not signals:  # the write end was closed: training is over
                return
            for signum in signals:
                if signum not in (signal.SIGINT, signal.SIGTERM):
                    continue
                name = signal.Signals(signum).name
                seen += 1
                if seen == 1:
                    message = (
                        f"{name} received: finishing the step in flight, then saving a "
                        "checkpoint and stopping"
                    )
                else:
                    message = f"{name}: already stopping after the step in flight"
                print(message, file=sys.stderr, flush=True)

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        signal.set_wakeup_fd(self._previous_wakeup)
        os.close(self._write_fd)
        self._announcer.join(timeout=5)
        os.close(self._read_fd)


def _wait_for(metrics) -> None:
    """Waits until a dispatched step has run, polling so that signal handlers (which
    Python runs between bytecodes, never inside a blocking call) print at once."""
    leaves = jax.tree_util.tree_leaves(metrics)
    while not all(leaf.is_ready() for leaf in leaves):
        time.sleep(0.002)


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


EARLY_STOP_FILE = "early_stop.json"
STAGE_START_FILE = "stage_start.json"


def _start_state(trainer: Trainer, config: Config, workdir: str, log) -> TrainState:
    """A fresh state, with the parameters of stage.init_from's latest checkpoint if set."""
    state = trainer.init_state()
    source = config.stage.init_from
    if not source:
        log(f"starting from scratch in {workdir}")
        return state
    params, step = checkpoint.restore_params(
        source, trainer.abstract_state.params, use_ema=config.stage.init_from_ema
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
    (e.g. a converted MDLM) start a run whose workdir has no checkpoint yet.
    With stage.early_stop_ratio > 0, validation perplexity is measured before the first
    step and at every checkpoint; the first checkpoint above ratio x the starting value
    is not written, the run stops, and the last good checkpoint stays the latest.
    Returns the final validation metrics (of that last good checkpoint after a stop).
    Only process 0 calls `log`.
    """
    log = process_zero_only(log)
    tc = config.train
    early_stop_path = os.path.join(workdir, EARLY_STOP_FILE)
    if os.path.exists(early_stop_path):
        with open(early_stop_path) as f:
            record = json.load(f)
        log(f"this stage stopped early before (see {early_stop_path}); not training further")
        return record["last_good_metrics"]
    trainer = Trainer(config)
    if teacher_params is not None:
        trainer.set_teacher(teacher_params)
    train_iter, eval_batches = make_data()
    manager = checkpoint.make_manager(workdir, keep=tc.keep_checkpoints)
    restored = checkpoint.restore(manager, trainer.abstract_state, train_iter)
    if restored is None and init_params is not None:
        state = trainer.init_state()
        state = _with_params(state, jax.device_put(init_params, trainer.state_shardings.params))
        val = trainer.evaluate(state.ema_params, eval_batches)
        log(f"given initial parameters, before training: {_format(val)}")
    elif restored is None:
        state = _start_state(trainer, config, workdir, log)
    else:
        state, step = restored
        log(f"resumed from checkpoint at step {step} in {workdir}")
    writer = metric_writers.create_default_writer(
        os.path.join(workdir, "tensorboard"), just_logging=jax.process_index() > 0
    )
    step = int(state.step)
    # The early-stop rule guards the consistency stage against over-sharpening.
    ratio = config.stage.early_stop_ratio if config.stage.kind == "consistency" else 0.0
    start_ppl, last_good = 0.0, None
    if ratio:
        start_ppl, start_val = _stage_start(trainer, state, eval_batches, workdir, log)
        if start_val is not None:  # a fresh stage: its start is the first good checkpoint
            checkpoint.save(manager, step, state, train_iter)
            last_good = (step, start_val)
    stopped_early = False
    tokens_per_step = tc.batch_size * config.data.seq_len
    window_start, window_step = time.perf_counter(), step
    pending_metrics = None  # of the step dispatched before the current one
    with _StopFlag() as stop:
        while step < tc.num_steps and not stop.requested:
            batch = sharding.global_batch(next(train_iter), trainer.mesh)
            state, last_metrics = trainer.train_step(state, batch)
            step += 1
            # Dispatch runs ahead of the device: without this wait the loop queues tens
            # of steps, and a stop would run them all first. Waiting for the previous
            # step keeps one step queued behind the running one (the device never idles
            # on the host) and at most one more step after a signal.
            if pending_metrics is not None:
                _wait_for(pending_metrics)
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
            if (step % tc.eval_every == 0 or (ratio and at_checkpoint)) and step != tc.num_steps:
                val = trainer.evaluate(state.ema_params, eval_batches)
                writer.write_scalars(step, {f"val_{k}": v for k, v in val.items()})
                log(f"step {step} validation {_format(val)}")
            if at_checkpoint or step == tc.num_steps:
                _check_finite(state, step)
                if ratio:
                    val = val or trainer.evaluate(state.ema_params, eval_batches)
                    if val["perplexity"] > ratio * start_ppl:
                        stopped_early = True
                        if last_good is None:  # resumed since the last good checkpoint
                            last_good = _evaluate_latest(trainer, manager, eval_batches)
                        _record_early_stop(
                            early_stop_path, step, val, start_ppl, ratio, last_good, log
                        )
                        break
                    last_good = (step, val)
                checkpoint.save(manager, step, state, train_iter)
    _check_finite(state, step)
    if not stopped_early and manager.latest_step() != step:
        checkpoint.save(manager, step, state, train_iter)
    manager.wait_until_finished()
    if stop.requested:
        log(f"stopped by signal at step {step}; checkpoint saved")
        return {}
    if stopped_early:
        writer.flush()
        good_step, val = last_good
        write_json(
            os.path.join(workdir, "final_metrics.json"),
            {"step": good_step, "early_stopped": True, **val},
        )
        return val
    if last_good is not None and last_good[0] == step:
        val = last_good[1]
    else:
        val = trainer.evaluate(state.ema_params, eval_batches)
    writer.write_scalars(step, {f"val_{k}": v for k, v in val.items()})
    writer.flush()
    log(f"final validation (EMA params, step {step}): {_format(val)}")
    write_json(os.path.join(workdir, "final_metrics.json"), {"step": step, **val})
    return val


def _stage_start(trainer, state, eval_batches, workdir: str, log):
    """(perplexity, metrics) before the stage's first step; metrics is None when the
    value comes from an earlier run of this stage (kept in STAGE_START_FILE)."""
    path = os.path.join(workdir, STAGE_START_FILE)
    if os.path.exists(path):
        with open(path) as f:
            return float(json.load(f)["perplexity"]), None
    if int(state.step) != 0:
        raise FileNotFoundError(
            f"{path} is missing but the run is at step {int(state.step)}: the early-stop "
            "rule needs the perplexity measured before the stage's first step"
        )
    val = trainer.evaluate(state.ema_params, eval_batches)
    log(f"stage start validation {_format(val)}")
    os.makedirs(workdir, exist_ok=True)
    write_json(path, {"step": 0, **val})
    return val["perplexity"], val


def _evaluate_latest(trainer, manager, eval_batches) -> tuple[int, dict]:
    manager.wait_until_finished()
    state, step = checkpoint.restore(manager, trainer.abstract_state)
    return step, trainer.evaluate(state.ema_params, eval_batches)


def _record_early_stop(path, step, val, start_ppl, ratio, last_good, log) -> None:
    good_step, good_val = last_good
    log(
        f"early stop at step {step}: validation perplexity {val['perplexity']:.4f} is more "
        f"than {ratio:g} x the stage's starting {start_ppl:.4f}; step {step} is not "
        f"checkpointed and the last good checkpoint (step {good_step}) stays the latest"
    )
    write_json(
        path,
        {
            "step": step,
            "perplexity": val["perplexity"],
            "start_perplexity": start_ppl,
            "ratio": ratio,
            "last_good_step": good_step,
            "last_good_metrics": good_val,
        },
    )


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
