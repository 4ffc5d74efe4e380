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
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

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

    # The --mode values this task runs (cofre_jax.modes): training, sampling and
    # evaluation of images are library functions, not yet wired to the command line.
    MODES: ClassVar[tuple[str, ...]] = ("describe",)

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

    # ---- training and validation

    def _sums(self, params, batch, key, *, train: bool, rngs=None):
        m = self.config.model
        codes_BxL, labels_B = batch["codes"], batch["labels"]
        mask_key, label_key = jax.random.split(key)
        z_BxL, masked_BxL = mask_codes(mask_key, codes_BxL, m.mask_id)
        if train and m.label_dropout > 0:
            drop_B = jax.random.uniform(label_key, labels_B.shape) < m.label_dropout
            labels_B = jnp.where(drop_B, m.null_class, labels_B)
        sigma_B = jnp.zeros(labels_B.shape, jnp.float32)
        out = self.apply(params, z_BxL, sigma_B, labels_B, train=train, rngs=rngs)
        nll_sum, count = masked_cross_entropy(out.logits_BxLxV, codes_BxL, masked_BxL, m.mask_id)
        return nll_sum, count, masked_BxL, out

    def loss(self, params, batch, key, step, rngs, teacher_params=None):
        """(masked cross-entropy per masked code, metrics) of the pretrain stage."""
        del step, teacher_params
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
