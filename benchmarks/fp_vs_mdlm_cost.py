"""FP-MDLM vs MDLM: compiled train-step FLOPs and memory at the published OWT shapes.

Lowers and compiles (never runs) the jitted train step of `configs/owt_mdlm.py` (MDLM,
12 blocks) and `configs/owt.py` (FP-MDLM, 1 pre / 1 fixed-point / 1 post block, SJFB)
at seq_len 1024, bf16 compute, fp32 params, on a one-device mesh with abstract state
and batch (`trainer.abstract_state`, `jax.ShapeDtypeStruct`s), and reports per-device
XLA `cost_analysis()` FLOPs and `memory_analysis()` bytes as FP/MDLM ratios, next to
the published -11.5% training time / -16.9% memory (docs/method.md §2.8).

What XLA's cost analysis counts (probed at the start of every run, see `semantics` in
the JSON): the body of a `scan` / `while_loop` is counted once whatever its trip count,
and a `lax.cond` as its most expensive branch. SJFB draws N_ng ~ U{0..4} (a
dynamic-trip while loop) and N_g ~ U{3..6} (a scan of grad_max cond-guarded steps)
inside the step, so the plain count of the real step is wrong. Honest FLOPs at the
mean counts E[N_ng] = 2, E[N_g] = 4.5 come from variants with pinned ranges
(`fixed_point.nograd_min = nograd_max = 2`, `grad_min = grad_max = 4` and `= 5`,
averaged), lowered with every `lax.scan` fully unrolled (so each differentiated step
is counted, forward and backward), plus (N_ng - 1) times the FLOPs of the no-grad
while body, compiled on its own. Temporary memory is read from the real (rolled)
program, for the pinned variants and for the published U ranges: the scan stores
activations for grad_max steps whatever N_g is drawn, so memory is set by grad_max.

    python benchmarks/fp_vs_mdlm_cost.py            # writes benchmarks/results/fp_vs_mdlm_cost.*
    python benchmarks/fp_vs_mdlm_cost.py --quick    # seq 256, batch 2, no wall clock: smoke run
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import platform
import statistics
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from cofre_jax import fixed_point, sharding, train
from cofre_jax.config.typed import from_config_dict
from cofre_jax.evaluation.costs import compiled_stats
from cofre_jax.models import count_params
from cofre_jax.models.fixed_point_stack import make_block_fn
from cofre_jax.models.layers import DiTBlock, FinalLayer, rotary_tables
from cofre_jax.sampling import StepCost
from configs import owt, owt_mdlm

RESULTS = os.path.join(os.path.dirname(__file__), "results")
PUBLISHED = {"train_time_change": -0.115, "memory_change": -0.169, "params_change": -0.388}
MEAN_NOGRAD = 2.0  # E[N_ng], N_ng ~ U{0..4}
MEAN_GRAD = 4.5  # E[N_g], N_g ~ U{3..6}
REMAT = {"fixed_point.remat": True}


# ----------------------------------------------------------------------------- helpers


def _cost(compiled) -> float:
    return compiled_stats(compiled)["flops"]


def _mem(compiled) -> dict[str, int]:
    stats = compiled_stats(compiled)
    return {k: v for k, v in stats.items() if k.endswith("bytes")}


@contextlib.contextmanager
def _unrolled_scans():
    """Every `jax.lax.scan` traced inside is fully unrolled (unroll=True)."""
    original = jax.lax.scan
    jax.lax.scan = functools.partial(original, unroll=True)
    try:
        yield
    finally:
        jax.lax.scan = original


def _set(cfg, overrides: dict[str, Any]):
    for dotted, value in overrides.items():
        section, field = dotted.split(".")
        setattr(cfg[section], field, value)
    return cfg


def _config_dict(kind: str, seq_len: int, batch: int, dtype: str, overrides=None):
    cfg = (owt_mdlm if kind == "mdlm" else owt).get_config()
    cfg.data.seq_len, cfg.train.batch_size, cfg.model.dtype = seq_len, batch, dtype
    if kind != "mdlm":  # the plain program; configs/owt.py turns remat on (REMAT rows)
        cfg.fixed_point.remat = False
    return _set(cfg, overrides or {})


def _trainer(cfg_dict) -> train.TrainProgram:
    config = from_config_dict(cfg_dict)
    return train.build_program(config, sharding.make_mesh(config.mesh, jax.devices()[:1]))


def compile_step(trainer: train.TrainProgram, *, unroll: bool = False) -> dict[str, Any]:
    cfg = trainer.config
    batch = {
        name: jax.ShapeDtypeStruct(
            spec.shape, spec.dtype, sharding=sharding.batch_sharding(trainer.mesh)
        )
        for name, spec in trainer.task.abstract_batch(cfg.train.batch_size).items()
    }
    start = time.perf_counter()
    with _unrolled_scans() if unroll else contextlib.nullcontext():
        lowered = trainer.lower_train_step(trainer.abstract_state, batch)
    compiled = lowered.compile()
    seconds = time.perf_counter() - start
    return {"flops": _cost(compiled), **_mem(compiled), "compile_s": round(seconds, 1)}


def equal_step_costs(configs: dict, base: str, rounds: int, log) -> dict[str, Any]:
    """Train-step costs of `configs` ({name: Config}) measured side by side in this
    process: interleaved median wall time, compiled temp memory and FLOPs (scans
    unrolled, so every iteration counts), parameters, and each one's ratios over `base`.
    Shared by the quality benchmarks' cost phases (equal-steps comparisons)."""
    from quickstart_compare import step_times  # it imports configs this module does not need

    log(f"timing train steps side by side ({rounds} interleaved rounds)")
    times = step_times({n: (c, "train") for n, c in configs.items()}, rounds)
    compiled, params = {}, {}
    for name, config in configs.items():
        program = train.build_program(config)
        compiled[name] = compile_step(program, unroll=True)
        params[name] = count_params(program.abstract_state.params)
    ratios = {
        name: {
            "step_time": times[name] / times[base],
            "temp_bytes": compiled[name]["temp_bytes"] / compiled[base]["temp_bytes"],
            "flops": compiled[name]["flops"] / compiled[base]["flops"],
            "params": params[name] / params[base],
        }
        for name in configs
    }
    return {"step_seconds": times, "compiled": compiled, "params": params, f"over_{base}": ratios}


