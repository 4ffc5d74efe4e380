"""The image task's own modes: train_tokenizer (the VQ tokenizer, a stage of its own),
sample (a grid of class-conditional samples under a budget) and eval (in-domain or
Inception FID and IS per budget, with sample grids)."""

from __future__ import annotations

import os
import time

import numpy as np

from cofre_jax import sampling, sharding, tasks
from cofre_jax.config.typed import Config, ConfigError
from cofre_jax.io.json_file import write_json
from cofre_jax.modes.common import prepare_workdir, print0, progress


def _plan(config: Config, *args):
    try:  # a bad budget fails before any checkpoint is read, like other config errors
        return sampling.sample_plan(config, *args)
    except ConfigError as e:
        raise SystemExit(f"config error: {e}") from None


def run_train_tokenizer(config: Config, workdir: str) -> None:
    """Trains data.tokenizer's VQ model on the train images, resuming in workdir."""
    from cofre_jax.vq import run

    run.train_tokenizer(config, prepare_workdir(workdir), log=print0)


def run_sample(config: Config, workdir: str) -> None:
    """sample.num_samples images, class-balanced (one grid row per class), as a PNG."""
    from cofre_jax.evaluation import images as image_eval
    from cofre_jax.io import png

    workdir = prepare_workdir(workdir)
    plan = _plan(config)
    tokenizer = tasks.get_task(config).tokenizer()
    mesh = sharding.make_mesh(config.mesh)
    params, step = tasks.restore_model_params(config, workdir, mesh=mesh)
    sc, classes = config.sample, config.data.num_classes
    labels_N = image_eval.class_balanced_labels(sc.num_samples, classes)
    start = time.perf_counter()
    drawn = sampling.draw_image_samples(config, params, plan, labels_N, sc.seed, mesh=mesh)
    codes_Nxhxw = drawn.tokens_BxL.reshape(-1, *tokenizer.grid)
    images_NxHxWxC = np.asarray(tokenizer.decode(codes_Nxhxw))
    seconds = time.perf_counter() - start
    grid_path = os.path.join(workdir, f"samples_step{step}_budget{plan.budget}.png")
    png.write_png(grid_path, png.image_grid(images_NxHxWxC, classes, sc.num_samples // classes))
    report = {
        "step": step,
        "budget": plan.budget,
        "block_passes_used": drawn.block_passes,
        "steps": plan.steps,
        "schedule": sc.schedule,
        **drawn.details,
        "seconds": seconds,
        "labels": labels_N.tolist(),
        "grid": grid_path,
    }
    path = os.path.join(workdir, f"samples_step{step}.json")
    write_json(path, report)
    for name in ("budget", "block_passes_used", "block_passes_with_guidance", "steps"):
        if name in report:
            print0(f"{name}: {report[name]}")
    print0(f"grid ({classes} rows, one per class): {grid_path}")
    print0(f"samples: {path}")


def run_eval(config: Config, workdir: str) -> None:
    """Per eval.budgets: class-balanced samples, their FID and IS against the test split,
    and a PNG grid; finished budgets are kept in the report and skipped on a rerun."""
    from cofre_jax.data import images
    from cofre_jax.evaluation import images as image_eval

    workdir = prepare_workdir(workdir)
    ev = config.eval
    for budget, steps in zip(ev.budgets, ev.budget_steps or (None,) * len(ev.budgets)):
        _plan(config, budget, steps)
    train_split, test_split = images.load_splits(config.data)
    tokenizer = tasks.get_task(config).tokenizer()
    extractor = image_eval.make_image_extractor(config, train_split, test_split, log=progress)
    mesh = sharding.make_mesh(config.mesh)
    params, step = tasks.restore_model_params(config, workdir, mesh=mesh)
    report = image_eval.evaluate_images(
        config,
        params,
        tokenizer.decode,
        test_split,
        extractor,
        budgets=ev.budgets,
        num_samples=ev.num_samples,
        seed=config.sample.seed,
        workdir=workdir,
        log=progress,
        step=step,
    )
    print0("\n".join(image_eval.summary_lines(report)))


# The image task's modes beyond the shared ones (cofre_jax.modes).
MODES = {
    "eval": run_eval,
    "sample": run_sample,
    "train_tokenizer": run_train_tokenizer,
}
