"""The published MDLM baseline (12 DiT blocks) on real text: UTF-8 bytes of the offline
Wikipedia-summaries corpus (docs/design.md §4), the secondary table of
benchmarks/text_quality_vs_budget.py.

The same faithful depths as the exact-likelihood comparison (configs/synthetic_mdlm.py
against configs/synthetic.py): a 12-block MDLM against FP-MDLM 1/1/1 (configs/wiki.py),
trained for equal steps on the same batches, sampled at the published budgets
96/192/384/768. Only width, row length and steps are scaled down. Real text has no
exact likelihood: samples are scored by SmolLM2-135M per scorer token and per byte.
    python -m cofre_jax.main --config=configs/wiki_mdlm.py --workdir=runs/wiki_mdlm
"""

from configs import synthetic_mdlm


def get_config():
    # The synthetic comparison's model, optimiser and schedule; the corpus differs.
    cfg = synthetic_mdlm.get_config()
    cfg.data.source = "embedded"
    cfg.data.path = "wiki"
    cfg.data.tokenizer = "byte"
    cfg.data.seq_len = 64  # [BOS] + 62 bytes + [EOS], the synthetic rows' length
    cfg.data.val_docs = 300  # as configs/quickstart_mdlm.py: the same held-out documents

    # 1500 steps x 32 rows x 64 bytes is 0.6 passes over the 4.9M-byte corpus:
    # no dropout needed.
    cfg.train.num_steps = 1500
    cfg.train.eval_every = 500
    cfg.train.eval_batches = 8

    cfg.eval.num_samples = 64
    cfg.eval.scorer = "smollm2"
    return cfg
