"""pytorch-fid's FID InceptionV3 in JAX against a PyTorch re-expression of it
(tests/evaluation/inception_reference.py, torch.nn only), with random weights saved under
pytorch-fid's key names and read by our loader; the loader's formats and errors.
tests/evaluation/test_pytorch_fid_parity.py checks the same against pytorch-fid's module.

Letters: B batch, C channels, H/W height/width.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from inception_reference import random_fid_inception

from cofre_jax.evaluation import fid, inception
from cofre_jax.io import TorchCheckpointError, torch_legacy

IMAGES_BxCxHxW = np.random.default_rng(0).random((2, 3, 40, 52), dtype=np.float32)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    model = random_fid_inception(torch.from_numpy(IMAGES_BxCxHxW))
    path = tmp_path_factory.mktemp("inception") / "pt_inception.pth"
    torch.save(model.state_dict(), path)
    return model, path


@pytest.fixture(scope="module")
def params(reference):
    return inception.load_fid_inception(str(reference[1]))


def test_features_and_logits_match_pytorch(reference, params):
    model, _ = reference
    with torch.no_grad():
        pool_t, logits_t = (t.numpy() for t in model(torch.from_numpy(IMAGES_BxCxHxW)))
    pool, logits = inception.inception_forward_jit(params, IMAGES_BxCxHxW.transpose(0, 2, 3, 1))
    assert pool.shape == (2, 2048) and logits.shape == (2, 1008)
    # float32 through ~95 layers summed in another order (and BN folded): compare at 1e-4
    # of each output's scale (measured: ~5e-6).
    for ours, theirs in [(pool, pool_t), (logits, logits_t)]:
        scale = np.abs(theirs).max()
        np.testing.assert_allclose(np.asarray(ours), theirs, rtol=1e-4, atol=1e-4 * scale)


def test_inception_extractor_batches_match_pytorch(reference, params):
    # Three images in batches of two (the last one padded): the compiled shape is the
    # parity test's, so nothing is compiled again.
    images_NxHxWxC = np.random.default_rng(3).random((3, 40, 52, 3), dtype=np.float32)
    extractor = fid.inception_extractor(params, weights_fingerprint="random")
    ours = fid.extract_features(extractor.fn, images_NxHxWxC, batch_size=2)
    with torch.no_grad():
        theirs = reference[0](torch.from_numpy(images_NxHxWxC.transpose(0, 3, 1, 2)))[0].numpy()
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4 * np.abs(theirs).max())


@pytest.mark.slow  # the 2048-d Frechet distance alone takes ~25 s on 2 busy cores
def test_fid_and_inception_score_in_one_pass(params):
    images_NxHxWxC = np.random.default_rng(4).random((4, 40, 52, 3), dtype=np.float32)
    extractor = fid.inception_extractor(params, weights_fingerprint="random")
    reference = fid.image_statistics(images_NxHxWxC[:2], extractor, batch_size=2)
    result, (is_mean, is_std) = fid.inception_fid_and_score(
        images_NxHxWxC, params, reference, batch_size=2, splits=2, method="eigh"
    )
    assert result.label == "FID" and result.count == 4 and result.value > 0
    logits = fid.extract_features(lambda x: inception.inception_forward_jit(params, x)[1],
                                  images_NxHxWxC, batch_size=2)  # fmt: skip
    assert (is_mean, is_std) == pytest.approx(fid.inception_score(logits, splits=2))
    assert 1.0 <= is_mean <= 2.0


@pytest.mark.parametrize(
    "shape", [(2, 3, 28, 28), (1, 1, 300, 301), (2, 3, 299, 299), (1, 3, 640, 17)]
)
def test_preprocess_matches_torch_interpolate(shape):
    x = np.random.default_rng(1).random(shape, dtype=np.float32)
    want = F.interpolate(torch.from_numpy(x), size=(299, 299), mode="bilinear", align_corners=False)
    want = (2 * want - 1).expand(-1, 3, -1, -1).numpy().transpose(0, 2, 3, 1)
    ours = np.asarray(inception.preprocess(x.transpose(0, 2, 3, 1)))
    np.testing.assert_allclose(ours, want, rtol=1e-5, atol=1e-5)


def test_preprocess_takes_uint8_and_grayscale():
    x = np.random.default_rng(2).integers(0, 256, (2, 28, 28), dtype=np.uint8)
    a = np.asarray(inception.preprocess(x))
    b = np.asarray(inception.preprocess(np.repeat(x[..., None] / 255.0, 3, axis=-1)))
    np.testing.assert_allclose(a, b, atol=1e-6)
    assert a.shape == (2, 299, 299, 3) and a.min() >= -1 - 1e-6 and a.max() <= 1 + 1e-6


def test_wrong_weight_file_is_one_clear_line(reference, tmp_path):
    state = reference[0].state_dict()
    del state["Mixed_6c.branch7x7dbl_3.bn.running_var"]
    state["AuxLogits.fc.weight"] = torch.zeros(3)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(inception.InceptionWeightsError) as info:
        inception.load_fid_inception(str(path))
    message = str(info.value)
    assert "\n" not in message
    assert "1 missing keys [Mixed_6c.branch7x7dbl_3.bn.running_var]" in message
    assert "1 unexpected keys [AuxLogits.fc.weight]" in message


def test_num_batches_tracked_is_optional(reference):
    state = {k: v.numpy() for k, v in reference[0].state_dict().items()}
    trimmed = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    assert len(trimmed) < len(state)
    inception.params_from_state_dict(trimmed)


def test_legacy_format_file_loads_the_same(reference, params, tmp_path):
    # pytorch-fid's weight file predates torch 1.6's zip format.
    path = tmp_path / "legacy.pth"
    torch.save(reference[0].state_dict(), path, _use_new_zipfile_serialization=False)
    assert torch_legacy.is_legacy_torch_file(str(path))
    assert not torch_legacy.is_legacy_torch_file(str(reference[1]))
    legacy = inception.load_fid_inception(str(path))
    assert fid.fingerprint_arrays(legacy) == fid.fingerprint_arrays(params)


def test_legacy_reader_refuses_arbitrary_objects(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"x": torch.ones(2), "f": np.dtype}, path, _use_new_zipfile_serialization=False)
    with pytest.raises(TorchCheckpointError, match="refusing to unpickle"):
        torch_legacy.load_legacy_torch(str(path))
    # Views and mixed dtypes come back as torch saved them.
    base = torch.arange(12, dtype=torch.float64)
    state = {"view": base[2:8].view(2, 3).t(), "half": torch.ones(3, dtype=torch.bfloat16)}
    torch.save(state, path, _use_new_zipfile_serialization=False)
    got = torch_legacy.load_legacy_torch(str(path))
    np.testing.assert_array_equal(got["view"], state["view"].numpy())
    np.testing.assert_array_equal(got["half"], np.ones(3, np.float32))
