"""MaskGIT-Large on ImageNette (docs/method.md §2.7): 24 blocks of width 1024, 16 heads,
over the published 4096-code VQ's 16 x 16 grid; the baseline of the image comparison."""

from configs import image_base


def get_config():
    return image_base.get_config()
