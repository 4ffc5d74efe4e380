"""Our FID InceptionV3 against pytorch-fid's own module, on random weights.

pytorch-fid builds its network from torchvision's Inception3 and its FID blocks, then
loads the weight file from a URL. Here that loader hands it random weights saved under
the same keys (tests/evaluation/inception_reference.py), and the same state dict goes
through our reader (`inception.load_fid_inception`), so both networks carry one set of
weights. torchvision's import needs the stand-in that tests/conftest.py installs.
"""

import numpy as np
import pytest
import torch
from inception_reference import random_fid_inception

from cofre_jax.evaluation import inception

IMAGES_BxCxHxW = np.random.default_rng(5).random((2, 3, 37, 45), dtype=np.float32)


def _import_pytorch_fid():
    import pytorch_fid.inception
    import torchvision

    assert torchvision.__version__.startswith("0.28"), torchvision.__version__
    return pytorch_fid.inception


@pytest.fixture(scope="module")
def networks(tmp_path_factory):
    state_dict = random_fid_inception(torch.from_numpy(IMAGES_BxCxHxW)).state_dict()
    path = tmp_path_factory.mktemp("pytorch_fid") / "pt_inception.pth"
    torch.save(state_dict, path)
    fid_module = _import_pytorch_fid()
    original = fid_module.load_state_dict_from_url
    fid_module.load_state_dict_from_url = lambda url, **kwargs: state_dict
    try:
        # What pytorch-fid's FID uses: the 2048-d pool3 block, inputs resized to 299 x 299
        # and mapped from [0, 1] to [-1, 1]; and the full network for the 1008 logits.
        pool3 = fid_module.InceptionV3([3], resize_input=True, normalize_input=True)
        full = fid_module.fid_inception_v3()
    finally:
        fid_module.load_state_dict_from_url = original
    return pool3.eval(), full.eval(), inception.load_fid_inception(str(path))


def test_pool_features_match_pytorch_fid(networks):
    pool3, _, params = networks
    with torch.no_grad():
        (theirs_Bx2048x1x1,) = pool3(torch.from_numpy(IMAGES_BxCxHxW))
    theirs_Bx2048 = theirs_Bx2048x1x1[:, :, 0, 0].numpy()
    ours_Bx2048, _ = inception.inception_forward_jit(params, IMAGES_BxCxHxW.transpose(0, 2, 3, 1))
    assert theirs_Bx2048.shape == (2, 2048)
    # float32 through ~95 layers in another order, BatchNorm folded: 1e-4 of the scale.
    scale = np.abs(theirs_Bx2048).max()
    np.testing.assert_allclose(np.asarray(ours_Bx2048), theirs_Bx2048, rtol=1e-4, atol=1e-4 * scale)


def test_logits_match_pytorch_fid(networks):
    _, full, params = networks
    x = torch.nn.functional.interpolate(
        torch.from_numpy(IMAGES_BxCxHxW), size=(299, 299), mode="bilinear", align_corners=False
    )
    with torch.no_grad():
        theirs_Bx1008 = full(2 * x - 1).numpy()
    _, ours_Bx1008 = inception.inception_forward_jit(params, IMAGES_BxCxHxW.transpose(0, 2, 3, 1))
    assert theirs_Bx1008.shape == (2, 1008)
    scale = np.abs(theirs_Bx1008).max()
    np.testing.assert_allclose(np.asarray(ours_Bx1008), theirs_Bx1008, rtol=1e-4, atol=1e-4 * scale)
