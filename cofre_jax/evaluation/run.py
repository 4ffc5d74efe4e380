"""--mode=eval on one checkpoint: validation NELBO, compiled costs, and per budget the
samples' generative perplexity under the scorer LM and their unigram entropy.

The report (<workdir>/<eval.report>_step<N>.json) is rewritten after every part, so an
interrupted evaluation resumes at the first budget it had not finished. Every scored
budget is a part kept under the settings that produced it (`parts`: budget, steps,
sample count, sample and solver fields, scorer); a run with other settings adds its
parts next to the old ones and never drops them, since scoring can take hours. A part
scored by an LM also serves a later entropy-only run (`eval.scorer=none`) with the same
sampler settings. `budgets` is the view of this run's `eval.budgets`, in their order,
and `settings` this run's settings. The likelihood and the costs are redone when what
they depend on changed.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from cofre_jax import sampling, sharding, tasks
from cofre_jax.config.typed import Config
from cofre_jax.data import synthetic
from cofre_jax.evaluation import oracle
from cofre_jax.evaluation import scorer as scorer_lib
from cofre_jax.evaluation.costs import compiled_stats
from cofre_jax.io.json_file import write_json
from cofre_jax.models import count_params


def _settings(config: Config, step: int) -> dict[str, Any]:
    ev = dataclasses.asdict(config.eval)
    ev.pop("report")
    return {
        "checkpoint_step": step,
        "eval": ev,
        "sample": dataclasses.asdict(config.sample),
        "fixed_point": dataclasses.asdict(config.fixed_point),
        "seq_len": config.data.seq_len,
    }


def _part_key(config: Config, step: int, budget: int, steps: int | None) -> dict[str, Any]:
    """What a budget's entry depends on; a stored part is reused only under an equal key."""
    return _jsonable(
        {
            "checkpoint_step": step,
            "seq_len": config.data.seq_len,
            "budget": budget,
            "budget_steps": steps,
            "num_samples": config.eval.num_samples,
            "sample": dataclasses.asdict(config.sample),
            "fixed_point": dataclasses.asdict(config.fixed_point),
            "scorer": config.eval.scorer,
        }
    )


def _find_part(parts: list[dict], key: dict[str, Any]) -> dict[str, Any] | None:
    """The stored part for `key`; an entropy-only key also takes a scored part."""
    for part in parts:
        if part["key"] == key:
            return part
    if key["scorer"] == "none":
        for part in parts:
            if {**part["key"], "scorer": "none"} == key:
                return part
    return None


def _upgrade(previous: dict[str, Any]) -> list[dict]:
    """Parts of a report written before parts were kept under their settings."""
    if "parts" in previous:
        return previous["parts"]
    old = previous.get("settings") or {}
    if "eval" not in old:
        return []
    ev, parts = old["eval"], []
    steps_per_budget = ev.get("budget_steps") or [None] * len(ev.get("budgets", []))
    for budget, steps in zip(ev.get("budgets", []), steps_per_budget):
        entry = previous.get("budgets", {}).get(str(budget))
        if entry is not None:
            key = {
                "checkpoint_step": old["checkpoint_step"],
                "seq_len": old["seq_len"],
                "budget": budget,
                "budget_steps": steps,
                "num_samples": ev["num_samples"],
                "sample": old["sample"],
                "fixed_point": old["fixed_point"],
                "scorer": ev["scorer"],
            }
            parts.append({"key": key, "entry": entry})
    return parts


def _jsonable(x):
    return json.loads(json.dumps(x))  # tuples -> lists, as they come back from disk


