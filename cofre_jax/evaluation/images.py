"""--mode=eval for the image task as a library: per block-pass budget, class-balanced
samples from the model, decoded to images, scored by a Frechet distance to the test
split and an Inception-Score-style score, with a PNG grid (docs/method.md §2.7-§2.8).

    evaluate_images(config, params, decode_fn, test_split, extractor, *, budgets,
                    num_samples, seed, workdir, log) -> report

The distance and score are named by the extractor (image_features.py): "FID" / "IS"
only for pytorch-fid's Inception, else e.g. "in-domain FID (Fashion-MNIST classifier)".
The reference line is the same distance between real images: `num_samples` test images
of one half of the test split against the other half's statistics, so a model's value
can be read against what real images of that sample count reach (the distance is biased
upwards at small counts).

The report (<workdir>/<eval.report>_images[_step<N>].json) is rewritten atomically after
every budget; a budget whose stored key (parameters, sampler and solver settings, sample
count, seed, extractor, test split) equals this run's is kept, so a rerun skips finished
budgets and an interrupted run loses at most the budget in progress. Grids go next to
it, <eval.report>_images[_step<N>]_budget<B>.png: one row per class.

Legend: N images, B sampling chunk, H/W height/width, C channels, F features, K classes.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

from cofre_jax.config.typed import Config
from cofre_jax.data.assets import resolve_cache_dir
from cofre_jax.data.images.split import ImageSplit
from cofre_jax.evaluation import fid
from cofre_jax.evaluation.image_features import (
    ImageExtractor,
    in_domain_extractor,
    inception_image_extractor,
    make_image_extractor,
)
from cofre_jax.io.json_file import write_json
from cofre_jax.io.png import image_grid, write_png
from cofre_jax.sampling.draw import sample_plan
from cofre_jax.sampling.images import draw_image_samples

GRID_COLUMNS = 10  # samples per class shown in a budget's PNG grid
# The Inception Score's usual 10 splits, but no split under 100 images: the score of a
# handful of images measures how few they are (its marginal p(y) is their own labels).
IS_SPLITS, IS_MIN_SPLIT = 10, 100
EXTRACT_BATCH = 50  # images per feature-extractor call (pytorch-fid's default)

__all__ = [
    "ImageExtractor",
    "class_balanced_labels",
    "evaluate_images",
    "in_domain_extractor",
    "inception_image_extractor",
    "make_image_extractor",
    "summary_lines",
]


def class_balanced_labels(n: int, num_classes: int) -> np.ndarray:
    """int32 labels_N: each class n / num_classes times, in class order (0, 0, .., 1, ..),
    so that a grid with one row per class shows the classes in order."""
    if num_classes < 1 or n < num_classes or n % num_classes:
        raise ValueError(
            f"{n} samples cannot be split evenly over {num_classes} classes (use a multiple)"
        )
    return np.repeat(np.arange(num_classes, dtype=np.int32), n // num_classes)


def _jsonable(x):
    return json.loads(json.dumps(x))  # tuples -> lists, as they come back from disk


def _score(logits_NxK, seed: int) -> dict[str, Any]:
    """The score of logits given in class order: shuffled first, since each split's
    marginal p(y) must see every class (splits of class-sorted samples would each hold
    a few classes, and the score would measure the split, not the model)."""
    logits_NxK = np.asarray(logits_NxK)
    order_N = np.random.default_rng(seed).permutation(len(logits_NxK))
    splits = max(1, min(IS_SPLITS, len(logits_NxK) // IS_MIN_SPLIT))
    mean, std = fid.inception_score(logits_NxK[order_N], splits)
    return {"mean": mean, "std": std, "splits": splits}


def _features_and_logits(extractor: ImageExtractor, images_NxHxWxC):
    return fid.extract_features(extractor.both_fn, images_NxHxWxC, EXTRACT_BATCH)


def _test_halves(test: ImageSplit) -> tuple[np.ndarray, np.ndarray]:
    """Rows of two halves of the test split, each holding every class equally (a class
    sorted split cut in the middle would compare different classes): shuffled with a
    fixed seed, then alternate rows within each class."""
    order_N = np.random.default_rng(0).permutation(len(test))
    labels_N = test.labels_N[order_N]
    rank_N = np.zeros(len(test), np.int64)
    for label in range(test.num_classes):
        rows = np.flatnonzero(labels_N == label)
        rank_N[rows] = np.arange(len(rows))
    return order_N[rank_N % 2 == 0], order_N[rank_N % 2 == 1]


def _reference(test, extractor, num_samples, test_fp, cache_dir, log) -> dict[str, Any]:
    first, second = _test_halves(test)
    images = test.images_NxHxWxC
    log(f"reference: {min(num_samples, len(first))} test images vs the other half's statistics")
    second_stats = fid.reference_statistics(
        images[second], extractor, cache_dir, dataset_fingerprint=f"{test_fp}:second-half"
    )
    features_NxF, logits_NxK = _features_and_logits(extractor, images[first[:num_samples]])
    result = fid.fid_from_features(features_NxF, second_stats, extractor.label)
    return {
        "fid": dataclasses.asdict(result),
        "score": {"label": extractor.score_label, **_score(logits_NxK, seed=0)},
    }


def _decoded(decode_fn, codes_Bxhxw, image_shape) -> np.ndarray:
    images = np.asarray(jax.device_get(decode_fn(codes_Bxhxw)))
    want = (len(codes_Bxhxw), *image_shape)
    if images.dtype != np.uint8 or images.shape != want:
        raise ValueError(
            f"decode_fn must return uint8 images of shape {want}, got {images.dtype} {images.shape}"
        )
    return images


def _draw_all(config, params, plan, labels_N, seed, batch_size, log):
    """Codes for every label, drawn in equal chunks (one compile; the last is padded
    with its own labels and trimmed), the chunks' conditional and guided passes."""
    n, grid = len(labels_N), config.data.grid_size
    codes, passes, guided, details = [], 0, 0, {}
    for start in range(0, n, batch_size):
        chunk_B = labels_N[start : start + batch_size]
        real = len(chunk_B)
        if real < batch_size and n > batch_size:
            chunk_B = np.concatenate([chunk_B, np.resize(chunk_B, batch_size - real)])
        drawn = draw_image_samples(config, params, plan, chunk_B, seed + start)
        codes.append(drawn.tokens_BxL[:real].reshape(real, grid, grid))
        # Each chunk runs within the budget; a chunk's count is also each image's.
        passes = max(passes, drawn.block_passes)
        guided = max(guided, drawn.details["block_passes_with_guidance"])
        details = details or drawn.details
        if n > batch_size:
            log(f"  sampled {start + real}/{n}")
    details = {k: v for k, v in details.items() if k != "block_passes_per_sequence"}
    return np.concatenate(codes), passes, guided, details


