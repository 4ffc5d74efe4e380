"""Our MDLM train step against MD4's (google-deepmind/md4) at equal config, in one process.

At each shape (depth, width, heads, sequence length, batch) both train steps are built
with the same vocabulary, optimiser (AdamW, same lr, betas and weight decay, no
clipping, no EMA), float32 and no dropout, then interleaved A B A B: the median of the
timed steps gives tokens/s; XLA's `cost_analysis()` FLOPs and `memory_analysis()` temp
bytes come from the compiled steps. Both donate their train state. MD4's step is its own
`md4.train.train_step` built by `md4.train.create_train_state` from its OpenWebText
config (`md4/configs/md4/openwebtext.py`: GLU MLP, adaLN-zero, RoPE, continuous time)
and run under `jax.pmap` over one device, as MD4's trainer runs it (MD4 passes the
state by keyword, which pmap's donate_argnums=(0,) does not donate; here it is passed
by position, so it is donated as ours is). Ours is
`cofre_jax.train.build_program` of `configs/base.py` (MDLM's DiT: GELU MLP, adaLN-zero,
rotary) on a one-device mesh. The architectures are each project's own, so FLOPs per
token differ a little (the FLOPs ratio says by how much).

MD4 is not a dependency and nothing of it lives here. To run this, check MD4 out and
make a separate virtual environment for it, never the project's own: MD4 imports
tensorflow_probability, whose release does not import on JAX 0.10 (`tfp-nightly` does),
and distrax (install it with --no-deps, so that it leaves jax and tfp alone). tfp refuses
to import next to TensorFlow (one of our dependencies) without tf-keras, whose own pin
would add a second TensorFlow: --no-deps too, at your TensorFlow's version. Pin jax and
jaxlib to the versions of the environment you compare with.

    git clone https://github.com/google-deepmind/md4 /path/to/md4
    python3.11 -m venv /path/to/md4venv
    /path/to/md4venv/bin/pip install -e . jax==X jaxlib==X   # this repository
    /path/to/md4venv/bin/pip install tfp-nightly chex transformers datasets matplotlib seaborn
    /path/to/md4venv/bin/pip install --no-deps distrax tf-keras==<your tensorflow's version>
    /path/to/md4venv/bin/python benchmarks/versus_md4.py --md4_path=/path/to/md4

Measured with MD4 at commit b9fbf29 (2025-02-26), tfp-nightly 0.26.0.dev20261027,
distrax 0.1.9, chex 0.1.92, tf-keras 2.21.0, jax 0.10.2.

Writes benchmarks/results/versus_md4.{json,md} with the command that made them
(`--quick`: tiny shapes, prints only).
"""

from __future__ import annotations

import argparse
import os
import sys

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")

# The shapes of issue 15's comparison: (name, layers, width, heads, seq_len, batch).
SHAPES = (
    ("6L_d256_L256_B16", 6, 256, 4, 256, 16),
    ("8L_d512_L128_B16", 8, 512, 8, 128, 16),
)
QUICK_SHAPES = (("2L_d64_L32_B4", 2, 64, 2, 32, 4),)
MD4_FILES = ("md4/train.py", "md4/models/utils.py", "md4/configs/md4/openwebtext.py")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--md4_path", required=True, help="a checkout of google-deepmind/md4 (the repo root)"
    )
    parser.add_argument("--rounds", type=int, default=7, help="timed steps per model, interleaved")
    parser.add_argument(
        "--vocabs",
        default="gpt2,byte",
        help="vocabularies, comma separated: gpt2 (GPT-2 BPE, 50257 ids, OpenWebText's, "
        "where the head and loss dominate) and/or byte (257 ids, where the blocks do)",
    )
    parser.add_argument(
        "--results_dir", default=RESULTS, help="where versus_md4.{json,md} are written"
    )
    parser.add_argument("--quick", action="store_true", help="tiny shapes, results printed only")
    args = parser.parse_args(argv)
    args.vocabs = tuple(args.vocabs.split(","))
    unknown = [v for v in args.vocabs if v not in ("gpt2", "byte")]
    if unknown:
        parser.error(f"--vocabs: unknown {unknown[0]!r}; valid: gpt2, byte")
    missing = [f for f in MD4_FILES if not os.path.isfile(os.path.join(args.md4_path, f))]
    if missing:
        # One line, before anything heavy is imported.
        print(
            f"versus_md4.py: error: --md4_path={args.md4_path} is not a checkout of "
            f"google-deepmind/md4 (no {missing[0]}); see this script's docstring",
            file=sys.stderr,
        )
        sys.exit(2)
    return args


