"""The text task: MDLM's masked diffusion over token ids (docs/method.md §2.1-2.6).

What a mode or the trainer needs from a modality, for text: the model's init inputs,
the one way to call it, the training loss of each stage, the validation NELBO and the
decoding of sampled ids. An image task supplies the same names.

Letters: B batch, L length, V vocabulary.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from cofre_jax import diffusion, stages
from cofre_jax.config.typed import Config
from cofre_jax.models import DenoiserOutput, build_model


def teacher_model_config(config: Config):
    """The MDLM that --mode=convert distils from: the model section's dimensions with
    convert.teacher_num_layers DiT blocks."""
    return dataclasses.replace(
        config.model, kind="mdlm", num_layers=config.convert.teacher_num_layers
    )


@dataclasses.dataclass(frozen=True, eq=False)
class TextTask:
    """One config's text model. Built once per config by `cofre_jax.tasks.get_task`, so
    functions derived from it keep their identity (jit caches hash them by identity)."""

    config: Config
    module: nn.Module
    schedule: diffusion.Schedule

    @classmethod
    def build(cls, config: Config) -> TextTask:
        schedule = diffusion.make_schedule(config.diffusion.schedule, config.diffusion.eps)
        return cls(config, build_model(config.model, config.fixed_point), schedule)

    # ---- the model

    def init_inputs(self, batch_size: int = 1) -> tuple[jax.Array, jax.Array, Any]:
        """(tokens_BxL, sigma_B, condition) of the right shapes for `init`."""
        tokens_BxL = jnp.zeros((batch_size, self.config.data.seq_len), jnp.int32)
        return tokens_BxL, jnp.zeros((batch_size,), jnp.float32), None

    def init_params(self, key: jax.Array) -> Any:
        return self.module.init(key, *self.init_inputs(), train=False)["params"]

    def abstract_params(self) -> Any:
        """The parameters' ShapeDtypeStructs, nothing allocated."""
        return jax.eval_shape(self.init_params, jax.random.PRNGKey(0))

    def apply(
        self, params, z_BxL, sigma_B, condition=None, *, train: bool, rngs=None, **solver
    ) -> DenoiserOutput:
        """The one call of the denoiser. `solver` (fixed-point models only): h0_BxLxD,
        h0_fn, num_iterations (see cofre_jax.models.fixed_point_stack)."""
        return self.module.apply(
            {"params": params}, z_BxL, sigma_B, condition, train=train, rngs=rngs, **solver
        )

    def teacher(self) -> TextTask | None:
        """The frozen network a stage learns from, when it is another model (distill)."""
        if not stages.STAGES[self.config.stage.kind].needs_teacher:
            return None
        model = teacher_model_config(self.config)
        return TextTask(self.config, build_model(model), self.schedule)

    # ---- data

    def abstract_batch(self, batch_size: int) -> dict[str, jax.ShapeDtypeStruct]:
        """The shapes of one global train batch, for lowering and benchmarks."""
        return {"tokens": jax.ShapeDtypeStruct((batch_size, self.config.data.seq_len), jnp.int32)}

    def tokenizer(self):
        from cofre_jax import data  # the tokenizers and corpora: not needed by `describe`

        return data.make_tokenizer(self.config.data)

    def eval_batches(self, process_index: int, process_count: int, *, tokenizer=None, splits=None):
        """This process's fixed validation batches (config.train.eval_batches of them)."""
        from cofre_jax import data

        return data.make_eval_batches(
            self.config.data,
            tokenizer or self.tokenizer(),
            batch_size=self.config.train.batch_size // process_count,
            num_batches=self.config.train.eval_batches,
            process_index=process_index,
            process_count=process_count,
            splits=splits,
        )

    def make_data(self, process_index: int, process_count: int):
        """(endless checkpointable iterator of this process's train batches, eval batches)."""
        from cofre_jax import data

        tokenizer = self.tokenizer()
        # Tokenised once, for both splits (a text corpus costs a full pass per call).
        splits = data.load_token_splits(self.config.data, tokenizer)
        train_iter = data.make_train_iterator(
            self.config.data,
            tokenizer,
            batch_size=self.config.train.batch_size // process_count,
            seed=self.config.data.shuffle_buffer_seed,
            process_index=process_index,
            process_count=process_count,
            splits=splits,
        )
        eval_batches = self.eval_batches(
            process_index, process_count, tokenizer=tokenizer, splits=splits
        )
        return train_iter, eval_batches

    # ---- training and validation

    def loss(self, params, batch, key, step, rngs, teacher_params=None):
        """(loss, metrics) of the configured stage; metrics keep the solver stats under
        student_stats / teacher_stats and the summable nll_sum / token_count."""
        kind = self.config.stage.kind
        return _STAGE_LOSSES[kind](self, params, batch["tokens"], key, step, rngs, teacher_params)

    def eval_sums(self, params, batch, key) -> dict[str, jax.Array]:
        """Summable validation statistics of one batch (one NELBO sample per row)."""
        _, sums = diffusion.diffusion_loss(
            self.apply, params, batch["tokens"], key, self.config.diffusion,
            self.config.model.mask_id, train=False,
        )  # fmt: skip
        return {"nll_sum": sums["nll_sum"], "token_count": sums["token_count"]}

    @staticmethod
    def eval_metrics(sums: dict[str, float]) -> dict[str, float]:
        """Nats and bits per token and perplexity of summed `eval_sums`."""
        metrics = diffusion.nelbo_metrics(sums["nll_sum"], sums["token_count"])
        return {k: float(v) for k, v in metrics.items()}

    # ---- outputs

    @staticmethod
    def decode(tokenizer, tokens_BxL) -> list[str]:
        return [tokenizer.decode([int(t) for t in row]) for row in tokens_BxL]


def _pretrain_loss(task: TextTask, params, tokens_BxL, key, step, rngs, teacher_params):
    del step, teacher_params
    loss, metrics = diffusion.diffusion_loss(
        task.apply, params, tokens_BxL, key, task.config.diffusion, task.config.model.mask_id,
        train=True, rngs=rngs,
    )  # fmt: skip
    stats = metrics.pop("stats")
    return loss, {**metrics, "student_stats": stats, "teacher_stats": None}


def _two_time_loss(divergence_kind: str, self_teacher: bool):
    def loss(task: TextTask, params, tokens_BxL, key, step, rngs, teacher_params):
        teacher = task if self_teacher else task.teacher()
        return stages.stage_loss(
            task.apply,
            params,
            tokens_BxL,
            key,
            step,
            stage=task.config.stage,
            divergence_kind=divergence_kind or task.config.stage.divergence,
            diffusion_cfg=task.config.diffusion,
            mask_id=task.config.model.mask_id,
            teacher_forward=teacher.apply,
            teacher_params=params if self_teacher else teacher_params,
            rngs=rngs,
        )

    return loss


# One entry per cofre_jax.config.choices.STAGE_KINDS (tests/test_registries.py).
_STAGE_LOSSES = {
    "pretrain": _pretrain_loss,
    # CoFRe's consistency stage: the model at t_c, under stop-gradient, is its own target.
    "consistency": _two_time_loss("", self_teacher=True),
    # Distillation from a frozen MDLM always matches tempered distributions (KL).
    "distill": _two_time_loss("kl", self_teacher=False),
}
