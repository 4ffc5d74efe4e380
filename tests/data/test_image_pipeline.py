"""Image grain pipelines (determinism, process slices, exact resume, eval batches) and
the cached tokenizer codes (reuse, fingerprints, stale files)."""

import json

import grain
import numpy as np
import pytest
from etils import epath

from cofre_jax.data import images
from cofre_jax.data.errors import DataError

N = 30


def _split(n=N, seed=0, name="toy") -> images.ImageSplit:
    rng = np.random.default_rng(seed)
    # Example i carries its index in pixel (0, 0) (mod 256) and label i % 10, so
    # batches can be traced back to the examples they hold.
    images_NxHxWxC = rng.integers(0, 256, (n, 8, 8, 1), dtype=np.uint8)
    images_NxHxWxC[:, 0, 0, 0] = np.arange(n)
    return images.ImageSplit(images_NxHxWxC, np.arange(n) % 10, num_classes=10, name=name)


def _take(iterator, count, key="images"):
    return [next(iterator)[key] for _ in range(count)]


def _ids(batches) -> list[int]:
    return [int(i) for b in batches for i in b[:, 0, 0, 0]]


def test_train_batches_shape_and_determinism():
    split = _split()
    batch = next(images.make_train_iterator(split, batch_size=4, seed=0))
    assert set(batch) == {"images", "labels"}
    assert batch["images"].shape == (4, 8, 8, 1) and batch["images"].dtype == np.uint8
    assert batch["labels"].shape == (4,) and batch["labels"].dtype == np.int32
    np.testing.assert_array_equal(batch["labels"], batch["images"][:, 0, 0, 0] % 10)
    a, b, c = (images.make_train_iterator(split, batch_size=4, seed=s) for s in (3, 3, 4))
    batches_a, batches_b, batches_c = _take(a, 10), _take(b, 10), _take(c, 10)
    np.testing.assert_array_equal(np.stack(batches_a), np.stack(batches_b))
    assert not np.array_equal(np.stack(batches_a), np.stack(batches_c))


def test_each_epoch_is_a_fresh_permutation():
    it = images.make_train_iterator(_split(), batch_size=1, seed=0)
    epochs = [_ids(_take(it, N)) for _ in range(2)]
    assert sorted(epochs[0]) == sorted(epochs[1]) == list(range(N))
    assert epochs[0] != epochs[1]


