"""The published MDLM baseline (12 DiT blocks) at a width 2 CPU cores can train, on the
synthetic corpus whose likelihood is exact (cofre_jax/data/synthetic.py).

The depth is the published one: the comparison of docs/method.md §2.8 is a 12-block
MDLM against FP-MDLM 1/1/1 (configs/synthetic.py), at the published block-pass budgets
96/192/384/768 (8/16/32/64 MDLM steps), trained for equal steps. Only the width, the
row length and the step count are scaled down. benchmarks/quality_vs_budget.py runs it.
    python -m cofre_jax.main --config=configs/synthetic_mdlm.py --workdir=runs/synthetic_mdlm
"""

from configs import base


def get_config():
    cfg = base.get_config()
    cfg.model.kind = "mdlm"
    cfg.model.num_layers = 12
    cfg.model.hidden_size = 64
    cfg.model.num_heads = 4
    cfg.model.cond_dim = 32
    # The generator gives fresh rows faster than the run consumes them: no overfitting.
    cfg.model.dropout = 0.0
    cfg.model.dtype = "float32"  # bf16 matmuls are slower than fp32 on most CPUs

    cfg.data.source = "synthetic"
    cfg.data.tokenizer = "synthetic"
    cfg.data.seq_len = 64  # [BOS] + 62 symbols + [EOS]
    cfg.data.val_docs = 1024  # validation rows
    cfg.data.synthetic_train_rows = 200_000

    # MDLM's AdamW; lr, warm-up and a cosine decay scaled to a short run (the published
    # 3e-4 constant is tuned for 1M steps at width 768).
    cfg.optim.lr = 1.5e-3
    cfg.optim.warmup_steps = 200
    cfg.optim.lr_schedule = "cosine"
    cfg.optim.ema_decay = 0.995

    cfg.train.batch_size = 32
    cfg.train.num_steps = 2000
    cfg.train.log_every = 100
    cfg.train.eval_every = 1000
    cfg.train.eval_batches = 16
    cfg.train.checkpoint_every = 500

    cfg.sample.num_samples = 8
    cfg.sample.budget = 96
    # Rows are [BOS] + symbols + [EOS]: sample inside that frame (see configs/base.py).
    cfg.sample.frame = True

    # The published budgets; MDLM spends them in 8/16/32/64 steps of 12 blocks.
    cfg.eval.budgets = (96, 192, 384, 768)
    cfg.eval.budget_steps = ()
    cfg.eval.num_samples = 128
    cfg.eval.scorer = "oracle"
    return cfg
