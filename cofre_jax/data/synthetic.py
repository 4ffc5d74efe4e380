"""A corpus whose likelihood is exact: rows drawn from a seeded sparse hidden Markov model.

Why: at CPU scale a byte model of real text writes letter soup, and a scorer LM then
ranks how characters tokenise rather than sample quality. Here the true probability of
any row is computable in float64, so sample quality is the samples' true negative
log-likelihood per token, and its excess over the corpus's entropy is the measure
(docs/design.md §5).

The generator (`SparseHMM`, built from `data.synthetic_*` and its seed):
- S hidden states; state s moves to `branching` successors (distinct, random), with
  Dirichlet(1) weights; the first state of a row is drawn from the chain's stationary
  distribution, so every position has the same marginal.
- Each state emits one of `emissions` symbols of its own (random, shared across
  states, which makes the state ambiguous from one symbol) with Dirichlet(1) weights;
  with probability `noise` it emits a uniform symbol of the V instead, so every
  sequence has finite likelihood.
Neighbouring symbols are tightly coupled through the hidden chain: drawing many masked
positions at once from their marginals writes pairs the chain cannot produce, the way
one-step parallel decoding fails on real text.

A row is [BOS] + C = seq_len - 2 symbols + [EOS]; rows are independent draws. BOS/EOS
is the id V (the tokenizer's only special id); the model appends MASK = V + 1.

Letters: N rows, C symbols per row (seq_len - 2), S hidden states, V symbols.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

from cofre_jax.config.typed import DataConfig

# Bump when the generator's construction changes: cached token files and committed
# benchmark numbers are only comparable within one version.
GENERATOR_VERSION = 1


@dataclasses.dataclass(frozen=True)
class HMMSpec:
    num_states: int
    vocab: int
    branching: int
    emissions: int
    noise: float
    seed: int

    @classmethod
    def from_data_config(cls, data_cfg: DataConfig) -> HMMSpec:
        return cls(
            num_states=data_cfg.synthetic_states,
            vocab=data_cfg.synthetic_vocab,
            branching=data_cfg.synthetic_branching,
            emissions=data_cfg.synthetic_emissions,
            noise=data_cfg.synthetic_noise,
            seed=data_cfg.synthetic_seed,
        )


def _sparse_rows(rng: np.random.Generator, rows: int, cols: int, nonzero: int) -> np.ndarray:
    """rows x cols stochastic matrix, `nonzero` random columns per row, Dirichlet(1) mass."""
    out = np.zeros((rows, cols), np.float64)
    for r in range(rows):
        picked = rng.choice(cols, size=nonzero, replace=False)
        out[r, picked] = rng.dirichlet(np.ones(nonzero))
    return out


def _stationary(trans_SxS: np.ndarray) -> np.ndarray:
    """Stationary distribution by power iteration from uniform (the chain is mixed by
    construction; a lazy step guarantees aperiodicity of the iteration itself)."""
    pi_S = np.full(len(trans_SxS), 1.0 / len(trans_SxS))
    lazy_SxS = 0.5 * (np.eye(len(trans_SxS)) + trans_SxS)
    for _ in range(10_000):
        nxt = pi_S @ lazy_SxS
        if np.abs(nxt - pi_S).max() < 1e-15:
            break
        pi_S = nxt
    return pi_S / pi_S.sum()


class SparseHMM:
    """The generator: exact sampling and exact log-likelihood (forward algorithm, float64)."""

    def __init__(self, spec: HMMSpec):
        self.spec = spec
        rng = np.random.default_rng(spec.seed)
        S, V = spec.num_states, spec.vocab
        self.trans_SxS = _sparse_rows(rng, S, S, spec.branching)
        sparse_emit_SxV = _sparse_rows(rng, S, V, spec.emissions)
        self.emit_SxV = (1 - spec.noise) * sparse_emit_SxV + spec.noise / V
        self.init_S = _stationary(self.trans_SxS)

    @property
    def bos_id(self) -> int:
        return self.spec.vocab

    def sample(self, num_rows: int, length: int, seed: int | tuple[int, ...]) -> np.ndarray:
        """int32 [num_rows, length] symbols, a pure function of (spec, seed)."""
        rng = np.random.default_rng(seed)
        trans_cdf = np.cumsum(self.trans_SxS, axis=1)
        emit_cdf = np.cumsum(self.emit_SxV, axis=1)

        def draw(cdf_NxK: np.ndarray) -> np.ndarray:
            # u scaled by each row's total, so rounding can never pick a trailing
            # zero-probability column.
            u_N = rng.random(len(cdf_NxK))[:, None] * cdf_NxK[:, -1:]
            return (cdf_NxK < u_N).sum(axis=1)

        state_N = draw(np.broadcast_to(np.cumsum(self.init_S), (num_rows, len(self.init_S))))
        out_NxC = np.empty((num_rows, length), np.int32)
        for c in range(length):
            if c:
                state_N = draw(trans_cdf[state_N])
            out_NxC[:, c] = draw(emit_cdf[state_N])
        return out_NxC

    def log_prob(self, x_NxC: np.ndarray, invalid_prob: float | None = None) -> np.ndarray:
        """float64 [N] log p(x) by the scaled forward algorithm. A symbol outside [0, V)
        has probability 0 (log p = -inf), or, with `invalid_prob`, that probability
        under every state (the oracle scorer prices BOS/EOS/MASK written inside a row
        as an emission at the noise floor instead of an infinite loss)."""
        x_NxC = np.asarray(x_NxC)
        valid_NxC = (x_NxC >= 0) & (x_NxC < self.spec.vocab)
        safe_NxC = np.where(valid_NxC, x_NxC, 0)
        floor = 0.0 if invalid_prob is None else invalid_prob
        logp_N = np.zeros(len(x_NxC), np.float64)
        alpha_NxS = np.broadcast_to(self.init_S, (len(x_NxC), len(self.init_S)))
        for c in range(x_NxC.shape[1]):
            if c:
                alpha_NxS = alpha_NxS @ self.trans_SxS
            emit_NxS = np.where(valid_NxC[:, c, None], self.emit_SxV[:, safe_NxC[:, c]].T, floor)
            alpha_NxS = alpha_NxS * emit_NxS
            norm_N = alpha_NxS.sum(axis=1)
            with np.errstate(divide="ignore"):
                logp_N += np.log(norm_N)
            alpha_NxS = alpha_NxS / np.where(norm_N > 0, norm_N, 1.0)[:, None]
        return logp_N

    def predictive_entropy(self, x_NxC: np.ndarray) -> np.ndarray:
        """float64 [N]: sum over positions of H(p(x_c | x_<c)), a lower-variance estimator
        of the same expected NLL as -log p(x) (used to check the entropy estimate)."""
        total_N = np.zeros(len(x_NxC), np.float64)
        alpha_NxS = np.broadcast_to(self.init_S, (len(x_NxC), len(self.init_S)))
        for c in range(x_NxC.shape[1]):
            if c:
                alpha_NxS = alpha_NxS @ self.trans_SxS
            pred_NxV = alpha_NxS @ self.emit_SxV
            total_N -= (pred_NxV * np.log(pred_NxV)).sum(axis=1)
            alpha_NxS = alpha_NxS * self.emit_SxV[:, x_NxC[:, c]].T
            alpha_NxS = alpha_NxS / alpha_NxS.sum(axis=1, keepdims=True)
        return total_N


@dataclasses.dataclass(frozen=True)
class EntropyEstimate:
    """Entropy of one row of C symbols, per token, from fresh samples: mean and standard
    error of -log p(x) / C (`nll`), and of the Rao-Blackwellised predictive-entropy sum
    (`predictive`); both estimate the same number. Unigram entropy of a row's symbols is
    the data's reference for the samples' unigram entropy."""

    nll_per_token: float
    nll_se: float
    predictive_per_token: float
    predictive_se: float
    unigram_entropy: float
    unigram_entropy_se: float
    num_rows: int
    length: int


def row_unigram_entropy(x_NxC: np.ndarray) -> np.ndarray:
    """Entropy (nats) of each row's own symbol histogram."""
    out_N = np.empty(len(x_NxC), np.float64)
    for n, row in enumerate(np.asarray(x_NxC)):
        _, counts = np.unique(row, return_counts=True)
        p = counts / counts.sum()
        out_N[n] = -(p * np.log(p)).sum()
    return out_N


