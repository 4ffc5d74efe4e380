"""The published text comparison on real text: the secondary table next to
benchmarks/quality_vs_budget.py (whose corpus has an exact likelihood).

Same faithful depths and protocol: a 12-block MDLM (configs/wiki_mdlm.py) against
FP-MDLM 1/1/1 (configs/wiki.py), both trained for the same steps on the same batches,
then the consistency stage from each (configs/wiki_cofre.py, configs/wiki_mdlm_cons.py),
sampled at the published budgets 96/192/384/768 (MDLM: 8/16/32/64 steps; each FP
method at 2 and 6 mean iterations per step, its best split reported). The corpus is
UTF-8 bytes of the offline Wikipedia summaries, rows of 62 bytes. Real text has no
exact likelihood, so samples are scored by SmolLM2-135M: NLL per scorer token and per
byte (± standard errors over samples), next to the same scorer on held-out rows of real
text of the same length (the reference), and the samples' byte unigram entropy next to
the real rows'. Per token and per byte can disagree: text that tokenises into short
pieces has a low per-token NLL and a high per-byte one.

Phases (each resumable; the JSON under <runs>/ keeps what is done): costs, train,
reference (the scorer on real rows), eval, report ->
benchmarks/results/text_quality_vs_budget.{json,md,png}.

    python benchmarks/text_quality_vs_budget.py                 # all phases (~1 h)
    python benchmarks/text_quality_vs_budget.py --phase=report  # tables and plot only
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform

import jax
import numpy as np
from budget_sweep import best_cells, evaluate_run, load_json, logger, merge_evaluations
from fp_vs_mdlm_cost import equal_step_costs
from quickstart_compare import ROOT, run_cli

from cofre_jax import tasks
from cofre_jax.config.typed import from_config_dict
from cofre_jax.evaluation import scorer as scorer_lib
from cofre_jax.io.json_file import write_json
from cofre_jax.sampling import StepCost
from configs import wiki, wiki_cofre, wiki_mdlm, wiki_mdlm_cons

BUDGETS = (96, 192, 384, 768)
ITERATIONS = (6, 2)  # mean fixed-point iterations per step of the FP sweep
# run -> (config module, config file, the run its stage starts from)
RUNS = {
    "mdlm": (wiki_mdlm, "configs/wiki_mdlm.py", None),
    "fp_mdlm": (wiki, "configs/wiki.py", None),
    "fp_cons": (wiki_cofre, "configs/wiki_cofre.py", "fp_mdlm"),
    "mdlm_cons": (wiki_mdlm_cons, "configs/wiki_mdlm_cons.py", "mdlm"),
}
# method -> (run, FP warm start or None for MDLM)
METHODS = {
    "MDLM": ("mdlm", None),
    "FP-MDLM": ("fp_mdlm", "cold"),
    "FP + L_CONS": ("fp_cons", "cold"),
    "CoFRe": ("fp_cons", "3sr"),
    "MDLM + L_CONS": ("mdlm_cons", None),
}
SCORER = "smollm2"


log = logger("text_quality_vs_budget")


def run_config(run: str, runs: str):
    module, _, parent = RUNS[run]
    cfg = module.get_config()
    if parent:
        cfg.stage.init_from = os.path.join(runs, parent)
    return from_config_dict(cfg)


def phase_costs(runs: str, rounds: int) -> dict:
    path = os.path.join(runs, "costs.json")
    if not os.path.exists(path):
        configs = {name: run_config(name, runs) for name in ("mdlm", "fp_mdlm")}
        write_json(path, equal_step_costs(configs, "mdlm", rounds, log))
    return load_json(path, {})


def phase_train(runs: str) -> None:
    for run, (_, config_file, parent) in RUNS.items():
        init = [f"--config.stage.init_from={os.path.join(runs, parent)}"] if parent else []
        run_cli(config_file, "train", os.path.join(runs, run), init)


def _score(texts: list[str], tokens_BxL: np.ndarray, config, scorer) -> dict:
    entropy_B = scorer_lib.unigram_entropy(tokens_BxL, [config.model.mask_id])
    return {
        **scorer_lib.generative_perplexity(scorer, texts, max_length=config.data.seq_len),
        "unigram_entropy": float(entropy_B.mean()),
        "unigram_entropy_se": float(entropy_B.std(ddof=1) / np.sqrt(len(entropy_B))),
    }


def phase_reference(runs: str, num_samples: int, get_scorer) -> dict:
    """The scorer on `num_samples` held-out rows of real text, decoded like samples."""
    path = os.path.join(runs, "reference.json")
    if not os.path.exists(path):
        config = run_config("mdlm", runs)
        task = tasks.get_task(config)
        tokenizer = task.tokenizer()
        rows_BxL = np.concatenate([b["tokens"] for b in task.eval_batches(0, 1)])
        if len(rows_BxL) < num_samples:
            raise SystemExit(
                f"the validation split gives {len(rows_BxL)} rows; --num-samples is "
                f"{num_samples}: raise train.eval_batches in configs/wiki_mdlm.py"
            )
        rows_BxL = rows_BxL[:num_samples]
        texts = task.decode(tokenizer, rows_BxL)
        write_json(path, _score(texts, rows_BxL, config, get_scorer()))
        log(f"reference (real rows): {load_json(path, {})['gen_nll_per_byte']:.4f} nats/byte")
    return load_json(path, {})


def _cells(method: str, config) -> list[tuple[int, int]]:
    cost = StepCost.for_model(config.model)
    if config.model.kind == "mdlm":
        return [(b, b // cost(0)) for b in BUDGETS]
    return [(b, b // cost(n)) for b in BUDGETS for n in ITERATIONS]


def _method_config(config, method: str):
    warm_start = METHODS[method][1]
    if warm_start is None:
        return config
    return dataclasses.replace(
        config, sample=dataclasses.replace(config.sample, warm_start=warm_start)
    )


def phase_eval(runs: str, num_samples: int, seed: int, get_scorer) -> None:
    for run in RUNS:
        config = run_config(run, runs)
        task = tasks.get_task(config)
        tokenizer = task.tokenizer()

        def score(cfg, drawn, task=task, tokenizer=tokenizer):
            texts = task.decode(tokenizer, drawn.tokens_BxL)
            return {**_score(texts, drawn.tokens_BxL, cfg, get_scorer()), "samples": texts[:4]}

        methods = [m for m, (r, _) in METHODS.items() if r == run]
        evaluate_run(
            os.path.join(runs, f"eval_{run}.json"),
            os.path.join(runs, run),
            config,
            [(m, b, t) for m in methods for b, t in _cells(m, config)],
            method_config=_method_config,
            score=score,
            describe=lambda s: (
                f"{s['gen_nll_per_byte']:.4f} +- {s['gen_nll_per_byte_se']:.4f} nats/byte, "
                f"{s['gen_nll_per_token']:.3f} nats/token, entropy {s['unigram_entropy']:.3f}"
            ),
            num_samples=num_samples,
            seed=seed,
            log=log,
        )


def best_by_byte(results: dict) -> dict[str, dict[int, dict]]:
    return best_cells(results["cells"].values(), "gen_nll_per_byte")


def _fmt(cell: dict | None, unit: str) -> str:
    if cell is None:
        return "-"
    return f"{cell[f'gen_nll_per_{unit}']:.3f} ± {cell[f'gen_nll_per_{unit}_se']:.3f}"


def markdown(results: dict, reference: dict, costs: dict, command: str) -> str:
    best = best_by_byte(results)
    methods = [m for m in METHODS if m in best]
    cell0 = next(iter(results["cells"].values()))
    ref = run_config("mdlm", "runs")
    lines = [
        "# Sample quality against the block-pass budget on real text (secondary table)",
        "",
        f"Command: `{command}` ({platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPU cores, JAX {jax.__version__}).",
        "",
        f"Corpus: UTF-8 bytes of the offline Wikipedia summaries, rows of "
        f"{ref.data.seq_len - 2} bytes. Scorer: {SCORER} (SmolLM2-135M). Real held-out "
        f"rows score {reference['gen_nll_per_token']:.3f} ± "
        f"{reference['gen_nll_per_token_se']:.3f} nats/token, "
        f"{reference['gen_nll_per_byte']:.3f} ± {reference['gen_nll_per_byte_se']:.3f} "
        f"nats/byte, byte unigram entropy {reference['unigram_entropy']:.3f} "
        f"({reference['texts']} rows).",
        "",
        f"{cell0['num_samples']} samples per cell; each FP method at its best split by NLL "
        f"per byte (mean iterations per step {ITERATIONS}); lower is better.",
    ]
    for unit in ("byte", "token"):
        lines += [
            "",
            f"Scorer NLL per {unit} (nats, ± standard error over samples):",
            "",
            "| budget | " + " | ".join(methods) + " |",
            "|---" * (len(methods) + 1) + "|",
        ]
        for b in BUDGETS:
            row = " | ".join(_fmt(best[m].get(b), unit) for m in methods)
            lines.append(f"| {b} | {row} |")
    lines += [
        "",
        f"Samples' byte unigram entropy (real rows: {reference['unigram_entropy']:.3f}):",
        "",
        "| budget | " + " | ".join(methods) + " |",
        "|---" * (len(methods) + 1) + "|",
    ]
    for b in BUDGETS:
        row = " | ".join(
            f"{best[m][b]['unigram_entropy']:.2f}" if b in best[m] else "-" for m in methods
        )
        lines.append(f"| {b} | {row} |")
    lines += ["", "Validation NELBO per byte (EMA parameters):", ""]
    lines += ["| run | step | nats/byte |", "|---|---|---|"]
    for run, r in results["runs"].items():
        lines.append(f"| {run} | {r['step']} | {r['val_nats_per_symbol']:.4f} |")
    ratio = costs["over_mdlm"]["fp_mdlm"]
    lines += [
        "",
        "Training cost at equal steps, FP-MDLM 1/1/1 over MDLM-12 (measured in one process): "
        f"step time {ratio['step_time']:.3f}x (medians of interleaved steps: "
        + ", ".join(f"{k} {v:.3f} s" for k, v in costs["step_seconds"].items())
        + f"), compiled temp memory {ratio['temp_bytes']:.3f}x, FLOPs {ratio['flops']:.3f}x "
        f"(scans unrolled), parameters {ratio['params']:.3f}x.",
        "",
        "Whole sweep: NLL per byte and per token ± SE, entropy, and the first sample:",
        "",
        "| method | budget | T | iterations per step | nats/byte | nats/token | entropy "
        "| first sample |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for cell in sorted(
        results["cells"].values(),
        key=lambda c: (list(METHODS).index(c["method"]), c["budget"], c["steps"]),
    ):
        its = cell["planned_iterations_per_step"]
        its = f"{its[0]}..{its[-1]}" if its[0] else "- (MDLM)"
        sample = json.dumps(cell["samples"][0])[1:-1].replace("|", "\\|")
        lines.append(
            f"| {cell['method']} | {cell['budget']} | {cell['steps']} | {its} | "
            f"{_fmt(cell, 'byte')} | {_fmt(cell, 'token')} | "
            f"{cell['unigram_entropy']:.2f} | `{sample}` |"
        )
    return "\n".join(lines) + "\n"


def plot(results: dict, reference: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for method, cells in best_by_byte(results).items():
        budgets = sorted(cells)
        for ax, unit in zip(axes[:2], ("byte", "token")):
            y = [cells[b][f"gen_nll_per_{unit}"] for b in budgets]
            err = [cells[b][f"gen_nll_per_{unit}_se"] for b in budgets]
            ax.errorbar(budgets, y, yerr=err, marker="o", capsize=3, label=method)
        axes[2].plot(budgets, [cells[b]["unigram_entropy"] for b in budgets], marker="o")
    for ax, key in zip(axes, ("gen_nll_per_byte", "gen_nll_per_token", "unigram_entropy")):
        ax.axhline(reference[key], color="k", ls="--", label="real rows")
        ax.set_xscale("log", base=2)
        ax.set_xticks(BUDGETS, [str(b) for b in BUDGETS])
        ax.set_xlabel("budget (block passes)")
    axes[0].set_ylabel(f"{SCORER} NLL (nats/byte)")
    axes[1].set_ylabel(f"{SCORER} NLL (nats/scorer token)")
    axes[2].set_ylabel("byte unigram entropy (nats)")
    axes[0].legend(fontsize=8)
    fig.suptitle("Real text (wiki bytes): MDLM-12 vs FP-MDLM 1/1/1 at equal steps")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def phase_report(runs: str, out: str, command: str) -> None:
    results = merge_evaluations(runs, RUNS)
    costs = load_json(os.path.join(runs, "costs.json"), None)
    reference = load_json(os.path.join(runs, "reference.json"), None)
    if not results["cells"] or not costs or not reference:
        raise SystemExit("nothing to report yet: run the costs, train, reference and eval phases")
    os.makedirs(out, exist_ok=True)
    payload = {
        "command": command,
        "budgets": BUDGETS,
        "iterations_swept": ITERATIONS,
        "scorer": SCORER,
        "reference": reference,
        "costs": costs,
        "runs": results["runs"],
        "best": {
            m: {str(b): c for b, c in cells.items()} for m, cells in best_by_byte(results).items()
        },
        "cells": results["cells"],
    }
    write_json(os.path.join(out, "text_quality_vs_budget.json"), payload)
    with open(os.path.join(out, "text_quality_vs_budget.md"), "w") as f:
        f.write(markdown(results, reference, costs, command))
    plot(results, reference, os.path.join(out, "text_quality_vs_budget.png"))
    log(f"wrote {out}/text_quality_vs_budget.{{json,md,png}}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default=os.path.join(ROOT, "runs", "quality_vs_budget", "wiki"))
    parser.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results"))
    phases = ("all", "costs", "train", "reference", "eval", "report")
    parser.add_argument("--phase", choices=phases, default="all")
    parser.add_argument("--num-samples", type=int, default=64)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--rounds", type=int, default=7, help="interleaved timing rounds")
    args = parser.parse_args()
    if args.num_samples < 2:
        raise SystemExit(f"--num-samples must be >= 2 (standard errors); got {args.num_samples}")
    runs = os.path.abspath(args.runs)
    os.makedirs(runs, exist_ok=True)
    command = "python benchmarks/text_quality_vs_budget.py"
    if args.num_samples != 64 or args.seed != 1234:
        command += f" --num-samples={args.num_samples} --seed={args.seed}"
    if args.phase in ("all", "costs"):
        phase_costs(runs, args.rounds)
    if args.phase in ("all", "train"):
        phase_train(runs)
    loaded = {}

    def scorer():
        if "scorer" not in loaded:
            log(f"loading scorer {SCORER!r}")
            loaded["scorer"] = scorer_lib.load_scorer(SCORER, run_config("mdlm", runs).data)
        return loaded["scorer"]

    if args.phase in ("all", "reference"):
        phase_reference(runs, args.num_samples, scorer)
    if args.phase in ("all", "eval"):
        phase_eval(runs, args.num_samples, args.seed, scorer)
    if args.phase in ("all", "report"):
        phase_report(runs, args.out, command)


if __name__ == "__main__":
    main()