def _compiled_flops(fn, *args) -> float:
    return _cost(jax.jit(fn).lower(*args).compile())


# ----------------------------------------------------------------------------- probes


def cost_semantics() -> dict[str, float]:
    """FLOPs that cost_analysis reports, in units of one n x n matmul."""
    n = 128
    a = jax.ShapeDtypeStruct((n, n), jnp.float32)
    i32, pred = jax.ShapeDtypeStruct((), jnp.int32), jax.ShapeDtypeStruct((), jnp.bool_)
    unit = 2.0 * n**3

    def scan5(w, x):
        return jax.lax.scan(lambda h, _: (w @ h, None), x, None, length=5)[0]

    def scan5_unrolled(w, x):
        return jax.lax.scan(lambda h, _: (w @ h, None), x, None, length=5, unroll=True)[0]

    def while3(w, x, k):
        return jax.lax.while_loop(lambda c: c[0] < k, lambda c: (c[0] + 1, w @ c[1]), (0, x))[1]

    def cond_1_vs_2(w, x, p):
        return jax.lax.cond(p, lambda h: w @ h, lambda h: w @ (w @ h), x)

    def grad_scan5(w, x):
        loss = lambda w: jax.lax.scan(lambda h, _: (jnp.tanh(w @ h), None), x, None, length=5)[0]
        return jax.grad(lambda w: loss(w).sum())(w)

    def grad_scan5_unrolled(w, x):
        def loss(w):
            body = lambda h, _: (jnp.tanh(w @ h), None)
            return jax.lax.scan(body, x, None, length=5, unroll=True)[0].sum()

        return jax.grad(loss)(w)

    return {
        "scan_of_5_matmuls": _compiled_flops(scan5, a, a) / unit,
        "scan_of_5_matmuls_unrolled": _compiled_flops(scan5_unrolled, a, a) / unit,
        "while_loop_3_trips_dynamic": _compiled_flops(while3, a, a, i32) / unit,
        "cond_1_vs_2_matmuls": _compiled_flops(cond_1_vs_2, a, a, pred) / unit,
        "grad_scan_of_5_matmuls (true 14)": _compiled_flops(grad_scan5, a, a) / unit,
        "grad_scan_of_5_matmuls_unrolled (true 14)": _compiled_flops(grad_scan5_unrolled, a, a)
        / unit,
    }