def compiled_costs(config: Config, mesh, params, num_samples: int) -> dict[str, Any]:
    """Parameters, and XLA's FLOPs and bytes of the compiled train step and of one
    denoising network call on `num_samples` sequences."""
    from cofre_jax import train  # the optimiser and clu: only for this measurement

    program = train.build_program(config, mesh)
    L = config.data.seq_len
    batch = {
        "tokens": jax.ShapeDtypeStruct(
            (config.train.batch_size, L), jnp.int32, sharding=sharding.batch_sharding(mesh)
        )
    }
    z_BxL, sigma_B, _ = program.task.init_inputs(num_samples)
    call = jax.jit(lambda p, z, s: program.task.apply(p, z, s, train=False))
    return {
        "params": count_params(params),
        "train_step": compiled_stats(
            program.lower_train_step(program.abstract_state, batch).compile()
        ),
        "denoiser_call": compiled_stats(call.lower(params, z_BxL, sigma_B).compile()),
        "note": "XLA's cost_analysis counts a while-loop body once, so FP-MDLM FLOPs "
        "here are those of one fixed-point iteration; block passes are the exact count",
    }


def _sample_and_score(config, mesh, params, tokenizer, get_scorer, budget, steps, log):
    ev = config.eval
    plan = sampling.sample_plan(config, budget, steps)
    start = time.perf_counter()
    drawn = sampling.draw_samples(
        config, params, plan, ev.num_samples, config.sample.seed, mesh=mesh
    )
    sampling_s = time.perf_counter() - start
    texts = tasks.get_task(config).decode(tokenizer, drawn.tokens_BxL)
    entropy_B = scorer_lib.unigram_entropy(drawn.tokens_BxL, [config.model.mask_id])
    entry = {
        "budget": plan.budget,
        "steps": plan.steps,
        "planned_iterations_per_step": list(plan.iterations_T),
        "block_passes_used": drawn.block_passes,
        "entropy": float(entropy_B.mean()),
        "entropy_per_sample": entropy_B.tolist(),
        "sampling_seconds": sampling_s,
        **{k: v for k, v in drawn.details.items() if k != "block_passes_per_sequence"},
    }
    if config.eval.scorer == "oracle":
        entry.update(oracle.score_samples(config.data, drawn.tokens_BxL))
    elif config.eval.scorer != "none":
        start = time.perf_counter()
        entry.update(
            scorer_lib.generative_perplexity(
                get_scorer(),
                texts,
                max_length=config.data.seq_len,
                batch_size=config.eval.scorer_batch_size,
            )
        )
        entry["scoring_seconds"] = time.perf_counter() - start
    entry["samples"] = texts
    gen = f"gen PPL {entry['gen_ppl']:.1f}, " if "gen_ppl" in entry else ""
    if "excess_nll" in entry:
        gen = f"excess NLL {entry['excess_nll']:.4f} +- {entry['excess_nll_se']:.4f} nats/token, "
    log(
        f"budget {plan.budget} ({plan.steps} steps): {gen}entropy {entry['entropy']:.3f}, "
        f"{drawn.block_passes} block passes, sampled in {sampling_s:.1f}s"
    )
    return entry


