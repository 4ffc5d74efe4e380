"""The image task: class-conditional masked generation over a grid of VQ codes with
MaskGIT's arccos schedule (docs/method.md §2.7).

Training masks each code with probability arccos(r) / (pi/2), r ~ U(0, 1) per image
(Halton-MaskGIT's schedule, more masks on average than a linear one), and the loss is
the cross-entropy on the masked codes only (MaskGIT's choice; Halton-MaskGIT scores
every code, which spends the loss on copying visible ones). A label becomes the null
class with probability model.label_dropout, so one network also gives the
unconditional predictions classifier-free guidance needs.

Letters: B batch, L codes per image (grid x grid), V codebook plus MASK.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from cofre_jax import stages
from cofre_jax.config.typed import Config
from cofre_jax.diffusion import NEG_INF
from cofre_jax.models import DenoiserOutput, build_model


def arccos_mask_ratio(r_B: jax.Array) -> jax.Array:
    """The fraction of codes masked at schedule position r in [0, 1]: arccos(r) / (pi/2)
    (1 at r = 0, 0 at r = 1)."""
    return jnp.arccos(jnp.clip(r_B, 0.0, 1.0)) / (math.pi / 2)


def mask_codes(key, codes_BxL, mask_id: int) -> tuple[jax.Array, jax.Array]:
    """(z_BxL, masked_BxL): codes masked at an arccos ratio drawn per image."""
    ratio_key, mask_key = jax.random.split(key)
    ratio_B = arccos_mask_ratio(jax.random.uniform(ratio_key, codes_BxL.shape[:1]))
    masked_BxL = jax.random.uniform(mask_key, codes_BxL.shape) < ratio_B[:, None]
    return jnp.where(masked_BxL, mask_id, codes_BxL), masked_BxL


def masked_cross_entropy(logits_BxLxV, codes_BxL, masked_BxL, mask_id: int):
    """(sum over masked codes of -log p(code), number of masked codes); MASK is never a
    prediction."""
    vocab_V = jnp.arange(logits_BxLxV.shape[-1])
    logits_BxLxV = jnp.where(vocab_V == mask_id, NEG_INF, logits_BxLxV.astype(jnp.float32))
    target_BxL = jnp.take_along_axis(logits_BxLxV, codes_BxL[..., None], axis=-1)[..., 0]
    nll_BxL = jax.nn.logsumexp(logits_BxLxV, axis=-1) - target_BxL
    masked = masked_BxL.astype(jnp.float32)
    return jnp.sum(nll_BxL * masked), jnp.sum(masked)


@dataclasses.dataclass(frozen=True, eq=False)
class ImageTask:
    """One config's image model; built once per config by `cofre_jax.tasks.get_task`."""

    config: Config
    module: nn.Module

    @classmethod
    def build(cls, config: Config) -> ImageTask:
        return cls(config, build_model(config.model, config.fixed_point))

    # ---- the model

    def init_inputs(self, batch_size: int = 1) -> tuple[jax.Array, jax.Array, Any]:
        """(codes_BxL, sigma_B, labels_B) of the right shapes for `init`."""
        codes_BxL = jnp.zeros((batch_size, self.config.data.seq_len), jnp.int32)
        return codes_BxL, jnp.zeros((batch_size,), jnp.float32), jnp.zeros((batch_size,), jnp.int32)

    def init_params(self, key: jax.Array) -> Any:
        return self.module.init(key, *self.init_inputs(), train=False)["params"]

    def abstract_params(self) -> Any:
        return jax.eval_shape(self.init_params, jax.random.PRNGKey(0))

    def apply(
        self, params, z_BxL, sigma_B, condition=None, *, train: bool, rngs=None, **solver
    ) -> DenoiserOutput:
        """The one call of the denoiser; `condition` is the class labels (None: null)."""
        return self.module.apply(
            {"params": params}, z_BxL, sigma_B, condition, train=train, rngs=rngs, **solver
        )

    def teacher(self):
        return None  # the image stages learn from no other network

    # ---- data

    def abstract_batch(self, batch_size: int) -> dict[str, jax.ShapeDtypeStruct]:
        """The shapes of one global train batch, for lowering and benchmarks."""
        grid = self.config.data.grid_size
        return {
            "codes": jax.ShapeDtypeStruct((batch_size, grid, grid), jnp.int32),
            "labels": jax.ShapeDtypeStruct((batch_size,), jnp.int32),
        }

    def tokenizer(self):
        """The VQ tokenizer of data.tokenizer_path (cofre_jax.vq.tokenizer)."""
        from cofre_jax.vq import tokenizer

        return tokenizer.load_tokenizer(self.config)

    def make_data(self, process_index: int, process_count: int):
        """(endless checkpointable iterator of this process's batches of codes and labels,
        eval batches of the test split): the tokenizer's codes are computed once and
        cached, so training never runs the encoder."""
        from cofre_jax.data import images
        from cofre_jax.vq.tokenizer import cached_split_codes

        data, tc = self.config.data, self.config.train
        train_split, test_split = images.load_splits(data)
        tokenizer = self.tokenizer()
        codes = {
            s.name: cached_split_codes(self.config, tokenizer, s) for s in (train_split, test_split)
        }
        per_process = tc.batch_size // process_count
        train_iter = images.make_train_iterator(
            train_split,
            batch_size=per_process,
            seed=data.shuffle_buffer_seed,
            process_index=process_index,
            process_count=process_count,
            codes_NxHxW=codes[train_split.name],
            prefetch_batches=data.prefetch_batches,
            worker_count=data.worker_count,
        )
        eval_batches = images.make_eval_batches(
            test_split,
            batch_size=per_process,
            num_batches=tc.eval_batches,
            process_index=process_index,
            process_count=process_count,
            codes_NxHxW=codes[test_split.name],
        )
        return train_iter, eval_batches

    # ---- training and validation

    def _labels(self, key, labels_B, *, train: bool):
        """Training drops a label to the null class w.p. model.label_dropout."""
        m = self.config.model
        if not train or m.label_dropout == 0:
            return labels_B
        drop_B = jax.random.uniform(key, labels_B.shape) < m.label_dropout
        return jnp.where(drop_B, m.null_class, labels_B)

    def _sums(self, params, batch, key, *, train: bool, rngs=None):
        m = self.config.model
        codes_BxL, labels_B = _flat_codes(batch), batch["labels"]
        mask_key, label_key = jax.random.split(key)
        z_BxL, masked_BxL = mask_codes(mask_key, codes_BxL, m.mask_id)
        labels_B = self._labels(label_key, labels_B, train=train)
        sigma_B = jnp.zeros(labels_B.shape, jnp.float32)
        out = self.apply(params, z_BxL, sigma_B, labels_B, train=train, rngs=rngs)
        nll_sum, count = masked_cross_entropy(out.logits_BxLxV, codes_BxL, masked_BxL, m.mask_id)
        return nll_sum, count, masked_BxL, out

    def loss(self, params, batch, key, step, rngs, teacher_params=None):
        """(loss, metrics) of the configured stage (pretrain or consistency)."""
        del teacher_params
        return _STAGE_LOSSES[self.config.stage.kind](self, params, batch, key, step, rngs)

    def pretrain_loss(self, params, batch, key, step, rngs):
        """(masked cross-entropy per masked code, metrics)."""
        del step
        nll_sum, count, masked_BxL, out = self._sums(params, batch, key, train=True, rngs=rngs)
        metrics = {
            "nll_sum": nll_sum,
            "token_count": count,
            "masked_fraction": jnp.mean(masked_BxL.astype(jnp.float32)),
            "student_stats": out.stats,
            "teacher_stats": None,
        }
        return nll_sum / jnp.maximum(count, 1.0), metrics

    def eval_sums(self, params, batch, key) -> dict[str, jax.Array]:
        nll_sum, count, _, _ = self._sums(params, batch, key, train=False)
        return {"nll_sum": nll_sum, "token_count": count}

    @staticmethod
    def eval_metrics(sums: dict[str, float]) -> dict[str, float]:
        """Nats per masked code and their perplexity."""
        nats = sums["nll_sum"] / max(sums["token_count"], 1.0)
        return {"nats_per_code": nats, "perplexity": math.exp(nats)}

    # ---- outputs

    def decode(self, tokenizer_decode, codes_BxL) -> Any:
        """Images from sampled codes, through the tokenizer's decoder
        (`tokenizer_decode(codes_BxHxW) -> images`)."""
        grid = self.config.data.grid_size
        return tokenizer_decode(jnp.asarray(codes_BxL).reshape(-1, grid, grid))