def component_flops(trainer: train.TrainProgram) -> dict[str, float]:
    """Standalone compiled FLOPs (train mode, dropout on) of the pieces of the FP step:
    one DiT block, the fixed-point cell F, the output layer (fwd and fwd+bwd w.r.t.
    params and input), and the no-grad Picard while body (the SJFB solve, body once)."""
    cfg = trainer.config.model
    B, L = trainer.config.train.batch_size, trainer.config.data.seq_len
    D, C = cfg.hidden_size, cfg.cond_dim
    params = jax.tree_util.tree_map(
        lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype), trainer.abstract_state.params
    )
    h = jax.ShapeDtypeStruct((B, L, D), jnp.float32)
    cond = jax.ShapeDtypeStruct((B, C), jnp.float32)
    key = jax.random.PRNGKey(0)
    cos, sin = rotary_tables(L, cfg.head_dim)

    def block_fwd(p, h, cond):
        return DiTBlock(cfg).apply(
            {"params": p}, h, cond, (cos, sin), train=True, rngs={"dropout": key}
        )

    def head_fwd(p, h, cond):
        return FinalLayer(cfg).apply({"params": p}, h, cond)

    f = make_block_fn(cfg, train=True, dropout_key=key)

    # F's x carries the hoisted injection term (W_u u + b, 2D wide for fpdm), not u.
    inj = jax.ShapeDtypeStruct((B, L, 2 * D if cfg.injection == "fpdm" else D), jnp.float32)

    def cell_fwd(p, h, inj, cond):
        return f(p, h, (inj, cond, cos, sin))

    def fwd_bwd(fn):
        def run(p, h, *rest):
            out, vjp = jax.vjp(lambda p, h: fn(p, h, *rest), p, h)
            return vjp(jnp.ones_like(out))

        return run

    solver = fixed_point.SolverSpec(method="picard", tol=0.0, max_iter=4)
    i32 = jax.ShapeDtypeStruct((), jnp.int32)

    def nograd_solve(p, h, inj, cond, n):
        return fixed_point.solve(f, p, h, (inj, cond, cos, sin), solver, max_iter=n)[0]

    blk, cell, head = params["pre_blocks_0"], params["fp_cell"], params["output_layer"]
    return {
        "block_fwd": _compiled_flops(block_fwd, blk, h, cond),
        "block_fwd_bwd": _compiled_flops(fwd_bwd(block_fwd), blk, h, cond),
        "fp_cell_fwd": _compiled_flops(cell_fwd, cell, h, inj, cond),
        "fp_cell_fwd_bwd": _compiled_flops(fwd_bwd(cell_fwd), cell, h, inj, cond),
        "nograd_while_body": _compiled_flops(nograd_solve, cell, h, inj, cond, i32),
        "head_fwd": _compiled_flops(head_fwd, head, h, cond),
        "head_fwd_bwd": _compiled_flops(fwd_bwd(head_fwd), head, h, cond),
    }


def analytic_flops_per_row(L: int, D: int, V: int) -> dict[str, float]:
    """Matmul FLOPs per row (forward): block 24 L D^2 + 4 L^2 D; F adds fc1's h half
    (D->2D) and fc2 (2D->D), 8 L D^2; injection G plus fc1's u half (hoisted out of the
    loop, once per call) 2 L D^2 + 4 L D^2; head 2 L D V. Backward = 2 x forward."""
    block = 24 * L * D**2 + 4 * L**2 * D
    cell, inj, head = block + 8 * L * D**2, 6 * L * D**2, 2 * L * D * V
    mdlm = 3 * (12 * block + head)
    fp = 3 * (2 * block + inj + head + MEAN_GRAD * cell) + MEAN_NOGRAD * cell
    return {"block_fwd": block, "fp_cell_fwd": cell, "head_fwd": head, "mdlm": mdlm, "fp": fp}


