"""MaskGIT-12 on ImageNette (docs/method.md §2.7): MaskGIT-Large's width with 12 blocks.

The tokenizer is image_base's kind "llamagen": LlamaGen VQ-16's layout, 256 x 256 -> a
16 x 16 grid of 4096 codes; set data.tokenizer_path to the file."""

from configs import image_base


def get_config():
    cfg = image_base.get_config()
    cfg.model.num_layers = 12
    return cfg
