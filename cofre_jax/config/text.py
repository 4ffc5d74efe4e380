"""The text task's sections and rules: data (corpus and tokenizer) and model (the
MDLM / FP-MDLM denoiser over token ids), the vocabulary they must agree on, and the
checks that tie them to the shared sections.

cofre_jax.config.tasks registers them as the "text" task; nothing outside this module
needs a tokenizer. Fields mirror `configs/base.py`, where each one is documented.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from cofre_jax.config.checks import _check, _check_choice, _check_model_kind, _check_stack_fields
from cofre_jax.config.choices import (
    DATA_SOURCES,
    RAW_SOURCES,
    TOKENIZERS,
)

# Token ids a tokenizer can emit (BOS and EOS share one id, as in GPT-2). The model
# appends one MASK id, so model.vocab_size = this + 1. The synthetic corpus's size is
# data.synthetic_vocab + 1 (see tokenizer_vocab_size).
TOKENIZER_VOCAB_SIZES = {"gpt2": 50257, "byte": 257}


def tokenizer_vocab_size(tokenizer: str, synthetic_vocab: int) -> int:
    """Ids `tokenizer` emits, BOS/EOS included and MASK not."""
    if tokenizer == "synthetic":
        return synthetic_vocab + 1
    return TOKENIZER_VOCAB_SIZES[tokenizer]


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    kind: str
    vocab_size: int  # tokenizer vocabulary plus the MASK id (the last id)
    hidden_size: int
    num_layers: int  # MDLM: number of DiT blocks
    num_heads: int
    mlp_ratio: int
    cond_dim: int
    time_conditioning: bool
    dropout: float
    dtype: str  # compute dtype
    param_dtype: str
    # fp_mdlm only (docs/method.md §2.2): explicit pre/post blocks, the weight-tied block(s),
    # and how the injection u enters F.
    k_pre: int
    k_fp: int
    k_post: int
    injection: str

    @property
    def mask_id(self) -> int:
        return self.vocab_size - 1

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    def validate(self) -> None:
        _check_model_kind(self, "text")
        _check(self.vocab_size >= 3, "model.vocab_size", self.vocab_size, ">= 3")
        _check(self.hidden_size >= 1, "model.hidden_size", self.hidden_size, ">= 1")
        _check(self.num_layers >= 1, "model.num_layers", self.num_layers, ">= 1")
        _check(self.num_heads >= 1, "model.num_heads", self.num_heads, ">= 1")
        _check(
            self.hidden_size % self.num_heads == 0,
            "model.num_heads",
            self.num_heads,
            f"a divisor of model.hidden_size={self.hidden_size}",
        )
        _check(
            self.head_dim % 2 == 0,
            "model.num_heads",
            self.num_heads,
            "a value giving an even head dimension (rotary embeddings rotate pairs)",
        )
        _check(self.mlp_ratio >= 1, "model.mlp_ratio", self.mlp_ratio, ">= 1")
        _check(self.cond_dim >= 1, "model.cond_dim", self.cond_dim, ">= 1")
        _check(0.0 <= self.dropout < 1.0, "model.dropout", self.dropout, "[0, 1)")
        _check_stack_fields(self)


@dataclasses.dataclass(frozen=True)
class DataConfig:
    source: str
    path: str  # files/folder for text_files and hf_folder, shard dir for owt
    tfds_name: str
    tfds_data_dir: str
    text_key: str  # field that holds the text in jsonl / dataset records
    raw_source: str  # where --mode=prepare reads documents from
    raw_path: str
    tokenizer: str
    tokenizer_path: str  # optional override for the GPT-2 BPE file
    cache_dir: str  # where embedded assets are fetched
    seq_len: int
    val_docs: int  # documents held out for validation
    shuffle_buffer_seed: int
    worker_count: int
    prefetch_batches: int  # batches grain reads ahead per host (its default is 500)
    # data.source = "synthetic" (cofre_jax/data/synthetic.py): the sparse HMM's sizes,
    # its noise floor and seed, and how many training rows are drawn.
    synthetic_states: int
    synthetic_vocab: int
    synthetic_branching: int
    synthetic_emissions: int
    synthetic_noise: float
    synthetic_seed: int
    synthetic_train_rows: int

    def validate(self) -> None:
        _check_choice("data.source", self.source, DATA_SOURCES)
        synthetic = self.source == "synthetic"
        _check(
            synthetic == (self.tokenizer == "synthetic"),
            "data.tokenizer",
            self.tokenizer,
            "'synthetic' exactly when data.source is 'synthetic'",
        )
        if synthetic:
            self._validate_synthetic()
        _check_choice("data.tokenizer", self.tokenizer, TOKENIZERS)
        _check_choice("data.raw_source", self.raw_source, RAW_SOURCES)
        _check(self.seq_len >= 3, "data.seq_len", self.seq_len, ">= 3 (BOS + text + EOS)")
        _check(self.val_docs >= 1, "data.val_docs", self.val_docs, ">= 1")
        _check(self.worker_count >= 0, "data.worker_count", self.worker_count, ">= 0")
        _check(self.prefetch_batches >= 1, "data.prefetch_batches", self.prefetch_batches, ">= 1")
        if self.source in ("text_files", "hf_folder", "owt"):
            _check(bool(self.path), "data.path", self.path, f"a path for source {self.source!r}")
        if self.source == "tfds":
            _check(bool(self.tfds_name), "data.tfds_name", self.tfds_name, "a tfds dataset name")

    def _validate_synthetic(self) -> None:
        S, V = self.synthetic_states, self.synthetic_vocab
        _check(S >= 1, "data.synthetic_states", S, ">= 1")
        # Symbols are stored as uint16 next to the BOS/EOS id V.
        _check(2 <= V < 65_535, "data.synthetic_vocab", V, "[2, 65535)")
        _check(
            1 <= self.synthetic_branching <= S,
            "data.synthetic_branching",
            self.synthetic_branching,
            f"[1, data.synthetic_states={S}]",
        )
        _check(
            1 <= self.synthetic_emissions <= V,
            "data.synthetic_emissions",
            self.synthetic_emissions,
            f"[1, data.synthetic_vocab={V}]",
        )
        _check(
            0.0 < self.synthetic_noise <= 1.0,
            "data.synthetic_noise",
            self.synthetic_noise,
            "(0, 1] (a positive floor keeps every sequence's likelihood finite)",
        )
        _check(self.synthetic_seed >= 0, "data.synthetic_seed", self.synthetic_seed, ">= 0")
        _check(
            self.synthetic_train_rows >= 1,
            "data.synthetic_train_rows",
            self.synthetic_train_rows,
            ">= 1",
        )


def resolve_defaults(plain: dict[str, dict[str, Any]]) -> None:
    """Before the sections are built: model.vocab_size = -1 becomes the tokenizer's
    vocabulary plus MASK. The only place the text task requires data.tokenizer."""
    tokenizer = plain["data"].get("tokenizer")
    _check_choice("data.tokenizer", tokenizer, TOKENIZERS)
    if plain["model"].get("vocab_size") == -1:
        synthetic_vocab = plain["data"].get("synthetic_vocab", 0)
        plain["model"]["vocab_size"] = tokenizer_vocab_size(tokenizer, synthetic_vocab) + 1


def validate(config: Any) -> None:
    """Checks across sections, after each section's own: the model's vocabulary is the
    tokenizer's, the oracle scorer needs the synthetic corpus, distillation needs an
    fp_mdlm whose blocks convert.layer_map covers, and the image task's reveal rules,
    guidance and FID features stay off. `config` is a typed Config."""
    data, model = config.data, config.model
    expected_vocab = tokenizer_vocab_size(data.tokenizer, data.synthetic_vocab) + 1
    _check(
        model.vocab_size == expected_vocab,
        "model.vocab_size",
        model.vocab_size,
        f"-1 or {expected_vocab} (tokenizer {data.tokenizer!r} plus MASK)",
    )
    if config.eval.scorer == "oracle":
        _check(
            data.source == "synthetic",
            "eval.scorer",
            config.eval.scorer,
            "'oracle' only with data.source 'synthetic' (the exact likelihood is the generator's)",
        )
    # The image task's sampling and evaluation settings: text has no classes to guide
    # and its samplers run MDLM's ancestral rule only.
    sample = config.sample
    _check(
        sample.reveal_rule == "ancestral",
        "sample.reveal_rule",
        sample.reveal_rule,
        "'ancestral' for text (confidence and halton are the image task's rules)",
    )
    _check(
        sample.guidance_scale == 0.0,
        "sample.guidance_scale",
        sample.guidance_scale,
        "0 for text (classifier-free guidance needs the image task's classes)",
    )
    _check(
        config.eval.fid_features == "domain" and not config.eval.inception_weights,
        "eval.fid_features",
        config.eval.fid_features,
        "'domain' with no eval.inception_weights for text (FID is the image task's)",
    )
    if config.stage.kind == "distill":
        _check(model.kind == "fp_mdlm", "model.kind", model.kind, "'fp_mdlm' for distillation")
        blocks = model.k_pre + model.k_fp + model.k_post
        _check(
            len(config.convert.layer_map) == blocks,
            "convert.layer_map",
            config.convert.layer_map,
            f"{blocks} entries (model.k_pre + k_fp + k_post)",
        )
