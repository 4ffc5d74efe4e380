"""The train state and the jitted, sharded train and eval steps.

`train_step` is a pure module-level function of (state, batch); `build_program` jits it
once per config with the task's loss, the optimiser and the mesh's shardings, as
nanodo does. Evaluation needs no optimiser: `eval_step_for(task, mesh)`.

Letters: B batch, L length.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax

from cofre_jax import sharding
from cofre_jax.config.typed import Config
from cofre_jax.tasks import get_task
from cofre_jax.train.optim import learning_rate_schedule, make_optimizer


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: Any
    opt_state: Any
    ema_params: Any
    rng: jax.Array  # raw uint32[2] key; per-step keys are fold_in(rng, step)
    # Steps whose loss or gradient was not finite; their update was skipped.
    nonfinite_steps: jax.Array


def init_state(task, tx: optax.GradientTransformation) -> TrainState:
    init_key, rng = jax.random.split(jax.random.PRNGKey(task.config.train.seed))
    params = task.init_params(init_key)
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state=tx.init(params),
        ema_params=params,
        rng=rng,
        nonfinite_steps=jnp.zeros((), jnp.int32),
    )


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


def train_step(
    state: TrainState,
    batch,
    teacher_params,
    *,
    loss_fn: Callable,
    tx: optax.GradientTransformation,
    ema_decay: float,
    lr_fn: optax.Schedule,
) -> tuple[TrainState, dict]:
    """One optimiser step of `loss_fn(params, batch, key, step, rngs, teacher_params)`."""
    loss_key, dropout_key, solver_key = jax.random.split(
        jax.random.fold_in(state.rng, state.step), 3
    )
    rngs = {"dropout": dropout_key, "fixed_point": solver_key}
    loss_of = lambda p: loss_fn(p, batch, loss_key, state.step, rngs, teacher_params)
    (loss, aux), grads = jax.value_and_grad(loss_of, has_aux=True)(state.params)
    grad_norm = optax.global_norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)

    def apply_update(operands):
        grads, params, opt_state, ema_params = operands
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        if ema_decay == 0.0:  # the EMA is disabled: it equals the parameters exactly
            ema_params = params
        else:
            ema_params = jax.tree_util.tree_map(
                lambda e, p: ema_decay * e + (1.0 - ema_decay) * p, ema_params, params
            )
        return params, opt_state, ema_params

    def skip_update(operands):
        _, params, opt_state, ema_params = operands
        return params, opt_state, ema_params

    # A non-finite step leaves params, optimiser and EMA untouched, so the state stays
    # checkpointable; the host sees nonfinite_steps grow and stops the run. One cond
    # rather than a select per leaf: XLA updates the donated optimiser state in place
    # instead of copying it every step (benchmarks/versus_md4.py).
    params, opt_state, ema = jax.lax.cond(
        finite,
        apply_update,
        skip_update,
        (grads, state.params, state.opt_state, state.ema_params),
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
        "learning_rate": lr_fn(state.step),
        **solver_metrics(aux.pop("student_stats"), "fp_"),
        **solver_metrics(aux.pop("teacher_stats"), "teacher_fp_"),
    }
    aux.pop("nll_sum"), aux.pop("token_count")
    metrics.update(aux)
    return new_state, metrics


def _with_shardings(abstract, shardings):
    return jax.tree_util.tree_map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings
    )


@dataclasses.dataclass(frozen=True, eq=False)
class TrainProgram:
    """The compiled pieces of one config's training: what `build_program` returns."""

    config: Config
    task: Any
    mesh: jax.sharding.Mesh
    tx: optax.GradientTransformation
    abstract_state: TrainState  # ShapeDtypeStructs carrying the state's shardings
    init_state: Callable[[], TrainState]  # jitted, placed on the mesh
    step_fn: Callable  # jitted train_step(state, batch, teacher_params)
    abstract_teacher: Any = None  # the distillation teacher's parameters, if any
    teacher_params: Any = None

    @property
    def state_shardings(self) -> TrainState:
        return jax.tree_util.tree_map(lambda a: a.sharding, self.abstract_state)

    def with_teacher(self, teacher_params) -> TrainProgram:
        """This program with the frozen teacher's parameters placed on the mesh."""
        if self.abstract_teacher is None:
            raise ValueError(
                f"stage.kind {self.config.stage.kind!r} learns from no teacher; only "
                "'distill' (--mode=convert) does"
            )
        shardings = jax.tree_util.tree_map(lambda a: a.sharding, self.abstract_teacher)
        return dataclasses.replace(self, teacher_params=jax.device_put(teacher_params, shardings))

    def _teacher(self, abstract_ok: bool):
        if self.abstract_teacher is None:
            return None
        if self.teacher_params is not None:
            return self.teacher_params
        if abstract_ok:
            return self.abstract_teacher
        raise ValueError("this stage needs the teacher's parameters: use with_teacher")

    def train_step(self, state: TrainState, batch) -> tuple[TrainState, dict]:
        return self.step_fn(state, batch, self._teacher(abstract_ok=False))

    def lower_train_step(self, state, batch):
        """The jitted step lowered for `state` and `batch` (arrays or ShapeDtypeStructs),
        for compiled cost and memory analyses."""
        return self.step_fn.lower(state, batch, self._teacher(abstract_ok=True))


