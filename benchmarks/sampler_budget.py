"""The budgeted FP sampler at quickstart scale: warm starts at equal budgets, and the
sampler's control-flow overhead against a bare loop of the same block calls.

Model: FP-MDLM, hidden 128, 4 heads, cond 64, 1 pre / 1 fixed-point / 1 post block,
fpdm injection, byte vocabulary (257 + MASK), seq len 128, float32, Picard. Random init
unless --workdir names a trained run (then its config and EMA parameters are used). At
random init adaLN gates and the head are zero (every block is the identity and the
logits uniform), so the weights are perturbed by N(0, --init_noise^2) to make the
blocks generic; that changes nothing in the cost, only what the residuals mean.

For every budget B (T and the per-step iterations from `cofre_jax.sampling.budget`, default
schedule "decreasing"), in one process, each sampler call paired with a bare-loop call
just before it (bare A bare B bare C bare D, repeated), medians:
    cold, reuse, 3sr         the jitted sampler with each warm start, tolerance off
    3sr+adaptive             3SR with per-sequence stopping at --tol and the bank
    bare                     a jitted `lax.fori_loop` over the same T steps of the same
                             blocks with the same per-step counts (pre block, the
                             hoisted W_u u + b, a `fori_loop` of N_i F cells, post
                             block): no embedding, head,
                             solver bookkeeping or sampling
Reported: block passes spent (deterministic), per-sequence passes, the mean residual
of the returned fixed points (deterministic), seconds per sample, and per block pass
each sampler's time over the bare loop's (goal: within 1.10).

    python benchmarks/sampler_budget.py              # writes benchmarks/results/sampler_budget.*
    python benchmarks/sampler_budget.py --quick      # small shapes, a smoke run (to /tmp)
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import statistics
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from cofre_jax import diffusion, tasks
from cofre_jax.config.typed import from_config_dict
from cofre_jax.models import build_model, count_params
from cofre_jax.models.dit import conditioning
from cofre_jax.models.fixed_point_stack import FPCell, injection_term
from cofre_jax.models.layers import DiTBlock, TimestepEmbedder, rotary_tables
from cofre_jax.sampling import budget, fixed_point, make_fp_denoise_fn
from configs import base

ROOT = os.path.join(os.path.dirname(__file__), "..")

RESULTS = os.path.join(os.path.dirname(__file__), "results")
VARIANTS = ("cold", "reuse", "3sr", "3sr+adaptive")


def quickstart_fp_config(seq_len: int, hidden: int):
    cfg = base.get_config()
    cfg.model.kind = "fp_mdlm"
    cfg.model.hidden_size, cfg.model.num_heads, cfg.model.cond_dim = hidden, 4, 64
    cfg.model.k_pre = cfg.model.k_fp = cfg.model.k_post = 1
    cfg.model.injection = "fpdm"
    cfg.model.dropout, cfg.model.dtype = 0.0, "float32"
    cfg.data.source, cfg.data.tokenizer, cfg.data.seq_len = "embedded", "byte", seq_len
    return from_config_dict(cfg)


def load(args):
    """(config, params, source) from --workdir, or the quickstart-scale random init."""
    if args.workdir:
        import importlib.util

        spec = importlib.util.spec_from_file_location("run_config", args.config)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        config = from_config_dict(module.get_config())
        params, step = tasks.restore_model_params(config, args.workdir)
        return config, jax.device_get(params), f"trained: {args.workdir} step {step}"
    config = quickstart_fp_config(args.seq_len, args.hidden)
    task = tasks.get_task(config)

    @jax.jit
    def init():
        params = task.init_params(jax.random.PRNGKey(0))
        leaves, treedef = jax.tree.flatten(params)
        keys = jax.random.split(jax.random.PRNGKey(1), len(leaves))
        noisy = [x + args.init_noise * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)]
        return jax.tree.unflatten(treedef, noisy)

    return config, init(), f"random init, weights + N(0, {args.init_noise}^2)"


def make_bare_loop(config):
    """Jitted fori_loop over steps of: pre block, fori_loop of N_i F cells, post block."""
    cfg = config.model
    pre, post, cell = DiTBlock(cfg), DiTBlock(cfg), FPCell(cfg)
    embedder = TimestepEmbedder(cfg)

    @jax.jit
    def bare(params, h_BxLxD, iterations_T):
        L = h_BxLxD.shape[1]
        cos_LxK, sin_LxK = rotary_tables(L, cfg.head_dim)
        sigma_B = jnp.zeros((h_BxLxD.shape[0],), jnp.float32)
        cond_BxC = conditioning(
            lambda s: embedder.apply({"params": params["sigma_map"]}, s), sigma_B, False
        )

        def step(i, h):
            h = pre.apply({"params": params["pre_blocks_0"]}, h, cond_BxC, (cos_LxK, sin_LxK),
                          train=False)  # fmt: skip
            u = h  # same shapes as the injection; G itself is not a block pass
            # W_u u + b once per step, as the model does (fp_mdlm.injection_term).
            inj = injection_term(cfg, params["fp_cell"], u)

            def iterate(_, x):
                return cell.apply({"params": params["fp_cell"]}, x, inj, cond_BxC, cos_LxK,
                                  sin_LxK, train=False, injected=True)  # fmt: skip

            h = lax.fori_loop(0, iterations_T[i], iterate, h)
            return post.apply({"params": params["post_blocks_0"]}, h, cond_BxC,
                              (cos_LxK, sin_LxK), train=False)  # fmt: skip

        return lax.fori_loop(0, iterations_T.shape[0], step, h_BxLxD)

    return bare


def run_budget(args, config, params, budget_b: int) -> dict:
    m = config.model
    if (m.k_pre, m.k_fp, m.k_post) != (1, 1, 1):
        raise SystemExit("the bare loop is written for k_pre = k_fp = k_post = 1")
    schedule = diffusion.make_schedule(config.diffusion.schedule, config.diffusion.eps)
    cost = budget.StepCost.for_model(m)
    plan = budget.plan_budget(
        budget_b, cost, schedule=args.schedule,
        default_iterations=config.fixed_point.eval_iterations,
    )  # fmt: skip
    model = build_model(m, config.fixed_point)
    exact = make_fp_denoise_fn(model, schedule.total_noise, tol=0.0)
    adaptive = make_fp_denoise_fn(model, schedule.total_noise, tol=args.tol)
    batch, length = args.batch, config.data.seq_len
    iterations_T = jnp.asarray(plan.iterations_T, jnp.int32)
    z_BxL = jnp.full((batch, length), m.mask_id, jnp.int32)
    key = jax.random.PRNGKey(args.seed)

    def sampler(denoise_fn, warm_start):
        fn = functools.partial(
            fixed_point.fp_sample_jit, denoise_fn, cost=cost, hidden_size=m.hidden_size,
            mask_id=m.mask_id, mask_prob_fn=schedule.mask_prob, warm_start=warm_start,
        )  # fmt: skip
        return lambda: fn(params, key, iterations_T, z_BxL)

    fns = {
        "cold": sampler(exact, "cold"),
        "reuse": sampler(exact, "reuse"),
        "3sr": sampler(exact, "3sr"),
        "3sr+adaptive": sampler(adaptive, "3sr"),
    }
    bare = make_bare_loop(config)
    h_BxLxD = jax.random.normal(jax.random.PRNGKey(2), (batch, length, m.hidden_size))
    fns["bare"] = lambda: bare(params, h_BxLxD, iterations_T)

    outputs = {name: jax.block_until_ready(fn()) for name, fn in fns.items()}  # compile, warm

    def timed(fn):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        return time.perf_counter() - start

    # Each round: bare, cold, bare, reuse, bare, 3sr, bare, 3sr+adaptive. Every sampler
    # call is paired with the bare call just before it, so the pair shares the load.
    times = {name: [] for name in fns}
    paired_bare = {name: [] for name in VARIANTS}
    for _ in range(args.repeats):
        for name in VARIANTS:
            paired_bare[name].append(timed(fns["bare"]))
            times[name].append(timed(fns[name]))
    times["bare"] = [t for name in VARIANTS for t in paired_bare[name]]

    bare_passes = plan.block_passes
    bare_per_pass = statistics.median(times["bare"]) / bare_passes
    rows = {}
    for name in VARIANTS:
        out = outputs[name]
        passes = int(out.block_passes)
        seconds = statistics.median(times[name])
        assert passes <= budget_b, (name, passes, budget_b)
        rows[name] = {
            "block_passes": passes,
            "mean_sequence_block_passes": float(np.mean(np.asarray(out.block_passes_B))),
            "evals_per_step": np.asarray(out.evals_T).tolist(),
            "mean_residual": float(np.mean(np.asarray(out.residual_TxB))),
            "final_step_mean_residual": float(np.mean(np.asarray(out.residual_TxB)[-1])),
            "median_s": seconds,
            "s_per_sample": seconds / batch,
            # Per block pass over the bare loop's: median of the within-pair ratios (the
            # robust figure on a shared machine), ratio of medians, ratio of minimums.
            "paired_time_per_pass_over_bare": statistics.median(
                (t / passes) / (b / bare_passes) for t, b in zip(times[name], paired_bare[name])
            ),
            "time_per_pass_over_bare": (seconds / passes) / bare_per_pass,
            "min_time_per_pass_over_bare": (min(times[name]) / passes)
            / (min(times["bare"]) / bare_passes),
            "all_seconds": times[name],
            "paired_bare_seconds": paired_bare[name],
        }
    return {
        "budget": budget_b,
        "steps": plan.steps,
        "schedule": args.schedule,
        "planned_iterations": list(plan.iterations_T),
        "planned_block_passes": plan.block_passes,
        "bare": {
            "block_passes": bare_passes,
            "median_s": statistics.median(times["bare"]),
            "s_per_pass": bare_per_pass,
            "all_seconds": times["bare"],
        },
        "variants": rows,
    }


def markdown(result: dict) -> str:
    meta = result["meta"]
    lines = [
        "# Budgeted FP sampler at quickstart scale",
        "",
        "Produced by",
        "",
        f"    {meta['command']}",
        "",
        f"on {meta['machine']} (JAX {meta['jax']}, device {meta['device']}), float32. "
        f"Model: FP-MDLM hidden {meta['hidden']}, 4 heads, cond 64, 1 pre / 1 fp / 1 post "
        f"block, fpdm injection, vocab {meta['vocab']}, seq len {meta['seq_len']}, "
        f"{meta['params']} parameters, {meta['weights']}. Batch {meta['batch']}; Picard; "
        f"adaptive tolerance {meta['tol']} (relative residual). {meta['repeats']} rounds "
        "in one process, each timing bare, cold, bare, reuse, bare, 3sr, bare, "
        "3sr+adaptive; times are medians; block passes and residuals are deterministic.",
        "",
        "`passes` = block passes spent by the batch (each sequence slot's compute, <= B); "
        "`seq passes` = mean of each sequence's own count; `residual` = mean relative "
        "residual of the fixed points the steps returned (lower: closer to h*); "
        "`per pass / bare` = seconds per block pass over those of the bare loop of the "
        "same block calls (same T, same per-step iterations; no embedding, head, solver "
        "bookkeeping or sampling): `paired` is the median of the ratios of each sampler "
        "call to the bare call just before it, `medians` the ratio of the medians, `mins` "
        "of the minimums.",
        "",
        "| budget B | T | variant | passes | seq passes | residual | last-step residual "
        "| s / sample | per pass / bare: paired | medians | mins |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["budgets"]:
        for name, v in r["variants"].items():
            lines.append(
                f"| {r['budget']} | {r['steps']} | {name} | {v['block_passes']} | "
                f"{v['mean_sequence_block_passes']:.1f} | {v['mean_residual']:.3g} | "
                f"{v['final_step_mean_residual']:.3g} | {v['s_per_sample']:.4f} | "
                f"{v['paired_time_per_pass_over_bare']:.3f} | "
                f"{v['time_per_pass_over_bare']:.3f} | {v['min_time_per_pass_over_bare']:.3f} |"
            )
        bare = r["bare"]
        lines.append(
            f"| {r['budget']} | {r['steps']} | bare loop | {bare['block_passes']} | | | | "
            f"{bare['median_s'] / meta['batch']:.4f} | 1 | 1 | 1 |"
        )
    lines += ["", "Planned iterations per step (schedule " + result["budgets"][0]["schedule"]
              + "):", ""]  # fmt: skip
    for r in result["budgets"]:
        adaptive = r["variants"]["3sr+adaptive"]["evals_per_step"]
        lines.append(
            f"- B = {r['budget']}: planned {r['planned_iterations']}; 3sr+adaptive ran {adaptive}"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--budgets", default="96,192")
    parser.add_argument("--schedule", default="decreasing")
    parser.add_argument("--tol", type=float, default=1e-2)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq_len", type=int, default=128)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--init_noise", type=float, default=0.02)
    parser.add_argument("--workdir", default="", help="a trained FP run (with --config)")
    parser.add_argument("--config", default=os.path.join(ROOT, "configs", "quickstart.py"))
    parser.add_argument("--out", default="sampler_budget")
    parser.add_argument("--results_dir", default=RESULTS)
    args = parser.parse_args()
    if args.quick:
        args.budgets, args.seq_len, args.hidden, args.batch, args.repeats = "24", 32, 32, 2, 2
        args.results_dir = tempfile.gettempdir()  # a smoke run leaves the results alone

    config, params, weights = load(args)
    result = {
        "meta": {
            "command": "python " + " ".join(["benchmarks/sampler_budget.py", *sys.argv[1:]]),
            "machine": platform.platform(),
            "jax": jax.__version__,
            "device": str(jax.devices()[0]),
            "cpu_count": os.cpu_count(),
            "hidden": config.model.hidden_size,
            "vocab": config.model.vocab_size,
            "seq_len": config.data.seq_len,
            "params": count_params(params),
            "weights": weights,
            "batch": args.batch,
            "tol": args.tol,
            "repeats": args.repeats,
        },
        "budgets": [],
    }
    for b in (int(x) for x in args.budgets.split(",")):
        r = run_budget(args, config, params, b)
        result["budgets"].append(r)
        print(json.dumps({k: v for k, v in r.items() if k != "variants"}, default=str))
        for name, v in r["variants"].items():
            keys = ("block_passes", "mean_residual", "s_per_sample",
                    "paired_time_per_pass_over_bare", "time_per_pass_over_bare",
                    "min_time_per_pass_over_bare")  # fmt: skip
            print(name, {k: v[k] for k in keys})
    os.makedirs(args.results_dir, exist_ok=True)
    with open(os.path.join(args.results_dir, f"{args.out}.json"), "w") as f:
        json.dump(result, f, indent=2)
    with open(os.path.join(args.results_dir, f"{args.out}.md"), "w") as f:
        f.write(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
