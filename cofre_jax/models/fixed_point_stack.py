"""The P -> G -> Fix(F) -> H stack that every fixed-point model shares (docs/method.md §2.2).

    h_pre = P(h_emb, c);  u = G(h_pre);  h* = Fix(F(.; u, c));  h = H(h*, c)

A model embeds its own inputs (text tokens, image tokens), builds its condition c and
owns its output head; `fixed_point_stack` runs the rest inside the calling module's
compact method, so the parameters keep the names a checkpoint or an imported MDLM
layer map expects (pre_blocks_i, injection, fp_cell, post_blocks_i). The block type is
a parameter: any linen module `Block(config, name=...)(h, c, rotary, train=...)`.

The fixed point is solved by `cofre_jax.fixed_point` with F's parameters passed as an
explicit pytree (linen only owns them); training uses the configured gradient strategy
(SJFB by default), eval and sampling a forward solve whose iteration count may be a
traced value and whose start may be a warm state (3SR sampling).

Dropout inside F draws one mask per denoiser call, so every iteration applies the
same function and the fixed point is well defined. The implicit (IFT) gradient needs
a closed-form F without hidden randomness, so F runs without dropout under it.

Letters: B batch, L length, D hidden, C cond dim, K head dim.
"""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from cofre_jax import fixed_point
from cofre_jax.config.choices import INJECTIONS
from cofre_jax.config.typed import FixedPointConfig, ModelConfig
from cofre_jax.fixed_point import SolverStats, specs_from_config
from cofre_jax.models.layers import DiTBlock, dense, torch_linear_init


class _Fc1(nn.Module):
    """fc1's parameters (kernel 2D x 2D, bias 2D) as nn.Dense names and initialises them,
    handed out raw so F can apply the h half and the hoisted u half separately."""

    config: ModelConfig

    @nn.compact
    def __call__(self):
        D2 = 2 * self.config.hidden_size
        init = torch_linear_init(D2)
        dtype = jnp.dtype(self.config.param_dtype)
        return self.param("kernel", init, (D2, D2), dtype), self.param("bias", init, (D2,), dtype)


def _unknown_injection(injection: str) -> ValueError:
    return ValueError(f"unknown injection {injection!r}; valid: {', '.join(INJECTIONS)}")


def injection_term(config: ModelConfig, cell_params, u_BxLxD: jax.Array) -> jax.Array:
    """The loop-invariant half of F's input layer, computed once per denoiser call.

    fpdm: fc1(concat[h, u]) = W_h h + (W_u u + b); this returns W_u u + b (B x L x 2D, in
    the model dtype), so each fixed-point iteration only pays for W_h h. add: u itself.
    """
    if config.injection == "add":
        return u_BxLxD
    if config.injection != "fpdm":
        raise _unknown_injection(config.injection)
    D, dtype = config.hidden_size, jnp.dtype(config.dtype)
    kernel_2Dx2D, bias_2D = cell_params["fc1"]["kernel"], cell_params["fc1"]["bias"]
    return jnp.dot(u_BxLxD.astype(dtype), kernel_2Dx2D[D:].astype(dtype)) + bias_2D.astype(dtype)


class FPCell(nn.Module):
    """F(h; u, c): the injection-mixing input layer followed by k_fp blocks.

    With `injected=True` the second argument is `injection_term(u)` (computed once
    outside the solver loop) instead of u; F is the same function either way.
    """

    config: ModelConfig
    block: type[nn.Module] = DiTBlock

    @nn.compact
    def __call__(
        self, h_BxLxD, u_or_inj, cond_BxC, cos_LxK, sin_LxK, *, train: bool, injected: bool = False
    ):
        cfg = self.config
        D = cfg.hidden_size
        if cfg.injection == "fpdm":
            dtype = jnp.dtype(cfg.dtype)
            kernel_2Dx2D, bias_2D = _Fc1(cfg, name="fc1")()
            if injected:
                inj_BxLx2D = u_or_inj
            else:
                fc1 = {"fc1": {"kernel": kernel_2Dx2D, "bias": bias_2D}}
                inj_BxLx2D = injection_term(cfg, fc1, u_or_inj)
            pre_BxLx2D = jnp.dot(h_BxLxD.astype(dtype), kernel_2Dx2D[:D].astype(dtype))
            x_BxLx2D = nn.gelu(pre_BxLx2D + inj_BxLx2D.astype(dtype), approximate=True)
            x_BxLxD = dense(cfg, D, 2 * D, name="fc2")(x_BxLx2D).astype(jnp.float32)
        elif cfg.injection == "add":
            x_BxLxD = h_BxLxD + u_or_inj
        else:
            raise _unknown_injection(cfg.injection)
        for i in range(cfg.k_fp):
            x_BxLxD = self.block(cfg, name=f"blocks_{i}")(
                x_BxLxD, cond_BxC, (cos_LxK, sin_LxK), train=train
            )
        return x_BxLxD


