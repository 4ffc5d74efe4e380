"""The image task's sections: data (images, labels and their VQ codes) and model (the
class-conditional MaskGIT / FP-MaskGIT over a grid of codes, docs/method.md §2.7).

cofre_jax.config.tasks registers them as the "image" task. Fields mirror
`configs/image_base.py`, where each one is documented.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from cofre_jax.config.checks import (
    ConfigError,
    _check,
    _check_choice,
    _check_model_kind,
    _check_stack_fields,
    _int_tuple_field,
)
from cofre_jax.config.choices import IMAGE_SOURCES, QK_NORMS

# "vq": trained by this library (--mode=train_tokenizer, cofre_jax/vq/run.py);
# "llamagen": a LlamaGen tokenizer file read by cofre_jax/vq/llamagen.py.
IMAGE_TOKENIZER_KINDS = ("vq", "llamagen")


@dataclasses.dataclass(frozen=True)
class ImageTokenizerConfig:
    """data.tokenizer: the VQ tokenizer's architecture and training. Its codebook size is
    model.codebook_size and its image channels data.channels (not repeated here)."""

    kind: str
    base_channels: int
    channel_mult: tuple[int, ...]  # len - 1 stride-2 downsamplings
    num_res_blocks: int
    z_channels: int
    code_dim: int
    l2_normalised_codes: bool
    commitment_beta: float
    norm_groups: int
    attention: bool
    steps: int
    batch_size: int
    learning_rate: float
    warmup_steps: int
    log_every: int
    checkpoint_every: int
    seed: int

    def __post_init__(self):
        _int_tuple_field(self, "data.tokenizer", "channel_mult", "positive ints, e.g. (1, 2, 2)")

    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.channel_mult) - 1)

    def validate(self) -> None:
        _check_choice("data.tokenizer.kind", self.kind, IMAGE_TOKENIZER_KINDS)
        mult = self.channel_mult
        _check(
            bool(mult) and min(mult) >= 1,
            "data.tokenizer.channel_mult",
            mult,
            "a non-empty sequence of positive ints",
        )
        for name in ("base_channels", "num_res_blocks", "z_channels", "code_dim", "norm_groups"):
            value = getattr(self, name)
            _check(value >= 1, f"data.tokenizer.{name}", value, ">= 1")
        widths = [self.base_channels * m for m in mult]
        _check(
            all(w % self.norm_groups == 0 for w in widths),
            "data.tokenizer.norm_groups",
            self.norm_groups,
            f"a divisor of every level's width base_channels * channel_mult = {widths}",
        )
        beta = self.commitment_beta
        _check(beta >= 0, "data.tokenizer.commitment_beta", beta, ">= 0")
        for name in ("steps", "batch_size", "log_every", "checkpoint_every"):
            value = getattr(self, name)
            _check(value >= 1, f"data.tokenizer.{name}", value, ">= 1")
        lr = self.learning_rate
        _check(lr > 0, "data.tokenizer.learning_rate", lr, "> 0")
        warmup = self.warmup_steps
        _check(warmup >= 0, "data.tokenizer.warmup_steps", warmup, ">= 0")


def tokenizer_section(value: Any) -> ImageTokenizerConfig:
    """The data.tokenizer mapping (a ConfigDict arrives as a dict) as its frozen,
    hashable dataclass, with the same unknown / missing key errors as a section."""
    if isinstance(value, ImageTokenizerConfig):
        return value
    if not isinstance(value, Mapping):
        raise ConfigError(
            f"config field 'data.tokenizer' = {value!r} is invalid: allowed a section of "
            "tokenizer settings (see configs/image_base.py)"
        )
    names = [f.name for f in dataclasses.fields(ImageTokenizerConfig)]
    unknown = sorted(set(value) - set(names))
    if unknown:
        raise ConfigError(
            f"unknown config key 'data.tokenizer.{unknown[0]}'; valid keys of "
            f"'data.tokenizer': {sorted(names)}"
        )
    missing = [n for n in names if n not in value]
    if missing:
        raise ConfigError(f"config section 'data.tokenizer' is missing key '{missing[0]}'")
    return ImageTokenizerConfig(**{n: value[n] for n in names})


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
    tokenizer: ImageTokenizerConfig  # given as a mapping, converted on construction
    # kind "vq": the workdir of --mode=train_tokenizer; "llamagen": the tokenizer file.
    tokenizer_path: str
    shuffle_buffer_seed: int
    worker_count: int
    prefetch_batches: int

    def __post_init__(self):
        # The Config is hashed (cached programs): the nested mapping becomes a dataclass.
        object.__setattr__(self, "tokenizer", tokenizer_section(self.tokenizer))

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
        self.tokenizer.validate()


@dataclasses.dataclass(frozen=True)
class ImageModelConfig:
    kind: str
    codebook_size: int  # the tokenizer's codes; the MASK id is codebook_size
    num_classes: int  # class labels; the null class (for guidance) is num_classes
    hidden_size: int
    num_layers: int  # MaskGIT: number of blocks
    num_heads: int
    mlp_ratio: int
    # 0: SwiGLU width mlp_ratio * hidden_size; k >= 1: two thirds of it, rounded up to a
    # multiple of k (Halton-MaskGIT's rule); see mlp_width.
    mlp_multiple_of: int
    qk_norm: str  # "joint" (over all heads' D dims, no scale) or "per_head" (K dims, scale)
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

    @property
    def mlp_width(self) -> int:
        """The SwiGLU hidden width M. Halton-MaskGIT's rule (LLaMA's) takes two thirds of
        mlp_ratio * D, so that the three SwiGLU matrices hold about as many parameters as
        a GELU MLP's two, then rounds up to a multiple of mlp_multiple_of."""
        width = self.mlp_ratio * self.hidden_size
        k = self.mlp_multiple_of
        if k == 0:
            return width
        return k * -(-int(2 * width / 3) // k)

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
        k = self.mlp_multiple_of
        _check(k >= 0, "model.mlp_multiple_of", k, ">= 0 (0: mlp_ratio * hidden_size)")
        _check_choice("model.qk_norm", self.qk_norm, QK_NORMS)
        _check(self.register_tokens >= 0, "model.register_tokens", self.register_tokens, ">= 0")
        _check(0.0 <= self.dropout < 1.0, "model.dropout", self.dropout, "[0, 1)")
        _check(0.0 <= self.label_dropout < 1.0, "model.label_dropout", self.label_dropout, "[0, 1)")
        _check_stack_fields(self)


def resolve_defaults(plain: dict[str, dict[str, Any]]) -> None:
    """Nothing depends on other sections before the image sections are built."""
    del plain


def _check_tokenizer_grid(data: ImageDataConfig) -> None:
    """The tokenizer's grid, image_size / 2**(len(channel_mult) - 1), is the model's."""
    factor = data.tokenizer.downsample_factor
    if data.image_size == data.grid_size * factor:
        return
    levels = len(data.tokenizer.channel_mult)
    raise ConfigError(
        "a tokenizer grid that does not match the model: config fields 'data.image_size' "
        f"= {data.image_size} / 2**(len('data.tokenizer.channel_mult') - 1) = "
        f"{data.image_size} / {factor} = {data.image_size / factor:g} must equal "
        f"'data.grid_size' = {data.grid_size} (channel_mult has {levels} levels)"
    )


def validate(config: Any) -> None:
    """The model's classes are the data's; the tokenizer's grid is the model's; the
    scorer LMs and the post-training stages are the text task's."""
    data, model = config.data, config.model
    _check_tokenizer_grid(data)
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
        config.stage.kind in ("pretrain", "consistency"),
        "stage.kind",
        config.stage.kind,
        "'pretrain' or 'consistency' for images (distillation converts a text MDLM)",
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
