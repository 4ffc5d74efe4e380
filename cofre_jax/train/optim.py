"""The optimiser: AdamW with warm-up, an optional cosine decay and gradient clipping."""

from __future__ import annotations

import jax
import optax

from cofre_jax.config.choices import LR_SCHEDULES
from cofre_jax.config.typed import OptimConfig


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
