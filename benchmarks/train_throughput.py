"""Training throughput, compiled FLOPs and memory of the MDLM train step.

For each model: compiles the jitted train step, reads XLA's `cost_analysis()` FLOPs
and `memory_analysis()` bytes, times steps on synthetic batches (medians), and
reports achieved FLOP/s as a ratio to a large float32 matmul timed in the same run
(this CPU's practical peak). Ratios are measured side by side, A B A B.

    python benchmarks/train_throughput.py            # writes benchmarks/results/train_throughput.*
    python benchmarks/train_throughput.py --quick    # smaller, for a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from cofre_jax import sharding, train
from cofre_jax.config.typed import from_config_dict
from cofre_jax.evaluation.costs import compiled_stats
from configs import owt_mdlm
from configs import quickstart_mdlm as quickstart  # the MDLM baseline

RESULTS = os.path.join(os.path.dirname(__file__), "results")


def _models(quick: bool):
    qs = quickstart.get_config()
    qs.data.source, qs.data.path = "text_files", "unused"  # synthetic batches: no corpus read
    big = owt_mdlm.get_config()
    big.data.seq_len = 64 if quick else 128
    big.train.batch_size = 4 if quick else 8
    big.model.dtype = "float32"  # CPU: bf16 matmuls are emulated and slower
    if quick:
        big.model.num_layers = 2
    return {
        "quickstart": qs,
        f"mdlm_{big.model.num_layers}L_d768_L{big.data.seq_len}": big,
    }


def _matmul_peak(n: int, repeats: int) -> float:
    a = jnp.ones((n, n), jnp.float32)
    f = jax.jit(lambda x, y: x @ y)
    f(a, a).block_until_ready()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        f(a, a).block_until_ready()
        times.append(time.perf_counter() - start)
    return 2 * n**3 / statistics.median(times)


def _compiled_stats(trainer, state, batch) -> dict:
    stats = compiled_stats(trainer.lower_train_step(state, batch).compile())
    return {"flops_per_step": stats.pop("flops"), **stats}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    matmul_n = 1024 if args.quick else 2048
    rounds = 2 if args.quick else args.steps

    setups = {}
    for name, cfg_dict in _models(args.quick).items():
        config = from_config_dict(cfg_dict)
        trainer = train.build_program(config, sharding.make_mesh(config.mesh, jax.devices()[:1]))
        rng = np.random.default_rng(0)
        shape = (config.train.batch_size, config.data.seq_len)
        batch = sharding.global_batch(
            {"tokens": rng.integers(0, config.model.mask_id, size=shape, dtype=np.int32)},
            trainer.mesh,
        )
        state = trainer.init_state()
        stats = _compiled_stats(trainer, state, batch)
        state, _ = trainer.train_step(state, batch)  # compile + warm up
        jax.block_until_ready(state)
        setups[name] = {"trainer": trainer, "state": state, "batch": batch, "config": config}
        setups[name]["stats"] = stats
        print(f"{name}: compiled, {stats['flops_per_step'] / 1e9:.1f} GFLOP/step", flush=True)

    step_times = {name: [] for name in setups}
    peaks = []
    for r in range(rounds):  # interleaved so machine noise hits every entry alike
        peaks.append(_matmul_peak(matmul_n, 3))
        for name, s in setups.items():
            start = time.perf_counter()
            s["state"], metrics = s["trainer"].train_step(s["state"], s["batch"])
            jax.block_until_ready(metrics)
            step_times[name].append(time.perf_counter() - start)
        print(f"round {r + 1}/{rounds} done", flush=True)

    peak = statistics.median(peaks)
    rows = []
    for name, s in setups.items():
        config, stats = s["config"], s["stats"]
        t = statistics.median(step_times[name])
        tokens = config.train.batch_size * config.data.seq_len
        rows.append(
            {
                "model": name,
                "params": int(sum(x.size for x in jax.tree_util.tree_leaves(s["state"].params))),
                "batch": config.train.batch_size,
                "seq_len": config.data.seq_len,
                "dtype": config.model.dtype,
                "median_step_s": t,
                "tokens_per_s": tokens / t,
                **stats,
                "achieved_flops_per_s": stats["flops_per_step"] / t,
                "fraction_of_matmul_peak": stats["flops_per_step"] / t / peak,
            }
        )
    report = {
        "command": "python benchmarks/train_throughput.py" + (" --quick" if args.quick else ""),
        "machine": f"{platform.machine()} {os.cpu_count()} cores, {jax.devices()[0].device_kind}",
        "jax": jax.__version__,
        "matmul_n": matmul_n,
        "matmul_peak_flops_per_s": peak,
        "rounds": rounds,
        "rows": rows,
    }
    if args.quick:
        print(json.dumps(report, indent=2))
        return
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "train_throughput.json"), "w") as f:
        json.dump(report, f, indent=2)
    lines = [
        "# Train-step throughput (MDLM)",
        "",
        f"Command: `{report['command']}` on {report['machine']}, jax {jax.__version__}.",
        f"Medians of {rounds} interleaved rounds; matmul peak = {matmul_n}^3 float32 matmul, "
        f"{peak / 1e9:.1f} GFLOP/s measured in the same run.",
        "",
        "| model | params | batch x len | step (s) | tokens/s | GFLOP/step | temp MiB "
        "| achieved GFLOP/s | / matmul peak |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['params'] / 1e6:.2f}M | {r['batch']}x{r['seq_len']} "
            f"| {r['median_step_s']:.3f} | {r['tokens_per_s']:.0f} "
            f"| {r['flops_per_step'] / 1e9:.1f} | {r['temp_bytes'] / 2**20:.1f} "
            f"| {r['achieved_flops_per_s'] / 1e9:.1f} | {r['fraction_of_matmul_peak']:.2f} |"
        )
    with open(os.path.join(RESULTS, "train_throughput.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
