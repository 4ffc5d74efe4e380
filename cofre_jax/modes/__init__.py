"""What each --mode does: thin glue between the typed config and the library.

`train` and `describe` are the same for every task (through the task seam,
cofre_jax.tasks); the other modes are each task's own (cofre_jax/modes/text.py,
cofre_jax/modes/image.py), listed in TASK_MODES.
"""

from __future__ import annotations

import jax

from cofre_jax import sampling, sharding, stages, tasks
from cofre_jax.config.choices import MODES
from cofre_jax.config.typed import Config
from cofre_jax.models import count_params, param_groups
from cofre_jax.modes import image, text
from cofre_jax.modes.common import print0, train


def run_train(config: Config, workdir: str) -> None:
    if stages.STAGES[config.stage.kind].needs_teacher:
        raise SystemExit(
            f"config error: stage.kind {config.stage.kind!r} is run by --mode=convert "
            "(it needs a teacher)"
        )
    train(config, workdir)


def run_describe(config: Config, workdir: str | None) -> None:
    """Builds everything abstractly (no parameters allocated) and prints facts."""
    params = tasks.get_task(config).abstract_params()
    mesh = sharding.make_mesh(config.mesh)
    lines = [
        f"model_kind: {config.model.kind}",
        f"total_params: {count_params(params)}",
        *(f"params[{name}]: {n}" for name, n in param_groups(params).items()),
        *_block_pass_lines(config),
        f"vocab_size: {config.model.vocab_size}",
        f"seq_len: {config.data.seq_len}",
        f"global_batch: {config.train.batch_size}",
        f"devices: {jax.device_count()} ({jax.devices()[0].platform})",
        f"processes: {jax.process_count()}",
        *sharding.describe_plan(params, mesh),
    ]
    print0("\n".join(lines))


def _block_pass_lines(config: Config) -> list[str]:
    m, fp = config.model, config.fixed_point
    cost, formula = sampling.StepCost.for_model(m), sampling.cost_formula(m)
    if not cost.per_iteration:
        return [f"block_passes_per_step: {formula}"]
    n_eval = fp.eval_iterations
    return [
        f"block_passes_per_step: {formula} for N fixed-point iterations",
        f"block_passes_per_step_at_eval_N={n_eval}: {cost(n_eval)}",
        f"train_mean_fixed_point_iterations: {fp.mean_train_iterations()}",
        f"train_mean_block_passes: {cost(fp.mean_train_iterations())}",
        f"fixed_point_training_gradient: {fp.gradient}",
    ]


# The modes every task runs.
SHARED_MODES = {"train": run_train, "describe": run_describe}
# Each task's own modes; one entry per cofre_jax.config.choices.TASKS
# (tests/test_registries.py checks that every mode of choices.MODES is somewhere).
TASK_MODES = {"text": text.MODES, "image": image.MODES}


def modes_of(task: str) -> dict:
    return {**SHARED_MODES, **TASK_MODES[task]}


def run(mode: str, config: Config, workdir: str | None) -> None:
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; valid modes: {list(MODES)}")
    available = modes_of(config.task)
    if mode not in available:
        raise SystemExit(
            f"config error: --mode={mode} is not available for the {config.task} task "
            f"(available: {', '.join(m for m in MODES if m in available)})"
        )
    available[mode](config, workdir)
