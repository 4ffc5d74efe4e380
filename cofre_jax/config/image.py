"""The image task's sections: data (images, labels and their VQ codes) and model (the
class-conditional MaskGIT / FP-MaskGIT over a grid of codes, docs/method.md §2.7).

cofre_jax.config.tasks registers them as the "image" task. Fields mirror
`configs/image_base.py`, where each one is documented.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from cofre_jax.config.checks import _check, _check_choice, _check_model_kind, _check_stack_fields
from cofre_jax.config.choices import IMAGE_SOURCES


@dataclasses.dataclass(frozen=True)
class ImageDataConfig:
    source: str
    path: str  # image_folder: one subfolder per class
    tfds_name: str
    tfds_data_dir: str
    cache_dir: str  # where the offline dataset and the cached codes are kept
    image_size: int  # images are square, image_size x image_size pixels
    channels: int
    num_classes: int
    grid_size: int  # the tokenizer's code grid is grid_size x grid_size
    tokenizer_path: str  # a trained or imported VQ tokenizer ("" until one exists)
    shuffle_buffer_seed: int
    worker_count: int
    prefetch_batches: int

    @property
    def seq_len(self) -> int:
        """Tokens per image: the code grid, row-major."""
        return self.grid_size * self.grid_size

    def validate(self) -> None:
        _check_choice("data.source", self.source, IMAGE_SOURCES)
        if self.source == "image_folder":
            _check(bool(self.path), "data.path", self.path, "a folder for source 'image_folder'")
        if self.source == "tfds":
            _check(bool(self.tfds_name), "data.tfds_name", self.tfds_name, "a tfds dataset name")
        _check(self.image_size >= 4, "data.image_size", self.image_size, ">= 4")
        _check(self.channels in (1, 3), "data.channels", self.channels, "1 or 3")
        _check(self.num_classes >= 1, "data.num_classes", self.num_classes, ">= 1")
        _check(
            1 <= self.grid_size <= self.image_size and self.image_size % self.grid_size == 0,
            "data.grid_size",
            self.grid_size,
            f"a divisor of data.image_size={self.image_size}",
        )
        _check(self.worker_count >= 0, "data.worker_count", self.worker_count, ">= 0")
        _check(self.prefetch_batches >= 1, "data.prefetch_batches", self.prefetch_batches, ">= 1")


@dataclasses.dataclass(frozen=True)
class ImageModelConfig:
    kind: str
    codebook_size: int  # the tokenizer's codes; the MASK id is codebook_size
    num_classes: int  # class labels; the null class (for guidance) is num_classes
    hidden_size: int
    num_layers: int  # MaskGIT: number of blocks
    num_heads: int
    mlp_ratio: int  # SwiGLU hidden width = mlp_ratio * hidden_size
    register_tokens: int
    dropout: float
    label_dropout: float  # training: a label becomes the null class w.p. label_dropout
    dtype: str
    param_dtype: str
    # fp_maskgit only: explicit pre/post blocks, the weight-tied block(s), the injection.
    k_pre: int
    k_fp: int
    k_post: int
    injection: str

    @property
    def vocab_size(self) -> int:
        return self.codebook_size + 1

    @property
    def mask_id(self) -> int:
        return self.codebook_size

    @property
    def null_class(self) -> int:
        return self.num_classes

    @property
    def cond_dim(self) -> int:
        """Width of the class embedding that drives adaLN (the hidden width)."""
        return self.hidden_size

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    def validate(self) -> None:
        _check_model_kind(self, "image")
        _check(self.codebook_size >= 2, "model.codebook_size", self.codebook_size, ">= 2")
        _check(self.num_classes >= 1, "model.num_classes", self.num_classes, ">= 1")
        for name in ("hidden_size", "num_layers", "num_heads", "mlp_ratio"):
            value = getattr(self, name)
            _check(value >= 1, f"model.{name}", value, ">= 1")
        _check(
            self.hidden_size % self.num_heads == 0,
            "model.num_heads",
            self.num_heads,
            f"a divisor of model.hidden_size={self.hidden_size}",
        )
        _check(self.register_tokens >= 0, "model.register_tokens", self.register_tokens, ">= 0")
        _check(0.0 <= self.dropout < 1.0, "model.dropout", self.dropout, "[0, 1)")
        _check(0.0 <= self.label_dropout < 1.0, "model.label_dropout", self.label_dropout, "[0, 1)")
        _check_stack_fields(self)


def resolve_defaults(plain: dict[str, dict[str, Any]]) -> None:
    """Nothing depends on other sections before the image sections are built."""
    del plain


def validate(config: Any) -> None:
    """The model's classes are the data's; the scorer LMs and the post-training stages
    are the text task's."""
    data, model = config.data, config.model
    _check(
        model.num_classes == data.num_classes,
        "model.num_classes",
        model.num_classes,
        f"data.num_classes={data.num_classes}",
    )
    _check(
        config.eval.scorer == "none",
        "eval.scorer",
        config.eval.scorer,
        "'none' for images (their metrics are FID and IS)",
    )
    _check(
        config.stage.kind == "pretrain",
        "stage.kind",
        config.stage.kind,
        "'pretrain' for images (their consistency stage is not built yet; distillation "
        "converts an MDLM)",
    )
    # Guidance subtracts the null class's prediction, which only label dropout teaches.
    _check(
        config.sample.guidance_scale == 0.0 or model.label_dropout > 0.0,
        "sample.guidance_scale",
        config.sample.guidance_scale,
        "0 when model.label_dropout is 0 (the null class of guidance is never trained)",
    )
    # A frame is text's BOS/EOS; an image's first and last codes are ordinary codes.
    _check(not config.sample.frame, "sample.frame", config.sample.frame, "False for images")
