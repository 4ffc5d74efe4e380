"""The exact scorer (`eval.scorer = "oracle"`): samples of a model trained on the
synthetic corpus, scored by the generator's own likelihood.

For each sample, the NLL per token of its C = seq_len - 2 symbols (positions 1..C; the
BOS and EOS frame is not scored) under the generator, in float64. Its mean over
samples minus the corpus's entropy per token is the **excess NLL**: 0 for samples as
good as the generator's own, growing as samples leave its support. BOS/EOS/MASK ids
written inside a row are priced as a noise-floor emission (noise / V) and counted.
Standard errors are over samples; the excess's adds the entropy estimate's in
quadrature. Unigram entropy (of each sample's own symbols) is reported next to the
data's: a model can lower its NLL by repeating safe symbols, which this exposes.
"""

from __future__ import annotations

import functools
import json
import math
import os
from typing import Any

import numpy as np

from cofre_jax.config.typed import DataConfig
from cofre_jax.data import synthetic


def score_samples(data_cfg: DataConfig, tokens_BxL: np.ndarray) -> dict[str, Any]:
    """JSON-ready exact metrics of sampled rows [B, seq_len] (see module docstring)."""
    spec = synthetic.HMMSpec.from_data_config(data_cfg)
    hmm = synthetic.SparseHMM(spec)
    content_BxC = np.asarray(tokens_BxL)[:, 1:-1]
    length = content_BxC.shape[1]
    ref = synthetic.estimate_entropy(spec, length)
    invalid_BxC = (content_BxC < 0) | (content_BxC >= spec.vocab)
    nll_B = -hmm.log_prob(content_BxC, invalid_prob=spec.noise / spec.vocab) / length
    entropy_B = synthetic.row_unigram_entropy(content_BxC)
    nll, nll_se = synthetic.mean_se(nll_B)
    entropy, entropy_se = synthetic.mean_se(entropy_B)
    return {
        "oracle_nll": nll,
        "oracle_nll_se": nll_se,
        "excess_nll": nll - ref.nll_per_token,
        "excess_nll_se": math.hypot(nll_se, ref.nll_se),
        "entropy_rate": ref.nll_per_token,
        "entropy_rate_se": ref.nll_se,
        "sample_unigram_entropy": entropy,
        "sample_unigram_entropy_se": entropy_se,
        "data_unigram_entropy": ref.unigram_entropy,
        "data_unigram_entropy_se": ref.unigram_entropy_se,
        "invalid_fraction": float(invalid_BxC.mean()),
        "oracle_nll_per_sample": nll_B.tolist(),
    }


@functools.lru_cache(maxsize=4)
def unigram_reference(spec: synthetic.HMMSpec, length: int, num_rows: int = 1024) -> dict:
    """Excess NLL (mean and SE) of rows of i.i.d. symbols drawn from the data's own
    symbol frequencies: what a model that learned the frequencies but no order would
    score. A sampler's excess NLL means something next to it and to 0 (the generator)."""
    hmm = synthetic.SparseHMM(spec)
    marginal_V = hmm.init_S @ hmm.emit_SxV  # the chain starts stationary: every position
    rng = np.random.default_rng(synthetic.split_seed(spec, "reference"))
    rows_NxC = rng.choice(spec.vocab, size=(num_rows, length), p=marginal_V / marginal_V.sum())
    nll, se = synthetic.mean_se(-hmm.log_prob(rows_NxC) / length)
    ref = synthetic.estimate_entropy(spec, length)
    return {
        "excess_nll": nll - ref.nll_per_token,
        "excess_nll_se": math.hypot(se, ref.nll_se),
        "num_rows": num_rows,
    }


def reference_lines(report: dict[str, Any], benchmark_json: str) -> list[str]:
    """What an oracle-scored eval report compares against: the order-blind unigram
    reference, the generator (0), and, when `benchmark_json` (a quality_vs_budget.json)
    exists, its MDLM and CoFRe figures at the report's budgets."""
    lines = []
    if "reference" in report:
        uni = report["reference"]["unigram_iid"]
        lines.append(
            f"reference: the generator's own rows score excess 0; rows of i.i.d. symbols "
            f"with the data's frequencies score {uni['excess_nll']:.4f} "
            f"+- {uni['excess_nll_se']:.4f}"
        )
    if not benchmark_json:
        return lines
    if not os.path.exists(benchmark_json):
        return lines + [f"reference: {benchmark_json} not found"]
    with open(benchmark_json) as f:
        bench = json.load(f)
    steps = {run: r["step"] for run, r in bench.get("runs", {}).items()}
    for budget in report["budgets"]:
        figures = [
            f"{method} {cell['excess_nll']:.4f} +- {cell['excess_nll_se']:.4f}"
            for method in ("MDLM", "CoFRe")
            if (cell := bench.get("best", {}).get(method, {}).get(str(budget)))
        ]
        if figures:
            lines.append(
                f"reference at budget {budget} ({benchmark_json}; MDLM-12 trained "
                f"{steps.get('mdlm', '?')} steps): " + ", ".join(figures)
            )
    return lines
