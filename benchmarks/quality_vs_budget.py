"""The published text comparison (docs/method.md §2.8) at a faithful small scale, scored
by an exact likelihood.

Corpus: the synthetic sparse-HMM corpus (cofre_jax/data/synthetic.py), whose true
likelihood is computable, so a sample's quality is its true NLL per token and the
measure is the excess of that NLL over the corpus's entropy (0 = as good as the
generator). Models keep the published depths, scaled down only in width, row length
and steps: a 12-block MDLM (configs/synthetic_mdlm.py) against FP-MDLM 1/1/1
(configs/synthetic.py), both trained for the same number of steps on the same batches
(the published protocol), then the consistency stage from each
(configs/synthetic_cofre.py, configs/synthetic_mdlm_cons.py). Budgets are the published
96/192/384/768 block passes, unscaled: MDLM spends them in 8/16/32/64 steps; every FP
method is swept over the split between steps and iterations (mean iterations per step
N in ITERATIONS, T = budget // (2 + N) steps, decreasing schedule), and the best split
is reported next to the whole sweep.

Phases (each resumable; the JSON under <runs>/ keeps what is done):
1. costs: FP/MDLM train-step wall time (interleaved medians, this process), compiled
   temp memory and FLOPs (scans unrolled so FLOPs count every iteration).
2. train: the four runs through the CLI (each resumes from its checkpoints).
3. eval: per run, validation NELBO per symbol against the entropy; per method, budget
   and split, `--num-samples` samples scored by the oracle, saved after each cell.
4. report: benchmarks/results/quality_vs_budget.{json,md,png}.

    python benchmarks/quality_vs_budget.py                 # all phases (make quality)
    python benchmarks/quality_vs_budget.py --phase=report  # tables and plot only
    python benchmarks/quality_vs_budget.py --ablations     # also ABLATION_RUNS (~1 h more)
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform

import jax
from budget_sweep import best_cells, evaluate_run, load_json, logger, merge_evaluations
from fp_vs_mdlm_cost import equal_step_costs
from quickstart_compare import ROOT, run_cli

from cofre_jax import train
from cofre_jax.config.typed import from_config_dict
from cofre_jax.data import synthetic
from cofre_jax.evaluation import oracle
from cofre_jax.sampling import StepCost
from configs import synthetic as synthetic_fp
from configs import synthetic_cofre, synthetic_mdlm, synthetic_mdlm_cons

BUDGETS = (96, 192, 384, 768)
ITERATIONS = (10, 6, 4, 2)  # mean fixed-point iterations per step of the FP sweep
# run -> (config module, config file, the run its stage starts from, field overrides)
RUNS = {
    "mdlm": (synthetic_mdlm, "configs/synthetic_mdlm.py", None, {}),
    "fp_mdlm": (synthetic_fp, "configs/synthetic.py", None, {}),
    "fp_cons": (synthetic_cofre, "configs/synthetic_cofre.py", "fp_mdlm", {}),
    "mdlm_cons": (synthetic_mdlm_cons, "configs/synthetic_mdlm_cons.py", "mdlm", {}),
    # Ablation: the same stage (steps, lr, early-stop rule) with lambda = 0, i.e. more
    # steps of the plain loss. Separates what L_CONS does from what the extra steps do.
    "fp_more": (
        synthetic_cofre,
        "configs/synthetic_cofre.py",
        "fp_mdlm",
        {"stage.lambda_max": 0.0},
    ),
    "mdlm_more": (
        synthetic_mdlm_cons,
        "configs/synthetic_mdlm_cons.py",
        "mdlm",
        {"stage.lambda_max": 0.0},
    ),
}
# method -> (run, FP warm start or None for MDLM, sample-section overrides)
METHODS = {
    "MDLM": ("mdlm", None, {}),
    "FP-MDLM": ("fp_mdlm", "cold", {}),
    "FP + reuse": ("fp_mdlm", "reuse", {}),
    "FP + L_CONS": ("fp_cons", "cold", {}),
    "CoFRe": ("fp_cons", "3sr", {}),
    "CoFRe + adaptive": ("fp_cons", "3sr", {"adaptive_tol": 0.01}),
    "MDLM + L_CONS": ("mdlm_cons", None, {}),
    "FP + stage, lambda=0 (3SR)": ("fp_more", "3sr", {}),
    "MDLM + stage, lambda=0": ("mdlm_more", None, {}),
}

# Ablations (`--ablations`, about 1 h more): why the published ordering does or does not
# appear. Each changes one thing of a run above; its methods are swept over fewer
# splits (ABLATION_ITERATIONS) and compared with their reference on the same splits.
ABLATION_RUNS = {
    # SJFB against more no-grad iterations: the same mean forward count (6.5 F calls),
    # but N_ng ~ U{3..8} and the gradient through one step (JFB) instead of U{3..6}.
    "fp_jfb": (
        synthetic_fp,
        "configs/synthetic.py",
        None,
        {
            "fixed_point.nograd_min": 3,
            "fixed_point.nograd_max": 8,
            "fixed_point.grad_min": 1,
            "fixed_point.grad_max": 1,
        },
    ),
    # The consistency target before the final norm (raw MSE of the last block's output)
    # instead of the standardised states the final LayerNorm would see.
    "fp_cons_raw": (
        synthetic_cofre,
        "configs/synthetic_cofre.py",
        "fp_mdlm",
        {"stage.divergence": "mse"},
    ),
    "fp_cons_lam03": (
        synthetic_cofre,
        "configs/synthetic_cofre.py",
        "fp_mdlm",
        {"stage.lambda_max": 0.3},
    ),
    "fp_cons_lam003": (
        synthetic_cofre,
        "configs/synthetic_cofre.py",
        "fp_mdlm",
        {"stage.lambda_max": 0.03},
    ),
    # The control of fp_cons_lam003: the MDLM stage at the same lambda.
    "mdlm_cons_lam003": (
        synthetic_mdlm_cons,
        "configs/synthetic_mdlm_cons.py",
        "mdlm",
        {"stage.lambda_max": 0.03},
    ),
    # Stage length: all 300 steps, the early-stop rule off.
    "fp_cons_long": (
        synthetic_cofre,
        "configs/synthetic_cofre.py",
        "fp_mdlm",
        {"stage.early_stop_ratio": 0.0},
    ),
}
# ablation method -> (run, warm start, overrides, the method it is compared with)
ABLATION_METHODS = {
    "FP-MDLM, JFB-style (N_ng ~ U{3..8}, N_g = 1)": ("fp_jfb", "cold", {}, "FP-MDLM"),
    "CoFRe, raw MSE before the final norm": ("fp_cons_raw", "3sr", {}, "CoFRe"),
    "CoFRe, lambda 0.3": ("fp_cons_lam03", "3sr", {}, "CoFRe"),
    "CoFRe, lambda 0.03": ("fp_cons_lam003", "3sr", {}, "CoFRe"),
    "CoFRe, 300 stage steps (no early stop)": ("fp_cons_long", "3sr", {}, "CoFRe"),
    "MDLM + L_CONS, lambda 0.03": ("mdlm_cons_lam003", None, {}, "MDLM + L_CONS"),
}
ABLATION_ITERATIONS = (6, 2)
# Block passes of one FP denoiser call: every FP run is configs/synthetic.py's 1/1/1.
FP_COST = StepCost.for_model(from_config_dict(synthetic_fp.get_config()).model)
ALL_RUNS = {**RUNS, **ABLATION_RUNS}
ALL_METHODS = {**METHODS, **{m: spec[:3] for m, spec in ABLATION_METHODS.items()}}


log = logger("quality_vs_budget")


def _overrides(run: str, runs: str) -> list[str]:
    _, _, parent, fields = ALL_RUNS[run]
    flags = [f"--config.{field}={value}" for field, value in fields.items()]
    return flags + ([f"--config.stage.init_from={os.path.join(runs, parent)}"] if parent else [])


def run_config(run: str, runs: str):
    module, _, parent, fields = ALL_RUNS[run]
    cfg = module.get_config()
    if parent:
        cfg.stage.init_from = os.path.join(runs, parent)
    for field, value in fields.items():
        section, name = field.split(".")
        cfg[section][name] = value
    return from_config_dict(cfg)


def phase_costs(runs: str, rounds: int) -> dict:
    path = os.path.join(runs, "costs.json")
    if os.path.exists(path):
        return load_json(path, {})
    configs = {name: run_config(name, runs) for name in ("mdlm", "fp_mdlm")}
    costs = equal_step_costs(configs, "mdlm", rounds, log)
    costs["fp_over_mdlm"] = costs.pop("over_mdlm")["fp_mdlm"]
    train.write_json(path, costs)
    return costs


def phase_train(runs: str, names: tuple[str, ...]) -> None:
    for run in names:
        config_file = ALL_RUNS[run][1]
        run_cli(config_file, "train", os.path.join(runs, run), _overrides(run, runs))


def _cells(method: str, config) -> list[tuple[int, int]]:
    """(budget, steps) cells of a method: MDLM's T is fixed by its depth; FP sweeps N."""
    cost = StepCost.for_model(config.model)
    if config.model.kind == "mdlm":
        return [(b, b // cost(0)) for b in BUDGETS]
    iterations = ABLATION_ITERATIONS if method in ABLATION_METHODS else ITERATIONS
    return [(b, b // cost(n)) for b in BUDGETS for n in iterations]


def _method_config(config, method: str):
    _, warm_start, overrides = ALL_METHODS[method]
    sample = config.sample
    if warm_start is not None:
        sample = dataclasses.replace(sample, warm_start=warm_start, **overrides)
    return dataclasses.replace(config, sample=sample)


def _oracle_scores(config, drawn) -> dict:
    scores = oracle.score_samples(config.data, drawn.tokens_BxL)
    scores.pop("oracle_nll_per_sample")
    return scores


def phase_eval(runs: str, num_samples: int, seed: int, names: tuple[str, ...]) -> None:
    """Evaluates each of `names` into <runs>/eval_<run>.json, saved after every cell;
    runs are independent, so several processes can share the work."""
    for run in names:
        config = run_config(run, runs)
        methods = [m for m, spec in ALL_METHODS.items() if spec[0] == run]
        evaluate_run(
            os.path.join(runs, f"eval_{run}.json"),
            os.path.join(runs, run),
            config,
            [(m, b, t) for m in methods for b, t in _cells(m, config)],
            method_config=_method_config,
            score=_oracle_scores,
            describe=lambda s: (
                f"excess {s['excess_nll']:.4f} +- {s['excess_nll_se']:.4f}, entropy "
                f"{s['sample_unigram_entropy']:.3f}"
            ),
            num_samples=num_samples,
            seed=seed,
            log=log,
        )


def best_by_excess(results: dict) -> dict[str, dict[int, dict]]:
    return best_cells(results["cells"].values(), "excess_nll")


def ablation_lines(results: dict) -> list[str]:
    """Each ablation next to the method it changes, both at their best split among the
    ablation sweep's (ABLATION_ITERATIONS), so they are compared on the same cells."""
    methods = [
        m for m in ABLATION_METHODS if any(c["method"] == m for c in results["cells"].values())
    ]
    if not methods:
        return []

    def best(method: str, budget: int) -> dict | None:
        steps = {budget // FP_COST(n) for n in ABLATION_ITERATIONS}
        cells = [
            c
            for c in results["cells"].values()
            if c["method"] == method
            and c["budget"] == budget
            # MDLM cells have one split (no iterations per step)
            and (c["steps"] in steps or not c["planned_iterations_per_step"][0])
        ]
        return min(cells, key=lambda c: c["excess_nll"]) if cells else None

    lines = [
        "",
        "Ablations (`--ablations`): excess NLL ± SE (entropy), each next to the method it "
        f"changes, both at their best of {len(ABLATION_ITERATIONS)} splits (mean iterations "
        f"per step {ABLATION_ITERATIONS}); the last column is the ablation run's validation "
        "NELBO excess per symbol (its step):",
        "",
        "| ablation | compared with | " + " | ".join(str(b) for b in BUDGETS) + " | val excess |",
        "|---" * (len(BUDGETS) + 3) + "|",
    ]
    for method in methods:
        run, _, _, reference = ABLATION_METHODS[method]
        pairs = [f"{_fmt(best(method, b))} vs {_fmt(best(reference, b))}" for b in BUDGETS]
        r = results["runs"].get(run)
        entropy = next(iter(results["cells"].values()))["entropy_rate"]
        val = f"{r['val_nats_per_symbol'] - entropy:.3f} ({r['step']})" if r else "-"
        lines.append(f"| {method} | {reference} | " + " | ".join(pairs) + f" | {val} |")
    return lines


def _fmt(cell: dict | None) -> str:
    if cell is None:
        return "-"
    return (
        f"{cell['excess_nll']:.3f} ± {cell['excess_nll_se']:.3f} "
        f"({cell['sample_unigram_entropy']:.2f})"
    )


def markdown(results: dict, costs: dict, command: str) -> str:
    best = best_by_excess(results)
    methods = [m for m in METHODS if m in best]  # the ablations have their own table
    any_cell = next(iter(results["cells"].values()))
    ref = run_config("mdlm", "runs")
    spec = synthetic.HMMSpec.from_data_config(ref.data)
    lines = [
        "# Sample quality against the block-pass budget (exact likelihood)",
        "",
        f"Command: `{command}` ({platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPU cores, JAX {jax.__version__}).",
        "",
        f"Corpus: synthetic sparse HMM {dataclasses.asdict(spec)} (generator v"
        f"{synthetic.GENERATOR_VERSION}), rows of {ref.data.seq_len - 2} symbols. Entropy "
        f"{any_cell['entropy_rate']:.4f} ± {any_cell['entropy_rate_se']:.4f} nats/token; "
        f"the data's per-row unigram entropy {any_cell['data_unigram_entropy']:.3f}.",
        "",
        "Excess NLL (nats/token) of samples over the entropy, ± standard error, with the "
        "samples' unigram entropy in parentheses; best split of each FP method "
        f"(mean iterations per step swept over {ITERATIONS}); lower is better.",
        "",
        "| budget | " + " | ".join(methods) + " |",
        "|---" * (len(methods) + 1) + "|",
    ]
    for b in BUDGETS:
        lines.append(f"| {b} | " + " | ".join(_fmt(best[m].get(b)) for m in methods) + " |")
    lines += ["", "Validation NELBO per symbol (upper bound on the true NLL; entropy above):", ""]
    lines += ["| run | step | nats/symbol | excess over entropy |", "|---|---|---|---|"]
    for run, r in results["runs"].items():
        excess = r["val_nats_per_symbol"] - any_cell["entropy_rate"]
        lines.append(f"| {run} | {r['step']} | {r['val_nats_per_symbol']:.4f} | {excess:.4f} |")
    lines += ablation_lines(results)
    ratio = costs["fp_over_mdlm"]
    lines += [
        "",
        "Training cost at equal steps, FP-MDLM 1/1/1 over MDLM-12 (measured in one process): "
        f"step time {ratio['step_time']:.3f}x (medians of interleaved steps: "
        + ", ".join(f"{k} {v:.3f} s" for k, v in costs["step_seconds"].items())
        + "), compiled temp memory "
        f"{ratio['temp_bytes']:.3f}x, FLOPs {ratio['flops']:.3f}x (scans unrolled), "
        f"parameters {ratio['params']:.3f}x.",
        "",
        f"{any_cell['num_samples']} samples per cell, sampler seed shared by every cell. The "
        "best split is picked on the same samples it reports (a small optimistic bias for "
        "the FP methods, which get four tries); the whole sweep follows.",
        "",
        "Whole sweep (FP methods): excess NLL ± SE (entropy) per budget and steps T:",
        "",
        "| method | budget | T | iterations per step | excess NLL | entropy | passes used |",
        "|---|---|---|---|---|---|---|",
    ]
    for cell in sorted(
        results["cells"].values(),
        key=lambda c: (list(ALL_METHODS).index(c["method"]), c["budget"], c["steps"]),
    ):
        its = cell["planned_iterations_per_step"]
        its = f"{its[0]}..{its[-1]}" if its[0] else "- (MDLM)"
        lines.append(
            f"| {cell['method']} | {cell['budget']} | {cell['steps']} | "
            f"{its} | {cell['excess_nll']:.3f} ± {cell['excess_nll_se']:.3f} | "
            f"{cell['sample_unigram_entropy']:.2f} | {cell['block_passes_used']} |"
        )
    return "\n".join(lines) + "\n"


def plot(results: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    best = best_by_excess(results)
    fig, (ax_nll, ax_ent) = plt.subplots(1, 2, figsize=(11, 4.2))
    for method, cells in best.items():
        if method not in METHODS:  # ablations are in the table only
            continue
        budgets = sorted(cells)
        y = [cells[b]["excess_nll"] for b in budgets]
        err = [cells[b]["excess_nll_se"] for b in budgets]
        ax_nll.errorbar(budgets, y, yerr=err, marker="o", capsize=3, label=method)
        ax_ent.plot(budgets, [cells[b]["sample_unigram_entropy"] for b in budgets], marker="o")
    any_cell = next(iter(results["cells"].values()))
    ax_ent.axhline(any_cell["data_unigram_entropy"], color="k", ls="--", label="data")
    for ax in (ax_nll, ax_ent):
        ax.set_xscale("log", base=2)
        ax.set_xticks(BUDGETS, [str(b) for b in BUDGETS])
        ax.set_xlabel("budget (block passes)")
    ax_nll.set_ylabel("excess NLL over the entropy (nats/token)")
    ax_ent.set_ylabel("sample unigram entropy (nats)")
    ax_nll.legend(fontsize=8)
    ax_ent.legend(fontsize=8)
    fig.suptitle("Synthetic corpus, exact likelihood: MDLM-12 vs FP-MDLM 1/1/1 at equal steps")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def phase_report(runs: str, out: str, command: str) -> None:
    results = merge_evaluations(runs, ALL_RUNS)
    costs = load_json(os.path.join(runs, "costs.json"), None)
    if not results or not results["cells"] or not costs:
        raise SystemExit("nothing to report yet: run the costs, train and eval phases first")
    os.makedirs(out, exist_ok=True)
    payload = {
        "command": command,
        "budgets": BUDGETS,
        "iterations_swept": ITERATIONS,
        "costs": costs,
        "runs": results["runs"],
        "best": {
            m: {str(b): c for b, c in cells.items()} for m, cells in best_by_excess(results).items()
        },
        "cells": results["cells"],
    }
    train.write_json(os.path.join(out, "quality_vs_budget.json"), payload)
    with open(os.path.join(out, "quality_vs_budget.md"), "w") as f:
        f.write(markdown(results, costs, command))
    plot(results, os.path.join(out, "quality_vs_budget.png"))
    log(f"wrote {out}/quality_vs_budget.{{json,md,png}}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--runs", default=os.path.join(ROOT, "runs", "quality_vs_budget", "synthetic")
    )
    parser.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results"))
    parser.add_argument(
        "--phase", choices=("all", "costs", "train", "eval", "report"), default="all"
    )
    parser.add_argument("--num-samples", type=int, default=128)
    parser.add_argument(
        "--only", default="", help="train and eval phases: comma separated runs (default: all)"
    )
    parser.add_argument(
        "--ablations", action="store_true", help="also train and evaluate ABLATION_RUNS"
    )
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--rounds", type=int, default=7, help="interleaved timing rounds")
    args = parser.parse_args()
    runs = os.path.abspath(args.runs)
    os.makedirs(runs, exist_ok=True)
    # Every phase is one step of the same resumable benchmark: record that command.
    command = "python benchmarks/quality_vs_budget.py"
    if args.num_samples != 128 or args.seed != 1234:
        command += f" --num-samples={args.num_samples} --seed={args.seed}"
    if args.phase in ("all", "costs"):
        phase_costs(runs, args.rounds)
    names = tuple(r for r in args.only.split(",") if r)
    unknown = sorted(set(names) - set(ALL_RUNS))
    if unknown:
        raise SystemExit(f"unknown run {unknown[0]!r}; runs: {tuple(ALL_RUNS)}")
    names = names or tuple(ALL_RUNS if args.ablations else RUNS)
    if args.phase in ("all", "train"):
        phase_train(runs, names)
    if args.phase in ("all", "eval"):
        phase_eval(runs, args.num_samples, args.seed, names)
    if args.phase in ("all", "report"):
        phase_report(runs, args.out, command)


if __name__ == "__main__":
    main()