# ----------------------------------------------------------------------------- main parts


def compile_costs(seq_len: int, batch: int, log) -> dict[str, Any]:
    """All compiled variants at one per-device batch."""
    pin = lambda ng, g: {
        "fixed_point.nograd_min": ng,
        "fixed_point.nograd_max": ng,
        "fixed_point.grad_min": g,
        "fixed_point.grad_max": g,
    }
    variants = [  # (name, model, overrides, unroll scans)
        ("mdlm", "mdlm", {}, False),
        ("fp_real_ranges", "fp", {}, False),
        ("fp_pinned_ng2_g4", "fp", pin(2, 4), False),
        ("fp_pinned_ng2_g5", "fp", pin(2, 5), False),
        ("fp_pinned_ng2_g4_unrolled", "fp", pin(2, 4), True),
        ("fp_pinned_ng2_g5_unrolled", "fp", pin(2, 5), True),
        # fixed_point.remat: every differentiated step a jax.checkpoint.
        ("fp_remat_real_ranges", "fp", REMAT, False),
        ("fp_remat_pinned_ng2_g4_unrolled", "fp", {**pin(2, 4), **REMAT}, True),
        ("fp_remat_pinned_ng2_g5_unrolled", "fp", {**pin(2, 5), **REMAT}, True),
    ]
    out: dict[str, Any] = {"batch": batch, "seq_len": seq_len, "variants": {}}
    fp_trainer = None
    for name, kind, overrides, unroll in variants:
        trainer = _trainer(_config_dict(kind, seq_len, batch, "bfloat16", overrides))
        stats = compile_step(trainer, unroll=unroll)
        stats["overrides"] = overrides
        stats["scans_unrolled"] = unroll
        out["variants"][name] = stats
        if kind == "fp":
            fp_trainer = trainer
        else:
            out["mdlm_params"] = count_params(trainer.abstract_state.params)
        log(
            f"B={batch} {name}: {stats['flops'] / batch / 1e9:.1f} GFLOP/row (as counted), "
            f"temp {stats['temp_bytes'] / 2**30:.2f} GiB, compile {stats['compile_s']:.0f}s"
        )
    out["fp_params"] = count_params(fp_trainer.abstract_state.params)
    comp = component_flops(fp_trainer)
    out["components"] = comp
    v = out["variants"]
    # Unrolled variants count every differentiated step; the no-grad while body is
    # still counted once, so add N_ng - 1 = 1 more body for the pinned N_ng = 2.
    fp_g = {
        g: v[f"fp_pinned_ng2_g{g}_unrolled"]["flops"]
        + (MEAN_NOGRAD - 1) * comp["nograd_while_body"]
        for g in (4, 5)
    }
    fp_mean = (fp_g[4] + fp_g[5]) / 2
    fp_remat_mean = statistics.fmean(
        v[f"fp_remat_pinned_ng2_g{g}_unrolled"]["flops"]
        + (MEAN_NOGRAD - 1) * comp["nograd_while_body"]
        for g in (4, 5)
    )
    mdlm = v["mdlm"]["flops"]
    one_step = v["fp_pinned_ng2_g5_unrolled"]["flops"] - v["fp_pinned_ng2_g4_unrolled"]["flops"]
    # Split from standalone pieces; "rest" (embedding, injection, loss, optimiser, EMA)
    # is the measured total minus the pieces.
    mdlm_blocks = 12 * comp["block_fwd_bwd"]
    fp_blocks = 2 * comp["block_fwd_bwd"]
    fp_cell = MEAN_NOGRAD * comp["nograd_while_body"] + MEAN_GRAD * comp["fp_cell_fwd_bwd"]
    out["flops"] = {
        "mdlm": mdlm,
        "fp_at_ng2_g4": fp_g[4],
        "fp_at_ng2_g5": fp_g[5],
        "fp_at_mean_counts": fp_mean,
        "fp_real_ranges_as_counted (loop bodies once: not a real cost)": v["fp_real_ranges"][
            "flops"
        ],
        "fp_one_differentiated_step (g5 - g4 unrolled)": one_step,
        "ratio_fp_over_mdlm": fp_mean / mdlm,
        "fp_remat_at_mean_counts": fp_remat_mean,
        "ratio_fp_remat_over_mdlm": fp_remat_mean / mdlm,
        "split": {
            "mdlm": {
                "12_blocks_fwd_bwd": mdlm_blocks,
                "head_fwd_bwd": comp["head_fwd_bwd"],
                "rest": mdlm - mdlm_blocks - comp["head_fwd_bwd"],
            },
            "fp": {
                "pre_post_blocks_fwd_bwd": fp_blocks,
                "fixed_point_cell (2 no-grad + 4.5 fwd_bwd)": fp_cell,
                "head_fwd_bwd": comp["head_fwd_bwd"],
                "rest": fp_mean - fp_blocks - fp_cell - comp["head_fwd_bwd"],
            },
        },
    }
    temp = {name: s["temp_bytes"] for name, s in v.items() if not s["scans_unrolled"]}
    out["memory"] = {
        "temp_bytes": temp,
        "argument_bytes": {
            "mdlm": v["mdlm"]["argument_bytes"],
            "fp": v["fp_real_ranges"]["argument_bytes"],
        },
        "ratio_temp_fp_real_ranges": temp["fp_real_ranges"] / temp["mdlm"],
        "ratio_temp_fp_pinned_g4": temp["fp_pinned_ng2_g4"] / temp["mdlm"],
        "ratio_temp_fp_pinned_g5": temp["fp_pinned_ng2_g5"] / temp["mdlm"],
        "ratio_temp_fp_remat_real_ranges": temp["fp_remat_real_ranges"] / temp["mdlm"],
        "ratio_temp_plus_argument_remat_real_ranges": (
            temp["fp_remat_real_ranges"] + v["fp_remat_real_ranges"]["argument_bytes"]
        )
        / (temp["mdlm"] + v["mdlm"]["argument_bytes"]),
        "ratio_argument": v["fp_real_ranges"]["argument_bytes"] / v["mdlm"]["argument_bytes"],
        "ratio_temp_plus_argument_real_ranges": (
            temp["fp_real_ranges"] + v["fp_real_ranges"]["argument_bytes"]
        )
        / (temp["mdlm"] + v["mdlm"]["argument_bytes"]),
    }
    return out


