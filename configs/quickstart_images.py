"""FP-MaskGIT at a width 2 CPU cores can train, on Fashion-MNIST (offline): 28 x 28
grayscale images as a 7 x 7 grid of 256 VQ codes, 10 classes."""

from configs import image_base


def get_config():
    cfg = image_base.fp_maskgit_overlay(image_base.get_config())
    cfg.model.codebook_size = 256
    cfg.model.hidden_size, cfg.model.num_heads = 128, 4
    cfg.model.k_pre, cfg.model.k_post = 2, 2
    cfg.model.dropout = 0.0
    cfg.model.dtype = "float32"  # bf16 matmuls are slower than fp32 on most CPUs
    cfg.data.source = "fashion_mnist"
    cfg.data.image_size, cfg.data.channels, cfg.data.grid_size = 28, 1, 7
    cfg.train.batch_size = 64
    cfg.train.num_steps = 2000
    cfg.fixed_point.eval_iterations = 4
    return cfg
