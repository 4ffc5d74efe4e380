"""The MDLM baseline of the quickstart: a small MDLM that trains on 2 CPU cores in a few
minutes (the embedded default, configs/quickstart.py, is its FP-MDLM counterpart).

Data is the offline Wikipedia-summaries corpus (docs/design.md §4), fetched once into the
cache; UTF-8 bytes keep the vocabulary (and so the embedding and head) tiny.
    python -m cofre_jax.main --config=configs/quickstart_mdlm.py --workdir=runs/quickstart_mdlm
"""

from configs import base


def get_config():
    cfg = base.get_config()
    cfg.model.hidden_size = 128
    cfg.model.num_layers = 4
    cfg.model.num_heads = 4
    cfg.model.cond_dim = 64
    cfg.model.dropout = 0.0  # a few hundred steps do not overfit 4.9M characters
    cfg.model.dtype = "float32"  # bf16 matmuls are slower than fp32 on most CPUs

    cfg.data.source = "embedded"
    cfg.data.path = "wiki"
    cfg.data.tokenizer = "byte"
    cfg.data.seq_len = 128
    cfg.data.val_docs = 300

    cfg.optim.lr = 1e-3
    cfg.optim.warmup_steps = 50
    cfg.optim.lr_schedule = "cosine"
    cfg.optim.ema_decay = 0.99

    cfg.train.batch_size = 32
    cfg.train.num_steps = 500
    cfg.train.log_every = 50
    cfg.train.eval_every = 250
    cfg.train.eval_batches = 8
    cfg.train.checkpoint_every = 100

    cfg.sample.num_samples = 4
    cfg.sample.steps = 128

    # --mode=eval samples at the published budgets scaled to 4 blocks (96 and 384 block
    # passes at 12 blocks, docs/method.md §2.8) and scores them with SmolLM2-135M (offline).
    cfg.eval.budgets = (32, 128)
    cfg.eval.budget_steps = (8, 32)
    cfg.eval.num_samples = 16
    return cfg
