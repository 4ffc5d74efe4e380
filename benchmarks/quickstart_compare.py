"""MDLM vs FP-MDLM vs CoFRe's consistency stage vs a converted MDLM, at quickstart scale.

Trains (or, when their workdirs are complete, only re-reads) four runs on the embedded
Wikipedia corpus and reports each one's validation NELBO next to its parameter count
and median train-step time measured side by side in this process:
- mdlm:        configs/quickstart_mdlm.py at the FP quickstart's batch and step count
               (equal data: same batches, same number of steps);
- fp_mdlm:     configs/quickstart.py (runs/quickstart, the `make run-text` workdir);
- fp_mdlm+cons: configs/quickstart_cofre.py, the consistency stage from fp_mdlm;
- converted:   configs/quickstart_convert.py, --mode=convert from the mdlm run.
Each run goes through the command line (`python -m cofre_jax.main ...`, printed) and
is resumable, so an interrupted benchmark continues where it stopped.

    python benchmarks/quickstart_compare.py   # writes benchmarks/results/quickstart_compare.*
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import subprocess
import sys
import time

import jax
import numpy as np

from cofre_jax import sharding, tasks, train
from cofre_jax.config.typed import from_config_dict
from cofre_jax.models import count_params
from configs import quickstart, quickstart_cofre, quickstart_convert, quickstart_mdlm

ROOT = os.path.join(os.path.dirname(__file__), "..")


def _arms(runs: str) -> dict[str, tuple[str, str, list[str]]]:
    """name -> (config file, mode, overrides), each run through the CLI."""
    fp = quickstart.get_config().train
    matched = [
        f"--config.train.{field}={fp[field]}"
        for field in ("batch_size", "num_steps", "log_every", "eval_every", "checkpoint_every")
    ]
    return {
        "mdlm": ("configs/quickstart_mdlm.py", "train", matched),
        "fp_mdlm": ("configs/quickstart.py", "train", []),
        "fp_mdlm+cons": (
            "configs/quickstart_cofre.py",
            "train",
            [f"--config.stage.init_from={os.path.join(runs, 'quickstart')}"],
        ),
        "converted": (
            "configs/quickstart_convert.py",
            "convert",
            [f"--config.convert.teacher={os.path.join(runs, 'quickstart_mdlm_matched')}"],
        ),
    }


WORKDIRS = {
    "mdlm": "quickstart_mdlm_matched",
    "fp_mdlm": "quickstart",
    "fp_mdlm+cons": "quickstart_cofre",
    "converted": "quickstart_convert",
}
MODULES = {
    "configs/quickstart_mdlm.py": quickstart_mdlm,
    "configs/quickstart.py": quickstart,
    "configs/quickstart_cofre.py": quickstart_cofre,
    "configs/quickstart_convert.py": quickstart_convert,
}


def typed_config(config_file: str, overrides: list[str]):
    """The typed config the CLI builds from the file and its --config.a.b=v overrides."""
    cfg = MODULES[config_file].get_config()
    for flag in overrides:
        dotted, value = flag.removeprefix("--config.").split("=", 1)
        section, field = dotted.split(".")
        cfg[section][field] = type(cfg[section][field])(value)
    return from_config_dict(cfg)


def run_cli(config_file: str, mode: str, workdir: str, overrides: list[str]) -> None:
    command = [sys.executable, "-m", "cofre_jax.main", f"--config={config_file}"]
    command += [f"--workdir={workdir}", f"--mode={mode}", *overrides]
    print("$ " + " ".join(command[1:]), flush=True)
    subprocess.run(command, cwd=ROOT, check=True)


def random_batch(trainer: train.TrainProgram, seed: int = 0) -> dict[str, np.ndarray]:
    """One global batch of the task's shapes: random ids below the smallest vocabulary
    any task here has (a text tokenizer's 256 bytes, an image model's codes, its labels)."""
    rng = np.random.default_rng(seed)
    m = trainer.config.model
    high = {"labels": getattr(m, "num_classes", 1)}
    return {
        name: rng.integers(0, high.get(name, min(256, m.mask_id)), spec.shape).astype(spec.dtype)
        for name, spec in trainer.task.abstract_batch(trainer.config.train.batch_size).items()
    }


def step_times(configs: dict, rounds: int) -> dict[str, float]:
    """Median seconds per train step, arms interleaved (A B C D A B C D ...)."""
    arms = {}
    for name, (config, mode) in configs.items():
        if mode == "convert":
            config = dataclasses.replace(
                config, stage=dataclasses.replace(config.stage, kind="distill")
            )
        trainer = train.build_program(config)
        if mode == "convert":
            teacher = trainer.task.teacher()
            trainer = trainer.with_teacher(teacher.init_params(jax.random.PRNGKey(0)))
        batch = sharding.global_batch(random_batch(trainer), trainer.mesh)
        state = trainer.init_state()
        state, metrics = trainer.train_step(state, batch)  # compile
        jax.block_until_ready(metrics)
        arms[name] = [trainer, state, batch, []]
    for _ in range(rounds):
        for arm in arms.values():
            trainer, state, batch, times = arm
            start = time.perf_counter()
            arm[1], metrics = trainer.train_step(state, batch)
            jax.block_until_ready(metrics)
            times.append(time.perf_counter() - start)
    return {name: statistics.median(arm[3]) for name, arm in arms.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default=os.path.join(ROOT, "runs"))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results"))
    args = parser.parse_args()
    runs = os.path.abspath(args.runs)
    results, configs = {}, {}
    for name, (config_file, mode, overrides) in _arms(runs).items():
        workdir = os.path.join(runs, WORKDIRS[name])
        print(f"== {name}", flush=True)
        start = time.perf_counter()
        run_cli(config_file, mode, workdir, overrides)
        with open(os.path.join(workdir, "final_metrics.json")) as f:
            final = json.load(f)
        config = typed_config(config_file, overrides)
        configs[name] = (config, mode)
        results[name] = {
            "command": f"python -m cofre_jax.main --config={config_file} --mode={mode} "
            + " ".join([f"--workdir=runs/{WORKDIRS[name]}", *overrides]).replace(runs, "runs"),
            "steps": final["step"],
            "early_stopped": final.get("early_stopped", False),
            "batch_size": config.train.batch_size,
            "val_nats_per_byte": final["nats_per_token"],
            "val_perplexity": final["perplexity"],
            "params": count_params(tasks.get_task(config).abstract_params()),
            "run_seconds_this_call": time.perf_counter() - start,
        }
    times = step_times(configs, args.rounds)
    for name, seconds in times.items():
        results[name]["median_step_seconds"] = seconds
        results[name]["step_time_vs_mdlm"] = seconds / times["mdlm"]
    report = {
        "command": "python benchmarks/quickstart_compare.py",
        "machine": f"{platform.machine()} {os.cpu_count()} CPUs, {jax.devices()[0].platform}",
        "jax": jax.__version__,
        "corpus": "embedded Wikipedia summaries (docs/design.md §4), byte tokenizer, seq 128",
        "eval": "validation NELBO of the EMA parameters on the fixed held-out batches",
        "results": results,
    }
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "quickstart_compare.json"), "w") as f:
        json.dump(report, f, indent=2)
    lines = [
        "# Quickstart: MDLM vs FP-MDLM vs consistency stage vs conversion",
        "",
        f"`{report['command']}` on {report['machine']} (JAX {report['jax']}).",
        f"Data: {report['corpus']}. Metric: {report['eval']}.",
        "",
        "| run | steps x batch | params | val nats/byte | val PPL | step time (x MDLM) |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        stop = " (early stop)" if r["early_stopped"] else ""
        lines.append(
            f"| {name} | {r['steps']}{stop} x {r['batch_size']} | {r['params']:,} | "
            f"{r['val_nats_per_byte']:.4f} | {r['val_perplexity']:.3f} | "
            f"{r['median_step_seconds']:.3f} s ({r['step_time_vs_mdlm']:.2f}x) |"
        )
    lines += [
        "",
        "fp_mdlm+cons continues fp_mdlm and converted continues mdlm, so their step counts",
        "add to those runs'. Step times are medians of interleaved steps in one process.",
        "Validation NELBO measures likelihood with the full solve; what the consistency",
        "stage is for, sample quality at small budgets, is measured by the sampler and",
        "evaluation benchmarks, not here.",
    ]
    with open(os.path.join(args.out, "quickstart_compare.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
