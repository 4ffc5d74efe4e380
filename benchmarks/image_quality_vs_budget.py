"""The published image comparison (docs/method.md §2.7-2.8) at a scale 2 CPU cores can
run: Fashion-MNIST as a 7 x 7 grid of VQ codes, in-domain FID and IS.

Models keep the published depths and shrink only in width and steps: MaskGIT-24,
MaskGIT-12 and FP-MaskGIT 4/1/4, all trained for the same number of steps on the same
batches (the published protocol), then CoFRe's consistency stage from FP-MaskGIT.
Methods: MaskGIT-24, MaskGIT-12, FP-MaskGIT with cold starts, FP-MaskGIT with 3SR,
CoFRe (the stage's model with 3SR) and ablations (the same stage at lambda = 0 and
0.03, CoFRe's model with cold starts), each at the published budgets 48/96/192/384
block passes of the conditional network (guidance doubles the real cost for every
method alike; the report gives both).
MaskGIT spends a budget in budget / depth steps; the FP methods in budget / (8 + N)
steps of N = FP_ITERATIONS mean iterations (decreasing schedule).

Quality is the in-domain FID and IS of class-balanced samples, from the penultimate
features and the logits of a small Fashion-MNIST classifier the library trains
(cofre_jax/evaluation/domain_classifier.py): it is not Inception FID and is never called
FID alone. Costs: each model's train-step wall time (interleaved medians, this process)
and the compiled step's temp memory and FLOPs, as ratios to MaskGIT-24 (published for
FP-MaskGIT: -48.6% time, -50.7% memory).

Phases (each resumable; what is done is kept under <runs>/):
1. costs   2. train (tokenizer, then the models)   3. eval (per method and budget)
4. seeds (SEED_METHODS sampled again at --second-seed: the FID's noise)
5. report: benchmarks/results/image_quality_vs_budget.{json,md,png} and sample grids.

    python benchmarks/image_quality_vs_budget.py                 # all phases
    python benchmarks/image_quality_vs_budget.py --phase=report  # tables and plot only
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import shutil

import jax
from budget_sweep import load_json, logger
from fp_vs_mdlm_cost import equal_step_costs
from quickstart_compare import ROOT

from cofre_jax import modes
from cofre_jax.config.typed import from_config_dict
from cofre_jax.io.json_file import write_json
from configs import quickstart_images, quickstart_images_cofre

BUDGETS = (48, 96, 192, 384)
FP_ITERATIONS = 2  # mean fixed-point iterations per step of the FP methods' split
# The common scale: every run has this width, batch and step count.
SCALE = {
    "model.hidden_size": 64,
    "model.num_heads": 4,
    "train.batch_size": 32,
    "train.num_steps": 600,
    "train.eval_every": 300,
    "train.checkpoint_every": 200,
    "train.log_every": 100,
    # The tokenizer of configs/quickstart_images.py trained longer, shared by every run.
    "data.tokenizer.steps": 1500,
}
# run -> (config module, the run its stage starts from, field overrides)
RUNS = {
    "maskgit24": (quickstart_images, None, {"model.kind": "maskgit", "model.num_layers": 24}),
    "maskgit12": (quickstart_images, None, {"model.kind": "maskgit", "model.num_layers": 12}),
    "fp_maskgit": (quickstart_images, None, {"model.k_pre": 4, "model.k_post": 4}),
    "cofre": (
        quickstart_images_cofre,
        "fp_maskgit",
        {"model.k_pre": 4, "model.k_post": 4, "train.num_steps": 200},
    ),
    # Ablation: the same stage with lambda = 0 (the same 200 steps at the stage's lr, no
    # L_CONS), which tells the consistency loss apart from the extra training.
    "stage_lambda0": (
        quickstart_images_cofre,
        "fp_maskgit",
        {"model.k_pre": 4, "model.k_post": 4, "train.num_steps": 200, "stage.lambda_max": 0.0},
    ),
    # Ablation: a third of the published lambda, to see whether the harm scales with it.
    "stage_lambda003": (
        quickstart_images_cofre,
        "fp_maskgit",
        {"model.k_pre": 4, "model.k_post": 4, "train.num_steps": 200, "stage.lambda_max": 0.03},
    ),
}
# method -> (run, sample.warm_start or None for MaskGIT)
METHODS = {
    "MaskGIT-24": ("maskgit24", None),
    "MaskGIT-12": ("maskgit12", None),
    "FP-MaskGIT (cold)": ("fp_maskgit", "cold"),
    "FP + 3SR": ("fp_maskgit", "3sr"),
    "CoFRe": ("cofre", "3sr"),
    "Stage at lambda 0, 3SR (ablation)": ("stage_lambda0", "3sr"),
    "Stage at lambda 0.03, 3SR (ablation)": ("stage_lambda003", "3sr"),
    # CoFRe's model with cold starts: the stage's model apart from the 3SR sampler.
    "CoFRe model, cold starts (ablation)": ("cofre", "cold"),
}
COST_RUNS = ("maskgit24", "maskgit12", "fp_maskgit")
# Evaluated again at a second sampling seed (phase "seeds"): how far a 500-sample
# in-domain FID moves with the seed alone, next to the gaps between these methods.
SEED_METHODS = ("FP + 3SR", "CoFRe", "Stage at lambda 0, 3SR (ablation)")


log = logger("image_quality_vs_budget")


def run_config(run: str, runs: str, **extra):
    module, parent, fields = RUNS[run]
    cfg = module.get_config()
    cfg.data.tokenizer_path = os.path.join(runs, "tokenizer")
    if parent:
        cfg.stage.init_from = os.path.join(runs, parent)
    stage_scale = {k: v for k, v in SCALE.items() if not (parent and k.startswith("train."))}
    for field, value in {**stage_scale, **fields, **extra}.items():
        *path, name = field.split(".")
        section = cfg
        for part in path:
            section = section[part]
        section[name] = value
    return from_config_dict(cfg)


def phase_costs(runs: str, rounds: int) -> dict:
    path = os.path.join(runs, "costs.json")
    if os.path.exists(path):
        return load_json(path, {})
    configs = {name: run_config(name, runs) for name in COST_RUNS}
    costs = equal_step_costs(configs, "maskgit24", rounds, log)
    write_json(path, costs)
    return costs


def phase_train(runs: str) -> None:
    tokenizer = run_config("fp_maskgit", runs)
    modes.run("train_tokenizer", tokenizer, tokenizer.data.tokenizer_path)
    for run in RUNS:
        log(f"training {run}")
        modes.run("train", run_config(run, runs), os.path.join(runs, run))


def method_slug(method: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in method.lower()).strip("_").replace("__", "_")


def seed_report(method: str, seed: int) -> str:
    return f"{method_slug(method)}_seed{seed}"


def method_config(method: str, runs: str, num_samples: int, seed: int, report: str = ""):
    """The run's config with the method's sampler and the benchmark's budgets and splits."""
    run, warm_start = METHODS[method]
    config = run_config(run, runs)
    m = config.model
    per_step = m.num_layers if warm_start is None else m.k_pre + m.k_post + FP_ITERATIONS
    sample = dataclasses.replace(config.sample, seed=seed)
    if warm_start is not None:
        sample = dataclasses.replace(sample, warm_start=warm_start)
    evaluation = dataclasses.replace(
        config.eval,
        budgets=BUDGETS,
        budget_steps=tuple(b // per_step for b in BUDGETS),
        num_samples=num_samples,
        report=report or method_slug(method),
    )
    return dataclasses.replace(config, sample=sample, eval=evaluation)


def phase_eval(runs: str, num_samples: int, seed: int) -> None:
    for method, (run, _) in METHODS.items():
        config = method_config(method, runs, num_samples, seed)
        log(f"{method}: budgets {BUDGETS} in {config.eval.budget_steps} steps")
        modes.run("eval", config, os.path.join(runs, run))


def phase_seeds(runs: str, num_samples: int, seed: int) -> None:
    for method in SEED_METHODS:
        report = seed_report(method, seed)
        config = method_config(method, runs, num_samples, seed, report=report)
        log(f"{method}: again at sampling seed {seed}")
        modes.run("eval", config, os.path.join(runs, METHODS[method][0]))


def load_results(runs: str, seed: int | None = None) -> dict[str, dict]:
    """method -> its eval report (the latest checkpoint's); with `seed`, the reports of
    SEED_METHODS at that second seed."""
    results = {}
    for method, (run, _) in METHODS.items():
        if seed is not None and method not in SEED_METHODS:
            continue
        slug = method_slug(method) if seed is None else seed_report(method, seed)
        workdir, stem = os.path.join(runs, run), f"{slug}_images"
        names = os.listdir(workdir) if os.path.isdir(workdir) else []
        found = sorted(p for p in names if p.startswith(stem) and p.endswith(".json"))
        if found:
            results[method] = load_json(os.path.join(workdir, found[-1]), None)
    return results


def _cell(report: dict, budget: int) -> dict | None:
    return report.get("budgets", {}).get(str(budget))


def seed_lines(results: dict, second: dict, seeds: tuple[int, int]) -> list[str]:
    """The seed table: FID at both seeds and their difference, per method and budget."""
    if not second:
        return []
    lines = [
        "",
        f"The same models sampled again (seed {seeds[1]} against {seeds[0]}), in-domain FID "
        "at each seed and the difference:",
        "",
        "| method | " + " | ".join(f"FID @ {b}" for b in BUDGETS) + " |",
        "|---|" + "---|" * len(BUDGETS),
    ]
    for method, report in second.items():
        cells = []
        for b in BUDGETS:
            a, c = _cell(results[method], b), _cell(report, b)
            if a and c:
                fa, fc = a["fid"]["value"], c["fid"]["value"]
                cells.append(f"{fa:.2f} / {fc:.2f} ({fc - fa:+.2f})")
            else:
                cells.append("-")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return lines


def markdown(results: dict, costs: dict, command: str, seed_table: list[str] = ()) -> str:
    any_report = next(iter(results.values()))
    ref = any_report["reference"]
    lines = [
        "# Image quality against budget (Fashion-MNIST, in-domain FID and IS)",
        "",
        f"Command: `{command}` ({platform.processor() or platform.machine()}, "
        f"{jax.devices()[0].platform}). Same width ({SCALE['model.hidden_size']}), batch "
        f"({SCALE['train.batch_size']}) and steps ({SCALE['train.num_steps']}) for every model; "
        f"{any_report['num_samples']} class-balanced samples per cell; budgets count the "
        "conditional network's block passes (guidance doubles them for every method).",
        "",
        f"Distance: {any_report['features']['distance']}; score: {any_report['features']['score']}"
        f" (classifier test accuracy {any_report['features']['classifier_test_accuracy']:.4f}).",
        f"Reference, real test images against the other half of the test split: "
        f"{ref['fid']['value']:.3f} in-domain FID, {ref['score']['mean']:.3f} in-domain IS.",
        "",
        "| method | "
        + " | ".join(f"FID @ {b}" for b in BUDGETS)
        + " | "
        + " | ".join(f"IS @ {b}" for b in BUDGETS)
        + " |",
        "|---|" + "---|" * (2 * len(BUDGETS)),
    ]
    for method, report in results.items():
        cells = [_cell(report, b) for b in BUDGETS]
        fids = [f"{c['fid']['value']:.2f} ({c['steps']} st)" if c else "-" for c in cells]
        scores = [
            f"{c['score']['mean']:.2f} +- {c['score']['std']:.2f}" if c else "-" for c in cells
        ]
        lines.append(f"| {method} | " + " | ".join(fids + scores) + " |")
    lines += seed_table
    ratios = costs["over_maskgit24"]
    lines += [
        "",
        "Train step against MaskGIT-24 at this scale (interleaved medians; compiled step, "
        "scans unrolled):",
        "",
        "| model | step time | temp memory | FLOPs | params |",
        "|---|---|---|---|---|",
    ]
    for name, r in ratios.items():
        lines.append(
            f"| {name} | {r['step_time']:.3f}x | {r['temp_bytes']:.3f}x | {r['flops']:.3f}x | "
            f"{r['params']:.3f}x |"
        )
    lines += [
        "",
        "Published (MaskGIT-Large vs FP-MaskGIT, ImageNette): -48.6% time, -50.7% memory.",
        "",
    ]
    return "\n".join(lines)


def plot(results: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_fid, ax_is) = plt.subplots(1, 2, figsize=(10, 4))
    for method, report in results.items():
        cells = [(b, _cell(report, b)) for b in BUDGETS]
        cells = [(b, c) for b, c in cells if c]
        ax_fid.plot(
            [b for b, _ in cells], [c["fid"]["value"] for _, c in cells], "o-", label=method
        )
        ax_is.plot(
            [b for b, _ in cells], [c["score"]["mean"] for _, c in cells], "o-", label=method
        )
    ref = next(iter(results.values()))["reference"]
    ax_fid.axhline(ref["fid"]["value"], color="gray", ls=":", label="real test images")
    ax_is.axhline(ref["score"]["mean"], color="gray", ls=":")
    for ax, name in ((ax_fid, "in-domain FID (lower is better)"), (ax_is, "in-domain IS")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(BUDGETS, [str(b) for b in BUDGETS])
        ax.set_xlabel("budget (block passes of the conditional network)")
        ax.set_ylabel(name)
    ax_fid.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def phase_report(runs: str, out: str, command: str, seeds: tuple[int, int]) -> None:
    results = load_results(runs)
    second = load_results(runs, seed=seeds[1])
    costs = load_json(os.path.join(runs, "costs.json"), None)
    if not results or not costs:
        raise SystemExit("nothing to report yet: run the costs, train and eval phases first")
    os.makedirs(out, exist_ok=True)
    grids = os.path.join(out, "image_quality_grids")
    os.makedirs(grids, exist_ok=True)
    for method, report in results.items():
        run = METHODS[method][0]
        for budget in (BUDGETS[0], BUDGETS[-1]):
            cell = _cell(report, budget)
            if cell:
                shutil.copy(
                    os.path.join(runs, run, cell["grid"]),
                    os.path.join(grids, f"{method_slug(method)}_budget{budget}.png"),
                )
    payload = {
        "command": command,
        "budgets": BUDGETS,
        "scale": SCALE,
        "costs": costs,
        "methods": results,
        "second_seed": {"seed": seeds[1], "methods": second},
    }
    write_json(os.path.join(out, "image_quality_vs_budget.json"), payload)
    with open(os.path.join(out, "image_quality_vs_budget.md"), "w") as f:
        f.write(markdown(results, costs, command, seed_lines(results, second, seeds)))
    plot(results, os.path.join(out, "image_quality_vs_budget.png"))
    log(f"wrote {out}/image_quality_vs_budget.{{json,md,png}} and {grids}/")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default=os.path.join(ROOT, "runs", "image_quality_vs_budget"))
    parser.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results"))
    parser.add_argument(
        "--phase", choices=("all", "costs", "train", "eval", "seeds", "report"), default="all"
    )
    parser.add_argument("--num-samples", type=int, default=500)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument(
        "--second-seed", type=int, default=1235, help="phase seeds: SEED_METHODS sampled again"
    )
    parser.add_argument("--rounds", type=int, default=7, help="interleaved timing rounds")
    args = parser.parse_args()
    runs = os.path.abspath(args.runs)
    os.makedirs(runs, exist_ok=True)
    command = "python benchmarks/image_quality_vs_budget.py"
    if args.num_samples != 500 or args.seed != 1234 or args.second_seed != 1235:
        command += f" --num-samples={args.num_samples} --seed={args.seed}"
        command += f" --second-seed={args.second_seed}"
    if args.phase in ("all", "costs"):
        phase_costs(runs, args.rounds)
    if args.phase in ("all", "train"):
        phase_train(runs)
    if args.phase in ("all", "eval"):
        phase_eval(runs, args.num_samples, args.seed)
    if args.phase in ("all", "seeds"):
        phase_seeds(runs, args.num_samples, args.second_seed)
    if args.phase in ("all", "report"):
        phase_report(runs, args.out, command, (args.seed, args.second_seed))


if __name__ == "__main__":
    main()
