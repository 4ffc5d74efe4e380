"""Packed rows and grain pipelines: framing, determinism, process slices, exact resume."""

import json
import os
import pathlib
import random

import numpy as np
import pytest

from cofre_jax import data
from cofre_jax.config.typed import DataConfig
from cofre_jax.data import pipeline
from configs import base

# Fetched assets go to the repo's git-ignored .cache unless $COFRE_CACHE says otherwise.
CACHE = os.environ.get("COFRE_CACHE") or str(pathlib.Path(__file__).parents[2] / ".cache")
BYTE = data.ByteTokenizer()
EOS = BYTE.eos_id


def data_cfg(**overrides) -> DataConfig:
    """A small byte-level DataConfig; tests override what they exercise. Fields the tests
    do not name keep configs/base.py's defaults, so a new data field needs no edit here."""
    fields = base.get_config().data.to_dict()
    fields.update(
        source="text_files",
        path="",
        tfds_name="",
        tfds_data_dir="",
        text_key="text",
        raw_source="text_files",
        raw_path="",
        tokenizer="byte",
        tokenizer_path="",
        cache_dir=CACHE,
        seq_len=16,
        val_docs=4,
        shuffle_buffer_seed=0,
        worker_count=0,
        prefetch_batches=4,
    )
    fields.update(overrides)
    return DataConfig(**fields)


