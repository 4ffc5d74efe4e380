"""A tiny image config and in-memory splits for the tokenizer stage's tests: 16 x 16
grayscale block images -> an 8 x 8 grid of 32 codes, 60 steps of batch 8 (one
downsampling: every compile is short)."""

import numpy as np

from cofre_jax.config.typed import from_config_dict
from cofre_jax.data.images import ImageSplit
from configs import quickstart_images


def tiny_config(tokenizer_path: str = "", cache_dir: str = "", **overrides):
    """The quickstart image config shrunk; `overrides` are "section.key" or
    "data.tokenizer.key" values."""
    cfg = quickstart_images.get_config()
    cfg.model.codebook_size = 32
    cfg.data.image_size, cfg.data.grid_size = 16, 8
    tok = cfg.data.tokenizer
    tok.base_channels, tok.channel_mult = 8, (1, 2)
    tok.z_channels, tok.code_dim, tok.norm_groups = 8, 4, 4
    tok.steps, tok.batch_size, tok.learning_rate, tok.warmup_steps = 60, 8, 5e-3, 5
    tok.log_every, tok.checkpoint_every = 10, 30
    cfg.data.tokenizer_path, cfg.data.cache_dir = tokenizer_path, cache_dir
    for dotted, value in overrides.items():
        *sections, key = dotted.split(".")
        node = cfg
        for name in sections:
            node = node[name]
        node[key] = value
    return from_config_dict(cfg)


def block_images(count: int, size: int = 16, cell: int = 4, seed: int = 0) -> np.ndarray:
    """Binary images of cell x cell blocks."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 2, size=(count, size // cell, size // cell, 1)) * 255
    return np.repeat(np.repeat(blocks, cell, 1), cell, 2).astype(np.uint8)


def tiny_splits(n_train: int = 64, n_test: int = 16) -> tuple[ImageSplit, ImageSplit]:
    def split(images, name):
        labels = np.arange(len(images), dtype=np.int32) % 10
        return ImageSplit(images, labels, num_classes=10, name=name)

    images = block_images(n_train + n_test)
    return split(images[:n_train], "blocks-train"), split(images[n_train:], "blocks-test")
