"""Pieces shared by the quality-against-budget benchmarks (quality_vs_budget.py,
text_quality_vs_budget.py, image_quality_vs_budget.py): their log lines, resumable JSON
files, and the merge of per-run evaluations into the best split per method and budget.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable


def logger(name: str) -> Callable[[str], None]:
    """print() with the benchmark's name and the time, flushed (the runs take hours)."""
    return lambda message: print(f"[{name} {time.strftime('%H:%M:%S')}] {message}", flush=True)


def load_json(path: str, default):
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    return default


def cell_key(method: str, budget: int, steps: int) -> str:
    return f"{method}|{budget}|{steps}"


def merge_evaluations(runs: str, names: Iterable[str]) -> dict:
    """<runs>/eval_<name>.json of every evaluated run, merged:
    {"runs": {name: its summary}, "cells": {cell_key: cell}}."""
    merged: dict = {"runs": {}, "cells": {}}
    for name in names:
        part = load_json(os.path.join(runs, f"eval_{name}.json"), None)
        if part and part["run"]:
            merged["runs"][name] = part["run"]
            merged["cells"].update(part["cells"])
    return merged


def best_cells(cells: Iterable[dict], key: str) -> dict[str, dict[int, dict]]:
    """Per method and budget, the cell (split between steps and iterations) with the
    lowest `key`."""
    best: dict[str, dict[int, dict]] = {}
    for cell in cells:
        slot = best.setdefault(cell["method"], {})
        kept = slot.get(cell["budget"])
        if kept is None or cell[key] < kept[key]:
            slot[cell["budget"]] = cell
    return best


def evaluate_run(
    path: str,
    run_dir: str,
    config,
    cells: list[tuple[str, int, int]],
    *,
    method_config: Callable,
    score: Callable[..., dict],
    describe: Callable[[dict], str],
    num_samples: int,
    seed: int,
    log: Callable[[str], None],
) -> None:
    """Evaluates the trained run in `run_dir` into `path`, saved after every cell: its
    validation NELBO (once), then for each (method, budget, steps) cell `num_samples`
    samples drawn with `method_config(config, method)` and scored by
    `score(config, drawn) -> dict`; `describe(scores)` is the cell's log line."""
    from cofre_jax import sampling, sharding, tasks, train

    results = load_json(path, {"run": None, "cells": {}})
    todo = [c for c in cells if cell_key(*c) not in results["cells"]]
    if not todo and results["run"]:
        return
    mesh = sharding.make_mesh(config.mesh)
    params, step = tasks.restore_model_params(config, run_dir, mesh=mesh)
    if not results["run"]:
        task = tasks.get_task(config)
        metrics = train.evaluate(task, mesh, params, task.eval_batches(0, 1))
        L = config.data.seq_len
        results["run"] = {
            "step": step,
            "val_nats_per_token": metrics["nats_per_token"],
            # BOS/EOS cost nothing once learned: per symbol (per byte on text) is what
            # compares with an entropy.
            "val_nats_per_symbol": metrics["nats_per_token"] * L / (L - 2),
        }
        log(f"{os.path.basename(run_dir)}: step {step}, {results['run']}")
        train.write_json(path, results)
    for done, (method, budget, steps) in enumerate(todo):
        cfg = method_config(config, method)
        plan = sampling.sample_plan(cfg, budget, steps)
        start = time.perf_counter()
        drawn = sampling.draw_samples(cfg, params, plan, num_samples, seed, mesh)
        seconds = time.perf_counter() - start
        scores = score(cfg, drawn)
        results["cells"][cell_key(method, budget, steps)] = {
            "method": method,
            "budget": budget,
            "steps": steps,
            "block_passes_used": drawn.block_passes,
            "planned_iterations_per_step": list(plan.iterations_T),
            "sampling_seconds": seconds,
            "num_samples": num_samples,
            **scores,
        }
        train.write_json(path, results)
        log(
            f"[{os.path.basename(run_dir)} {done + 1}/{len(todo)}] {method} B={budget} "
            f"T={steps}: {describe(scores)}, {drawn.block_passes} passes, {seconds:.1f}s"
        )
