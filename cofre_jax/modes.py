"""What each --mode does: thin glue between the typed config and the library."""

from __future__ import annotations

import dataclasses
import json
import os
import time

import jax

from cofre_jax import checkpoint, sampling, sharding, stages, tasks
from cofre_jax.config.typed import Config, ConfigError
from cofre_jax.io.json_file import write_json
from cofre_jax.models import count_params, model_class, param_groups


def _print(*args, **kwargs) -> None:
    """print on process 0 only: a multi-process job reports once."""
    if jax.process_index() == 0:
        print(*args, **kwargs)


def _prepare_workdir(workdir: str) -> str:
    workdir = os.path.abspath(workdir)
    try:
        os.makedirs(workdir, exist_ok=True)
        probe = os.path.join(workdir, f".write_probe_{jax.process_index()}")
        with open(probe, "w") as f:
            f.write("ok")
        os.remove(probe)
    except OSError as e:
        raise SystemExit(f"error: workdir {workdir} cannot be written: {e.strerror}") from e
    return workdir


def _data(config: Config):
    from cofre_jax import data

    tokenizer = data.make_tokenizer(config.data)
    return data, tokenizer


def _eval_batches(config: Config, tokenizer=None, splits=None):
    data, new_tokenizer = _data(config)
    per_process = config.train.batch_size // jax.process_count()
    return data.make_eval_batches(
        config.data,
        tokenizer or new_tokenizer,
        batch_size=per_process,
        num_batches=config.train.eval_batches,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
        splits=splits,
    )


def run_train(config: Config, workdir: str) -> None:
    if stages.STAGES[config.stage.kind].needs_teacher:
        raise SystemExit(
            f"config error: stage.kind {config.stage.kind!r} is run by --mode=convert "
            "(it needs a teacher)"
        )
    _train(config, workdir)


def _train(config: Config, workdir: str, **train_kwargs) -> dict:
    from cofre_jax import train  # imports clu/TensorFlow: kept out of `describe`

    workdir = _prepare_workdir(workdir)
    if jax.process_index() == 0:
        with open(os.path.join(workdir, "config.json"), "w") as f:
            json.dump(dataclasses.asdict(config), f, indent=2)
    if config.train.batch_size % jax.process_count():
        raise SystemExit(
            f"config error: train.batch_size={config.train.batch_size} must divide over "
            f"{jax.process_count()} processes"
        )

    def make_data():
        data, tokenizer = _data(config)
        # Tokenised once, for both splits (a text corpus costs a full pass per call).
        splits = data.load_token_splits(config.data, tokenizer)
        train_iter = data.make_train_iterator(
            config.data,
            tokenizer,
            batch_size=config.train.batch_size // jax.process_count(),
            seed=config.data.shuffle_buffer_seed,
            process_index=jax.process_index(),
            process_count=jax.process_count(),
            splits=splits,
        )
        return train_iter, _eval_batches(config, tokenizer, splits)

    return train.train_and_evaluate(config, workdir, make_data=make_data, **train_kwargs)


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
    _print(
        f"converted {report['teacher']} (step {report['teacher_step']}) with layer map "
        f"{report['layer_map']}: {report['student_params']} parameters from "
        f"{report['teacher_params']}"
    )
    workdir = _prepare_workdir(workdir)
    if jax.process_index() == 0:
        with open(os.path.join(workdir, "convert.json"), "w") as f:
            json.dump(report, f, indent=2)
    _train(config, workdir, teacher_params=teacher_params, init_params=student_params)


def run_eval(config: Config, workdir: str) -> None:
    """Validation NELBO, costs and, per eval.budgets, scored samples (cofre_jax.evaluation)."""
    from cofre_jax.evaluation import run
    from cofre_jax.evaluation import scorer as scorer_lib

    scorer_lib.scorer_kind(config.eval.scorer)  # a bad spec fails before any work
    workdir = _prepare_workdir(workdir)
    ev = config.eval
    for budget, steps in zip(ev.budgets, ev.budget_steps or (None,) * len(ev.budgets)):
        try:  # a bad budget fails before anything is computed, like other config errors
            sampling.sample_plan(config, budget, steps)
        except ConfigError as e:
            raise SystemExit(f"config error: {e}") from None
    _, tokenizer = _data(config)
    report, path = run.evaluate_checkpoint(
        config, workdir, lambda: _eval_batches(config), tokenizer, log=_progress
    )
    _print("\n".join(run.summary_lines(report, config.eval.reference)))
    _print(f"report: {path}")