def wallclock(rounds: int, log) -> dict[str, Any]:
    """CPU step times at a small shape (seq 128, batch 4, float32), A B A B, medians."""
    seq_len, batch = 128, 4
    setups = {}
    for kind in ("mdlm", "fp", "fp_remat"):
        overrides = REMAT if kind == "fp_remat" else {}
        model = "mdlm" if kind == "mdlm" else "fp"
        trainer = _trainer(_config_dict(model, seq_len, batch, "float32", overrides))
        rng = np.random.default_rng(0)
        tokens = rng.integers(0, trainer.config.model.mask_id, (batch, seq_len), dtype=np.int32)
        state = trainer.init_state()
        data = sharding.global_batch({"tokens": tokens}, trainer.mesh)
        state, metrics = trainer.train_step(state, data)  # compile + warm up
        jax.block_until_ready(metrics)
        setups[kind] = {"trainer": trainer, "state": state, "batch": data}
    times = {kind: [] for kind in setups}
    for r in range(rounds):
        for kind, s in setups.items():
            start = time.perf_counter()
            s["state"], metrics = s["trainer"].train_step(s["state"], s["batch"])
            jax.block_until_ready(metrics)
            times[kind].append(time.perf_counter() - start)
        last = " ".join(f"{k} {v[-1]:.3f}s" for k, v in times.items())
        log(f"wall clock round {r + 1}/{rounds}: {last}")
    med = {k: statistics.median(v) for k, v in times.items()}
    mean = {k: statistics.fmean(v) for k, v in times.items()}
    return {
        "label": "CPU, small shape (seq 128, batch 4, float32), not the published shape",
        "seq_len": seq_len,
        "batch": batch,
        "rounds": rounds,
        "step_s": times,
        "median_step_s": med,
        "mean_step_s": mean,
        "ratio_median_fp_over_mdlm": med["fp"] / med["mdlm"],
        "ratio_mean_fp_over_mdlm": mean["fp"] / mean["mdlm"],
        "ratio_median_fp_remat_over_mdlm": med["fp_remat"] / med["mdlm"],
        "ratio_mean_fp_remat_over_mdlm": mean["fp_remat"] / mean["mdlm"],
    }