def _flat_codes(batch) -> jax.Array:
    """The batch's codes as B x L (the pipeline gives B x h x w)."""
    codes = batch["codes"]
    return codes.reshape(codes.shape[0], -1)


def mask_ratio_at(t_B: jax.Array) -> jax.Array:
    """The arccos ratio as a function of a masking time t in [0, 1] (0: clean, 1: all
    masked), so that t ~ U(0, 1) gives training's masking distribution."""
    return arccos_mask_ratio(1.0 - t_B)


def consistency_loss(task: ImageTask, params, batch, key, step, rngs):
    """CoFRe's consistency stage for images (docs/method.md §2.4 on the arccos schedule):
    masked cross-entropy at the student's time t_s plus lambda times the divergence of
    the student's fixed point from the same model's, under stop-gradient and in eval
    mode, at t_c = max(t_s - gap, 0). One uniform per code masks at both times, so the
    teacher's masks are nested in the student's; both see the same (dropped) label."""
    m, stage = task.config.model, task.config.stage
    codes_BxL = _flat_codes(batch)
    time_key, gap_key, mask_key, label_key = jax.random.split(key, 4)
    t_s_B = jax.random.uniform(time_key, codes_BxL.shape[:1])
    t_c_B, gap_B = stages.teacher_times(gap_key, t_s_B, stage.gap_min, stage.gap_max)
    u_BxL = jax.random.uniform(mask_key, codes_BxL.shape)
    masked_s_BxL = u_BxL < mask_ratio_at(t_s_B)[:, None]
    masked_c_BxL = u_BxL < mask_ratio_at(t_c_B)[:, None]
    z_s_BxL = jnp.where(masked_s_BxL, m.mask_id, codes_BxL)
    z_c_BxL = jnp.where(masked_c_BxL, m.mask_id, codes_BxL)
    labels_B = task._labels(label_key, batch["labels"], train=True)
    sigma_B = jnp.zeros(labels_B.shape, jnp.float32)

    student = task.apply(params, z_s_BxL, sigma_B, labels_B, train=True, rngs=rngs)
    nll_sum, count = masked_cross_entropy(student.logits_BxLxV, codes_BxL, masked_s_BxL, m.mask_id)
    base_loss = nll_sum / jnp.maximum(count, 1.0)
    teacher = task.apply(jax.lax.stop_gradient(params), z_c_BxL, sigma_B, labels_B, train=False)
    teacher = jax.tree_util.tree_map(jax.lax.stop_gradient, teacher)
    div = stages.divergence(
        stage.divergence,
        student,
        teacher,
        z_s_BxL,
        z_c_BxL,
        mask_id=m.mask_id,
        tau=stage.temperature,
    )
    lam = stages.lambda_at(step, stage.lambda_max, stage.lambda_warmup_steps)
    metrics = {
        "nll_sum": nll_sum,
        "token_count": count,
        "base_loss": base_loss,
        "divergence": div,
        "lambda": lam,
        "time_gap": jnp.mean(t_s_B - t_c_B),
        "drawn_gap": jnp.mean(gap_B),
        "teacher_masked_fraction": jnp.mean(masked_c_BxL.astype(jnp.float32)),
        "student_stats": student.stats,
        "teacher_stats": teacher.stats,
    }
    return base_loss + lam * div, metrics


# The image stages (cofre_jax.stages.STAGES); distillation converts a text MDLM only,
# which the image config refuses.
_STAGE_LOSSES = {
    "pretrain": ImageTask.pretrain_loss,
    "consistency": consistency_loss,
}
