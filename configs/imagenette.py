"""FP-MaskGIT on ImageNette (docs/method.md §2.7): MaskGIT-Large's width, 4 explicit
blocks, 1 weight-tied block iterated to a fixed point, 4 explicit blocks (8 + N block
passes per step).

The tokenizer is image_base's kind "llamagen": LlamaGen VQ-16's layout, 256 x 256 -> a
16 x 16 grid of 4096 codes; set data.tokenizer_path to the file."""

from configs import image_base


def get_config():
    return image_base.fp_maskgit_overlay(image_base.get_config())
