"""Config validation: one clear error naming the field and the allowed range."""

import dataclasses
import pathlib
import re
import subprocess
import sys

import pytest

from cofre_jax.config import choices, tasks
from cofre_jax.config.checks import _check
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
        (
            "model.kind",
            "rnn",
            "'model.kind' = 'rnn' is invalid: allowed one of "
            "('mdlm', 'fp_mdlm', 'maskgit', 'fp_maskgit')",
        ),
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


def test_task_tables_cover_the_choices():
    assert tuple(tasks.TASK_SECTIONS) == choices.TASKS
    assert tuple(choices.MODEL_TASKS) == choices.MODEL_KINDS
    assert set(choices.MODEL_TASKS.values()) <= set(choices.TASKS)
    assert from_config_dict(quickstart.get_config()).task == "text"


def test_every_field_is_documented_in_base():
    """Each field of the shared and the text sections is set in configs/base.py under a
    comment (a run of assignments may share one comment), and base sets nothing else."""
    text = (pathlib.Path(__file__).parents[2] / "configs" / "base.py").read_text()
    lines = text.split("def get_config")[1].split("    return cfg\n")[0].splitlines()
    assigned = {}
    for i, line in enumerate(lines):
        match = re.match(r"\s*cfg\.(\w+)\.(\w+) = ", line)
        if match:
            above = i - 1
            while re.match(r"\s*cfg\.\w+\.\w+ = ", lines[above]):
                above -= 1
            assigned[match.groups()] = lines[above].strip().startswith("#")
    cfg = from_config_dict(quickstart.get_config())  # the text task's sections
    fields = {
        (section.name, f.name)
        for section in dataclasses.fields(cfg)
        for f in dataclasses.fields(getattr(cfg, section.name))
    }
    assert set(assigned) == fields
    assert all(assigned.values()), sorted(k for k, ok in assigned.items() if not ok)


# A second task for test_a_task_without_tokenizer: an image model's own sections.
@dataclasses.dataclass(frozen=True)
class _ImageData:
    image_size: int
    channels: int

    def validate(self) -> None:
        _check(self.image_size >= 1, "data.image_size", self.image_size, ">= 1")


@dataclasses.dataclass(frozen=True)
class _ImageModel:
    kind: str
    patch_size: int
    num_classes: int  # -1: the task's resolve hook fills it in

    def validate(self) -> None:
        _check(self.patch_size >= 1, "model.patch_size", self.patch_size, ">= 1")


def _image_resolve(plain):
    if plain["model"].get("num_classes") == -1:
        plain["model"]["num_classes"] = 10


def _image_validate(config):
    size, patch = config.data.image_size, config.model.patch_size
    _check(size % patch == 0, "model.patch_size", patch, f"a divisor of {size}")


def test_a_task_without_tokenizer(monkeypatch):
    """The shared sections and the root need no tokenizer: a task registered in the two
    tables builds a full Config from a dict with no data.tokenizer at all."""
    monkeypatch.setitem(choices.MODEL_TASKS, "pixel_dit", "image")
    image = tasks.TaskSections(
        data=_ImageData, model=_ImageModel, resolve=_image_resolve, validate=_image_validate
    )
    monkeypatch.setitem(tasks.TASK_SECTIONS, "image", image)
    plain = quickstart.get_config().to_dict()
    plain["data"] = {"image_size": 32, "channels": 3}
    plain["model"] = {"kind": "pixel_dit", "patch_size": 4, "num_classes": -1}
    cfg = from_config_dict(plain)
    assert cfg.task == "image"
    assert cfg.data == _ImageData(32, 3)
    assert cfg.model == _ImageModel("pixel_dit", 4, 10)
    assert cfg.sample == from_config_dict(quickstart.get_config()).sample
    plain["model"]["patch_size"] = 5
    with pytest.raises(ConfigError, match="'model.patch_size' = 5 is invalid: allowed a divisor"):
        from_config_dict(plain)
    plain["model"]["patch_size"] = 0
    with pytest.raises(ConfigError, match="'model.patch_size' = 0 is invalid: allowed >= 1"):
        from_config_dict(plain)
    plain["model"] = {"kind": "pixel_dit", "patch_size": 4, "num_classes": -1, "depth": 2}
    with pytest.raises(ConfigError, match="unknown config key 'model.depth'"):
        from_config_dict(plain)


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


@pytest.mark.parametrize(
    "name",
    sorted(
        p.stem
        for p in (pathlib.Path(__file__).parents[2] / "configs").glob("*.py")
        # base.py documents every field and leaves data.path for the user to set.
        if p.stem not in ("__init__", "base")
    ),
)
def test_every_config_file_builds_a_valid_config(name):
    from_config_dict(__import__(f"configs.{name}", fromlist=["get_config"]).get_config())


@pytest.mark.parametrize("corpus", ["synthetic", "wiki"])
def test_comparison_configs_keep_the_published_depths_at_equal_steps(corpus):
    """MDLM-12 against FP-MDLM 1/1/1 of the same width and heads, trained for the same
    steps on the same batches (docs/method.md §2.8)."""
    mdlm = from_config_dict(__import__(f"configs.{corpus}_mdlm", fromlist=["x"]).get_config())
    fp = from_config_dict(__import__(f"configs.{corpus}", fromlist=["x"]).get_config())
    assert (mdlm.model.kind, mdlm.model.num_layers) == ("mdlm", 12)
    assert (fp.model.kind, fp.model.k_pre, fp.model.k_fp, fp.model.k_post) == ("fp_mdlm", 1, 1, 1)
    for field in ("hidden_size", "num_heads", "cond_dim"):
        assert getattr(fp.model, field) == getattr(mdlm.model, field), field
    assert fp.data == mdlm.data
    assert (fp.train.num_steps, fp.train.batch_size) == (
        mdlm.train.num_steps,
        mdlm.train.batch_size,
    )
    assert fp.optim.lr == pytest.approx(mdlm.optim.lr * 2 / 3)  # the published 2:3 ratio
