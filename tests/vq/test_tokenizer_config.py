"""data.tokenizer: its typed, hashable section, its one-line config errors, every field
documented in configs/image_base.py, and load_tokenizer's errors before any training."""

import dataclasses
import pathlib
import re

import jax
import numpy as np
import pytest
from tokenizer_fixtures import block_images, tiny_config

from cofre_jax.config.image import ImageTokenizerConfig
from cofre_jax.config.typed import ConfigError, from_config_dict
from cofre_jax.data.errors import DataNotFoundError
from cofre_jax.vq import model
from cofre_jax.vq.llamagen import llamagen_layout
from cofre_jax.vq.run import train_tokenizer
from cofre_jax.vq.settings import vq_config
from cofre_jax.vq.tokenizer import load_tokenizer
from configs import image_base, imagenette, quickstart_images

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _one_line_error(error_type, pattern, make):
    with pytest.raises(error_type, match=pattern) as caught:
        make()
    assert "\n" not in str(caught.value)
    return str(caught.value)


def test_the_section_is_a_hashable_dataclass_and_builds_the_vq_config():
    config = tiny_config()
    assert isinstance(config.data.tokenizer, ImageTokenizerConfig)
    assert hash(config) == hash(tiny_config())
    vq = vq_config(config)
    assert (vq.in_channels, vq.codebook_size, vq.channel_mult) == (1, 32, (1, 2))
    assert vq.downsample_factor * config.data.grid_size == config.data.image_size
    # The published layout: 256 x 256 -> 16 x 16 with LlamaGen VQ-16's network.
    published = vq_config(from_config_dict(imagenette.get_config()))
    assert published.downsample_factor == 16 and published.attention
    assert published.codebook_size == 4096 and published.norm_groups == 32
    fashion = from_config_dict(quickstart_images.get_config())
    assert fashion.data.tokenizer.kind == "vq" and fashion.data.grid_size == 7


def test_a_grid_that_does_not_match_the_model_is_one_line():
    message = _one_line_error(
        ConfigError,
        "a tokenizer grid that does not match the model",
        lambda: tiny_config(**{"data.grid_size": 4}),
    )
    for field in ("data.image_size", "data.tokenizer.channel_mult", "data.grid_size"):
        assert f"'{field}'" in message


@pytest.mark.parametrize(
    "override, pattern",
    [
        ({"data.tokenizer.kind": "taming"}, "data.tokenizer.kind"),
        ({"data.tokenizer.norm_groups": 3}, "data.tokenizer.norm_groups"),
        ({"data.tokenizer.channel_mult": (1, 0)}, "data.tokenizer.channel_mult"),
        ({"data.tokenizer.steps": 0}, "data.tokenizer.steps"),
        ({"data.tokenizer.learning_rate": 0.0}, "data.tokenizer.learning_rate"),
        ({"data.tokenizer.surprise": 1}, "unknown config key 'data.tokenizer.surprise'"),
    ],
)
def test_bad_tokenizer_fields_are_one_line(override, pattern):
    _one_line_error(ConfigError, re.escape(pattern), lambda: tiny_config(**override))


def test_every_tokenizer_field_is_documented_in_image_base():
    text = (ROOT / "configs" / "image_base.py").read_text()
    body = text.split("def get_config")[1].split("    return cfg\n")[0].splitlines()
    documented = {}
    for i, line in enumerate(body):
        match = re.match(r"\s*cfg\.data\.tokenizer\.(\w+) = ", line)
        if match:
            above = i - 1  # a comment may cover a run of assignments below it
            while re.match(r"\s*cfg\.data\.tokenizer\.\w+ = ", body[above]):
                above -= 1
            documented[match.group(1)] = body[above].strip().startswith("#")
    fields = {f.name for f in dataclasses.fields(ImageTokenizerConfig)}
    assert set(documented) == fields
    assert all(documented.values()), sorted(k for k, ok in documented.items() if not ok)
    assert from_config_dict(image_base.get_config()).data.tokenizer.kind == "llamagen"


def test_load_tokenizer_errors_before_training(tmp_path):
    _one_line_error(
        ConfigError, "'data.tokenizer_path' is empty", lambda: load_tokenizer(tiny_config())
    )
    missing = str(tmp_path / "nowhere")
    _one_line_error(
        DataNotFoundError,
        re.escape(f"--mode=train_tokenizer --workdir={missing}"),
        lambda: load_tokenizer(tiny_config(missing)),
    )
    empty = tmp_path / "empty"
    empty.mkdir()
    _one_line_error(
        DataNotFoundError,
        "no tokenizer checkpoint in .*--mode=train_tokenizer",
        lambda: load_tokenizer(tiny_config(str(empty))),
    )
    llamagen = {"data.tokenizer.kind": "llamagen"}
    _one_line_error(
        ConfigError,
        "allowed a .pt/.pth/.bin/.safetensors file",
        lambda: load_tokenizer(tiny_config(str(empty), **llamagen)),
    )
    _one_line_error(
        DataNotFoundError,
        "no such LlamaGen tokenizer file",
        lambda: load_tokenizer(tiny_config(str(tmp_path / "vq.pt"), **llamagen)),
    )
    _one_line_error(
        ConfigError,
        "'vq' .* 'llamagen' tokenizer is imported",
        lambda: train_tokenizer(tiny_config(**llamagen), str(tmp_path / "run")),
    )


def _save_as_llamagen(params, vq, path):
    """Our params as a LlamaGen state dict file (torch layout), written by torch."""
    torch = pytest.importorskip("torch")
    flat = {tuple(k.key for k in p): v for p, v in jax.tree_util.tree_flatten_with_path(params)[0]}
    state = {}
    for key, our_path, _ in llamagen_layout(vq):
        value = np.asarray(flat[our_path])
        if our_path[-1] == "kernel":  # (kh, kw, I, O) -> (O, I, kh, kw)
            value = value.transpose(3, 2, 0, 1)
        state[key] = torch.from_numpy(np.array(value))  # a writable copy
    torch.save({"model": state}, path)


def test_a_llamagen_file_loads_by_config_and_its_codebook_is_checked(tmp_path):
    config = tiny_config(str(tmp_path / "vq.pt"), **{"data.tokenizer.kind": "llamagen"})
    vq = vq_config(config)
    params = jax.jit(model.init_params, static_argnums=(0, 2))(vq, jax.random.PRNGKey(3), (16, 16))
    _save_as_llamagen(params, vq, config.data.tokenizer_path)
    tokenizer = load_tokenizer(config)
    images = block_images(4)
    expected = model.encode(params, vq, model.images_to_model(images))
    np.testing.assert_array_equal(np.asarray(tokenizer.encode(images)), np.asarray(expected))
    assert tokenizer.decode(expected).shape == images.shape
    bigger = tiny_config(
        config.data.tokenizer_path, **{"data.tokenizer.kind": "llamagen", "model.codebook_size": 64}
    )
    _one_line_error(
        ConfigError,
        "has 32 codes but config field 'model.codebook_size' = 64",
        lambda: load_tokenizer(bigger),
    )
