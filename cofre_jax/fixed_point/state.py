"""The solvers' view of a fixed-point state: a pytree h with a leading batch axis on
every leaf, handled as one flat per-example array z_BxN in the accumulation dtype
(float32, or float64 when h is float64).

Letters: B batch, N flattened per-example state size.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

PyTree = Any
BlockFn = Callable[[PyTree, PyTree, PyTree], PyTree]


class FlatState(NamedTuple):
    """How to go between the pytree h and the flat per-example state z_BxN."""

    treedef: Any
    shapes: tuple[tuple[int, ...], ...]
    dtypes: tuple[Any, ...]
    batch: int
    acc_dtype: Any

    def flatten(self, h: PyTree) -> jax.Array:
        leaves = jax.tree.leaves(h)
        return jnp.concatenate(
            [leaf.reshape(self.batch, -1).astype(self.acc_dtype) for leaf in leaves], axis=1
        )

    def unflatten(self, z_BxN: jax.Array) -> PyTree:
        sizes = [int(np.prod(s[1:])) for s in self.shapes]
        parts = jnp.split(z_BxN, np.cumsum(sizes)[:-1], axis=1)
        leaves = [p.reshape(s).astype(d) for p, s, d in zip(parts, self.shapes, self.dtypes)]
        return jax.tree.unflatten(self.treedef, leaves)


def flat_state(h: PyTree) -> FlatState:
    """Checks that every leaf of h is floating with one shared leading batch axis."""
    leaves, treedef = jax.tree.flatten(h)
    if not leaves:
        raise ValueError("fixed-point state h0 has no array leaves")
    for leaf in leaves:
        if jnp.ndim(leaf) < 1:
            raise ValueError(
                "every leaf of h0 needs a leading batch axis; got a leaf of shape "
                f"{jnp.shape(leaf)}"
            )
        if not jnp.issubdtype(leaf.dtype, jnp.floating):
            raise ValueError(f"fixed-point state leaves must be floating; got {leaf.dtype}")
    batches = {leaf.shape[0] for leaf in leaves}
    if len(batches) != 1:
        raise ValueError(f"leaves of h0 disagree on the batch (leading) axis: sizes {batches}")
    acc_dtype = jnp.result_type(jnp.float32, *[leaf.dtype for leaf in leaves])
    return FlatState(
        treedef=treedef,
        shapes=tuple(tuple(leaf.shape) for leaf in leaves),
        dtypes=tuple(leaf.dtype for leaf in leaves),
        batch=batches.pop(),
        acc_dtype=acc_dtype,
    )


def check_block_shapes(f: BlockFn, params: PyTree, h0: PyTree, x: PyTree) -> None:
    """Fails at trace time if f(params, h0, x) does not have h0's structure and shapes."""
    out = jax.eval_shape(f, params, h0, x)
    in_struct = jax.tree.structure(h0)
    out_struct = jax.tree.structure(out)
    if in_struct != out_struct:
        raise ValueError(
            f"f(params, h, x) must return h's pytree structure: h0 is {in_struct}, "
            f"f returned {out_struct}"
        )
    for a, b in zip(jax.tree.leaves(h0), jax.tree.leaves(out)):
        if tuple(a.shape) != tuple(b.shape):
            raise ValueError(
                f"f(params, h, x) changed a leaf's shape: h0 leaf {tuple(a.shape)}, "
                f"f output {tuple(b.shape)}"
            )


def select(mask_B: jax.Array, new: PyTree, old: PyTree) -> PyTree:
    def pick(n, o):
        return jnp.where(mask_B.reshape((-1,) + (1,) * (n.ndim - 1)), n, o)

    return jax.tree.map(pick, new, old)


def batch_max_iter(max_iter, batch: int) -> jax.Array:
    """Static or traced iteration cap (scalar or per example) as an int32 (B,) array."""
    if isinstance(max_iter, int | np.integer):
        if max_iter < 1:
            raise ValueError(f"max_iter = {max_iter} is invalid: allowed >= 1")
        return jnp.full((batch,), max_iter, jnp.int32)
    max_iter = jnp.asarray(max_iter)
    if not jnp.issubdtype(max_iter.dtype, jnp.integer) or max_iter.ndim > 1:
        raise ValueError(
            f"max_iter must be an int or an integer array of shape () or (B,); got "
            f"{max_iter.dtype} of shape {max_iter.shape}"
        )
    return jnp.broadcast_to(max_iter.astype(jnp.int32), (batch,))
