"""Config validation: one clear error naming the field and the allowed range."""

import subprocess
import sys

import pytest

from cofre_jax.config.typed import ConfigError, from_config_dict
from configs import base, owt_mdlm, quickstart


def test_shipped_configs_validate():
    for module in (owt_mdlm, quickstart):
        cfg = from_config_dict(module.get_config())
        assert cfg.model.vocab_size == cfg.model.mask_id + 1


def test_vocab_size_is_derived_from_tokenizer():
    assert from_config_dict(owt_mdlm.get_config()).model.vocab_size == 50258
    assert from_config_dict(quickstart.get_config()).model.vocab_size == 258


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("model.num_heads", 7, "model.num_heads"),
        ("model.dropout", 1.5, "model.dropout"),
        ("model.dtype", "float16", "one of ('float32', 'bfloat16')"),
        ("model.vocab_size", 1000, "model.vocab_size"),
        ("data.tokenizer", "sentencepiece", "data.tokenizer"),
        ("data.source", "c4", "data.source"),
        ("data.seq_len", 2, "data.seq_len"),
        ("optim.lr", -1.0, "optim.lr"),
        ("optim.ema_decay", 1.0, "optim.ema_decay"),
        ("train.batch_size", 0, "train.batch_size"),
        ("sample.top_p", 0.0, "sample.top_p"),
        ("diffusion.schedule", "sqrt", "diffusion.schedule"),
        ("mesh.data", 0, "mesh.data"),
    ],
)
def test_bad_value_names_field(field, value, message):
    cfg = quickstart.get_config()
    section, key = field.split(".")
    cfg[section][key] = value
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        from_config_dict(cfg)


def test_unknown_key_lists_valid_keys():
    cfg = base.get_config().to_dict()
    cfg["model"]["num_layer"] = 3
    with pytest.raises(ConfigError, match=r"unknown config key 'model.num_layer'.*num_layers"):
        from_config_dict(cfg)


def test_mesh_shape_must_cover_devices():
    cfg = from_config_dict(quickstart.get_config())
    assert cfg.mesh.shape(8) == (8, 1, 1)
    with pytest.raises(ConfigError, match="mesh"):
        type(cfg.mesh)(data=3, fsdp=-1, tensor=1).shape(8)


def _cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "cofre_jax.main", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_cli_unknown_mode_names_choices():
    out = _cli("--config=configs/quickstart.py", "--mode=fly")
    assert out.returncode != 0
    assert "train" in out.stderr and "describe" in out.stderr and "fly" in out.stderr


def test_cli_bad_override_value_is_one_clear_error():
    out = _cli("--config=configs/quickstart.py", "--mode=describe", "--config.model.num_heads=5")
    assert out.returncode != 0
    assert "config error: config field 'model.num_heads' = 5 is invalid" in out.stderr


def test_cli_unknown_override_key_fails():
    out = _cli("--config=configs/quickstart.py", "--mode=describe", "--config.model.depth=5")
    assert out.returncode != 0
    assert "model.depth" in out.stderr
