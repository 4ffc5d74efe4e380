"""The text task's own modes: eval (NELBO, costs, scored samples per budget), sample,
prepare (OpenWebText shards) and convert (FP-MDLM from a trained MDLM)."""

from __future__ import annotations

import dataclasses
import json
import os
import time

import jax

from cofre_jax import sampling, sharding, tasks
from cofre_jax.config.typed import Config, ConfigError
from cofre_jax.io.json_file import write_json
from cofre_jax.models import model_class
from cofre_jax.modes.common import prepare_workdir, print0, progress, train


def _eval_batches(config: Config):
    return tasks.get_task(config).eval_batches(jax.process_index(), jax.process_count())


def run_convert(config: Config, workdir: str) -> None:
    """FP-MDLM from a trained MDLM (docs/method.md §2.6), then distillation from it."""
    from cofre_jax import convert

    if not config.convert.teacher:
        raise SystemExit(
            "config error: --mode=convert needs the MDLM teacher: "
            "--config.convert.teacher=<workdir of an "
            "MDLM run, or a PyTorch MDLM checkpoint file>"
        )
    if not model_class(config.model).is_fixed_point:
        raise SystemExit(
            f"config error: --mode=convert builds an fp_mdlm model, not {config.model.kind!r}"
        )
    config = dataclasses.replace(config, stage=dataclasses.replace(config.stage, kind="distill"))
    config.validate()
    teacher_params, student_params, report = convert.convert_mdlm(config)
    print0(
        f"converted {report['teacher']} (step {report['teacher_step']}) with layer map "
        f"{report['layer_map']}: {report['student_params']} parameters from "
        f"{report['teacher_params']}"
    )
    workdir = prepare_workdir(workdir)
    if jax.process_index() == 0:
        with open(os.path.join(workdir, "convert.json"), "w") as f:
            json.dump(report, f, indent=2)
    train(config, workdir, teacher_params=teacher_params, init_params=student_params)


def run_eval(config: Config, workdir: str) -> None:
    """Validation NELBO, costs and, per eval.budgets, scored samples (cofre_jax.evaluation)."""
    from cofre_jax.evaluation import run
    from cofre_jax.evaluation import scorer as scorer_lib

    scorer_lib.scorer_kind(config.eval.scorer)  # a bad spec fails before any work
    workdir = prepare_workdir(workdir)
    ev = config.eval
    for budget, steps in zip(ev.budgets, ev.budget_steps or (None,) * len(ev.budgets)):
        try:  # a bad budget fails before anything is computed, like other config errors
            sampling.sample_plan(config, budget, steps)
        except ConfigError as e:
            raise SystemExit(f"config error: {e}") from None
    tokenizer = tasks.get_task(config).tokenizer()
    report, path = run.evaluate_checkpoint(
        config, workdir, lambda: _eval_batches(config), tokenizer, log=progress
    )
    print0("\n".join(run.summary_lines(report, config.eval.reference)))
    print0(f"report: {path}")


def run_sample(config: Config, workdir: str) -> None:
    workdir = prepare_workdir(workdir)
    try:  # a bad budget fails before the checkpoint is read, like other config errors
        plan = sampling.sample_plan(config)
    except ConfigError as e:
        raise SystemExit(f"config error: {e}") from None
    mesh = sharding.make_mesh(config.mesh)
    params, step = tasks.restore_model_params(config, workdir, mesh=mesh)
    task = tasks.get_task(config)
    sc = config.sample
    start = time.perf_counter()
    drawn = sampling.draw_samples(config, params, plan, sc.num_samples, sc.seed, mesh=mesh)
    tokens, seconds = drawn.tokens_BxL, time.perf_counter() - start
    texts = task.decode(task.tokenizer(), tokens)
    report = {
        "step": step,
        "budget": plan.budget,
        "block_passes_used": drawn.block_passes,
        "steps": plan.steps,
        "schedule": sc.schedule,
        **drawn.details,
        "seconds": seconds,
        "samples": texts,
    }
    path = os.path.join(workdir, f"samples_step{step}.json")
    write_json(path, report)
    for i, text in enumerate(texts):
        print0(f"--- sample {i} ---\n{text}")
    for name in ("budget", "block_passes_used", "steps", "network_calls", "iterations_per_step"):
        if name in report:
            print0(f"{name}: {report[name]}")
    print0(f"samples: {path}")


def run_prepare(config: Config, workdir: str | None) -> None:
    from cofre_jax import data

    data.prepare_owt(config.data, tasks.get_task(config).tokenizer())


# The text task's modes beyond the shared ones (cofre_jax.modes).
MODES = {
    "eval": run_eval,
    "sample": run_sample,
    "prepare": run_prepare,
    "convert": run_convert,
}
