"""MaskGIT-12 on ImageNette (docs/method.md §2.7): MaskGIT-Large's width with 12 blocks."""

from configs import image_base


def get_config():
    cfg = image_base.get_config()
    cfg.model.num_layers = 12
    return cfg
