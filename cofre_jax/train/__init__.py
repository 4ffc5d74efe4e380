"""Training: the optimiser, the jitted train/eval steps, stage policies and the loop."""

from cofre_jax.io.json_file import write_json
from cofre_jax.train.early_stop import (
    EARLY_STOP_FILE,
    STAGE_START_FILE,
    EarlyStop,
    NoPolicy,
    format_metrics,
)
from cofre_jax.train.loop import NonFiniteLossError, process_zero_only, train_and_evaluate
from cofre_jax.train.optim import learning_rate_schedule, make_optimizer
from cofre_jax.train.step import (
    TrainProgram,
    TrainState,
    build_program,
    eval_step_for,
    evaluate,
    solver_metrics,
    train_step,
)

__all__ = [
    "EARLY_STOP_FILE",
    "STAGE_START_FILE",
    "EarlyStop",
    "NoPolicy",
    "NonFiniteLossError",
    "TrainProgram",
    "TrainState",
    "build_program",
    "eval_step_for",
    "evaluate",
    "format_metrics",
    "learning_rate_schedule",
    "make_optimizer",
    "process_zero_only",
    "solver_metrics",
    "train_and_evaluate",
    "train_step",
    "write_json",
]