def random_docs(num_docs: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    words = [
        "alpha",
        "beta",
        "gamma",
        "delta",
        "epsilon",
        "zeta",
        "eta",
        "theta",
        "iota",
        "kappa",
        "lambda",
        "mu",
    ]
    return [" ".join(rng.choices(words, k=rng.randint(1, 12))) for _ in range(num_docs)]


def write_jsonl(path: pathlib.Path, docs: list[str]) -> str:
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    return str(path)


@pytest.fixture
def corpus(tmp_path):
    docs = random_docs(120)
    return docs, data_cfg(path=write_jsonl(tmp_path / "c.jsonl", docs))


def test_packing_golden_rows():
    # Stream "ab<E>cde<E>" cut into 3-token chunks; the 1-token tail is dropped.
    tokens_T, ends_N = data.tokenize_documents(["ab", "cde"], BYTE)
    np.testing.assert_array_equal(tokens_T, [97, 98, EOS, 99, 100, 101, EOS])
    np.testing.assert_array_equal(ends_N, [3, 7])
    rows = data.PackedRows(data.TokenStream([tokens_T]), 5, BYTE.bos_id, EOS)
    assert len(rows) == 2
    np.testing.assert_array_equal(rows[0], [EOS, 97, 98, EOS, EOS])
    np.testing.assert_array_equal(rows[1], [EOS, 99, 100, 101, EOS])
    with pytest.raises(IndexError):
        rows[2]


def test_rows_frame_the_eos_joined_stream_without_gaps(corpus):
    docs, cfg = corpus
    train, val = data.load_token_splits(cfg, BYTE)
    expected = [t for d in docs[: -cfg.val_docs] for t in [*d.encode(), EOS]]
    np.testing.assert_array_equal(train.read(0, len(train)), expected)
    rows = data.PackedRows(train, cfg.seq_len, BYTE.bos_id, EOS)
    rows_RxL = np.stack([rows[i] for i in range(len(rows))])
    assert (rows_RxL[:, 0] == BYTE.bos_id).all() and (rows_RxL[:, -1] == EOS).all()
    inner = rows_RxL[:, 1:-1].reshape(-1)
    assert len(expected) - len(inner) < cfg.seq_len - 2  # only the partial tail is dropped
    np.testing.assert_array_equal(inner, expected[: len(inner)])
    # Validation is exactly the last val_docs documents.
    expected_val = [t for d in docs[-cfg.val_docs :] for t in [*d.encode(), EOS]]
    np.testing.assert_array_equal(val.read(0, len(val)), expected_val)


def test_token_stream_reads_across_parts():
    a, b, c = np.arange(5), np.arange(5, 7), np.arange(7, 20)
    stream = data.TokenStream([a, b, c])
    assert len(stream) == 20
    for start, stop in [(0, 20), (3, 9), (5, 7), (6, 8), (4, 19)]:
        np.testing.assert_array_equal(stream.read(start, stop), np.arange(start, stop))


def _take(iterator, n):
    return [next(iterator)["tokens"] for _ in range(n)]


def test_train_batches_shape_and_determinism(corpus):
    _, cfg = corpus
    a = data.make_train_iterator(cfg, BYTE, batch_size=4, seed=3)
    b = data.make_train_iterator(cfg, BYTE, batch_size=4, seed=3)
    c = data.make_train_iterator(cfg, BYTE, batch_size=4, seed=4)
    batches_a, batches_b, batches_c = _take(a, 5), _take(b, 5), _take(c, 5)
    assert batches_a[0].shape == (4, cfg.seq_len) and batches_a[0].dtype == np.int32
    np.testing.assert_array_equal(np.stack(batches_a), np.stack(batches_b))
    assert not np.array_equal(np.stack(batches_a), np.stack(batches_c))


def test_each_epoch_is_a_fresh_permutation_of_all_rows(corpus):
    _, cfg = corpus
    train, _ = data.load_token_splits(cfg, BYTE)
    rows = data.PackedRows(train, cfg.seq_len, BYTE.bos_id, EOS)
    all_rows = sorted(tuple(rows[i]) for i in range(len(rows)))
    # batch_size 1 makes epoch boundaries fall exactly on batch boundaries.
    it = data.make_train_iterator(cfg, BYTE, batch_size=1, seed=0)
    epochs = [[tuple(b[0]) for b in _take(it, len(rows))] for _ in range(2)]
    assert sorted(epochs[0]) == all_rows and sorted(epochs[1]) == all_rows
    assert epochs[0] != epochs[1]


def test_process_slices_interleave_to_the_global_order(corpus):
    _, cfg = corpus
    num_procs, batch = 3, 2
    single = np.concatenate(_take(data.make_train_iterator(cfg, BYTE, batch_size=1, seed=7), 60))
    per_proc = [
        np.concatenate(
            _take(
                data.make_train_iterator(
                    cfg, BYTE, batch_size=batch, seed=7, process_index=p, process_count=num_procs
                ),
                10,
            )
        )
        for p in range(num_procs)
    ]
    # Process p reads global positions p, p + P, p + 2P, ...: disjoint, and together they
    # cover every row of each epoch exactly once.
    for p in range(num_procs):
        np.testing.assert_array_equal(per_proc[p], single[p::num_procs])


def test_restored_iterator_continues_exactly(corpus):
    _, cfg = corpus
    reference = data.make_train_iterator(cfg, BYTE, batch_size=4, seed=1)
    expected = _take(reference, 12)
    it = data.make_train_iterator(cfg, BYTE, batch_size=4, seed=1)
    _take(it, 5)
    state = json.loads(json.dumps(it.get_state()))  # what a checkpoint stores
    resumed = data.make_train_iterator(cfg, BYTE, batch_size=4, seed=1)
    resumed.set_state(state)
    np.testing.assert_array_equal(np.stack(_take(resumed, 7)), np.stack(expected[5:]))


def test_eval_batches_are_fixed_and_sliced(corpus, capsys):
    docs, cfg = corpus
    cfg = data_cfg(path=cfg.path, val_docs=40)
    batches = data.make_eval_batches(cfg, BYTE, batch_size=2, num_batches=3)
    again = data.make_eval_batches(cfg, BYTE, batch_size=2, num_batches=3)
    assert len(batches) == 3 and batches[0]["tokens"].shape == (2, cfg.seq_len)
    np.testing.assert_array_equal(
        np.stack([b["tokens"] for b in batches]), np.stack([b["tokens"] for b in again])
    )
    _, val = data.load_token_splits(cfg, BYTE)
    rows = data.PackedRows(val, cfg.seq_len, BYTE.bos_id, EOS)
    proc1 = data.make_eval_batches(
        cfg, BYTE, batch_size=2, num_batches=1, process_index=1, process_count=2
    )
    np.testing.assert_array_equal(proc1[0]["tokens"], np.stack([rows[1], rows[3]]))
    # More batches than rows: rows are reused in order, with a note.
    many = data.make_eval_batches(cfg, BYTE, batch_size=2, num_batches=len(rows))
    flat = np.concatenate([b["tokens"] for b in many])
    np.testing.assert_array_equal(flat[len(rows)], rows[0])
    assert "reused cyclically" in capsys.readouterr().out


def test_too_long_seq_len_is_one_clear_error(corpus):
    _, cfg = corpus
    long_cfg = data_cfg(path=cfg.path, seq_len=4000)
    with pytest.raises(ValueError, match="fewer than one batch"):
        data.make_train_iterator(long_cfg, BYTE, batch_size=2, seed=0)
    with pytest.raises(ValueError, match="fewer than one batch"):
        data.make_eval_batches(long_cfg, BYTE, batch_size=2, num_batches=1)


def test_val_docs_must_leave_training_documents(corpus):
    docs, cfg = corpus
    with pytest.raises(ValueError, match=f"has {len(docs)} documents"):
        data.load_token_splits(data_cfg(path=cfg.path, val_docs=len(docs)), BYTE)


def test_unknown_source_is_a_clear_error(corpus):
    _, cfg = corpus
    with pytest.raises(ValueError, match="valid choices"):
        data.load_token_splits(data_cfg(source="nope", path=cfg.path), BYTE)
    with pytest.raises(ValueError, match="valid choices"):
        list(data.iter_documents("nope", "", cfg))


def test_one_tokenisation_serves_both_builders(corpus, monkeypatch):
    _, cfg = corpus
    calls = []
    tokenize = pipeline.packing.tokenize_documents

    def counting(*args, **kwargs):
        calls.append(1)
        return tokenize(*args, **kwargs)

    monkeypatch.setattr(pipeline.packing, "tokenize_documents", counting)
    splits = data.load_token_splits(cfg, BYTE)
    it = data.make_train_iterator(cfg, BYTE, batch_size=4, seed=0, splits=splits)
    val = data.make_eval_batches(cfg, BYTE, batch_size=4, num_batches=2, splits=splits)
    assert len(calls) == 1
    fresh = data.make_train_iterator(cfg, BYTE, batch_size=4, seed=0)
    np.testing.assert_array_equal(_take(it, 3), _take(fresh, 3))
    fresh_val = data.make_eval_batches(cfg, BYTE, batch_size=4, num_batches=2)
    for a, b in zip(val, fresh_val):
        np.testing.assert_array_equal(a["tokens"], b["tokens"])


def test_prefetch_is_bounded_by_the_config(corpus, monkeypatch):
    _, cfg = corpus
    seen = []
    read_options = pipeline.grain.ReadOptions

    def recording(**kwargs):
        seen.append(kwargs)
        return read_options(**kwargs)

    monkeypatch.setattr(pipeline.grain, "ReadOptions", recording)
    cfg = data_cfg(path=cfg.path, prefetch_batches=3)
    next(data.make_train_iterator(cfg, BYTE, batch_size=4, seed=0))
    assert seen == [{"num_threads": 3, "prefetch_buffer_size": 3}]