def mean_se(values_N: np.ndarray) -> tuple[float, float]:
    """Mean and standard error of the mean."""
    return float(values_N.mean()), float(values_N.std(ddof=1) / np.sqrt(len(values_N)))


@functools.lru_cache(maxsize=8)
def estimate_entropy(spec: HMMSpec, length: int, num_rows: int = 20_000) -> EntropyEstimate:
    """Entropy per token of a C-symbol row, estimated on `num_rows` fresh rows (a seed
    no split uses)."""
    hmm = SparseHMM(spec)
    x_NxC = hmm.sample(num_rows, length, seed=split_seed(spec, "entropy"))
    nll = mean_se(-hmm.log_prob(x_NxC) / length)
    pred = mean_se(hmm.predictive_entropy(x_NxC) / length)
    uni = mean_se(row_unigram_entropy(x_NxC))
    return EntropyEstimate(*nll, *pred, *uni, num_rows=num_rows, length=length)


_SPLITS = {"train": 0, "validation": 1, "entropy": 2, "reference": 3}


def split_seed(spec: HMMSpec, split: str) -> tuple[int, ...]:
    """Independent streams per split, all fixed by the generator's seed."""
    return (spec.seed, GENERATOR_VERSION, _SPLITS[split])


@functools.lru_cache(maxsize=2)  # the train iterator and the eval batches both ask
def token_splits(data_cfg: DataConfig) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) flat uint16 streams: each seq_len - 2 slice is one row's symbols,
    so the packed rows [BOS] + slice + [EOS] are exactly the generator's rows."""
    hmm = SparseHMM(HMMSpec.from_data_config(data_cfg))
    spec, length = hmm.spec, data_cfg.seq_len - 2
    train = hmm.sample(data_cfg.synthetic_train_rows, length, split_seed(spec, "train"))
    val = hmm.sample(data_cfg.val_docs, length, split_seed(spec, "validation"))
    return train.astype(np.uint16).reshape(-1), val.astype(np.uint16).reshape(-1)


class SyntheticTokenizer:
    """Symbols 0..V-1 written as `s<id>` words; V is BOS/EOS, written `<eos>`.

    `decode` keeps every id, the frame and any MASK (`<mask>`, id V + 1) included, so a
    saved sample decodes back to exactly the row the oracle scored.
    """

    name = "synthetic"

    def __init__(self, vocab: int):
        self.vocab_size = vocab + 1
        self.bos_id = self.eos_id = vocab
        self._special = {"<eos>": vocab, "<mask>": vocab + 1}

    def encode(self, text: str) -> list[int]:
        ids = []
        for word in text.split():
            if word in self._special:
                ids.append(self._special[word])
            elif word.startswith("s") and word[1:].isdigit() and int(word[1:]) < self.bos_id:
                ids.append(int(word[1:]))
            else:
                raise ValueError(f"{word!r} is not a symbol of this synthetic corpus")
        return ids

    def encode_batch(self, texts):
        return [self.encode(t) for t in texts]

    def decode(self, ids) -> str:
        words = {v: k for k, v in self._special.items()}
        return " ".join(words.get(int(i), f"s{int(i)}") for i in ids)
