"""CoFRe's sampler against MDLM's at equal block-pass budgets: wall time per sample.

Models: the synthetic comparison's pair (docs/design.md §5: scaled in width, never in the
depth ratio), MDLM-12 (configs/synthetic_mdlm.py) against FP-MDLM 1/1/1 with the fpdm
injection (configs/synthetic_cofre.py), same width. With --mdlm_workdir / --fp_workdir
their trained EMA parameters are used (a run's checkpoints are only read; copy them out
of a checkout you must not touch); otherwise random init with the weights perturbed by
N(0, --init_noise^2), since at init adaLN gates and the head are zero. Timing does not
depend on the weights at a fixed budget; adaptive stopping does. A control,
`cofre-add`, is the same FP-MDLM 1/1/1 with the `add` injection (F is one plain block on
h + u, no fc1/fc2 mixing), always at random init and at fixed budgets only: it shows how
much of CoFRe's time over MDLM's is fpdm's mixing layers, which the block-pass budget
does not count.

Every call goes through the library entry point, `sampling.draw_samples`, with the
configs' sampler settings (MDLM: ancestral, logits cache on, as configured; CoFRe: 3SR,
the decreasing schedule), Categorical noise at float64 resolution (the only mode:
cofre_jax/sampling/noise.py). For every budget in 96/192/384/768, each method is called once
to compile and warm up, then the methods are interleaved for --rounds rounds
(mdlm, cofre, cofre+adaptive, cofre-add, mdlm, ...); reported are medians, the ratio of medians and
the median of the within-round ratios, and the deterministic counts (block passes,
network calls, per-step iterations).

    python benchmarks/sampler_vs_mdlm.py --mdlm_workdir=RUNS/mdlm --fp_workdir=RUNS/fp_cons
    python benchmarks/sampler_vs_mdlm.py --quick          # a smoke run (to /tmp)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import sys
import tempfile
import time

import jax
import jax.numpy as jnp

from cofre_jax import sampling, tasks
from cofre_jax.config.typed import from_config_dict
from cofre_jax.models import count_params
from cofre_jax.models.fixed_point_stack import FPCell, injection_term
from cofre_jax.models.layers import DiTBlock, rotary_tables
from configs import synthetic_cofre, synthetic_mdlm

ROOT = os.path.join(os.path.dirname(__file__), "..")

RESULTS = os.path.join(os.path.dirname(__file__), "results")
# cofre-add: the control with the `add` injection (F is one plain block, u added to h),
# random init, fixed budget only: what CoFRe's time is without fpdm's fc1/fc2 mixing.
METHODS = ("mdlm", "cofre", "cofre+adaptive", "cofre-add")


def load(cfg, workdir: str, init_noise: float, quick: bool):
    """(config, params, source) from a trained run, or perturbed random init."""
    if quick:
        cfg.model.num_layers = 2 if cfg.model.kind == "mdlm" else cfg.model.num_layers
        cfg.model.hidden_size, cfg.model.num_heads, cfg.model.cond_dim = 32, 2, 16
    config = from_config_dict(cfg)
    if workdir:
        params, step = tasks.restore_model_params(config, workdir)
        return config, params, f"trained: {workdir} step {step}"
    params = tasks.get_task(config).init_params(jax.random.PRNGKey(config.train.seed))

    @jax.jit
    def perturb(params):
        leaves, treedef = jax.tree.flatten(params)
        keys = jax.random.split(jax.random.PRNGKey(1), len(leaves))
        noisy = [x + init_noise * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)]
        return jax.tree.unflatten(treedef, noisy)

    return config, perturb(params), f"random init, weights + N(0, {init_noise}^2)"


def timed(fn) -> tuple[float, float, sampling.Samples]:
    """(wall s, process CPU s, samples). CPU time (all threads) is the work done; on a
    contended machine wall time adds every wait for a core."""
    start, cpu = time.perf_counter(), time.process_time()
    out = fn()  # draw_samples returns host arrays: the call has finished
    return time.perf_counter() - start, time.process_time() - cpu, out


def _inner(params):
    return params.get("params", params)


def pass_times(args, models: dict, reps: int = 50) -> dict:
    """Seconds per pass of MDLM's first block and of CoFRe's F (its block plus fpdm's
    fc1/fc2 mixing, with W_u u + b hoisted as the sampler does), at the sampler's
    shapes: each a jitted `fori_loop` of `reps` passes, interleaved, medians."""
    (mdlm_config, mdlm_params), (fp_config, fp_params) = models["mdlm"], models["cofre"]
    mdlm_cfg, fp_cfg = mdlm_config.model, fp_config.model
    shape = (args.batch, fp_config.data.seq_len, fp_cfg.hidden_size)
    h_BxLxD = jax.random.normal(jax.random.PRNGKey(0), shape)
    rotary = rotary_tables(shape[1], fp_cfg.head_dim)
    block, cell = DiTBlock(mdlm_cfg), FPCell(fp_cfg)
    block_params = {"params": _inner(mdlm_params)["blocks_0"]}
    cell_params = _inner(fp_params)["fp_cell"]
    mdlm_cond = jnp.ones((shape[0], mdlm_cfg.cond_dim))
    fp_cond = jnp.ones((shape[0], fp_cfg.cond_dim))
    inj = injection_term(fp_cfg, cell_params, h_BxLxD)

    def one_block(_, h):
        return block.apply(block_params, h, mdlm_cond, rotary, train=False)

    def one_f(_, h):
        return cell.apply(
            {"params": cell_params}, h, inj, fp_cond, *rotary, train=False, injected=True
        )

    loops = {
        "block": jax.jit(lambda h: jax.lax.fori_loop(0, reps, one_block, h)),
        "f_fpdm": jax.jit(lambda h: jax.lax.fori_loop(0, reps, one_f, h)),
    }
    for loop in loops.values():
        loop(h_BxLxD).block_until_ready()
    times = {name: [] for name in loops}
    for _ in range(max(args.rounds, 3)):
        for name, loop in loops.items():
            start = time.perf_counter()
            loop(h_BxLxD).block_until_ready()
            times[name].append((time.perf_counter() - start) / reps)
    return {name: statistics.median(t) for name, t in times.items()}


def attribution(row: dict, passes: dict, batch: int) -> dict:
    """CoFRe's wall time over MDLM's, split by the cofre-add control (seconds per
    sample, and as fractions of MDLM's time): the fpdm mixing (cofre - cofre-add; also
    predicted as F iterations x (F pass - block pass)) and the rest (cofre-add - MDLM:
    the network outside the blocks, pre/post blocks and G, warm start, draw, loop)."""
    m = row["methods"]
    mdlm_s = m["mdlm"]["s_per_sample"]
    iterations = sum(m["cofre"]["iterations_per_step"])
    predicted = iterations * (passes["f_fpdm"] - passes["block"]) / batch
    parts = {
        "excess": m["cofre"]["s_per_sample"] - mdlm_s,
        "fpdm_mixing": m["cofre"]["s_per_sample"] - m["cofre-add"]["s_per_sample"],
        "fpdm_mixing_predicted": predicted,
        "rest": m["cofre-add"]["s_per_sample"] - mdlm_s,
    }
    return {
        "f_iterations": iterations,
        "s_per_sample": parts,
        "over_mdlm": {k: v / mdlm_s for k, v in parts.items()},
    }


def run_budget(args, models: dict, total: int) -> dict:
    fns, plans = {}, {}
    for name, (config, params) in models.items():
        plan = sampling.sample_plan(config, total=total)
        plans[name] = plan

        def fn(config=config, params=params, plan=plan):
            return sampling.draw_samples(config, params, plan, args.batch, args.seed)

        fns[name] = fn
    first = {name: timed(fn) for name, fn in fns.items()}  # compile + warm-up
    outputs = {name: out for name, (_, _, out) in first.items()}
    times = {name: [] for name in fns}
    cpu = {name: [] for name in fns}
    for _ in range(args.rounds):
        for name in METHODS:
            wall_s, cpu_s, _ = timed(fns[name])
            times[name].append(wall_s)
            cpu[name].append(cpu_s)
    mdlm_med = statistics.median(times["mdlm"])
    mdlm_cpu = statistics.median(cpu["mdlm"])
    rows = {}
    for name in METHODS:
        out, plan = outputs[name], plans[name]
        med = statistics.median(times[name])
        rows[name] = {
            "steps": plan.steps,
            "planned_block_passes": int(plan.block_passes),
            "block_passes": out.block_passes,
            "network_calls": out.details["network_calls"],
            "iterations_per_step": out.details.get("iterations_per_step"),
            "first_call_s": first[name][0],
            "median_s": med,
            "s_per_sample": med / args.batch,
            "over_mdlm_medians": med / mdlm_med,
            "over_mdlm_paired": statistics.median(
                t / m for t, m in zip(times[name], times["mdlm"])
            ),
            "cpu_s_per_sample": statistics.median(cpu[name]) / args.batch,
            "cpu_over_mdlm_medians": statistics.median(cpu[name]) / mdlm_cpu,
            "cpu_over_mdlm_paired": statistics.median(
                t / m for t, m in zip(cpu[name], cpu["mdlm"])
            ),
            "all_seconds": times[name],
            "all_cpu_seconds": cpu[name],
        }
    return {"budget": total, "methods": rows}


def markdown(result: dict) -> str:
    meta = result["meta"]
    lines = [
        "# CoFRe's sampler against MDLM's at equal block-pass budgets",
        "",
        "Produced by",
        "",
        f"    {meta['command']}",
        "",
        f"on {meta['machine']} ({meta['cpu_count']} cores, shared; JAX {meta['jax']}, "
        f"device {meta['device']}), float32 compute, Categorical noise at float64 "
        f"resolution. MDLM-12 ({meta['params']['mdlm']} parameters, {meta['weights']['mdlm']}) "
        f"against FP-MDLM 1/1/1 fpdm ({meta['params']['cofre']} parameters, "
        f"{meta['weights']['cofre']}); width {meta['hidden']}, seq len {meta['seq_len']}, "
        f"batch {meta['batch']}. Every call is `sampling.draw_samples` with the configs' "
        "settings (MDLM: ancestral with the logits cache; CoFRe: 3SR, decreasing "
        f"schedule; `+adaptive`: per-sequence stopping at tol {meta['adaptive_tol']} with "
        f"the bank); `cofre-add`: the control with the `add` injection (F one plain "
        f"block, {meta['params']['cofre-add']} parameters, {meta['weights']['cofre-add']}), "
        "3SR at the same fixed budgets. One warm-up call each, then "
        f"{meta['rounds']} interleaved rounds ({', '.join(METHODS)}); times are medians.",
        "",
        "`/ MDLM` is the ratio of the medians, `paired` the median of the within-round "
        "ratios, for wall time and for the process's CPU time (all threads: the work, "
        "without the waits for a core on a shared machine); `passes` the block passes "
        "the batch spent (deterministic); `calls` the network calls (MDLM skips a call "
        "when the previous step revealed nothing).",
        "",
        "| budget | method | steps | passes | calls | wall s / sample | wall / MDLM | paired "
        "| CPU s / sample | CPU / MDLM | paired |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["budgets"]:
        for name, v in r["methods"].items():
            lines.append(
                f"| {r['budget']} | {name} | {v['steps']} | {v['block_passes']} | "
                f"{v['network_calls']} | {v['s_per_sample']:.4f} | "
                f"{v['over_mdlm_medians']:.3f} | {v['over_mdlm_paired']:.3f} | "
                f"{v['cpu_s_per_sample']:.4f} | {v['cpu_over_mdlm_medians']:.3f} | "
                f"{v['cpu_over_mdlm_paired']:.3f} |"
            )
    passes = result["pass_seconds"]
    lines += [
        "",
        "## Where CoFRe's extra time goes (fixed budget)",
        "",
        f"One pass at these shapes (jitted loops of passes, interleaved, medians): MDLM's "
        f"block {passes['block'] * 1e3:.3f} ms, CoFRe's F {passes['f_fpdm'] * 1e3:.3f} ms "
        f"({passes['f_fpdm'] / passes['block']:.2f}x: fpdm's fc1/fc2 mixing runs in every "
        "iteration and the block-pass budget does not count it). Split by the cofre-add "
        "control, as fractions of MDLM's wall time: the mixing (cofre - cofre-add, and "
        "as predicted by F iterations x (F pass - block pass)) and the rest (cofre-add - "
        "MDLM: the network outside the blocks, pre/post blocks and G, warm start, draw "
        "and loop control).",
        "",
        "| budget | F iterations | CoFRe - MDLM | mixing | mixing predicted | the rest |",
        "|---|---|---|---|---|---|",
    ]
    for r in result["budgets"]:
        a = r["attribution"]
        o = a["over_mdlm"]
        lines.append(
            f"| {r['budget']} | {a['f_iterations']} | {o['excess']:+.3f} | "
            f"{o['fpdm_mixing']:+.3f} | {o['fpdm_mixing_predicted']:+.3f} | {o['rest']:+.3f} |"
        )
    lines += ["", "CoFRe's iterations per step (fixed budget; adaptive):", ""]
    for r in result["budgets"]:
        m = r["methods"]
        lines.append(
            f"- B = {r['budget']}: {m['cofre']['iterations_per_step']}; "
            f"{m['cofre+adaptive']['iterations_per_step']}"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--budgets", default="96,192,384,768")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tol", type=float, default=1e-2, help="cofre+adaptive's tolerance")
    parser.add_argument("--init_noise", type=float, default=0.02)
    parser.add_argument("--mdlm_workdir", default="")
    parser.add_argument("--fp_workdir", default="")
    parser.add_argument("--out", default="sampler_vs_mdlm")
    parser.add_argument("--results_dir", default=RESULTS)
    args = parser.parse_args()
    if args.quick:
        args.budgets, args.batch, args.rounds = "24", 2, 2
        args.results_dir = tempfile.gettempdir()  # a smoke run leaves the results alone

    mdlm_cfg, fp_cfg = synthetic_mdlm.get_config(), synthetic_cofre.get_config()
    fp_cfg.stage.kind = "pretrain"  # only the model and the sampler settings matter here
    mdlm = load(mdlm_cfg, args.mdlm_workdir, args.init_noise, args.quick)
    fp = load(fp_cfg, args.fp_workdir, args.init_noise, args.quick)
    add_cfg = synthetic_cofre.get_config()
    add_cfg.stage.kind, add_cfg.model.injection = "pretrain", "add"
    fp_add = load(add_cfg, "", args.init_noise, args.quick)
    fp_config = fp[0]
    adaptive_config = dataclasses.replace(
        fp_config, sample=dataclasses.replace(fp_config.sample, adaptive_tol=args.tol)
    )
    models = {
        "mdlm": mdlm[:2],
        "cofre": fp[:2],
        "cofre+adaptive": (adaptive_config, fp[1]),
        "cofre-add": fp_add[:2],
    }
    result = {
        "meta": {
            "command": "python " + " ".join(["benchmarks/sampler_vs_mdlm.py", *sys.argv[1:]]),
            "machine": platform.platform(),
            "jax": jax.__version__,
            "device": str(jax.devices()[0]),
            "cpu_count": os.cpu_count(),
            "hidden": fp_config.model.hidden_size,
            "seq_len": fp_config.data.seq_len,
            "batch": args.batch,
            "rounds": args.rounds,
            "adaptive_tol": args.tol,
            "params": {
                "mdlm": count_params(mdlm[1]),
                "cofre": count_params(fp[1]),
                "cofre-add": count_params(fp_add[1]),
            },
            "weights": {"mdlm": mdlm[2], "cofre": fp[2], "cofre-add": fp_add[2]},
        },
        "budgets": [],
    }
    result["pass_seconds"] = pass_times(args, models)
    print("seconds per pass", result["pass_seconds"], flush=True)
    for total in (int(b) for b in args.budgets.split(",")):
        r = run_budget(args, models, total)
        r["attribution"] = attribution(r, result["pass_seconds"], args.batch)
        result["budgets"].append(r)
        summary = {n: (v["block_passes"], round(v["over_mdlm_medians"], 3))
                   for n, v in r["methods"].items()}  # fmt: skip
        print(total, summary, flush=True)
    os.makedirs(args.results_dir, exist_ok=True)
    with open(os.path.join(args.results_dir, f"{args.out}.json"), "w") as f:
        json.dump(result, f, indent=2)
    with open(os.path.join(args.results_dir, f"{args.out}.md"), "w") as f:
        f.write(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    jnp.zeros(())  # start the backend before timing anything
    main()
