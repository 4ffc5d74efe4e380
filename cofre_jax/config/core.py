"""The task-independent sections: fixed_point, diffusion, optim, train, stage, convert
and mesh (sample and eval are in cofre_jax.config.sampling).

Any task's model trains, iterates to a fixed point and is sharded through these; the
task's own data and model sections are elsewhere (text: cofre_jax.config.text). Fields
mirror `configs/base.py`, where each one is documented.
"""

from __future__ import annotations

import dataclasses
import math

from cofre_jax.config.checks import _check, _check_choice, _int_tuple_field
from cofre_jax.config.choices import DIVERGENCES, LR_SCHEDULES, SCHEDULES, STAGE_KINDS
from cofre_jax.config.fixed_point_rules import gradient_rules, solver_rules


@dataclasses.dataclass(frozen=True)
class FixedPointConfig:
    """Solver and gradient strategy of the fp_mdlm middle block
    (cofre_jax.fixed_point.specs_from_config turns it into the solver's specs)."""

    solver: str
    eval_iterations: int  # forward iterations at eval/sampling (cap when tol > 0)
    tol: float
    tol_kind: str
    damping: float
    window: int
    ridge: float
    beta: float
    on_nonconvergence: str
    gradient: str
    nograd_min: int
    nograd_max: int
    grad_min: int
    grad_max: int
    phantom_steps: int
    phantom_damping: float
    unrolled_steps: int
    remat: bool  # jax.checkpoint the differentiated iterations (memory flat in grad_max)
    adjoint_max_iter: int
    adjoint_tol: float

    def mean_train_iterations(self) -> float:
        """Expected F evaluations per training forward (SJFB: E[N_ng] + E[N_g])."""
        if self.gradient == "sjfb":
            return (self.nograd_min + self.nograd_max + self.grad_min + self.grad_max) / 2
        if self.gradient == "unrolled":
            return float(self.unrolled_steps)
        return float(self.eval_iterations)

    def spec_fields(self) -> tuple[dict, dict, dict]:
        """The specs' fields (solver, gradient without remat/adjoint, adjoint solver),
        named as cofre_jax.fixed_point's SolverSpec and GradientSpec name them."""
        solver = dict(
            method=self.solver,
            max_iter=self.eval_iterations,
            tol=self.tol,
            tol_kind=self.tol_kind,
            damping=self.damping,
            window=self.window,
            ridge=self.ridge,
            beta=self.beta,
            on_nonconvergence=self.on_nonconvergence,
        )
        gradient = dict(
            method=self.gradient,
            nograd_range=(self.nograd_min, self.nograd_max),
            grad_range=(self.grad_min, self.grad_max),
            phantom_steps=self.phantom_steps,
            phantom_damping=self.phantom_damping,
            unrolled_steps=self.unrolled_steps,
        )
        adjoint = {**solver, "max_iter": self.adjoint_max_iter, "tol": self.adjoint_tol}
        return solver, gradient, adjoint

    def validate(self) -> None:
        # The rules are the specs' (cofre_jax.fixed_point.specs_from_config builds them
        # from spec_fields), whose field names differ from the config's: each error
        # names the config field the user set.
        solver, gradient, adjoint = self.spec_fields()
        for rules, renamed in (
            (solver_rules(**solver), {"method": "solver", "max_iter": "eval_iterations"}),
            (
                gradient_rules(**gradient),
                {
                    "method": "gradient",
                    "nograd_range": "nograd_min/nograd_max",
                    "grad_range": "grad_min/grad_max",
                },
            ),
            # The adjoint solver shares every other field with the solver, checked above.
            (solver_rules(**adjoint), {"max_iter": "adjoint_max_iter", "tol": "adjoint_tol"}),
        ):
            for ok, field, value, allowed in rules:
                _check(ok, f"fixed_point.{renamed.get(field, field)}", value, allowed)


@dataclasses.dataclass(frozen=True)
class DiffusionConfig:
    schedule: str
    eps: float  # P(mask) at t=1 is 1 - eps for the log-linear schedule
    antithetic: bool
    sampling_eps: float  # smallest time the training sampler draws

    def validate(self) -> None:
        _check_choice("diffusion.schedule", self.schedule, SCHEDULES)
        _check(0.0 < self.eps < 0.5, "diffusion.eps", self.eps, "(0, 0.5)")
        _check(
            0.0 < self.sampling_eps < 0.5, "diffusion.sampling_eps", self.sampling_eps, "(0, 0.5)"
        )


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    lr: float
    b1: float
    b2: float
    weight_decay: float
    warmup_steps: int
    lr_schedule: str
    grad_clip: float  # 0 disables clipping
    ema_decay: float  # 0 disables the EMA

    def validate(self) -> None:
        _check(0.0 < self.lr < 1.0, "optim.lr", self.lr, "(0, 1)")
        _check(0.0 <= self.b1 < 1.0, "optim.b1", self.b1, "[0, 1)")
        _check(0.0 <= self.b2 < 1.0, "optim.b2", self.b2, "[0, 1)")
        _check(self.weight_decay >= 0.0, "optim.weight_decay", self.weight_decay, ">= 0")
        _check(self.warmup_steps >= 0, "optim.warmup_steps", self.warmup_steps, ">= 0")
        _check_choice("optim.lr_schedule", self.lr_schedule, LR_SCHEDULES)
        _check(self.grad_clip >= 0.0, "optim.grad_clip", self.grad_clip, ">= 0")
        _check(0.0 <= self.ema_decay < 1.0, "optim.ema_decay", self.ema_decay, "[0, 1)")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    seed: int
    batch_size: int  # global batch, split over data-parallel devices
    num_steps: int
    log_every: int
    eval_every: int
    eval_batches: int
    checkpoint_every: int
    keep_checkpoints: int

    def validate(self) -> None:
        _check(self.batch_size >= 1, "train.batch_size", self.batch_size, ">= 1")
        _check(self.num_steps >= 1, "train.num_steps", self.num_steps, ">= 1")
        for name in ("log_every", "eval_every", "checkpoint_every", "keep_checkpoints"):
            value = getattr(self, name)
            _check(value >= 1, f"train.{name}", value, ">= 1")
        _check(self.eval_batches >= 1, "train.eval_batches", self.eval_batches, ">= 1")