def _budget_entry(
    config, params, decode_fn, test, extractor, reference_stats, budget, steps, labels_N,
    seed, batch_size, png_path, log,
):  # fmt: skip
    plan = sample_plan(config, budget, steps)
    start = time.perf_counter()
    codes_Nxhxw, passes, guided, details = _draw_all(
        config, params, plan, labels_N, seed, batch_size, log
    )
    sampling_s = time.perf_counter() - start
    images_NxHxWxC = _decoded(decode_fn, codes_Nxhxw, test.image_shape)
    features_NxF, logits_NxK = _features_and_logits(extractor, images_NxHxWxC)
    result = fid.fid_from_features(features_NxF, reference_stats, extractor.label)
    score = {"label": extractor.score_label, **_score(logits_NxK, seed)}
    num_classes = config.model.num_classes
    per_class = len(labels_N) // num_classes
    cols = min(GRID_COLUMNS, per_class)
    shown = [k * per_class + j for k in range(num_classes) for j in range(cols)]
    write_png(png_path, image_grid(images_NxHxWxC[shown], num_classes, cols))
    entry = {
        "budget": plan.budget,
        "steps": plan.steps,
        "planned_iterations_per_step": list(plan.iterations_T),
        "block_passes": passes,
        "block_passes_with_guidance": guided,
        "fid": dataclasses.asdict(result),
        "score": score,
        "grid": os.path.basename(png_path),
        "sampling_seconds": sampling_s,
        "details": details,
    }
    log(
        f"budget {plan.budget} ({plan.steps} steps): {result.label} {result.value:.3f}, "
        f"{score['label']} {score['mean']:.3f} +- {score['std']:.3f}; {passes} block passes "
        f"({guided} with guidance), sampled in {sampling_s:.1f}s"
    )
    return entry