def _progress(message: str) -> None:
    if jax.process_index() == 0:
        print(f"[eval {time.strftime('%H:%M:%S')}] {message}", flush=True)


def run_sample(config: Config, workdir: str) -> None:
    workdir = _prepare_workdir(workdir)
    try:  # a bad budget fails before the checkpoint is read, like other config errors
        plan = sampling.sample_plan(config)
    except ConfigError as e:
        raise SystemExit(f"config error: {e}") from None
    mesh = sharding.make_mesh(config.mesh)
    params, step = checkpoint.restore_model_params(config, workdir, mesh=mesh)
    _, tokenizer = _data(config)
    sc = config.sample
    start = time.perf_counter()
    drawn = sampling.draw_samples(config, params, plan, sc.num_samples, sc.seed, mesh=mesh)
    tokens, seconds = drawn.tokens_BxL, time.perf_counter() - start
    texts = tasks.get_task(config).decode(tokenizer, tokens)
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
        _print(f"--- sample {i} ---\n{text}")
    for name in ("budget", "block_passes_used", "steps", "network_calls", "iterations_per_step"):
        if name in report:
            _print(f"{name}: {report[name]}")
    _print(f"samples: {path}")


def run_describe(config: Config, workdir: str | None) -> None:
    """Builds everything abstractly (no parameters allocated) and prints facts."""
    params = tasks.get_task(config).abstract_params()
    mesh = sharding.make_mesh(config.mesh)
    lines = [
        f"model_kind: {config.model.kind}",
        f"total_params: {count_params(params)}",
        *(f"params[{name}]: {n}" for name, n in param_groups(params).items()),
        *_block_pass_lines(config),
        f"vocab_size: {config.model.vocab_size}",
        f"seq_len: {config.data.seq_len}",
        f"global_batch: {config.train.batch_size}",
        f"devices: {jax.device_count()} ({jax.devices()[0].platform})",
        f"processes: {jax.process_count()}",
        *sharding.describe_plan(params, mesh),
    ]
    _print("\n".join(lines))


def _block_pass_lines(config: Config) -> list[str]:
    m, fp = config.model, config.fixed_point
    cost, formula = sampling.StepCost.for_model(m), sampling.cost_formula(m)
    if not cost.per_iteration:
        return [f"block_passes_per_step: {formula}"]
    n_eval = fp.eval_iterations
    return [
        f"block_passes_per_step: {formula} for N fixed-point iterations",
        f"block_passes_per_step_at_eval_N={n_eval}: {cost(n_eval)}",
        f"train_mean_fixed_point_iterations: {fp.mean_train_iterations()}",
        f"train_mean_block_passes: {cost(fp.mean_train_iterations())}",
        f"fixed_point_training_gradient: {fp.gradient}",
    ]


def run_prepare(config: Config, workdir: str | None) -> None:
    data, tokenizer = _data(config)
    data.prepare_owt(config.data, tokenizer)


_MODES = {  # one entry per cofre_jax.config.choices.MODES (tests/test_registries.py)
    "train": run_train,
    "eval": run_eval,
    "sample": run_sample,
    "describe": run_describe,
    "prepare": run_prepare,
    "convert": run_convert,
}


def run(mode: str, config: Config, workdir: str | None) -> None:
    if mode not in _MODES:
        raise ValueError(f"unknown mode {mode!r}; valid modes: {sorted(_MODES)}")
    supported = tasks.TASK_TYPES[config.task].MODES
    if mode not in supported:
        raise SystemExit(
            f"config error: --mode={mode} is not available for the {config.task} task yet "
            f"(available: {', '.join(supported)}; see the README's section on images)"
        )
    _MODES[mode](config, workdir)