def make_block_fn(
    config: ModelConfig,
    *,
    train: bool,
    dropout_key: jax.Array | None = None,
    block: type[nn.Module] = DiTBlock,
):
    """F as the solver sees it: f(params, h, x) with x = (inj, cond, cos, sin), where
    inj = injection_term(config, params, u) is computed once, outside the solver loop."""
    cell = FPCell(config, block)
    rngs = {"dropout": dropout_key} if train and dropout_key is not None else None

    def f(params, h_BxLxD, x):
        inj, cond_BxC, cos_LxK, sin_LxK = x
        return cell.apply(
            {"params": params},
            h_BxLxD,
            inj,
            cond_BxC,
            cos_LxK,
            sin_LxK,
            train=rngs is not None,
            injected=True,
            rngs=rngs,
        )

    return f


def fixed_point_stack(
    module: nn.Module,
    config: ModelConfig,
    fp_config: FixedPointConfig,
    h_BxLxD: jax.Array,
    cond_BxC: jax.Array,
    rotary: tuple[jax.Array, jax.Array],
    *,
    train: bool,
    h0_BxLxD: jax.Array | None = None,
    h0_fn: Callable[[jax.Array], jax.Array] | None = None,
    num_iterations: int | jax.Array | None = None,
    block: type[nn.Module] = DiTBlock,
) -> tuple[jax.Array, jax.Array, SolverStats]:
    """(h after the post blocks, h*, solver stats), called from `module`'s compact method.

    `h0_BxLxD` warm-starts the solve (default h_pre); `h0_fn(h_pre)`, if given, builds
    the start from this call's h_pre instead (3SR sampling mixes it with the previous
    step's h*); `num_iterations` (traced allowed) overrides fixed_point.eval_iterations
    outside training.
    """
    cfg = config
    solver, gradient = specs_from_config(fp_config)
    for i in range(cfg.k_pre):
        h_BxLxD = block(cfg, name=f"pre_blocks_{i}")(h_BxLxD, cond_BxC, rotary, train=train)
    h_pre_BxLxD = h_BxLxD
    u_BxLxD = dense(cfg, cfg.hidden_size, cfg.hidden_size, name="injection")(h_pre_BxLxD)
    u_BxLxD = u_BxLxD.astype(jnp.float32)

    cell = FPCell(cfg, block, name="fp_cell")
    if module.is_initializing():
        cell(h_pre_BxLxD, u_BxLxD, cond_BxC, *rotary, train=False)
    cell_params = module.variables["params"]["fp_cell"]
    # W_u u + b does not change across iterations: computed here once, not in F. Its
    # gradient reaches fc1 through cell_params (SJFB/JFB/unrolled differentiate x; the
    # implicit strategy differentiates x as well as params).
    x = (injection_term(cfg, cell_params, u_BxLxD), cond_BxC, *rotary)
    h0_BxLxD = h_pre_BxLxD if h0_BxLxD is None else h0_BxLxD.astype(jnp.float32)
    if h0_fn is not None:
        h0_BxLxD = h0_fn(h_pre_BxLxD).astype(jnp.float32)
    if train:
        use_dropout = cfg.dropout > 0 and gradient.method != "implicit"
        f = make_block_fn(
            cfg,
            train=use_dropout,
            dropout_key=module.make_rng("dropout") if use_dropout else None,
            block=block,
        )
        h_star_BxLxD, stats = fixed_point.fixed_point(
            f, cell_params, h0_BxLxD, x, solver, gradient, key=module.make_rng("fixed_point")
        )
    else:
        f = make_block_fn(cfg, train=False, block=block)
        h_star_BxLxD, stats = fixed_point.solve(
            f, cell_params, h0_BxLxD, x, solver, max_iter=num_iterations
        )

    h_BxLxD = h_star_BxLxD
    for i in range(cfg.k_post):
        h_BxLxD = block(cfg, name=f"post_blocks_{i}")(h_BxLxD, cond_BxC, rotary, train=train)
    return h_BxLxD, h_star_BxLxD, stats
