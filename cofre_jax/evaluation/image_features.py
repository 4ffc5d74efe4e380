"""The networks that score generated images: features for a Frechet distance and class
logits for an Inception-Score-style score, from one pass (docs/design.md §4-§5).

    eval.fid_features = "domain"     `in_domain_extractor`: the small classifier of
        cofre_jax/evaluation/domain_classifier.py, trained once on the data's train split
        and cached under the data cache (keyed by a fingerprint of the splits and the
        training settings). Grayscale images of any size; its distance is labelled
        "in-domain FID (<dataset> classifier)" and its score "in-domain IS (<dataset>
        classifier)", never plain FID / IS.
    eval.fid_features = "inception"  `inception_image_extractor`: pytorch-fid's
        InceptionV3 from the user's weight file: FID and IS proper, any image.

`make_image_extractor(config, train, test, log)` picks one by the config.

Legend: N images, H/W height/width, C channels, F features, K classes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Callable
from typing import Any

import numpy as np

from cofre_jax.config.choices import FID_FEATURES
from cofre_jax.config.typed import Config, ConfigError
from cofre_jax.data.assets import resolve_cache_dir
from cofre_jax.data.images.split import ImageSplit
from cofre_jax.evaluation import domain_classifier as dc
from cofre_jax.evaluation import fid, inception
from cofre_jax.io.json_file import write_json

# Bump when the classifier or its training changes, so older cached ones are not reused.
CLASSIFIER_VERSION = 1
# About 1.3 epochs of Fashion-MNIST at batch 128: a minute or two on 2 CPU cores, once;
# its test accuracy is printed with every in-domain FID.
DOMAIN_TRAIN_STEPS = 600
IS_LABEL = "IS"


@dataclasses.dataclass(frozen=True)
class ImageExtractor(fid.FeatureExtractor):
    """A `fid.FeatureExtractor` (fn: images -> features, named by `label`) that also
    gives class logits: `both_fn(images) -> (features_BxF, logits_BxK)` in one pass,
    scored under `score_label`. `accuracy`: the classifier's test accuracy (None for
    Inception, which is not trained on the data)."""

    both_fn: Callable[[np.ndarray], Any]
    score_label: str
    accuracy: float | None = None


def dataset_name(config: Config) -> str:
    """The data's name for labels: "Fashion-MNIST", the image folder's or tfds's name."""
    data = config.data
    if data.source == "fashion_mnist":
        return "Fashion-MNIST"
    if data.source == "image_folder":
        return os.path.basename(os.path.normpath(data.path)) or data.path
    return data.tfds_name.split("/")[0]


def _classifier_key(train: ImageSplit, test: ImageSplit, settings: dict[str, Any]) -> str:
    data_fp = fid.fingerprint_arrays(
        train.images_NxHxWxC, train.labels_N, test.images_NxHxWxC, test.labels_N
    )
    text = json.dumps({"data": data_fp, **settings}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def in_domain_extractor(
    config: Config,
    train_split: ImageSplit,
    test_split: ImageSplit,
    log: Callable[[str], None] = print,
    *,
    steps: int = DOMAIN_TRAIN_STEPS,
    seed: int = 0,
) -> tuple[ImageExtractor, float]:
    """(extractor, test accuracy) of the in-domain classifier of the config's data,
    trained on train_split for `steps` steps once and then loaded from
    <data cache>/domain_classifier/."""
    channels = train_split.image_shape[-1]
    if channels != 1:
        raise ConfigError(
            f"config field 'eval.fid_features' = 'domain' is invalid: allowed 'inception' "
            f"for {channels}-channel images (the in-domain classifier reads grayscale; set "
            "eval.inception_weights)"
        )
    if test_split.image_shape != train_split.image_shape:
        raise ValueError(
            f"train images are {train_split.image_shape} but test images {test_split.image_shape}"
        )
    num_classes = train_split.num_classes
    settings = dict(version=CLASSIFIER_VERSION, steps=steps, seed=seed, classes=num_classes)
    key = _classifier_key(train_split, test_split, settings)
    folder = resolve_cache_dir(config.data.cache_dir) / "domain_classifier"
    params_path, meta_path = folder / f"{key[:24]}.npz", folder / f"{key[:24]}.json"
    name = dataset_name(config)
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    if meta.get("fingerprint") == key and params_path.exists():
        params, accuracy = dc.load_params(str(params_path)), float(meta["accuracy"])
        log(f"in-domain classifier of {name}: cached ({params_path}), test accuracy {accuracy:.4f}")
    else:
        log(f"training the in-domain classifier of {name} ({steps} steps, once; cached)")
        params, accuracy = dc.train_domain_classifier(
            train_split.images_NxHxWxC[..., 0],
            train_split.labels_N,
            test_split.images_NxHxWxC[..., 0],
            test_split.labels_N,
            num_classes=num_classes,
            steps=steps,
            seed=seed,
            progress=lambda step, loss: log(f"  classifier step {step}/{steps}: loss {loss:.4f}"),
        )
        folder.mkdir(parents=True, exist_ok=True)
        dc.save_params(str(params_path), params)
        # Written after the params: a sidecar present means the params are complete.
        meta = {"fingerprint": key, "accuracy": accuracy, "dataset": name, **settings}
        write_json(str(meta_path), meta)
        log(f"in-domain classifier of {name}: test accuracy {accuracy:.4f}")
    features = dc.domain_extractor(params, label=f"in-domain FID ({name} classifier)")
    extractor = ImageExtractor(
        features.fn,
        features.label,
        features.fingerprint,
        both_fn=lambda x: dc.features_and_logits_jit(params, x),
        score_label=f"in-domain IS ({name} classifier)",
        accuracy=accuracy,
    )
    return extractor, accuracy


def inception_image_extractor(config: Config, log: Callable[[str], None] = print):
    """FID and IS from pytorch-fid's InceptionV3 at eval.inception_weights."""
    path = config.eval.inception_weights
    if not os.path.isfile(path):
        raise ConfigError(
            f"config field 'eval.inception_weights' = {path!r} is invalid: allowed an "
            "existing pt_inception-2015-12-05-*.pth file"
        )
    log(f"loading the FID InceptionV3 from {path}")
    params = inception.load_fid_inception(path)
    features = fid.inception_extractor(params, fid.fingerprint_file(path))
    return ImageExtractor(
        features.fn,
        features.label,
        features.fingerprint,
        both_fn=lambda x: inception.inception_forward_jit(params, x),
        score_label=IS_LABEL,
    )


# One entry per cofre_jax.config.choices.FID_FEATURES (tests/test_registries.py).
_FEATURES: dict[str, Callable[..., ImageExtractor]] = {
    "domain": lambda config, train, test, log: in_domain_extractor(config, train, test, log)[0],
    "inception": lambda config, train, test, log: inception_image_extractor(config, log),
}


def make_image_extractor(
    config: Config,
    train_split: ImageSplit,
    test_split: ImageSplit,
    log: Callable[[str], None] = print,
) -> ImageExtractor:
    """The extractor eval.fid_features names (the splits train the in-domain one)."""
    if config.eval.fid_features not in _FEATURES:
        raise ConfigError(
            f"config field 'eval.fid_features' = {config.eval.fid_features!r} is invalid: "
            f"allowed one of {FID_FEATURES}"
        )
    return _FEATURES[config.eval.fid_features](config, train_split, test_split, log)
