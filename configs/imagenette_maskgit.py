"""MaskGIT-Large on ImageNette (docs/method.md §2.7): 24 blocks of width 1024, 16 heads,
over the published 4096-code VQ's 16 x 16 grid; the baseline of the image comparison.

The tokenizer is image_base's kind "llamagen": LlamaGen VQ-16's layout, 256 x 256 -> a
16 x 16 grid of 4096 codes; set data.tokenizer_path to the file."""

from configs import image_base


def get_config():
    return image_base.get_config()
