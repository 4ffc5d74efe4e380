"""XLA's own accounting of a compiled function: FLOPs and bytes, as reports use them."""

from __future__ import annotations


def compiled_stats(compiled) -> dict[str, float]:
    """cost_analysis() FLOPs and memory_analysis() bytes of a `jax.stages.Compiled`.

    XLA counts a while-loop body once, whatever its trip count."""
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list | tuple) else cost
    mem = compiled.memory_analysis()
    return {
        "flops": float(cost.get("flops", float("nan"))),
        "temp_bytes": int(mem.temp_size_in_bytes),
        "argument_bytes": int(mem.argument_size_in_bytes),
        "output_bytes": int(mem.output_size_in_bytes),
    }
