"""The sample section's reveal-rule and guidance fields and the eval section's image
features: each bad value, and each image-only setting on a text config, is one line."""

import pytest
from tiny import image_config

from cofre_jax.config.typed import ConfigError, from_config_dict
from configs import quickstart


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        (
            "sample.reveal_rule",
            "random",
            "'sample.reveal_rule' = 'random' is invalid: allowed one of",
        ),
        ("sample.guidance_scale", -1.0, "'sample.guidance_scale' = -1.0 is invalid: allowed >= 0"),
        ("sample.guidance_ramp", "cosine", "'sample.guidance_ramp' = 'cosine'"),
        ("sample.temperature", 0.0, "'sample.temperature' = 0.0 is invalid: allowed > 0"),
        ("sample.confidence_tau", -0.5, "'sample.confidence_tau' = -0.5"),
        ("eval.fid_features", "pixels", "'eval.fid_features' = 'pixels'"),
        ("eval.fid_features", "inception", "'eval.inception_weights' = '' is invalid"),
        # Image-only settings on a text config.
        ("sample.reveal_rule", "halton", "allowed 'ancestral' for text"),
        ("sample.guidance_scale", 1.5, "allowed 0 for text"),
    ],
)
def test_bad_sampling_fields_are_one_line(field, value, message):
    cfg = quickstart.get_config()
    section, key = field.split(".")
    cfg[section][key] = value
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")) as err:
        from_config_dict(cfg)
    assert "\n" not in str(err.value)


def test_text_refuses_inception_features_and_images_take_them():
    cfg = quickstart.get_config()
    cfg.eval.fid_features, cfg.eval.inception_weights = "inception", "/weights/pt_inception.pth"
    with pytest.raises(ConfigError, match="'eval.fid_features' = 'inception' is invalid"):
        from_config_dict(cfg)
    config = image_config(**{"eval.fid_features": "inception",
                             "eval.inception_weights": "/weights/pt_inception.pth"})  # fmt: skip
    assert config.eval.fid_features == "inception"


def test_guidance_needs_a_trained_null_class():
    with pytest.raises(ConfigError, match="0 when model.label_dropout is 0") as err:
        image_config(**{"model.label_dropout": 0.0, "sample.guidance_scale": 2.0})
    assert "\n" not in str(err.value)
    assert image_config(**{"model.label_dropout": 0.0, "sample.guidance_scale": 0.0})
