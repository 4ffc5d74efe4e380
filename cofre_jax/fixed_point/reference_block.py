"""A reference fixed-point problem: the block of the fixed-point tests and of
benchmarks/solvers.py, independent of the FP-MDLM model code.

Letters: B batch, L length, D hidden, C conditioning width.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp


class InjectedBlock(nn.Module):
    """Pre-LN transformer block behind an fc1/fc2 injection of u (docs/method.md §2.2).

    `contraction` scales fc2's init, which sets how strongly h is mixed back in and so
    how many iterations the fixed point takes.
    """

    hidden: int
    heads: int
    contraction: float = 0.3
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, h_BxLxD, x):
        u_BxLxD, cond_BxC = x
        dense = lambda n, name, **kw: nn.Dense(  # noqa: E731
            n, dtype=self.dtype, param_dtype=self.param_dtype, name=name, **kw
        )
        norm = lambda name: nn.LayerNorm(  # noqa: E731
            use_bias=False, dtype=self.dtype, param_dtype=self.param_dtype, name=name
        )
        hu_BxLx2D = jnp.concatenate([h_BxLxD, u_BxLxD.astype(h_BxLxD.dtype)], axis=-1)
        z_BxLx2D = nn.gelu(dense(2 * self.hidden, "fc1")(hu_BxLx2D))
        init = nn.initializers.variance_scaling(self.contraction, "fan_in", "normal")
        z_BxLxD = dense(self.hidden, "fc2", kernel_init=init)(z_BxLx2D)
        z_BxLxD = z_BxLxD + dense(self.hidden, "cond")(cond_BxC.astype(z_BxLxD.dtype))[:, None]
        a_BxLxD = nn.MultiHeadDotProductAttention(
            num_heads=self.heads, dtype=self.dtype, param_dtype=self.param_dtype, name="attn"
        )(norm("ln1")(z_BxLxD))
        z_BxLxD = z_BxLxD + a_BxLxD
        m_BxLxD = dense(self.hidden, "mlp_out")(
            nn.gelu(dense(4 * self.hidden, "mlp_in")(norm("ln2")(z_BxLxD)))
        )
        return (z_BxLxD + m_BxLxD).astype(h_BxLxD.dtype)