def _pct(ratio: float) -> str:
    return f"{(ratio - 1) * 100:+.1f}%"


def markdown(report: dict) -> str:
    lines = [
        "# FP-MDLM vs MDLM: compiled train-step cost at the published OWT shapes",
        "",
        f"Command: `{report['command']}` on {report['machine']}, jax {report['jax']}; "
        f"whole run {report['total_s']:.0f} s.",
        "",
        "Train step of `configs/owt_mdlm.py` and `configs/owt.py` lowered and compiled (not "
        "run) with abstract state and batch on a one-device mesh: seq_len "
        f"{report['seq_len']}, bf16 compute, fp32 params, per-device batch as in each row "
        "(the published global batch 512 is a pod's). FLOPs are XLA `cost_analysis()`, "
        "memory `memory_analysis()`, both of the **CPU** compile (no accelerator here): "
        "a GPU compile differs in fusion and attention lowering, so read the ratios, "
        "not the absolute bytes.",
        "",
        "**What cost_analysis counts** (probe in this run, units of one matmul): "
        + ", ".join(f"{k} -> {v:.2f}" for k, v in report["semantics"].items())
        + ". So loop bodies count once and a cond counts its costlier branch: the SJFB "
        "step as compiled (while over N_ng, scan of grad_max cond-guarded steps) is "
        "under-counted. FP FLOPs below are at E[N_ng] = 2, E[N_g] = 4.5: the mean of "
        "variants pinned to (N_ng, N_g) = (2, 4) and (2, 5) "
        "(`--config.fixed_point.nograd_min=2 --config.fixed_point.nograd_max=2 "
        "--config.fixed_point.grad_min=4 --config.fixed_point.grad_max=4`, and 5), "
        "lowered with every scan unrolled, plus one more no-grad while body (compiled "
        "alone). Temp memory is the real, rolled program's: the scan stores activations "
        "for grad_max steps whatever N_g is drawn, so memory follows grad_max (6 for the "
        "published U{3..6}), not the mean.",
        "",
        "| per-device batch | MDLM GFLOP/step | FP GFLOP/step (mean counts) | FLOPs FP/MDLM "
        "| temp FP/MDLM (real U ranges) | temp FP/MDLM (pinned g=4 / g=5) "
        "| argument bytes FP/MDLM | temp+args FP/MDLM |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in report["per_batch"]:
        fl, mem = row["flops"], row["memory"]
        lines.append(
            f"| {row['batch']} | {fl['mdlm'] / 1e9:.0f} | {fl['fp_at_mean_counts'] / 1e9:.0f} "
            f"| {fl['ratio_fp_over_mdlm']:.3f} ({_pct(fl['ratio_fp_over_mdlm'])}) "
            f"| {mem['ratio_temp_fp_real_ranges']:.3f} ({_pct(mem['ratio_temp_fp_real_ranges'])}) "
            f"| {mem['ratio_temp_fp_pinned_g4']:.3f} / {mem['ratio_temp_fp_pinned_g5']:.3f} "
            f"| {mem['ratio_argument']:.3f} ({_pct(mem['ratio_argument'])}) "
            f"| {mem['ratio_temp_plus_argument_real_ranges']:.3f} "
            f"({_pct(mem['ratio_temp_plus_argument_real_ranges'])}) |"
        )
    lines += [
        "",
        "**Remat** (`fixed_point.remat = True`: every differentiated step is a "
        "`jax.checkpoint`; the backward pass stores each step's input h only and recomputes "
        "the step, one more forward of F per differentiated step). FLOPs at the mean "
        "counts as above (scans unrolled, checkpoints kept), temp memory of the real "
        "rolled program with the published U ranges:",
        "",
        "| per-device batch | setting | FLOPs FP/MDLM | temp FP/MDLM | temp+args FP/MDLM |",
        "|---|---|---|---|---|",
    ]
    for row in report["per_batch"]:
        fl, mem = row["flops"], row["memory"]
        lines += [
            f"| {row['batch']} | no remat | {fl['ratio_fp_over_mdlm']:.3f} "
            f"| {mem['ratio_temp_fp_real_ranges']:.3f} "
            f"| {mem['ratio_temp_plus_argument_real_ranges']:.3f} |",
            f"| {row['batch']} | remat | {fl['ratio_fp_remat_over_mdlm']:.3f} "
            f"| {mem['ratio_temp_fp_remat_real_ranges']:.3f} "
            f"| {mem['ratio_temp_plus_argument_remat_real_ranges']:.3f} |",
        ]
    lines += [
        "",
        "Published (docs/method.md §2.8): FP-MDLM -11.5% training time, -16.9% memory, -38.8% "
        f"params. Here: params {report['params']['fp'] / 1e6:.1f}M vs "
        f"{report['params']['mdlm'] / 1e6:.1f}M ({_pct(report['params']['ratio'])}).",
        "",
        "Temp GiB per variant (rolled programs):",
        "",
        "| per-device batch | MDLM | FP real U ranges | FP pinned (2, 4) | FP pinned (2, 5) "
        "| FP remat, real U ranges |",
        "|---|---|---|---|---|---|",
    ]
    for row in report["per_batch"]:
        t = row["memory"]["temp_bytes"]
        lines.append(
            f"| {row['batch']} | {t['mdlm'] / 2**30:.2f} | {t['fp_real_ranges'] / 2**30:.2f} "
            f"| {t['fp_pinned_ng2_g4'] / 2**30:.2f} | {t['fp_pinned_ng2_g5'] / 2**30:.2f} "
            f"| {t['fp_remat_real_ranges'] / 2**30:.2f} |"
        )
    bp = report["block_passes"]
    row = report["per_batch"][0]
    split, b = row["flops"]["split"], row["batch"]
    an = report["analytic_flops_per_row"]
    lines += [
        "",
        f"Block passes per training step (forward): MDLM {bp['mdlm_forward']}, FP "
        f"{bp['fp_forward']} (1 pre + {MEAN_NOGRAD:g} no-grad + {MEAN_GRAD:g} differentiated "
        f"+ 1 post), of which differentiated {bp['fp_differentiated']}. F carries the fc1/fc2 "
        "injection, so one F pass costs "
        f"{row['components']['fp_cell_fwd'] / row['components']['block_fwd']:.2f} "
        "block passes of FLOPs; the shared output head (V = 50258) costs "
        f"{row['components']['head_fwd'] / row['components']['block_fwd']:.2f}.",
        "",
        f"FLOPs split at batch {b} (GFLOP per row; pieces compiled alone, rest = total - pieces):",
        "",
        "| model | pieces | rest (embed, injection, loss, optimiser) | total "
        "| analytic matmul model |",
        "|---|---|---|---|---|",
        "| MDLM | 12 blocks fwd+bwd "
        f"{split['mdlm']['12_blocks_fwd_bwd'] / b / 1e9:.0f}, head fwd+bwd "
        f"{split['mdlm']['head_fwd_bwd'] / b / 1e9:.0f} | {split['mdlm']['rest'] / b / 1e9:.1f} "
        f"| {row['flops']['mdlm'] / b / 1e9:.0f} | {an['mdlm'] / 1e9:.0f} |",
        "| FP | pre+post fwd+bwd "
        f"{split['fp']['pre_post_blocks_fwd_bwd'] / b / 1e9:.0f}, F (2 no-grad + 4.5 fwd+bwd) "
        f"{split['fp']['fixed_point_cell (2 no-grad + 4.5 fwd_bwd)'] / b / 1e9:.0f}, head fwd+bwd "
        f"{split['fp']['head_fwd_bwd'] / b / 1e9:.0f} | {split['fp']['rest'] / b / 1e9:.1f} "
        f"| {row['flops']['fp_at_mean_counts'] / b / 1e9:.0f} | {an['fp'] / 1e9:.0f} |",
    ]
    wc = report.get("wallclock")
    if wc:
        lines += [
            "",
            f"Wall clock ({wc['label']}; {wc['rounds']} interleaved rounds, real SJFB "
            f"draws): median MDLM {wc['median_step_s']['mdlm']:.3f} s, FP "
            f"{wc['median_step_s']['fp']:.3f} s, FP/MDLM {wc['ratio_median_fp_over_mdlm']:.3f} "
            f"({_pct(wc['ratio_median_fp_over_mdlm'])}); means give "
            f"{wc['ratio_mean_fp_over_mdlm']:.3f}. With remat: median FP "
            f"{wc['median_step_s']['fp_remat']:.3f} s, FP/MDLM "
            f"{wc['ratio_median_fp_remat_over_mdlm']:.3f} (means "
            f"{wc['ratio_mean_fp_remat_over_mdlm']:.3f}).",
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", default="8,32", help="per-device batch sizes")
    parser.add_argument("--seq_len", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=9, help="wall-clock rounds; 0 skips")
    parser.add_argument("--quick", action="store_true", help="seq 256, batch 2, no wall clock")
    args = parser.parse_args()
    if args.quick:
        args.batches, args.seq_len, args.rounds = "2", 256, 0
    start = time.perf_counter()
    log = lambda msg: print(f"[{time.perf_counter() - start:6.0f}s] {msg}", flush=True)

    semantics = cost_semantics()
    log(f"cost_analysis semantics: {semantics}")
    per_batch = [compile_costs(args.seq_len, int(b), log) for b in args.batches.split(",")]
    first = per_batch[0]
    mdlm_cfg = from_config_dict(_config_dict("mdlm", args.seq_len, 1, "bfloat16"))
    fp_cfg = from_config_dict(_config_dict("fp", args.seq_len, 1, "bfloat16"))
    # Block passes per training forward: MDLM 12; FP 1 + N + 1 at the mean N.
    mdlm_cost, fp_cost = StepCost.for_model(mdlm_cfg.model), StepCost.for_model(fp_cfg.model)
    report: dict[str, Any] = {
        "command": "python benchmarks/fp_vs_mdlm_cost.py"
        + (" --quick" if args.quick else "")
        + ("" if args.quick or args.batches == "8,32" else f" --batches={args.batches}")
        + ("" if args.quick or args.seq_len == 1024 else f" --seq_len={args.seq_len}")
        + ("" if args.quick or args.rounds == 9 else f" --rounds={args.rounds}"),
        "machine": f"{platform.platform()}, {os.cpu_count()} cores, {jax.devices()[0].device_kind}",
        "jax": jax.__version__,
        "seq_len": args.seq_len,
        "compute_dtype": "bfloat16",
        "param_dtype": "float32",
        "mesh": "one device; batch = per-device batch",
        "published": PUBLISHED,
        "semantics": semantics,
        "params": {
            "mdlm": first["mdlm_params"],
            "fp": first["fp_params"],
            "ratio": first["fp_params"] / first["mdlm_params"],
        },
        "block_passes": {
            "mdlm_forward": mdlm_cost(0),
            "mdlm_differentiated": mdlm_cost(0),
            "fp_forward": fp_cost(MEAN_NOGRAD + MEAN_GRAD),
            "fp_differentiated": fp_cost(MEAN_GRAD),
        },
        "analytic_flops_per_row": analytic_flops_per_row(
            args.seq_len, mdlm_cfg.model.hidden_size, mdlm_cfg.model.vocab_size
        ),
        "per_batch": per_batch,
    }
    if args.rounds > 0:
        report["wallclock"] = wallclock(args.rounds, log)
    report["total_s"] = time.perf_counter() - start
    if not args.quick:  # the JSON first: the compiles are the expensive part
        os.makedirs(RESULTS, exist_ok=True)
        with open(os.path.join(RESULTS, "fp_vs_mdlm_cost.json"), "w") as f:
            json.dump(report, f, indent=2)
    text = markdown(report)
    print(text)
    if args.quick:
        return
    with open(os.path.join(RESULTS, "fp_vs_mdlm_cost.md"), "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
