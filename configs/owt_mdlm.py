"""The published MDLM OpenWebText baseline (docs/method.md §2.1), ~170M parameters.

Prepare the data once (tokenised shards, last 100k documents held out):
    python -m cofre_jax.main --config=configs/owt_mdlm.py --mode=prepare \
        --config.data.raw_path=/path/to/openwebtext
then train:
    python -m cofre_jax.main --config=configs/owt_mdlm.py --workdir=runs/owt_mdlm
"""

from configs import base


def get_config():
    cfg = base.get_config()
    # Every value below is docs/method.md §2.1; base.py already holds most of them, they are
    # restated so this file reads as the published recipe.
    cfg.model.kind = "mdlm"
    cfg.model.hidden_size = 768
    cfg.model.num_layers = 12
    cfg.model.num_heads = 12
    cfg.model.mlp_ratio = 4
    cfg.model.cond_dim = 128
    cfg.model.time_conditioning = False
    cfg.model.dropout = 0.1
    cfg.model.dtype = "bfloat16"
    cfg.model.param_dtype = "float32"

    cfg.diffusion.schedule = "loglinear"
    cfg.diffusion.eps = 1e-3
    cfg.diffusion.antithetic = True

    cfg.data.source = "owt"
    cfg.data.path = "data/owt"  # written by --mode=prepare
    cfg.data.raw_source = "hf_folder"
    cfg.data.tokenizer = "gpt2"
    cfg.data.seq_len = 1024
    cfg.data.val_docs = 100_000

    cfg.optim.lr = 3e-4
    cfg.optim.b1, cfg.optim.b2 = 0.9, 0.999
    cfg.optim.weight_decay = 0.0
    cfg.optim.warmup_steps = 2500
    cfg.optim.lr_schedule = "constant"
    cfg.optim.grad_clip = 1.0
    cfg.optim.ema_decay = 0.9999

    cfg.train.batch_size = 512
    cfg.train.num_steps = 1_000_000

    cfg.sample.steps = 1000
    return cfg