def _import_md4(md4_path: str):
    """MD4's train module and OpenWebText config, loaded from the checkout as the package
    `md4` (its modules import each other as `from md4 import ...`)."""
    import importlib
    import importlib.util

    root = os.path.join(os.path.abspath(md4_path), "md4")
    try:
        spec = importlib.util.spec_from_file_location(
            "md4", os.path.join(root, "__init__.py"), submodule_search_locations=[root]
        )
        package = importlib.util.module_from_spec(spec)
        sys.modules["md4"] = package
        spec.loader.exec_module(package)
        md4_train = importlib.import_module("md4.train")
        spec = importlib.util.spec_from_file_location(
            "md4_owt_config", os.path.join(root, "configs", "md4", "openwebtext.py")
        )
        owt = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(owt)
    except ImportError as e:
        print(
            f"versus_md4.py: error: MD4 does not import ({e}); install its packages in a "
            "separate venv as this script's docstring says",
            file=sys.stderr,
        )
        sys.exit(2)
    return md4_train, owt


# Shared hyper-parameters: AdamW, constant lr after a linear warm-up, nothing else.
LR, B1, B2, WEIGHT_DECAY, WARMUP = 3e-4, 0.9, 0.999, 0.0, 1000


def build_ours(shape, tokenizer: str):
    import jax
    import numpy as np

    from cofre_jax import sharding, train
    from cofre_jax.config.typed import from_config_dict
    from configs import base

    _, layers, width, heads, seq_len, batch = shape
    cfg = base.get_config()
    cfg.model.kind = "mdlm"
    cfg.model.num_layers, cfg.model.hidden_size, cfg.model.num_heads = layers, width, heads
    cfg.model.cond_dim = width // heads  # MD4's condition width is its feature_dim
    cfg.model.dropout = 0.0
    cfg.model.dtype = "float32"
    cfg.data.tokenizer, cfg.data.seq_len = tokenizer, seq_len
    cfg.data.source, cfg.data.path = "text_files", "unused"  # synthetic batches
    cfg.train.batch_size = batch
    cfg.optim.lr, cfg.optim.b1, cfg.optim.b2 = LR, B1, B2
    cfg.optim.weight_decay, cfg.optim.warmup_steps = WEIGHT_DECAY, WARMUP
    cfg.optim.lr_schedule, cfg.optim.grad_clip, cfg.optim.ema_decay = "constant", 0.0, 0.0
    config = from_config_dict(cfg)
    program = train.build_program(config, sharding.make_mesh(config.mesh, jax.devices()[:1]))
    tokens = np.random.default_rng(0).integers(
        0, config.model.mask_id, size=(batch, seq_len), dtype=np.int32
    )
    batch_arrays = sharding.global_batch({"tokens": tokens}, program.mesh)
    state = program.init_state()
    compiled = program.lower_train_step(state, batch_arrays).compile()

    def step(state):
        state, metrics = program.train_step(state, batch_arrays)
        return state, metrics["loss"]

    params = sum(x.size for x in jax.tree_util.tree_leaves(state.params))
    return {"compiled": compiled, "state": state, "step": step, "params": params}