@dataclasses.dataclass(frozen=True)
class StageConfig:
    """The training loss and the starting point of a post-training stage."""

    kind: str
    init_from: str  # workdir whose latest checkpoint starts the stage ("" = none)
    init_from_ema: bool
    lambda_max: float
    lambda_warmup_steps: int
    gap_min: float  # teacher time t_c = t_s - gap, gap ~ U[gap_min, gap_max]
    gap_max: float
    divergence: str  # consistency only; distillation always uses tempered KL
    temperature: float
    early_stop_ratio: float  # 0 disables the early-stop rule

    def validate(self) -> None:
        _check_choice("stage.kind", self.kind, STAGE_KINDS)
        _check(self.lambda_max >= 0.0, "stage.lambda_max", self.lambda_max, ">= 0")
        _check(
            self.lambda_warmup_steps >= 0,
            "stage.lambda_warmup_steps",
            self.lambda_warmup_steps,
            ">= 0",
        )
        _check(0.0 <= self.gap_min < 1.0, "stage.gap_min", self.gap_min, "[0, 1)")
        _check(
            self.gap_min <= self.gap_max < 1.0,
            "stage.gap_max",
            self.gap_max,
            f"[stage.gap_min={self.gap_min}, 1)",
        )
        _check_choice("stage.divergence", self.divergence, DIVERGENCES)
        _check(self.temperature > 0.0, "stage.temperature", self.temperature, "> 0")
        _check(
            self.early_stop_ratio == 0.0 or self.early_stop_ratio > 1.0,
            "stage.early_stop_ratio",
            self.early_stop_ratio,
            "0 (off) or > 1",
        )


@dataclasses.dataclass(frozen=True)
class ConvertConfig:
    """--mode=convert: which MDLM becomes the FP-MDLM, and how (docs/method.md §2.6)."""

    teacher: str  # our workdir or a PyTorch MDLM checkpoint file
    teacher_num_layers: int
    layer_map: tuple[int, ...]  # 1-based teacher blocks for pre, fp and post blocks
    injection_scale: float

    def __post_init__(self):
        _int_tuple_field(
            self, "convert", "layer_map", "1-based teacher block numbers, e.g. (1, 6, 12)"
        )

    def validate(self) -> None:
        n = self.teacher_num_layers
        _check(n >= 1, "convert.teacher_num_layers", n, ">= 1")
        _check(
            len(self.layer_map) >= 1 and all(1 <= int(i) <= n for i in self.layer_map),
            "convert.layer_map",
            self.layer_map,
            f"1-based teacher block numbers in [1, {n}]",
        )
        _check(
            0.0 <= self.injection_scale <= 1.0,
            "convert.injection_scale",
            self.injection_scale,
            "[0, 1]",
        )


@dataclasses.dataclass(frozen=True)
class MeshConfig:
    data: int  # -1: all devices not used by the other axes
    fsdp: int
    tensor: int

    def validate(self) -> None:
        sizes = (self.data, self.fsdp, self.tensor)
        for name, value in zip(("data", "fsdp", "tensor"), sizes):
            _check(value == -1 or value >= 1, f"mesh.{name}", value, "-1 or >= 1")
        _check(sizes.count(-1) <= 1, "mesh", sizes, "at most one axis set to -1")

    def shape(self, num_devices: int) -> tuple[int, int, int]:
        sizes = [self.data, self.fsdp, self.tensor]
        fixed = math.prod(s for s in sizes if s != -1)
        if -1 in sizes:
            _check(
                num_devices % fixed == 0,
                "mesh",
                tuple(sizes),
                f"axis sizes whose product divides the {num_devices} devices",
            )
            sizes[sizes.index(-1)] = num_devices // fixed
        _check(
            math.prod(sizes) == num_devices,
            "mesh",
            tuple(sizes),
            f"axis sizes whose product is the {num_devices} devices",
        )
        return tuple(sizes)