def build_program(config: Config, mesh: jax.sharding.Mesh | None = None) -> TrainProgram:
    task = get_task(config)
    mesh = mesh if mesh is not None else sharding.make_mesh(config.mesh)
    tx = make_optimizer(config.optim, config.train.num_steps)
    abstract = jax.eval_shape(lambda: init_state(task, tx))
    state_shardings = sharding.tree_shardings(abstract, mesh)
    abstract_teacher = teacher_shardings = None
    teacher = task.teacher()
    if teacher is not None:
        abstract_teacher = teacher.abstract_params()
        teacher_shardings = sharding.tree_shardings(abstract_teacher, mesh)
        abstract_teacher = _with_shardings(abstract_teacher, teacher_shardings)
    step = functools.partial(
        train_step,
        loss_fn=task.loss,
        tx=tx,
        ema_decay=config.optim.ema_decay,
        lr_fn=learning_rate_schedule(config.optim, config.train.num_steps),
    )
    step_fn = jax.jit(
        step,
        in_shardings=(state_shardings, sharding.batch_sharding(mesh), teacher_shardings),
        out_shardings=(state_shardings, sharding.replicated(mesh)),
        donate_argnums=(0,),
    )
    return TrainProgram(
        config=config,
        task=task,
        mesh=mesh,
        tx=tx,
        abstract_state=_with_shardings(abstract, state_shardings),
        init_state=jax.jit(lambda: init_state(task, tx), out_shardings=state_shardings),
        step_fn=step_fn,
        abstract_teacher=abstract_teacher,
    )


@functools.lru_cache(maxsize=16)
def eval_step_for(task, mesh: jax.sharding.Mesh) -> Callable:
    """The jitted eval_sums(params, batch, key) of `task`, sharded over `mesh`."""
    param_shardings = sharding.tree_shardings(task.abstract_params(), mesh)
    return jax.jit(
        task.eval_sums,
        in_shardings=(param_shardings, sharding.batch_sharding(mesh), sharding.replicated(mesh)),
        out_shardings=sharding.replicated(mesh),
    )


def evaluate(task, mesh: jax.sharding.Mesh, params, eval_batches: list[dict]) -> dict[str, float]:
    """Validation metrics over fixed batches with fixed keys (comparable across runs)."""
    eval_step = eval_step_for(task, mesh)
    totals: dict[str, float] = {}
    base = jax.random.PRNGKey(task.config.train.seed + 1)
    for i, batch in enumerate(eval_batches):
        sums = eval_step(params, sharding.global_batch(batch, mesh), jax.random.fold_in(base, i))
        for name, value in sums.items():
            totals[name] = totals.get(name, 0.0) + float(value)
    return task.eval_metrics(totals)
