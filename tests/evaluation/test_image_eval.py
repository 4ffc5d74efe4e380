"""The image evaluation (cofre_jax/evaluation/images.py) on a tiny random model and a
synthetic 3-class dataset: class-balanced labels, the in-domain classifier trained once
and labelled as such, every budget in the report and PNG, and a rerun that skips the
budgets it finished."""

import json
import os

import numpy as np
import pytest
from PIL import Image
from tiny import image_config, image_params

from cofre_jax.config.typed import ConfigError
from cofre_jax.data.images import ImageSplit
from cofre_jax.evaluation import fid
from cofre_jax.evaluation import images as image_eval


def _split(n, seed, channels=1):
    """8 x 8 images whose class k is a bright band at columns 2k..2k+2, with noise."""
    rng = np.random.default_rng(seed)
    labels_N = rng.integers(0, 3, n).astype(np.int32)
    x = rng.normal(60, 30, (n, 8, 8, channels))
    for k in range(3):
        x[labels_N == k, :, 2 * k : 2 * k + 3] += 120
    return ImageSplit(np.clip(x, 0, 255).astype(np.uint8), labels_N, num_classes=3, name="bands")


def _decode(codes_Bxhxw):
    """A stand-in VQ decoder: each of the 16 codes a 2 x 2 gray block."""
    blocks = np.kron(np.asarray(codes_Bxhxw) * 16, np.ones((2, 2), np.int64))
    return blocks[..., None].astype(np.uint8)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    config = image_config("maskgit", **{"data.cache_dir": str(cache)})
    train, test = _split(150, seed=0), _split(210, seed=1)
    logs = []
    extractor, accuracy = image_eval.in_domain_extractor(config, train, test, logs.append, steps=20)
    return config, train, test, extractor, accuracy, logs


def test_class_balanced_labels_are_in_class_order():
    np.testing.assert_array_equal(image_eval.class_balanced_labels(6, 3), [0, 0, 1, 1, 2, 2])
    assert image_eval.class_balanced_labels(6, 3).dtype == np.int32
    with pytest.raises(ValueError, match="7 samples cannot be split evenly over 3 classes"):
        image_eval.class_balanced_labels(7, 3)


def test_in_domain_classifier_is_trained_once_labelled_and_gives_zero_on_itself(setup):
    config, train, test, extractor, accuracy, logs = setup
    assert any("training the in-domain classifier" in line for line in logs)
    assert accuracy > 0.9 and extractor.accuracy == accuracy
    assert extractor.label == "in-domain FID (Fashion-MNIST classifier)"
    assert extractor.score_label == "in-domain IS (Fashion-MNIST classifier)"
    again = []
    cached, cached_accuracy = image_eval.in_domain_extractor(
        config, train, test, again.append, steps=20
    )
    assert cached_accuracy == accuracy and cached.fingerprint == extractor.fingerprint
    assert not any("training" in line for line in again)  # loaded from the cache
    reference = fid.reference_statistics(test.images_NxHxWxC, extractor, str(config.data.cache_dir))
    self_fid = fid.compute_fid(test.images_NxHxWxC, extractor, reference)
    assert abs(self_fid.value) < 1e-6 * np.trace(reference.sigma_FxF)
    assert "in-domain" in self_fid.label
    with pytest.raises(ConfigError, match="allowed 'inception' for 3-channel images") as err:
        image_eval.in_domain_extractor(config, _split(30, 2, 3), _split(30, 3, 3), print)
    assert "\n" not in str(err.value)


def test_report_has_every_budget_and_a_rerun_skips_the_finished_ones(setup, tmp_path, monkeypatch):
    config, _, test, extractor, _, _ = setup
    params = image_params(config)
    drawn_budgets = []
    real_draw = image_eval.draw_image_samples

    def counting_draw(config, params, plan, labels_B, seed, mesh=None):
        drawn_budgets.append(plan.budget)
        return real_draw(config, params, plan, labels_B, seed, mesh)

    monkeypatch.setattr(image_eval, "draw_image_samples", counting_draw)
    run = dict(num_samples=12, seed=0, workdir=str(tmp_path), log=print, batch_size=6)
    # A first run that stops after budget 4, then the full run: only budget 8 is new.
    image_eval.evaluate_images(config, params, _decode, test, extractor, budgets=(4,), **run)
    report = image_eval.evaluate_images(
        config, params, _decode, test, extractor, budgets=(4, 8), **run
    )
    assert drawn_budgets == [4, 4, 8, 8]  # two chunks of 6 per budget drawn
    assert set(report["budgets"]) == {"4", "8"}
    for budget in (4, 8):
        entry = report["budgets"][str(budget)]
        assert entry["fid"]["label"] == extractor.label and np.isfinite(entry["fid"]["value"])
        assert entry["score"]["label"] == extractor.score_label
        assert 0 < entry["block_passes"] <= budget  # the conditional network's passes
        assert entry["block_passes_with_guidance"] == 2 * entry["block_passes"]
        with Image.open(tmp_path / entry["grid"]) as grid:  # 3 rows (classes) of 4
            assert grid.size == (4 * 10 + 2, 3 * 10 + 2)
    assert "in-domain" in report["reference"]["fid"]["label"]
    assert report["reference"]["fid"]["count"] == 12
    on_disk = json.loads((tmp_path / "eval_images.json").read_text())
    assert on_disk["budgets"].keys() == report["budgets"].keys()
    image_eval.evaluate_images(config, params, _decode, test, extractor, budgets=(4, 8), **run)
    assert drawn_budgets == [4, 4, 8, 8]  # the rerun drew nothing
    lines = image_eval.summary_lines(report)
    assert sum(line.startswith("budget ") for line in lines) == 2
    assert all("FID" not in line or "in-domain FID" in line for line in lines)
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_a_decoder_of_the_wrong_shape_is_one_line(setup, tmp_path):
    config, _, test, extractor, _, _ = setup
    with pytest.raises(
        ValueError, match=r"decode_fn must return uint8 images of shape \(6, 8, 8, 1\)"
    ):
        image_eval.evaluate_images(
            config, image_params(config), lambda c: _decode(c)[..., 0], test, extractor,
            budgets=(4,), num_samples=6, seed=0, workdir=str(tmp_path), log=print,
        )  # fmt: skip


def test_inception_features_need_an_existing_weight_file(tmp_path):
    missing = str(tmp_path / "pt_inception.pth")
    config = image_config(**{"eval.fid_features": "inception", "eval.inception_weights": missing})
    with pytest.raises(ConfigError, match="'eval.inception_weights' = .* is invalid") as err:
        image_eval.make_image_extractor(config, _split(6, 0), _split(6, 1), print)
    assert "\n" not in str(err.value)
