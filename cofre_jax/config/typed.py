"""Typed, validated, frozen views of the experiment ConfigDict.

Modules never see a ConfigDict: `from_config_dict` builds these dataclasses once,
validates every field and raises one `ConfigError` naming the field and the allowed
range. Fields mirror `configs/base.py`, where each one is documented.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from typing import Any

from cofre_jax.config.choices import (
    ALLOCATION_SCHEDULES,
    DATA_SOURCES,
    DIVERGENCES,
    DTYPES,
    INJECTIONS,
    LR_SCHEDULES,
    MODEL_KINDS,
    RAW_SOURCES,
    SCHEDULES,
    STAGE_KINDS,
    TOKENIZERS,
    WARM_STARTS,
)
from cofre_jax.config.fixed_point_rules import gradient_rules, solver_rules

# Token ids a tokenizer can emit (BOS and EOS share one id, as in GPT-2). The model
# appends one MASK id, so model.vocab_size = this + 1. The synthetic corpus's size is
# data.synthetic_vocab + 1 (see tokenizer_vocab_size).
TOKENIZER_VOCAB_SIZES = {"gpt2": 50257, "byte": 257}


def tokenizer_vocab_size(tokenizer: str, synthetic_vocab: int) -> int:
    """Ids `tokenizer` emits, BOS/EOS included and MASK not."""
    if tokenizer == "synthetic":
        return synthetic_vocab + 1
    return TOKENIZER_VOCAB_SIZES[tokenizer]


class ConfigError(ValueError):
    """A config field has a value outside its allowed range."""


def _check(ok: bool, field: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"config field '{field}' = {value!r} is invalid: allowed {allowed}")


def _check_choice(field: str, value: Any, choices: Iterable[str]) -> None:
    choices = tuple(choices)
    _check(value in choices, field, value, f"one of {choices}")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    kind: str
    vocab_size: int  # tokenizer vocabulary plus the MASK id (the last id)
    hidden_size: int
    num_layers: int  # MDLM: number of DiT blocks
    num_heads: int
    mlp_ratio: int
    cond_dim: int
    time_conditioning: bool
    dropout: float
    dtype: str  # compute dtype
    param_dtype: str
    # fp_mdlm only (docs/method.md §2.2): explicit pre/post blocks, the weight-tied block(s),
    # and how the injection u enters F.
    k_pre: int
    k_fp: int
    k_post: int
    injection: str

    @property
    def mask_id(self) -> int:
        return self.vocab_size - 1

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    def validate(self) -> None:
        _check_choice("model.kind", self.kind, MODEL_KINDS)
        _check(self.vocab_size >= 3, "model.vocab_size", self.vocab_size, ">= 3")
        _check(self.hidden_size >= 1, "model.hidden_size", self.hidden_size, ">= 1")
        _check(self.num_layers >= 1, "model.num_layers", self.num_layers, ">= 1")
        _check(self.num_heads >= 1, "model.num_heads", self.num_heads, ">= 1")
        _check(
            self.hidden_size % self.num_heads == 0,
            "model.num_heads",
            self.num_heads,
            f"a divisor of model.hidden_size={self.hidden_size}",
        )
        _check(
            self.head_dim % 2 == 0,
            "model.num_heads",
            self.num_heads,
            "a value giving an even head dimension (rotary embeddings rotate pairs)",
        )
        _check(self.mlp_ratio >= 1, "model.mlp_ratio", self.mlp_ratio, ">= 1")
        _check(self.cond_dim >= 1, "model.cond_dim", self.cond_dim, ">= 1")
        _check(0.0 <= self.dropout < 1.0, "model.dropout", self.dropout, "[0, 1)")
        _check_choice("model.dtype", self.dtype, DTYPES)
        _check_choice("model.param_dtype", self.param_dtype, DTYPES)
        for name in ("k_pre", "k_fp", "k_post"):
            value = getattr(self, name)
            _check(
                value >= (1 if name == "k_fp" else 0), f"model.{name}", value, ">= 0 (k_fp >= 1)"
            )
        _check_choice("model.injection", self.injection, INJECTIONS)

    def block_passes(self, fp_iterations: int) -> int:
        """Transformer-block forward passes of one denoiser call (docs/method.md §2.2 cost unit)."""
        if self.kind == "mdlm":
            return self.num_layers
        return self.k_pre + fp_iterations * self.k_fp + self.k_post


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
class DataConfig:
    source: str
    path: str  # files/folder for text_files and hf_folder, shard dir for owt
    tfds_name: str
    tfds_data_dir: str
    text_key: str  # field that holds the text in jsonl / dataset records
    raw_source: str  # where --mode=prepare reads documents from
    raw_path: str
    tokenizer: str
    tokenizer_path: str  # optional override for the GPT-2 BPE file
    cache_dir: str  # where embedded assets are fetched
    seq_len: int
    val_docs: int  # documents held out for validation
    shuffle_buffer_seed: int
    worker_count: int
    prefetch_batches: int  # batches grain reads ahead per host (its default is 500)
    # data.source = "synthetic" (cofre_jax/data/synthetic.py): the sparse HMM's sizes,
    # its noise floor and seed, and how many training rows are drawn.
    synthetic_states: int
    synthetic_vocab: int
    synthetic_branching: int
    synthetic_emissions: int
    synthetic_noise: float
    synthetic_seed: int
    synthetic_train_rows: int

    def validate(self) -> None:
        _check_choice("data.source", self.source, DATA_SOURCES)
        synthetic = self.source == "synthetic"
        _check(
            synthetic == (self.tokenizer == "synthetic"),
            "data.tokenizer",
            self.tokenizer,
            "'synthetic' exactly when data.source is 'synthetic'",
        )
        if synthetic:
            self._validate_synthetic()
        _check_choice("data.tokenizer", self.tokenizer, TOKENIZERS)
        _check_choice("data.raw_source", self.raw_source, RAW_SOURCES)
        _check(self.seq_len >= 3, "data.seq_len", self.seq_len, ">= 3 (BOS + text + EOS)")
        _check(self.val_docs >= 1, "data.val_docs", self.val_docs, ">= 1")
        _check(self.worker_count >= 0, "data.worker_count", self.worker_count, ">= 0")
        _check(self.prefetch_batches >= 1, "data.prefetch_batches", self.prefetch_batches, ">= 1")
        if self.source in ("text_files", "hf_folder", "owt"):
            _check(bool(self.path), "data.path", self.path, f"a path for source {self.source!r}")
        if self.source == "tfds":
            _check(bool(self.tfds_name), "data.tfds_name", self.tfds_name, "a tfds dataset name")

    def _validate_synthetic(self) -> None:
        S, V = self.synthetic_states, self.synthetic_vocab
        _check(S >= 1, "data.synthetic_states", S, ">= 1")
        # Symbols are stored as uint16 next to the BOS/EOS id V.
        _check(2 <= V < 65_535, "data.synthetic_vocab", V, "[2, 65535)")
        _check(
            1 <= self.synthetic_branching <= S,
            "data.synthetic_branching",
            self.synthetic_branching,
            f"[1, data.synthetic_states={S}]",
        )
        _check(
            1 <= self.synthetic_emissions <= V,
            "data.synthetic_emissions",
            self.synthetic_emissions,
            f"[1, data.synthetic_vocab={V}]",
        )
        _check(
            0.0 < self.synthetic_noise <= 1.0,
            "data.synthetic_noise",
            self.synthetic_noise,
            "(0, 1] (a positive floor keeps every sequence's likelihood finite)",
        )
        _check(self.synthetic_seed >= 0, "data.synthetic_seed", self.synthetic_seed, ">= 0")
        _check(
            self.synthetic_train_rows >= 1,
            "data.synthetic_train_rows",
            self.synthetic_train_rows,
            ">= 1",
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
class SampleConfig:
    seed: int
    num_samples: int
    steps: int  # T when budget = 0
    top_p: float  # 1.0 disables the nucleus filter
    reuse_logits: bool  # skip the network when no token changed (MDLM's cache)
    final_eps: float  # last time of the linspace(1, final_eps, steps + 1) grid
    # Budget in block passes (cofre_jax.budget); 0: the cost of `steps` calls at
    # fixed_point.eval_iterations.
    budget: int
    budget_steps: int  # T under a budget; 0 derives it from the budget
    schedule: str  # allocation of fixed-point iterations over the steps
    min_iterations: int  # fewest fixed-point iterations a step gets
    warm_start: str  # solver start per step: cold, reuse or 3sr (docs/method.md §2.5)
    reuse_visible: float  # 3SR gamma of unchanged visible tokens
    reuse_masked_min: float  # 3SR gamma of still-masked tokens at visible fraction 0
    reuse_masked_max: float  # ... and at visible fraction 1
    reuse_changed: float  # 3SR gamma of newly revealed tokens
    adaptive_tol: float  # per-sequence residual tolerance of adaptive stopping; 0 = off
    frame: bool  # start with position 0 = BOS and the last = EOS visible

    def validate(self) -> None:
        _check(self.num_samples >= 1, "sample.num_samples", self.num_samples, ">= 1")
        _check(self.steps >= 1, "sample.steps", self.steps, ">= 1")
        _check(0.0 < self.top_p <= 1.0, "sample.top_p", self.top_p, "(0, 1]")
        _check(0.0 < self.final_eps < 1.0, "sample.final_eps", self.final_eps, "(0, 1)")
        _check(self.budget >= 0, "sample.budget", self.budget, ">= 0 (0: no budget)")
        _check(self.budget_steps >= 0, "sample.budget_steps", self.budget_steps, ">= 0 (0: derive)")
        _check_choice("sample.schedule", self.schedule, ALLOCATION_SCHEDULES)
        _check(self.min_iterations >= 0, "sample.min_iterations", self.min_iterations, ">= 0")
        _check_choice("sample.warm_start", self.warm_start, WARM_STARTS)
        for name in ("reuse_visible", "reuse_masked_min", "reuse_masked_max", "reuse_changed"):
            value = getattr(self, name)
            _check(0.0 <= value <= 1.0, f"sample.{name}", value, "[0, 1]")
        _check(self.adaptive_tol >= 0.0, "sample.adaptive_tol", self.adaptive_tol, ">= 0 (0: off)")


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


def _int_tuple_field(section, section_name: str, field: str, allowed: str) -> None:
    """Normalises a tuple-of-ints field in place: a tuple, a list, one int, or "1,6,12"
    (how a command-line override arrives)."""
    value = getattr(section, field)
    parts = value
    if isinstance(value, str):
        parts = [part for part in value.strip("()[] ").split(",") if part.strip()]
    elif isinstance(value, int):
        parts = [value]
    try:
        object.__setattr__(section, field, tuple(int(i) for i in parts))
    except (TypeError, ValueError):
        raise ConfigError(
            f"config field '{section_name}.{field}' = {value!r} is invalid: allowed a "
            f"sequence of {allowed}"
        ) from None


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """--mode=eval: validation NELBO, costs, then samples scored by a scorer LM."""

    budgets: tuple[int, ...]  # block passes to sample at; () = likelihood and costs only
    budget_steps: tuple[int, ...]  # denoising steps per budget; () = sample.budget_steps
    num_samples: int  # per budget
    scorer: str  # "smollm2", a .gguf file, a Hugging Face folder, "oracle" or "none"
    scorer_batch_size: int
    report: str  # the report is <workdir>/<report>_step<N>.json
    reference: str  # a quality_vs_budget.json whose MDLM/CoFRe figures are printed too

    def __post_init__(self):
        _int_tuple_field(self, "eval", "budgets", "block-pass budgets, e.g. (32, 64)")
        _int_tuple_field(self, "eval", "budget_steps", "step counts, one per budget")

    def validate(self) -> None:
        _check(all(b >= 1 for b in self.budgets), "eval.budgets", self.budgets, "positive budgets")
        _check(
            len(self.budget_steps) in (0, len(self.budgets))
            and all(t >= 1 for t in self.budget_steps),
            "eval.budget_steps",
            self.budget_steps,
            f"() or {len(self.budgets)} positive step counts (one per budget)",
        )
        _check(self.num_samples >= 1, "eval.num_samples", self.num_samples, ">= 1")
        _check(
            self.scorer_batch_size >= 1, "eval.scorer_batch_size", self.scorer_batch_size, ">= 1"
        )
        _check(
            bool(self.report) and "/" not in self.report and self.report == self.report.strip(),
            "eval.report",
            self.report,
            "a file-name stem without '/'",
        )


@dataclasses.dataclass(frozen=True)
class Config:
    model: ModelConfig
    fixed_point: FixedPointConfig
    diffusion: DiffusionConfig
    data: DataConfig
    optim: OptimConfig
    train: TrainConfig
    sample: SampleConfig
    stage: StageConfig
    convert: ConvertConfig
    eval: EvalConfig
    mesh: MeshConfig

    def validate(self) -> None:
        for section in dataclasses.fields(self):
            getattr(self, section.name).validate()
        expected_vocab = tokenizer_vocab_size(self.data.tokenizer, self.data.synthetic_vocab) + 1
        _check(
            self.model.vocab_size == expected_vocab,
            "model.vocab_size",
            self.model.vocab_size,
            f"-1 or {expected_vocab} (tokenizer {self.data.tokenizer!r} plus MASK)",
        )
        if self.eval.scorer == "oracle":
            _check(
                self.data.source == "synthetic",
                "eval.scorer",
                self.eval.scorer,
                "'oracle' only with data.source 'synthetic' (the exact likelihood is the "
                "generator's)",
            )
        _check(
            not self.eval.reference or self.eval.scorer == "oracle",
            "eval.reference",
            self.eval.reference,
            "'' unless eval.scorer is 'oracle' (its figures are excess NLL)",
        )
        if self.stage.kind == "distill":
            m = self.model
            _check(m.kind == "fp_mdlm", "model.kind", m.kind, "'fp_mdlm' for distillation")
            blocks = m.k_pre + m.k_fp + m.k_post
            _check(
                len(self.convert.layer_map) == blocks,
                "convert.layer_map",
                self.convert.layer_map,
                f"{blocks} entries (model.k_pre + k_fp + k_post)",
            )


_SECTIONS = {
    "model": ModelConfig,
    "fixed_point": FixedPointConfig,
    "diffusion": DiffusionConfig,
    "data": DataConfig,
    "optim": OptimConfig,
    "train": TrainConfig,
    "sample": SampleConfig,
    "stage": StageConfig,
    "convert": ConvertConfig,
    "eval": EvalConfig,
    "mesh": MeshConfig,
}


def _build_section(name: str, cls: type, values: Mapping[str, Any]) -> Any:
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ConfigError(
            f"unknown config key '{name}.{unknown[0]}'; valid keys of '{name}': {sorted(names)}"
        )
    missing = [n for n in names if n not in values]
    if missing:
        raise ConfigError(f"config section '{name}' is missing key '{missing[0]}'")
    return cls(**{n: values[n] for n in names})


def from_config_dict(cfg: Mapping[str, Any]) -> Config:
    """Builds and validates the typed config; raises ConfigError on any bad field."""
    plain = cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)
    unknown = sorted(set(plain) - set(_SECTIONS))
    if unknown:
        raise ConfigError(
            f"unknown config section '{unknown[0]}'; valid sections: {sorted(_SECTIONS)}"
        )
    plain = {name: dict(plain.get(name, {})) for name in _SECTIONS}
    tokenizer = plain["data"].get("tokenizer")
    _check_choice("data.tokenizer", tokenizer, TOKENIZERS)
    if plain["model"].get("vocab_size") == -1:
        synthetic_vocab = plain["data"].get("synthetic_vocab", 0)
        plain["model"]["vocab_size"] = tokenizer_vocab_size(tokenizer, synthetic_vocab) + 1
    sections = {name: _build_section(name, cls, plain[name]) for name, cls in _SECTIONS.items()}
    config = Config(**sections)
    config.validate()
    return config
