"""Sample quality against the block-pass budget: MDLM, FP-MDLM, FP + L_CONS and CoFRe.

The published comparison (docs/method.md §2.8) at a scale this machine can run: the quickstart
width (D=128, byte tokens, seq 128) on the embedded Wikipedia corpus.

1. plan:  train-step times of the three training recipes, measured side by side in
          this process (medians of interleaved steps), fix the step counts that give
          every method the same training compute (in seconds of MDLM steps). Stored
          in <runs>/plan.json and reused, so a resumed benchmark trains the same runs.
2. train: through the CLI, each run resumable:
          mdlm     configs/quickstart_mdlm.py (4 blocks) at batch 16;
          fp_mdlm  configs/quickstart.py (1/1/1 blocks, SJFB);
          fp_base + fp_cons  the same FP-MDLM trained for fewer steps, then the
                   consistency stage (configs/quickstart_cofre.py) from it, so that
                   base + stage cost what fp_mdlm costs.
3. eval:  `--mode=eval` on each run: validation NELBO, then samples at every budget,
          scored by the offline scorer LM (SmolLM2-135M GGUF, docs/design.md §4). FP-MDLM and
          FP + L_CONS sample with a cold solver start; CoFRe is the fp_cons weights
          sampled with 3SR. Each budget's result is saved as it finishes.
4. report: benchmarks/results/quality_vs_budget.{json,md,png}.

Budgets are the published 96/192/384/768 block passes scaled by depth 4/12 (the MDLM
here has 4 blocks, the published one 12): 32/64/128/256, spent in 8/16/32/64 denoising
steps by every method (the published MDLM step counts).

    python benchmarks/quality_vs_budget.py            # all phases, resumable
    python benchmarks/quality_vs_budget.py --phase=report
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import jax

sys.path.insert(0, os.path.dirname(__file__))
from fp_vs_mdlm_cost import compile_step  # noqa: E402
from quickstart_compare import ROOT, run_cli, step_times, typed_config  # noqa: E402

from cofre_jax import train  # noqa: E402
from cofre_jax.models import count_params  # noqa: E402

PUBLISHED_BUDGETS = (96, 192, 384, 768)
PUBLISHED_DEPTH, DEPTH = 12, 4
BUDGETS = tuple(b * DEPTH // PUBLISHED_DEPTH for b in PUBLISHED_BUDGETS)
STEPS = tuple(b // DEPTH for b in BUDGETS)  # the published MDLM step counts: 8..64
BATCH = 16
METHODS = {  # name -> (run, warm start of the FP solver while sampling)
    "MDLM": ("mdlm", None),
    "FP-MDLM": ("fp_mdlm", "cold"),
    "FP + L_CONS": ("fp_cons", "cold"),
    "CoFRe": ("fp_cons", "3sr"),
}
CONFIG_FILES = {
    "mdlm": "configs/quickstart_mdlm.py",
    "fp_mdlm": "configs/quickstart.py",
    "fp_base": "configs/quickstart.py",
    "fp_cons": "configs/quickstart_cofre.py",
}


def log(message: str) -> None:
    print(f"[quality_vs_budget {time.strftime('%H:%M:%S')}] {message}", flush=True)


def _round(steps: float, to: int = 10) -> int:
    return max(to, int(round(steps / to)) * to)


def _train_overrides(run: str, steps: int, runs: str) -> list[str]:
    every = max(10, steps // 4)
    flags = [
        f"--config.train.batch_size={BATCH}",
        f"--config.train.num_steps={steps}",
        f"--config.train.log_every={max(10, steps // 10)}",
        f"--config.train.checkpoint_every={every}",
        f"--config.train.eval_every={every if run == 'fp_cons' else steps}",
    ]
    if run == "fp_cons":
        flags += [
            f"--config.stage.init_from={os.path.join(runs, 'fp_base')}",
            f"--config.stage.lambda_warmup_steps={max(1, steps // 2)}",
        ]
    return flags


def make_plan(runs: str, mdlm_steps: int, stage_steps: int, rounds: int) -> dict:
    """Step counts with equal training compute, from side-by-side step times."""
    path = os.path.join(runs, "plan.json")
    if os.path.exists(path):
        with open(path) as f:
            plan = json.load(f)
        log(f"plan from {path}: {plan['steps']}")
        return plan
    log("timing the train steps of MDLM, FP-MDLM and the consistency stage side by side")
    configs = {}
    for run in ("mdlm", "fp_mdlm", "fp_cons"):
        overrides = _train_overrides(run, 100, runs)
        configs[run] = (typed_config(CONFIG_FILES[run], overrides), "train")
    seconds = step_times(configs, rounds)
    ratio = {run: s / seconds["mdlm"] for run, s in seconds.items()}
    compute = mdlm_steps  # in MDLM steps
    fp_steps = _round(compute / ratio["fp_mdlm"])
    base_steps = _round(
        compute / ratio["fp_mdlm"] - stage_steps * ratio["fp_cons"] / ratio["fp_mdlm"]
    )
    steps = {"mdlm": mdlm_steps, "fp_mdlm": fp_steps, "fp_base": base_steps, "fp_cons": stage_steps}
    costs = {
        "mdlm": steps["mdlm"],
        "fp_mdlm": steps["fp_mdlm"] * ratio["fp_mdlm"],
        "fp_base + fp_cons": steps["fp_base"] * ratio["fp_mdlm"] + stage_steps * ratio["fp_cons"],
    }
    memory, params = {}, {}
    for run, (config, _) in configs.items():
        trainer = train.Trainer(config)
        params[run] = count_params(trainer.abstract_state.params)
        memory[run] = compile_step(trainer)
    plan = {
        "median_step_seconds": seconds,
        "step_time_vs_mdlm": ratio,
        "timing_rounds": rounds,
        "steps": steps,
        "compute_in_mdlm_steps": costs,
        "params": params,
        "train_step_memory": {
            run: {k: v for k, v in m.items() if k.endswith("bytes")} for run, m in memory.items()
        },
    }
    os.makedirs(runs, exist_ok=True)
    train.write_json(path, plan)
    log(f"plan: steps {steps}; step time vs MDLM {ratio}; compute {costs}")
    return plan


def train_runs(plan: dict, runs: str) -> None:
    for run in ("mdlm", "fp_mdlm", "fp_base", "fp_cons"):
        log(f"train {run}: {plan['steps'][run]} steps x {BATCH}")
        overrides = _train_overrides(run, plan["steps"][run], runs)
        run_cli(CONFIG_FILES[run], "train", os.path.join(runs, run), overrides)


def _eval_overrides(warm_start: str | None, num_samples: int, scorer: str) -> list[str]:
    flags = [
        f"--config.eval.budgets={','.join(map(str, BUDGETS))}",
        f"--config.eval.budget_steps={','.join(map(str, STEPS))}",
        f"--config.eval.num_samples={num_samples}",
        f"--config.eval.scorer={scorer}",
        f"--config.eval.report=quality_{warm_start or 'mdlm'}",
    ]
    return flags + ([f"--config.sample.warm_start={warm_start}"] if warm_start else [])


def _report_path(runs: str, run: str, warm_start: str | None) -> str:
    """The eval report of the run's latest checkpoint (a stage that stopped early ends
    before its planned step count)."""
    stem = f"quality_{warm_start or 'mdlm'}_step"
    found = [f for f in os.listdir(os.path.join(runs, run)) if f.startswith(stem)]
    if not found:
        raise SystemExit(f"no {stem}*.json in {os.path.join(runs, run)}: run --phase=eval")
    step = max(int(f[len(stem) : -len(".json")]) for f in found)
    return os.path.join(runs, run, f"{stem}{step}.json")


def eval_runs(plan: dict, runs: str, num_samples: int, scorer: str) -> None:
    for method, (run, warm_start) in METHODS.items():
        log(f"eval {method}: {run}, warm start {warm_start or '-'}")
        overrides = _train_overrides(run, plan["steps"][run], runs)
        overrides += _eval_overrides(warm_start, num_samples, scorer)
        run_cli(CONFIG_FILES[run], "eval", os.path.join(runs, run), overrides)


def _fmt(x: float) -> str:
    return f"{x:,.1f}" if x < 1e5 else f"{x:.3g}"


def write_report(plan: dict, runs: str, args) -> None:
    results = {}
    for method, (run, warm_start) in METHODS.items():
        with open(_report_path(runs, run, warm_start)) as f:
            report = json.load(f)
        with open(os.path.join(runs, run, "final_metrics.json")) as f:
            final = json.load(f)
        results[method] = {
            "run": run,
            "warm_start": warm_start,
            "train_steps": plan["steps"][run],
            "checkpoint_step": report["step"],
            "early_stopped": bool(final.get("early_stopped", False)),
            "val_nats_per_byte": report["likelihood"]["nats_per_token"],
            "val_perplexity": report["likelihood"]["perplexity"],
            "params": report["costs"]["params"],
            "budgets": {
                b: {k: v for k, v in e.items() if k not in ("samples", "entropy_per_sample")}
                | {"first_sample": e["samples"][0]}
                for b, e in report["budgets"].items()
            },
        }
        scorer = report.get("scorer", {"name": "none"})
        settings = report["settings"]
    mem = {
        run: m["temp_bytes"] + m["argument_bytes"] for run, m in plan["train_step_memory"].items()
    }
    out = {
        "command": "python benchmarks/quality_vs_budget.py",
        "machine": f"{platform.machine()} {os.cpu_count()} CPUs, {jax.devices()[0].platform}",
        "jax": jax.__version__,
        "scale": "quickstart width (D=128, 4 heads), byte tokens, seq 128, embedded "
        f"Wikipedia summaries, batch {BATCH}",
        "budgets": dict(zip(map(str, BUDGETS), PUBLISHED_BUDGETS)),
        "steps_per_budget": dict(zip(map(str, BUDGETS), STEPS)),
        "scorer": scorer,
        "samples_per_budget": settings["eval"]["num_samples"],
        "sampler": {
            k: settings["sample"][k] for k in ("schedule", "min_iterations", "top_p", "seed")
        },
        "plan": plan,
        "cost_ratios_vs_mdlm": {
            "params": {r: plan["params"][r] / plan["params"]["mdlm"] for r in plan["params"]},
            "train_step_time": plan["step_time_vs_mdlm"],
            "train_step_memory (temp + arguments, compiled)": {
                r: m / mem["mdlm"] for r, m in mem.items()
            },
        },
        "results": results,
    }
    os.makedirs(args.out, exist_ok=True)
    stem = os.path.join(args.out, "quality_vs_budget")
    with open(stem + ".json", "w") as f:
        json.dump(out, f, indent=2)
    _plot(results, stem + ".png", scorer["name"])
    lines = _markdown(out)
    with open(stem + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


def _markdown(out: dict) -> list[str]:
    results, plan = out["results"], out["plan"]
    methods = list(results)
    lines = [
        "# Sample quality against the block-pass budget (docs/method.md §2.8, at quickstart scale)",
        "",
        f"`{out['command']}` on {out['machine']} (JAX {out['jax']}).",
        f"Scale: {out['scale']}. Equal training compute: every method trains for the time of "
        f"{plan['steps']['mdlm']} MDLM steps, from train-step times measured side by side "
        "(plan below).",
        f"Scorer: {out['scorer']['name']} ({out['scorer'].get('params', 0):,} params), "
        f"{out['samples_per_budget']} samples per cell, gen PPL over all their tokens; "
        "entropy (nats) is the mean per-sample unigram entropy of the model's byte tokens. "
        f"Sampler: {out['sampler']}; FP-MDLM and FP + L_CONS start every solve cold, CoFRe "
        "uses 3SR (same weights as FP + L_CONS).",
        "",
        "Gen PPL (entropy), budget in block passes (published budget at 12 blocks):",
        "",
        "| budget (published) | steps | " + " | ".join(methods) + " |",
        "|---|---|" + "---|" * len(methods),
    ]
    for b, published in out["budgets"].items():
        cells = []
        for m in methods:
            e = results[m]["budgets"][b]
            gen = _fmt(e["gen_ppl"]) if "gen_ppl" in e else "-"
            cells.append(f"{gen} ({e['entropy']:.2f})")
        lines.append(
            f"| {b} ({published}) | {out['steps_per_budget'][b]} | " + " | ".join(cells) + " |"
        )
    lines += [
        "",
        "Scorer NLL per byte of the scored sample text (nats; lower is better). Unlike gen PPL "
        "it does not depend on how the scorer splits the text: character soup tokenises into "
        "single characters, each cheap to predict, so its per-token PPL can look good.",
        "",
        "| budget | " + " | ".join(methods) + " |",
        "|---|" + "---|" * len(methods),
    ]
    for b in out["budgets"]:
        cells = [
            f"{results[m]['budgets'][b].get('gen_nll_per_byte', float('nan')):.3f}" for m in methods
        ]
        lines.append(f"| {b} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Read the two tables together: the methods are ranked differently by them. The "
        "validation NELBO below is the likelihood of held-out text and does not depend on "
        "the sampler or the scorer.",
    ]
    largest = list(out["budgets"])[-1]
    lines += ["", f"First sample of each method at budget {largest}:", ""]
    for m in methods:
        text = results[m]["budgets"][largest]["first_sample"].replace("\n", " ").replace("|", "/")
        lines.append(f"- {m}: `{text}`")
    ratios = out["cost_ratios_vs_mdlm"]
    mem = ratios["train_step_memory (temp + arguments, compiled)"]
    lines += [
        "",
        "| method | train steps x 16 | params | val nats/byte | val PPL |",
        "|---|---|---|---|---|",
    ]
    for m in methods:
        r = results[m]
        steps = str(r["checkpoint_step"])
        if r["run"] == "fp_cons":
            steps = f"{plan['steps']['fp_base']} + {steps} stage"
            if r["early_stopped"]:
                steps += f" (early stop; {r['train_steps']} planned)"
        lines.append(
            f"| {m} | {steps} | {r['params']:,} | {r['val_nats_per_byte']:.4f} | "
            f"{r['val_perplexity']:.3f} |"
        )
    lines += [
        "",
        "Cost of a train step relative to MDLM (median of interleaved steps; memory is XLA's "
        "temp + argument bytes of the CPU compile):",
        "",
        "| run | params | step time | memory |",
        "|---|---|---|---|",
    ]
    for run in ("mdlm", "fp_mdlm", "fp_cons"):
        lines.append(
            f"| {run} | {ratios['params'][run]:.3f} | {ratios['train_step_time'][run]:.2f} | "
            f"{mem[run]:.2f} |"
        )
    return lines


def _plot(results: dict, path: str, scorer: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    panels = (
        ("gen_ppl", "gen PPL (per scorer token)"),
        ("gen_nll_per_byte", "scorer NLL, nats/byte"),
    )
    for ax, (key, label) in zip(axes, panels):
        for method, r in results.items():
            budgets = sorted(int(b) for b in r["budgets"])
            values = [r["budgets"][str(b)].get(key, float("nan")) for b in budgets]
            ax.plot(budgets, values, "o-", label=method)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("budget (block passes per sequence)")
        ax.set_ylabel(label)
    axes[0].set_yscale("log")
    axes[0].legend()
    fig.suptitle(f"Sample quality vs budget at quickstart scale, scored by {scorer}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default=os.path.join(ROOT, "runs", "quality_vs_budget"))
    parser.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results"))
    parser.add_argument(
        "--phase", default="all", choices=("all", "plan", "train", "eval", "report")
    )
    parser.add_argument(
        "--mdlm-steps", type=int, default=1200, help="training compute, in MDLM steps"
    )
    parser.add_argument("--stage-steps", type=int, default=100, help="consistency-stage steps")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved timing rounds")
    parser.add_argument("--num-samples", type=int, default=32, help="samples per method and budget")
    parser.add_argument("--scorer", default="smollm2", help="eval.scorer of the eval runs")
    args = parser.parse_args()
    runs = os.path.abspath(args.runs)
    start = time.perf_counter()
    plan = make_plan(runs, args.mdlm_steps, args.stage_steps, args.rounds)
    if args.phase in ("all", "train"):
        train_runs(plan, runs)
    if args.phase in ("all", "eval"):
        eval_runs(plan, runs, args.num_samples, args.scorer)
    if args.phase in ("all", "report"):
        write_report(plan, runs, args)
    log(f"done in {(time.perf_counter() - start) / 60:.1f} min")


if __name__ == "__main__":
    main()