def build_md4(shape, tokenizer: str, md4_train, owt):
    import functools

    import flax.jax_utils as flax_utils
    import jax
    import numpy as np

    from cofre_jax.config.text import TOKENIZER_VOCAB_SIZES

    _, layers, width, heads, seq_len, batch = shape
    cfg = owt.get_config()
    cfg.vocab_size = TOKENIZER_VOCAB_SIZES[tokenizer]  # MD4 adds the MASK id itself
    cfg.data_shape = (seq_len,)
    cfg.n_layers, cfg.num_heads, cfg.feature_dim = layers, heads, width // heads
    cfg.dropout_rate = 0.0
    cfg.batch_size = batch
    cfg.learning_rate, cfg.learning_rate_schedule, cfg.warmup_steps = LR, "constant", WARMUP
    cfg.b2, cfg.weight_decay, cfg.clip, cfg.ema_rate = B2, WEIGHT_DECAY, 0.0, 0.0
    schedule_fn = functools.partial(
        md4_train.get_learning_rate,
        base_learning_rate=cfg.learning_rate,
        num_steps=cfg.num_train_steps,
        warmup_steps=cfg.warmup_steps,
        schedule_type=cfg.learning_rate_schedule,
    )
    model, optimizer, state, metrics_class = md4_train.create_train_state(
        cfg, jax.random.PRNGKey(0), input_shape=(batch, seq_len), schedule_fn=schedule_fn
    )
    # As md4.train.train_and_evaluate builds it (ema_rate 0, no microbatches), with the
    # state and batch passed by position: MD4 passes them by keyword, which pmap's
    # donate_argnums=(0,) does not donate; here its state is donated as ours is.
    md4_step = functools.partial(
        md4_train.train_step,
        model=model,
        optimizer=optimizer,
        train_metrics_class=metrics_class,
        learning_rate_fn=schedule_fn,
        ema_rate=cfg.ema_rate,
        num_microbatches=None,
    )
    p_train_step = jax.pmap(
        lambda train_state, batch: md4_step(train_state=train_state, batch=batch),
        axis_name="batch",
        devices=jax.devices()[:1],
        donate_argnums=(0,),
    )
    tokens = np.random.default_rng(0).integers(
        0, cfg.vocab_size, size=(1, batch, seq_len), dtype=np.int32
    )
    batch_arrays = flax_utils.replicate({"text": tokens[0]}, jax.devices()[:1])
    state = flax_utils.replicate(state, jax.devices()[:1])
    compiled = p_train_step.lower(state, batch_arrays).compile()

    def step(state):
        state, metrics = p_train_step(state, batch_arrays)
        return state, metrics

    params = sum(x.size for x in jax.tree_util.tree_leaves(state.params))
    return {"compiled": compiled, "state": state, "step": step, "params": params}