def test_process_slices_are_disjoint_and_cover_the_global_order():
    split, num_procs = _split(), 3
    single = _ids(_take(images.make_train_iterator(split, batch_size=1, seed=7), 2 * N))
    per_proc = [
        _ids(
            _take(
                images.make_train_iterator(
                    split, batch_size=2, seed=7, process_index=p, process_count=num_procs
                ),
                N // num_procs,  # two epochs: N / P examples per process per epoch
            )
        )
        for p in range(num_procs)
    ]
    for p in range(num_procs):
        assert per_proc[p] == single[p::num_procs]
    first_epoch = [i for p in range(num_procs) for i in per_proc[p][: N // num_procs]]
    assert sorted(first_epoch) == list(range(N))  # disjoint, and together the whole epoch


def test_restored_iterator_continues_exactly():
    split = _split()
    expected = _take(images.make_train_iterator(split, batch_size=4, seed=1), 20)
    it = images.make_train_iterator(split, batch_size=4, seed=1)
    _take(it, 11)  # past an epoch boundary (30 examples = 7.5 batches)
    state = json.loads(json.dumps(it.get_state()))  # what a checkpoint stores
    resumed = images.make_train_iterator(split, batch_size=4, seed=1)
    resumed.set_state(state)
    np.testing.assert_array_equal(np.stack(_take(resumed, 9)), np.stack(expected[11:]))


def test_grain_checkpoint_handler_restores_the_position(tmp_path):
    # The handler cofre_jax/checkpoint.py registers for the data iterator.
    split = _split()
    expected = _take(images.make_train_iterator(split, batch_size=4, seed=2), 8)
    it = images.make_train_iterator(split, batch_size=4, seed=2)
    _take(it, 5)
    handler = grain.checkpoint.CheckpointHandler()
    handler.save(epath.Path(tmp_path), args=grain.checkpoint.CheckpointSave(it))
    resumed = images.make_train_iterator(split, batch_size=4, seed=2)
    handler.restore(epath.Path(tmp_path), args=grain.checkpoint.CheckpointRestore(resumed))
    np.testing.assert_array_equal(np.stack(_take(resumed, 3)), np.stack(expected[5:]))


def test_eval_batches_are_fixed_and_sliced(capsys):
    split = _split()
    batches = images.make_eval_batches(split, batch_size=4, num_batches=2)
    assert _ids(b["images"] for b in batches) == list(range(8))
    assert batches[0]["labels"].dtype == np.int32
    proc1 = images.make_eval_batches(
        split, batch_size=3, num_batches=1, process_index=1, process_count=2
    )
    assert _ids([proc1[0]["images"]]) == [1, 3, 5]
    many = images.make_eval_batches(split, batch_size=4, num_batches=10)
    assert _ids(b["images"] for b in many)[N : N + 2] == [0, 1]
    assert "reused cyclically" in capsys.readouterr().out


def test_pipeline_errors_are_one_clear_line():
    split = _split()
    with pytest.raises(DataError, match=r"images are 8x8x1 \(H x W x C\), expected 28x28x1") as i:
        images.make_train_iterator(split, batch_size=4, seed=0, image_shape=(28, 28, 1))
    assert "\n" not in str(i.value)
    with pytest.raises(DataError, match="fewer than one batch of 16 for each of 2"):
        images.make_train_iterator(split, batch_size=16, seed=0, process_count=2)
    with pytest.raises(DataError, match=r"process_index=2 is not in \[0, 2\)"):
        images.make_eval_batches(
            split, batch_size=1, num_batches=1, process_index=2, process_count=2
        )


# --- cached codes -------------------------------------------------------------------------


class Encoder:
    """A stand-in tokenizer: 4x4 codes from 2x2 pixel blocks, counting images encoded."""

    def __init__(self, shift=5):
        self.shift, self.images_seen = shift, 0

    def __call__(self, images_BxHxWxC):
        self.images_seen += len(images_BxHxWxC)
        return images_BxHxWxC[:, ::2, ::2, 0].astype(np.int64) >> self.shift


def test_codes_are_computed_once_and_reused(tmp_path):
    split, encoder = _split(), Encoder()
    codes_NxHxW = images.cached_codes(
        split, encoder, encoder_fingerprint="enc-v1-abc", cache_dir=tmp_path, batch_size=8
    )
    assert codes_NxHxW.shape == (N, 4, 4) and codes_NxHxW.dtype == np.int32
    np.testing.assert_array_equal(codes_NxHxW, encoder(split.images_NxHxWxC))
    assert encoder.images_seen == 4 * 8 + N  # 4 batches, the last padded; the check above
    (path,) = (tmp_path / "image_codes").glob("*.npy")
    assert path.name.startswith("toy-enc-v1-abc-")
    again = images.cached_codes(
        split, encoder, encoder_fingerprint="enc-v1-abc", cache_dir=tmp_path, batch_size=8
    )
    np.testing.assert_array_equal(again, codes_NxHxW)
    assert encoder.images_seen == 4 * 8 + N + 8  # only the one verification batch
    batch = next(images.make_train_iterator(split, batch_size=4, seed=0, codes_NxHxW=again))
    assert set(batch) == {"codes", "labels"} and batch["codes"].shape == (4, 4, 4)


def test_a_changed_encoder_or_data_never_reuses_stale_codes(tmp_path):
    split = _split()
    old = images.cached_codes(
        split, Encoder(5), encoder_fingerprint="enc-v1-abc", cache_dir=tmp_path
    )
    new = images.cached_codes(
        split, Encoder(6), encoder_fingerprint="enc-v2-abc", cache_dir=tmp_path
    )
    assert not np.array_equal(old, new)
    other = _split(seed=1)
    images.cached_codes(other, Encoder(5), encoder_fingerprint="enc-v1-abc", cache_dir=tmp_path)
    assert len(list((tmp_path / "image_codes").glob("*.npy"))) == 3
    # Same fingerprint, different encoder: the re-encoded first batch exposes it.
    with pytest.raises(images.StaleCodesError, match="fingerprint did not") as info:
        images.cached_codes(split, Encoder(6), encoder_fingerprint="enc-v1-abc", cache_dir=tmp_path)
    assert "\n" not in str(info.value)


def test_a_cached_file_with_a_foreign_sidecar_is_refused(tmp_path):
    split = _split()
    images.cached_codes(split, Encoder(), encoder_fingerprint="enc-v1-abc", cache_dir=tmp_path)
    (sidecar,) = (tmp_path / "image_codes").glob("*.json")
    meta = json.loads(sidecar.read_text())
    sidecar.write_text(json.dumps({**meta, "encoder": "enc-v1-abd"}))
    with pytest.raises(images.StaleCodesError, match="made with encoder='enc-v1-abd'"):
        images.cached_codes(split, Encoder(), encoder_fingerprint="enc-v1-abc", cache_dir=tmp_path)


def test_fingerprints_cover_values_keys_and_shapes(tmp_path):
    params = {"conv": {"w": np.ones((2, 3), np.float32)}, "codebook": np.zeros((4, 2))}
    base = images.fingerprint(params, "vq-f4")
    assert images.fingerprint(params, "vq-f4") == base
    changed = {**params, "codebook": np.zeros((4, 2)) + 1e-6}
    assert images.fingerprint(changed, "vq-f4") != base
    assert images.fingerprint({**params, "conv": {"v": params["conv"]["w"]}}, "vq-f4") != base
    assert images.fingerprint(params, "vq-f8") != base
    with pytest.raises(DataError, match="encoder_fingerprint 'x'"):
        images.cached_codes(_split(), Encoder(), encoder_fingerprint="x", cache_dir=tmp_path)
    with pytest.raises(DataError, match="expected B x h x w"):
        images.cached_codes(
            _split(), lambda x: x[:, 0, 0, 0], encoder_fingerprint=base, cache_dir=tmp_path
        )


def test_the_reuse_check_can_be_skipped_and_catches_a_new_grid(tmp_path):
    split, encoder = _split(), Encoder()
    images.cached_codes(split, encoder, encoder_fingerprint="enc-v1-abc", cache_dir=tmp_path)
    seen = encoder.images_seen
    images.cached_codes(
        split, encoder, encoder_fingerprint="enc-v1-abc", cache_dir=tmp_path, check_batch=0
    )
    assert encoder.images_seen == seen
    coarser = lambda x: x[:, ::4, ::4, 0].astype(np.int32)  # a 2x2 grid, same fingerprint
    with pytest.raises(images.StaleCodesError, match=r"\(0.0% agree\)"):
        images.cached_codes(split, coarser, encoder_fingerprint="enc-v1-abc", cache_dir=tmp_path)