def evaluate_images(
    config: Config,
    params,
    decode_fn: Callable[[Any], Any],
    test_split: ImageSplit,
    extractor: ImageExtractor,
    *,
    budgets: Sequence[int],
    num_samples: int,
    seed: int,
    workdir: str,
    log: Callable[[str], None] = print,
    budget_steps: Sequence[int] | None = None,
    batch_size: int | None = None,
    step: int | None = None,
) -> dict[str, Any]:
    """Runs (or resumes) the image evaluation; returns the report (also on disk).

    decode_fn(codes_Bxhxw) -> uint8 images B x H x W x C (the VQ tokenizer's decoder);
    num_samples a multiple of the class count. budget_steps: steps per budget (None:
    eval.budget_steps when it has one per budget, else sample.budget_steps or derived);
    batch_size: images per sampler call (None: train.batch_size); step: the checkpoint
    step, named in the file names when given."""
    num_classes = config.model.num_classes
    labels_N = class_balanced_labels(num_samples, num_classes)
    budgets = tuple(int(b) for b in budgets)
    if budget_steps is None:
        ev = config.eval
        budget_steps = ev.budget_steps if ev.budget_steps and ev.budgets == budgets else None
    steps_per_budget = tuple(budget_steps) if budget_steps else (None,) * len(budgets)
    if len(steps_per_budget) != len(budgets):
        raise ValueError(f"{len(steps_per_budget)} budget_steps for {len(budgets)} budgets")
    batch_size = min(batch_size or config.train.batch_size, num_samples)
    stem = f"{config.eval.report}_images" + (f"_step{step}" if step is not None else "")
    path = os.path.join(workdir, f"{stem}.json")
    os.makedirs(workdir, exist_ok=True)
    cache_dir = str(resolve_cache_dir(config.data.cache_dir) / "fid_reference")
    test_fp = fid.fingerprint_arrays(test_split.images_NxHxWxC)
    common_key = _jsonable(
        {
            "params": fid.fingerprint_arrays(jax.device_get(params)),
            "num_samples": num_samples,
            "seed": seed,
            "sample": dataclasses.asdict(config.sample),
            "fixed_point": dataclasses.asdict(config.fixed_point),
            "extractor": extractor.fingerprint,
            "test": test_fp,
        }
    )
    report: dict[str, Any] = {"budgets": {}}
    if os.path.exists(path):
        with open(path) as f:
            report = json.load(f)
        log(f"resuming {path} ({len(report.get('budgets', {}))} budgets stored)")
    report["features"] = {
        "distance": extractor.label,
        "score": extractor.score_label,
        "classifier_test_accuracy": extractor.accuracy,
    }
    report["num_samples"], report["step"] = num_samples, step
    report["budgets_this_run"] = list(budgets)  # stored budgets of other runs stay too
    ref_key = {k: common_key[k] for k in ("num_samples", "extractor", "test")}
    if report.get("reference", {}).get("key") != ref_key:
        report["reference"] = {
            **_reference(test_split, extractor, num_samples, test_fp, cache_dir, log),
            "key": ref_key,
        }
        write_json(path, report)
    reference_stats = fid.reference_statistics(
        test_split.images_NxHxWxC, extractor, cache_dir, dataset_fingerprint=test_fp
    )
    for done, (budget, steps) in enumerate(zip(budgets, steps_per_budget)):
        key = {**common_key, "budget": budget, "budget_steps": steps}
        stored = report["budgets"].get(str(budget))
        if stored is not None and stored.get("key") == key:
            log(f"[{done + 1}/{len(budgets)}] budget {budget}: kept from {path}")
            continue
        log(f"[{done + 1}/{len(budgets)}] sampling {num_samples} images at budget {budget}")
        entry = _budget_entry(
            config, params, decode_fn, test_split, extractor, reference_stats, budget, steps,
            labels_N, seed, batch_size, os.path.join(workdir, f"{stem}_budget{budget}.png"), log,
        )  # fmt: skip
        report["budgets"][str(budget)] = {**_jsonable(entry), "key": key}
        write_json(path, report)
    return report


def summary_lines(report: dict[str, Any]) -> list[str]:
    """The report's closing lines: the reference, then one line per budget."""
    features, ref = report["features"], report["reference"]
    lines = [f"{report['num_samples']} samples per budget, class-balanced"]
    if features.get("classifier_test_accuracy") is not None:
        lines.append(
            f"in-domain classifier test accuracy {features['classifier_test_accuracy']:.4f}"
        )
    lines.append(
        f"reference (real test images, {ref['fid']['count']} vs {ref['fid']['reference_count']}):"
        f" {ref['fid']['label']} {ref['fid']['value']:.3f}, {ref['score']['label']} "
        f"{ref['score']['mean']:.3f}"
    )
    for budget in report["budgets_this_run"]:
        entry = report["budgets"][str(budget)]
        lines.append(
            f"budget {budget} ({entry['steps']} steps): {entry['fid']['label']} "
            f"{entry['fid']['value']:.3f}, {entry['score']['label']} {entry['score']['mean']:.3f}"
            f" +- {entry['score']['std']:.3f}; {entry['block_passes']} block passes "
            f"({entry['block_passes_with_guidance']} with guidance); grid {entry['grid']}"
        )
    return lines
