"""Fixed-point solvers on a transformer block at quickstart scale.

Measures, in one run, side by side (A B C A B C ...), medians:
1. block evaluations to tolerance (deterministic) and time per solve for Picard,
   Anderson (Broyden was measured and dropped), on the pre-LN block with input
   injection that the tests use (cofre_jax/fixed_point/reference_block.py: InjectedBlock);
2. the overhead of the `while_loop` solver (tolerance off, per-example bookkeeping,
   residuals) against the same number of block calls unrolled in Python under jit.

    python benchmarks/solvers.py            # writes benchmarks/results/solvers.{json,md}
    python benchmarks/solvers.py --quick    # smaller, for a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from cofre_jax.fixed_point import SolverSpec, solve
from cofre_jax.fixed_point.reference_block import InjectedBlock

RESULTS = os.path.join(os.path.dirname(__file__), "results")
METHODS = ("picard", "anderson")


def _problem(args, contraction: float):
    block = InjectedBlock(args.hidden, args.heads, contraction)
    rng = np.random.default_rng(0)
    h0 = jnp.asarray(rng.normal(size=(args.batch, args.length, args.hidden)), jnp.float32)
    x = (
        jnp.asarray(rng.normal(size=(args.batch, args.length, args.hidden)), jnp.float32),
        jnp.asarray(rng.normal(size=(args.batch, 16)), jnp.float32),
    )
    params = jax.jit(block.init)(jax.random.key(0), h0, x)
    return block.apply, params, h0, x


def _time_interleaved(fns: dict, args_tuple, repeats: int) -> dict:
    """Median seconds per call of each fn, calls interleaved so load noise is shared."""
    times = {name: [] for name in fns}
    for fn in fns.values():
        jax.block_until_ready(fn(*args_tuple))  # compile + warm
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            jax.block_until_ready(fn(*args_tuple))
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8)
    # fc2 init scale: 0.3 is the tests' block; larger mixes h back in more strongly.
    parser.add_argument("--contractions", default="0.3,1.5,2.5")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if args.quick:
        args.hidden, args.length, args.repeats = 32, 16, 2

    out: dict = {"config": vars(args), "solvers": {}, "while_loop_overhead": {}}
    for contraction in (float(c) for c in args.contractions.split(",")):
        f, params, h0, x = _problem(args, contraction)
        for tol in (1e-3, 1e-5):
            fns, stats = {}, {}
            for method in METHODS:
                spec = SolverSpec(method=method, tol=tol, max_iter=300, window=5)
                fns[method] = jax.jit(lambda p, h, xx, spec=spec, f=f: solve(f, p, h, xx, spec))
                _, st = jax.block_until_ready(fns[method](params, h0, x))
                stats[method] = st
            medians = _time_interleaved(fns, (params, h0, x), args.repeats)
            row = {}
            for method in METHODS:
                st = stats[method]
                row[method] = {
                    "evals": int(st.evals),
                    "mean_iterations_per_example": float(jnp.mean(st.iterations_B)),
                    "all_converged": bool(jnp.all(st.converged_B)),
                    "max_residual": float(jnp.max(st.residual_B)),
                    "median_s": medians[method],
                    "time_ratio_to_picard": medians[method] / medians["picard"],
                    "evals_ratio_to_picard": int(st.evals) / int(stats["picard"].evals),
                }
            out["solvers"][f"contraction={contraction:g},tol={tol:g}"] = row
            print(f"contraction {contraction:g} tol {tol:g}:", json.dumps(row, indent=1))

    f, params, h0, x = _problem(args, 0.3)
    for n in (4, 16):
        spec = SolverSpec(method="picard", tol=0.0, max_iter=n)

        def unrolled(p, h, xx, n=n):
            for _ in range(n):
                h = f(p, h, xx)
            return h

        fns = {
            "while_loop": jax.jit(lambda p, h, xx, spec=spec: solve(f, p, h, xx, spec)[0]),
            "while_loop_traced_n": jax.jit(
                lambda p, h, xx, k, spec=spec: solve(f, p, h, xx, spec, max_iter=k)[0]
            ),
            "unrolled": jax.jit(unrolled),
        }
        k = jnp.int32(n)
        calls = {
            "while_loop": lambda p, h, xx, g=fns["while_loop"]: g(p, h, xx),
            "while_loop_traced_n": lambda p, h, xx, g=fns["while_loop_traced_n"], k=k: g(
                p, h, xx, k
            ),
            "unrolled": fns["unrolled"],
        }
        np.testing.assert_allclose(
            calls["while_loop"](params, h0, x), calls["unrolled"](params, h0, x), atol=1e-4
        )
        medians = _time_interleaved(calls, (params, h0, x), args.repeats)
        row = {name: {"median_s": m} for name, m in medians.items()}
        for name in ("while_loop", "while_loop_traced_n"):
            row[name]["ratio_to_unrolled"] = medians[name] / medians["unrolled"]
        out["while_loop_overhead"][str(n)] = row
        print(f"{n} iterations:", json.dumps(row, indent=1))

    out["machine"] = {
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "jax": jax.__version__,
        "device": str(jax.devices()[0]),
    }
    if args.quick:
        return
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "solvers.json"), "w") as fh:
        json.dump(out, fh, indent=2)
    print("wrote", os.path.join(RESULTS, "solvers.json"))


if __name__ == "__main__":
    main()
