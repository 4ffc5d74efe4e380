"""One part of the prepared GPU check (benchmarks/gpu_check.sh): the OWT-shape bf16
train step or the budgeted sampler of one model, with wall time and peak device memory.

Each part runs in its own process, so `memory_stats()["peak_bytes_in_use"]` (a
process-wide high-water mark) is that part's own peak. Writes gpu_<part>_<model>.json
and .md to --out.

    python benchmarks/gpu_check.py train --model mdlm    # configs/owt_mdlm.py
    python benchmarks/gpu_check.py train --model fp      # configs/owt.py
    python benchmarks/gpu_check.py sample --model fp --budgets 96,192,384,768
    python benchmarks/gpu_check.py all --dry-run --out /tmp/x   # every part, CPU, tiny

Letters: B batch, L length.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import jax
import numpy as np

from cofre_jax import sampling, sharding, train
from cofre_jax.config.typed import from_config_dict
from configs import owt, owt_mdlm

CONFIGS = {"mdlm": owt_mdlm, "fp": owt}


def _config(args):
    cfg = CONFIGS[args.model].get_config()
    cfg.model.dtype = "bfloat16"
    # One device: the published global batch (512) is for many; --batch rows per step.
    cfg.train.batch_size = args.batch
    if args.dry_run:  # tiny shapes so the whole check runs on a CPU in seconds
        cfg.data.seq_len = 16
        cfg.model.hidden_size, cfg.model.num_heads, cfg.model.cond_dim = 32, 2, 16
        if args.model == "mdlm":
            cfg.model.num_layers = 1
    return from_config_dict(cfg)


def _memory() -> dict:
    """Peak and current device bytes (None where the backend keeps no stats, e.g. CPU)."""
    stats = jax.devices()[0].memory_stats() or {}
    return {
        "peak_bytes_in_use": stats.get("peak_bytes_in_use"),
        "bytes_in_use": stats.get("bytes_in_use"),
        "bytes_limit": stats.get("bytes_limit"),
    }


def _trainer(config):
    return train.build_program(config, sharding.make_mesh(config.mesh, jax.devices()[:1]))


def run_train(args) -> dict:
    config = _config(args)
    trainer = _trainer(config)
    rng = np.random.default_rng(0)
    shape_BxL = (config.train.batch_size, config.data.seq_len)
    tokens_BxL = rng.integers(0, config.model.mask_id, size=shape_BxL, dtype=np.int32)
    batch = sharding.global_batch({"tokens": tokens_BxL}, trainer.mesh)
    state = trainer.init_state()
    start = time.perf_counter()
    state, metrics = trainer.train_step(state, batch)  # compile + first step
    jax.block_until_ready(state)
    compile_s = time.perf_counter() - start
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        state, metrics = trainer.train_step(state, batch)
        jax.block_until_ready(state)
        times.append(time.perf_counter() - start)
    metrics = jax.device_get(metrics)
    step_s = statistics.median(times)
    return {
        "batch": shape_BxL[0],
        "seq_len": shape_BxL[1],
        "dtype": config.model.dtype,
        "first_step_s": compile_s,
        "step_s_median": step_s,
        "step_s_all": times,
        "tokens_per_s": shape_BxL[0] * shape_BxL[1] / step_s,
        "loss": float(metrics["loss"]),
        "memory": _memory(),
    }


def run_sample(args) -> dict:
    config = _config(args)
    trainer = _trainer(config)
    params = trainer.init_state().params
    rows = []
    for total in (int(b) for b in args.budgets.split(",")):
        plan = sampling.sample_plan(config, total=total)
        start = time.perf_counter()
        # draw_samples compiles once per settings and shapes (cached denoisers), so the
        # second call is the sampler's own time.
        sampling.draw_samples(config, params, plan, args.num_samples, 0, trainer.mesh)
        first_s = time.perf_counter() - start  # includes compilation
        start = time.perf_counter()
        sampling.draw_samples(config, params, plan, args.num_samples, 1, trainer.mesh)
        wall_s = time.perf_counter() - start
        rows.append(
            {
                "budget": total,
                "steps": plan.steps,
                "planned_block_passes": int(plan.block_passes),
                "first_call_s": first_s,
                "wall_s": wall_s,
                "s_per_sample": wall_s / args.num_samples,
                "memory": _memory(),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    return {"num_samples": args.num_samples, "seq_len": config.data.seq_len, "budgets": rows}


def _gib(n) -> str:
    return "n/a" if n is None else f"{n / 2**30:.2f}"


def _markdown(name: str, result: dict) -> str:
    head = [
        f"# GPU check: {name}",
        "",
        f"Produced by `{result['command']}` on {result['device']} (JAX {jax.__version__}, "
        f"{result['platform']}). Model config `{result['config']}`, bf16 compute.",
        "",
    ]
    r = result["result"]
    if result["part"] == "train":
        return "\n".join(
            head
            + [
                "| batch | seq len | first step s | median step s | tokens/s | peak GiB |",
                "|---|---|---|---|---|---|",
                f"| {r['batch']} | {r['seq_len']} | {r['first_step_s']:.2f} | "
                f"{r['step_s_median']:.4f} | {r['tokens_per_s']:.0f} | "
                f"{_gib(r['memory']['peak_bytes_in_use'])} |",
                "",
            ]
        )
    lines = head + [
        f"{r['num_samples']} samples of length {r['seq_len']}; wall time of the second "
        "call (the first compiles).",
        "",
        "| budget | steps | block passes | first call s | wall s | s / sample | peak GiB |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in r["budgets"]:
        lines.append(
            f"| {row['budget']} | {row['steps']} | {row['planned_block_passes']} | "
            f"{row['first_call_s']:.2f} | {row['wall_s']:.3f} | {row['s_per_sample']:.4f} | "
            f"{_gib(row['memory']['peak_bytes_in_use'])} |"
        )
    return "\n".join(lines + [""])


def run_part(args, part: str, model: str) -> None:
    args.model = model
    device = jax.devices()[0]
    print(f"{part} {model}: device {device.device_kind} ({device.platform})", flush=True)
    result = run_train(args) if part == "train" else run_sample(args)
    name = f"gpu_{part}_{model}"
    doc = {
        "command": "python " + " ".join(["benchmarks/gpu_check.py", *sys.argv[1:]]),
        "part": part,
        "config": f"configs/{CONFIGS[model].__name__.split('.')[-1]}.py",
        "device": f"{device.device_kind} ({device.platform}, {jax.device_count()} device(s))",
        "platform": platform.platform(),
        "dry_run": args.dry_run,
        "result": result,
    }
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, name + ".json"), "w") as fh:
        json.dump(doc, fh, indent=1)
    with open(os.path.join(args.out, name + ".md"), "w") as fh:
        fh.write(_markdown(name, doc))
    print(f"wrote {os.path.join(args.out, name)}.{{json,md}}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    # "all": every part and model in this one process (the dry run: one JAX start-up;
    # peak memory is then shared across parts, so the real check runs them apart).
    parser.add_argument("part", choices=("train", "sample", "all"))
    parser.add_argument("--model", choices=tuple(CONFIGS), default="fp")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--budgets", default="96,192,384,768")
    parser.add_argument("--num-samples", type=int, default=8)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    parser.add_argument("--dry-run", action="store_true")
    args = parser.parse_args()
    if args.dry_run:
        args.batch, args.steps, args.num_samples, args.budgets = 2, 1, 2, "24"
    if args.part == "all":
        for part in ("train", "sample"):
            for model in CONFIGS:
                run_part(args, part, model)
    else:
        run_part(args, args.part, args.model)


if __name__ == "__main__":
    main()