def evaluate_checkpoint(
    config: Config,
    workdir: str,
    make_eval_batches: Callable[[], list],
    tokenizer,
    log: Callable[[str], None] = print,
) -> tuple[dict[str, Any], str]:
    """Runs (or resumes) the evaluation of the latest checkpoint; returns (report, path)."""
    from cofre_jax import train

    mesh = sharding.make_mesh(config.mesh)
    params, step = tasks.restore_model_params(config, workdir, mesh=mesh)
    path = os.path.join(workdir, f"{config.eval.report}_step{step}.json")
    settings = _jsonable(_settings(config, step))
    report: dict[str, Any] = {"step": step, "settings": settings, "budgets": {}, "parts": []}
    if os.path.exists(path):
        with open(path) as f:
            previous = json.load(f)
        report["parts"] = _upgrade(previous)
        log(f"resuming {path} (keeping its {len(report['parts'])} budget parts)")
        for name in ("likelihood", "costs", "scorer"):
            if name in previous:
                report[name] = previous[name]

    def save():
        write_json(path, report)

    # The NELBO depends on the held-out batches; the costs on the batch shapes.
    likelihood_key = _jsonable(
        {
            "data": dataclasses.asdict(config.data),
            "diffusion": dataclasses.asdict(config.diffusion),
            "batch_size": config.train.batch_size,
            "eval_batches": config.train.eval_batches,
        }
    )
    if report.get("likelihood", {}).get("key") != likelihood_key:
        log(f"validation NELBO on {config.train.eval_batches} batches")
        metrics = train.evaluate(tasks.get_task(config), mesh, params, make_eval_batches())
        report["likelihood"] = {
            "split": "validation",
            "batches": config.train.eval_batches,
            **metrics,
            "key": likelihood_key,
        }
        save()
    costs_key = _jsonable(
        {
            "num_samples": config.eval.num_samples,
            "batch_size": config.train.batch_size,
            "seq_len": config.data.seq_len,
        }
    )
    if report.get("costs", {}).get("key") != costs_key:
        report["costs"] = {
            **compiled_costs(config, mesh, params, config.eval.num_samples),
            "key": costs_key,
        }
        save()
    loaded: dict[str, Any] = {}

    def get_scorer():
        if "scorer" not in loaded:
            log(f"loading scorer {config.eval.scorer!r}")
            loaded["scorer"] = scorer_lib.load_scorer(config.eval.scorer, config.data)
            s = loaded["scorer"]
            report["scorer"] = {
                "name": s.name,
                "family": s.family,
                "params": s.num_params,
                "context": s.context,
            }
        return loaded["scorer"]

    ev = config.eval
    if ev.scorer == "oracle":  # cheap (cached), so never carried over from a resumed report
        spec = synthetic.HMMSpec.from_data_config(config.data)
        report["reference"] = {
            "unigram_iid": oracle.unigram_reference(spec, config.data.seq_len - 2)
        }
        save()
    steps_per_budget = ev.budget_steps or (None,) * len(ev.budgets)
    for done, (budget, steps) in enumerate(zip(ev.budgets, steps_per_budget)):
        key = _part_key(config, step, budget, steps)
        part = _find_part(report["parts"], key)
        if part is None:
            log(f"[{done + 1}/{len(ev.budgets)}] sampling {ev.num_samples} at budget {budget}")
            entry = _sample_and_score(
                config, mesh, params, tokenizer, get_scorer, budget, steps, log
            )
            part = {"key": key, "entry": entry}
            report["parts"].append(part)
        report["budgets"][str(budget)] = part["entry"]
        save()
    return report, path


def summary_lines(report: dict[str, Any], reference: str = "") -> list[str]:
    """The report's last lines; `reference` is eval.reference (oracle reports only)."""
    like = report["likelihood"]
    lines = [
        f"step: {report['step']}",
        f"val nats/token {like['nats_per_token']:.4f}, bits/token {like['bits_per_token']:.4f}, "
        f"PPL {like['perplexity']:.3f}",
        f"params: {report['costs']['params']}",
    ]
    for budget, entry in report["budgets"].items():
        gen = ""
        if "excess_nll" in entry:
            gen = (
                f"true NLL {entry['oracle_nll']:.4f} nats/token, excess over the entropy "
                f"{entry['entropy_rate']:.4f}: {entry['excess_nll']:.4f} "
                f"+- {entry['excess_nll_se']:.4f}; data unigram entropy "
                f"{entry['data_unigram_entropy']:.3f}  "
            )
        elif "gen_ppl" in entry:
            gen = f"gen PPL {entry['gen_ppl']:.2f} ({entry['gen_nll_per_byte']:.3f} nats/byte)  "
        lines.append(f"budget {budget}: {gen}entropy {entry['entropy']:.3f}")
    if "scorer" in report:
        lines.append(f"scorer: {report['scorer']['name']} ({report['scorer']['params']} params)")
    if "reference" in report or reference:
        lines += oracle.reference_lines(report, reference)
    return lines