def _commit_of(folder: str) -> str:
    """The git commit of the measured cofre_jax (+ "-dirty" if its tree has changes)."""
    import subprocess

    def git(*args):
        done = subprocess.run(["git", "-C", folder, *args], capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    return commit + ("-dirty" if git("status", "--porcelain", "--", ".") else "")


def _stats(compiled) -> dict:
    from cofre_jax.evaluation.costs import compiled_stats

    return compiled_stats(compiled)


def main(argv=None) -> None:
    args = parse_args(argv)
    md4_train, owt = _import_md4(args.md4_path)

    import json
    import platform
    import statistics
    import time

    import jax

    import cofre_jax

    shapes = QUICK_SHAPES if args.quick else SHAPES
    rounds = min(args.rounds, 3) if args.quick else args.rounds
    cases = [(vocab, shape) for vocab in args.vocabs for shape in shapes]
    start = time.perf_counter()
    runs = {}
    for vocab, shape in cases:
        for impl, build in (("ours", build_ours), ("md4", build_md4)):
            extra = (md4_train, owt) if impl == "md4" else ()
            run = build(shape, vocab, *extra)
            run["stats"] = _stats(run.pop("compiled"))
            for _ in range(2):  # compile + warm up (pmap compiles again for its own output)
                run["state"], out = run["step"](run["state"])
                jax.block_until_ready(out)
            runs[(vocab, shape[0], impl)] = run
            print(
                f"{vocab} {shape[0]} {impl}: {run['params'] / 1e6:.2f}M params, "
                f"{run['stats']['flops'] / 1e9:.1f} GFLOP/step, "
                f"temp {run['stats']['temp_bytes'] / 2**20:.1f} MiB",
                flush=True,
            )
    times = {key: [] for key in runs}
    for r in range(rounds):  # A B A B, the order flipped every round
        order = list(runs) if r % 2 == 0 else list(reversed(runs))
        for key in order:
            run = runs[key]
            t0 = time.perf_counter()
            run["state"], out = run["step"](run["state"])
            jax.block_until_ready(out)
            times[key].append(time.perf_counter() - t0)
        print(f"round {r + 1}/{rounds} done", flush=True)

    rows = []
    for vocab, shape in cases:
        name, layers, width, heads, seq_len, batch = shape
        row = {"vocab": vocab, "shape": name, "layers": layers, "width": width}
        row.update(heads=heads, seq_len=seq_len, batch=batch)
        for impl in ("ours", "md4"):
            run, steps = runs[(vocab, name, impl)], times[(vocab, name, impl)]
            step_s = statistics.median(steps)
            row[impl] = {
                "params": int(run["params"]),
                "median_step_s": step_s,
                "step_s": steps,
                "tokens_per_s": batch * seq_len / step_s,
                "flops_per_token": run["stats"]["flops"] / (batch * seq_len),
                **run["stats"],
            }
        ours, md4 = row["ours"], row["md4"]
        row["tokens_per_s_ratio"] = ours["tokens_per_s"] / md4["tokens_per_s"]
        # Ratio of the medians of per-round ratios: each round's two steps ran back to back.
        row["median_round_ratio"] = statistics.median(
            m / o for o, m in zip(ours["step_s"], md4["step_s"])
        )
        row["temp_bytes_ratio"] = ours["temp_bytes"] / md4["temp_bytes"]
        row["flops_ratio"] = ours["flops"] / md4["flops"]
        rows.append(row)

    command = "python benchmarks/versus_md4.py --md4_path=PATH/TO/md4"
    command += f" --rounds={args.rounds}" if args.rounds != 7 else ""
    command += f" --vocabs={','.join(args.vocabs)}" if args.vocabs != ("gpt2", "byte") else ""
    report = {
        "command": command + (" --quick" if args.quick else ""),
        "machine": f"{platform.machine()} {os.cpu_count()} cores, {jax.devices()[0].device_kind}",
        "jax": jax.__version__,
        "cofre_jax_commit": _commit_of(os.path.dirname(os.path.abspath(cofre_jax.__file__))),
        "rounds": rounds,
        "seconds": time.perf_counter() - start,
        "rows": rows,
    }
    lines = [
        "# Our MDLM train step vs MD4's, equal config",
        "",
        f"Command: `{report['command']}` (a separate venv with MD4's packages, see the "
        f"script's docstring) on {report['machine']}, jax {jax.__version__}, cofre_jax at "
        f"{report['cofre_jax_commit']}; whole run {report['seconds']:.0f} s.",
        "",
        f"Both in float32, AdamW (lr {LR}, betas {B1}/{B2}, weight decay {WEIGHT_DECAY}, "
        "no clipping), no EMA, no dropout, train state donated; vocabulary gpt2 = 50257 "
        "ids (+ MASK), byte = 257 (+ MASK). Tokens/s: median of "
        f"{rounds} interleaved steps each (A B A B, order flipped every round); the "
        "per-round ratio is the median over rounds of MD4's step time / ours. FLOPs: XLA "
        "`cost_analysis()`; temp: `memory_analysis().temp_size_in_bytes`, both of the "
        "compiled CPU step. Ratios are ours / MD4's (tokens/s: > 1 is ours faster; temp: "
        "< 1 is ours smaller). Our state also holds the EMA parameters (equal to the "
        "parameters with the EMA off), so its argument bytes are 4 x params against "
        "MD4's 3 x; temp bytes exclude arguments and outputs.",
        "",
        "| vocab | shape | params ours / MD4 | tokens/s ours | tokens/s MD4 "
        "| tokens/s ratio | per-round ratio | temp MiB ours | temp MiB MD4 | temp ratio "
        "| GFLOP/step ours | GFLOP/step MD4 | FLOPs ratio |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        o, m = row["ours"], row["md4"]
        lines.append(
            f"| {row['vocab']} | {row['shape']} "
            f"| {o['params'] / 1e6:.2f}M / {m['params'] / 1e6:.2f}M "
            f"| {o['tokens_per_s']:.0f} | {m['tokens_per_s']:.0f} "
            f"| {row['tokens_per_s_ratio']:.3f} | {row['median_round_ratio']:.3f} "
            f"| {o['temp_bytes'] / 2**20:.1f} | {m['temp_bytes'] / 2**20:.1f} "
            f"| {row['temp_bytes_ratio']:.3f} | {o['flops'] / 1e9:.1f} "
            f"| {m['flops'] / 1e9:.1f} | {row['flops_ratio']:.3f} |"
        )
    print("\n".join(lines))
    if args.quick:
        return
    os.makedirs(args.results_dir, exist_ok=True)
    with open(os.path.join(args.results_dir, "versus_md4.json"), "w") as f:
        json.dump(report, f, indent=2)
    with open(os.path.join(args.results_dir, "versus_md4.md"), "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
