"""FP-MaskGIT at a width 2 CPU cores can train, on Fashion-MNIST (offline): 28 x 28
grayscale images as a 7 x 7 grid of 256 VQ codes, 10 classes.

The tokenizer is trained here first (--mode=train_tokenizer, kind "vq"): 28 x 28 -> 7 x 7
with two downsamplings, no attention, width 8 so that 2 CPU cores train it in minutes.
Measured (make run-images on a fresh clone, 2 loaded cores): 1000 steps of batch 64 in
309 s, held-out MSE 0.0325 (images in [-1, 1]; 0.908 at init, PSNR 20.9 dB), 52% of the
256 codes used. Then FP-MaskGIT 2/1/2 at width 64 for 1000 steps (configs/
quickstart_images_cofre.py adds the consistency stage and the evaluation)."""

from configs import image_base


def get_config():
    cfg = image_base.fp_maskgit_overlay(image_base.get_config())
    cfg.model.codebook_size = 256
    cfg.model.hidden_size, cfg.model.num_heads = 64, 4
    cfg.model.k_pre, cfg.model.k_post = 2, 2
    cfg.model.dropout = 0.0
    cfg.model.dtype = "float32"  # bf16 matmuls are slower than fp32 on most CPUs
    # The committed offline results (README, benchmarks/results/image_quality_vs_budget.*)
    # were trained with per-head QK-norm and a 4D SwiGLU (Halton-MaskGIT's rounding to 256
    # would give 4D at width 64 too, but 8D at the tests' width 32).
    cfg.model.qk_norm = "per_head"
    cfg.model.mlp_multiple_of = 0
    cfg.data.source = "fashion_mnist"
    cfg.data.image_size, cfg.data.channels, cfg.data.grid_size = 28, 1, 7
    tok = cfg.data.tokenizer
    tok.kind = "vq"
    tok.base_channels, tok.channel_mult, tok.num_res_blocks = 8, (1, 2, 2), 1
    tok.z_channels, tok.code_dim, tok.norm_groups, tok.attention = 16, 8, 4, False
    tok.steps, tok.batch_size, tok.learning_rate, tok.warmup_steps = 1000, 64, 2e-3, 100
    tok.log_every, tok.checkpoint_every = 100, 500
    cfg.data.tokenizer_path = "runs/quickstart_images_tokenizer"
    cfg.train.batch_size = 64
    cfg.train.num_steps = 1000
    cfg.train.log_every, cfg.train.eval_every, cfg.train.checkpoint_every = 100, 500, 250
    # A model this small takes a larger step than the published 5e-4, and the published
    # 1500 warm-up steps would be the whole run.
    cfg.optim.lr, cfg.optim.warmup_steps = 1e-3, 100
    cfg.optim.ema_decay = 0.995  # a horizon of ~200 steps, not 10k, in a 1000-step run
    # Class-balanced samples for the in-domain FID (50 per class) and sample grids.
    cfg.eval.num_samples = 500
    cfg.sample.num_samples = 100
    cfg.fixed_point.eval_iterations = 4
    return cfg
