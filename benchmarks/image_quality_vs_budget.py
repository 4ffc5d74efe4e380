"""The published image comparison (docs/method.md §2.7-2.8) at a scale 2 CPU cores can
run: Fashion-MNIST as a 7 x 7 grid of VQ codes, in-domain FID and IS.

Models keep the published depths and shrink only in width and steps: MaskGIT-24,
MaskGIT-12 and FP-MaskGIT 4/1/4, all trained for the same number of steps on the same
batches (the published protocol), then CoFRe's consistency stage from FP-MaskGIT.
Methods: MaskGIT-24, MaskGIT-12, FP-MaskGIT with cold starts, FP-MaskGIT with 3SR, and
CoFRe (the stage's model with 3SR), each at the published budgets 48/96/192/384 block
passes of the conditional network (guidance doubles the real cost for every method
alike; the report gives both). MaskGIT spends a budget in budget / depth steps; the FP
methods in budget / (8 + N) steps of N = FP_ITERATIONS mean iterations (decreasing
schedule).

Quality is the in-domain FID and IS of class-balanced samples, from the penultimate
features and the logits of a small Fashion-MNIST classifier the library trains
(cofre_jax/evaluation/domain_classifier.py): it is not Inception FID and is never called
FID alone. Costs: each model's train-step wall time (interleaved medians, this process)
and the compiled step's temp memory and FLOPs, as ratios to MaskGIT-24 (published for
FP-MaskGIT: -48.6% time, -50.7% memory).

Phases (each resumable; what is done is kept under <runs>/):
1. costs   2. train (tokenizer, then the models)   3. eval (per method and budget)
4. report: benchmarks/results/image_quality_vs_budget.{json,md,png} and sample grids.

    python benchmarks/image_quality_vs_budget.py                 # all phases
    python benchmarks/image_quality_vs_budget.py --phase=report  # tables and plot only
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import time

import jax
from fp_vs_mdlm_cost import compile_step
from quickstart_compare import ROOT, step_times

from cofre_jax import modes, train
from cofre_jax.config.typed import from_config_dict
from cofre_jax.io.json_file import write_json
from cofre_jax.models import count_params
from configs import quickstart_images, quickstart_images_cofre

BUDGETS = (48, 96, 192, 384)
FP_ITERATIONS = 2  # mean fixed-point iterations per step of the FP methods' split
# The common scale: every run has this width, batch and step count.
SCALE = {
    "model.hidden_size": 64,
    "model.num_heads": 4,
    "train.batch_size": 32,
    "train.num_steps": 800,
    "train.eval_every": 400,
    "train.checkpoint_every": 200,
    "train.log_every": 100,
}
# run -> (config module, the run its stage starts from, field overrides)
RUNS = {
    "maskgit24": (quickstart_images, None, {"model.kind": "maskgit", "model.num_layers": 24}),
    "maskgit12": (quickstart_images, None, {"model.kind": "maskgit", "model.num_layers": 12}),
    "fp_maskgit": (quickstart_images, None, {"model.k_pre": 4, "model.k_post": 4}),
    "cofre": (quickstart_images_cofre, "fp_maskgit", {"model.k_pre": 4, "model.k_post": 4}),
}
# method -> (run, sample.warm_start or None for MaskGIT)
METHODS = {
    "MaskGIT-24": ("maskgit24", None),
    "MaskGIT-12": ("maskgit12", None),
    "FP-MaskGIT (cold)": ("fp_maskgit", "cold"),
    "FP + 3SR": ("fp_maskgit", "3sr"),
    "CoFRe": ("cofre", "3sr"),
}
COST_RUNS = ("maskgit24", "maskgit12", "fp_maskgit")


def log(message: str) -> None:
    print(f"[image_quality_vs_budget {time.strftime('%H:%M:%S')}] {message}", flush=True)


def run_config(run: str, runs: str, **extra):
    module, parent, fields = RUNS[run]
    cfg = module.get_config()
    cfg.data.tokenizer_path = os.path.join(runs, "tokenizer")
    if parent:
        cfg.stage.init_from = os.path.join(runs, parent)
    stage_scale = {k: v for k, v in SCALE.items() if not (parent and k.startswith("train."))}
    for field, value in {**stage_scale, **fields, **extra}.items():
        section, name = field.split(".")
        cfg[section][name] = value
    return from_config_dict(cfg)


def _load(path: str, default):
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    return default


def phase_costs(runs: str, rounds: int) -> dict:
    path = os.path.join(runs, "costs.json")
    if os.path.exists(path):
        return _load(path, {})
    configs = {name: run_config(name, runs) for name in COST_RUNS}
    log(f"timing train steps side by side ({rounds} interleaved rounds)")
    times = step_times({n: (c, "train") for n, c in configs.items()}, rounds)
    compiled, params = {}, {}
    for name, config in configs.items():
        program = train.build_program(config)
        compiled[name] = compile_step(program, unroll=True)
        params[name] = count_params(program.abstract_state.params)
    base = "maskgit24"
    ratios = {
        name: {
            "step_time": times[name] / times[base],
            "temp_bytes": compiled[name]["temp_bytes"] / compiled[base]["temp_bytes"],
            "flops": compiled[name]["flops"] / compiled[base]["flops"],
            "params": params[name] / params[base],
        }
        for name in COST_RUNS
    }
    costs = {"step_seconds": times, "compiled": compiled, "params": params, "over_maskgit24": ratios}
    write_json(path, costs)
    return costs


def phase_train(runs: str) -> None:
    tokenizer = run_config("fp_maskgit", runs)
    modes.run("train_tokenizer", tokenizer, tokenizer.data.tokenizer_path)
    for run in RUNS:
        log(f"training {run}")
        modes.run("train", run_config(run, runs), os.path.join(runs, run))


def _method_config(method: str, runs: str, budget: int, num_samples: int, seed: int):
    run, warm_start = METHODS[method]
    config = run_config(run, runs)
    m = config.model
    per_step = m.num_layers if warm_start is None else m.k_pre + m.k_post + FP_ITERATIONS
    sample = config.sample if warm_start is None else config.sample
    sample = dataclasses.replace(sample, seed=seed, **({"warm_start": warm_start} if warm_start else {}))
    evaluation = dataclasses.replace(
        config.eval,
        budgets=(budget,),
        budget_steps=(budget // per_step,),
        num_samples=num_samples,
        report=f"eval_{method_slug(method)}_b{budget}",
    )
    return dataclasses.replace(config, sample=sample, eval=evaluation)


def method_slug(method: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in method.lower()).strip("_")


def phase_eval(runs: str, num_samples: int, seed: int) -> None:
    for method, (run, _) in METHODS.items():
        for budget in BUDGETS:
            config = _method_config(method, runs, budget, num_samples, seed)
            log(f"{method} at budget {budget} ({config.eval.budget_steps[0]} steps)")
            modes.run("eval", config, os.path.join(runs, run))
