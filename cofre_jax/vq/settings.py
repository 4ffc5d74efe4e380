"""The tokenizer's settings from the typed config (data.tokenizer, model.codebook_size,
data.channels), and the record of them a training workdir keeps.

`<workdir>/tokenizer_settings.json` is written when --mode=train_tokenizer starts. A
resumed or rerun training must match it (else one ConfigError line naming the first
field that differs), and `load_tokenizer` rebuilds the network from it rather than from
the current config, so a tokenizer is always read with the architecture it was trained
with.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

from cofre_jax.config.checks import ConfigError
from cofre_jax.data.errors import DataError
from cofre_jax.io.json_file import write_json
from cofre_jax.vq.model import VQConfig
from cofre_jax.vq.train import VQTrainConfig

SETTINGS_FILE = "tokenizer_settings.json"
SETTINGS_VERSION = 1
# Training fields that do not change the trained parameters.
_NOT_COMPARED = ("log_every",)


def vq_config(config: Any) -> VQConfig:
    """The VQ network of data.tokenizer, with model.codebook_size codes over
    data.channels image channels."""
    tok = config.data.tokenizer
    return VQConfig(
        in_channels=config.data.channels,
        base_channels=tok.base_channels,
        channel_mult=tuple(tok.channel_mult),
        num_res_blocks=tok.num_res_blocks,
        z_channels=tok.z_channels,
        codebook_size=config.model.codebook_size,
        code_dim=tok.code_dim,
        l2_normalised_codes=tok.l2_normalised_codes,
        commitment_beta=tok.commitment_beta,
        norm_groups=tok.norm_groups,
        attention=tok.attention,
    )


def vq_train_config(config: Any) -> VQTrainConfig:
    """data.tokenizer's training settings (the optimiser's other settings are
    VQTrainConfig's defaults)."""
    tok = config.data.tokenizer
    return VQTrainConfig(
        steps=tok.steps,
        batch_size=tok.batch_size,
        learning_rate=tok.learning_rate,
        warmup_steps=tok.warmup_steps,
        seed=tok.seed,
        log_every=tok.log_every,
    )


def vq_settings(vq: VQConfig) -> dict[str, Any]:
    """The network's settings as plain JSON values."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(vq).items()}


def vq_from_settings(vq: dict[str, Any], where: str) -> VQConfig:
    names = {f.name for f in dataclasses.fields(VQConfig)}
    if set(vq) != names:
        raise DataError(f"{where}: 'vq' has keys {sorted(vq)}, expected {sorted(names)}")
    return VQConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in vq.items()})


def training_settings(config: Any, image_size: tuple[int, int], train_images: str) -> dict:
    """What a training run in a workdir is: the network, the optimiser, the images (their
    size and a fingerprint of the training split)."""
    train = {
        k: v
        for k, v in dataclasses.asdict(vq_train_config(config)).items()
        if k not in _NOT_COMPARED
    }
    return {
        "version": SETTINGS_VERSION,
        "vq": vq_settings(vq_config(config)),
        "train": train,
        "image_size": list(image_size),
        "train_images": train_images,
    }


def read_settings(workdir: str) -> dict | None:
    """The settings a training in `workdir` started with, or None if none started."""
    path = os.path.join(workdir, SETTINGS_FILE)
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as f:
            settings = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        message = f"{path} cannot be read ({e}); delete it or use a fresh --workdir"
        raise DataError(message) from None
    if not isinstance(settings, dict) or settings.get("version") != SETTINGS_VERSION:
        raise DataError(f"{path} is not a version {SETTINGS_VERSION} settings record")
    return settings


def _first_difference(saved: Any, wanted: Any, prefix: str = "") -> str | None:
    if isinstance(saved, dict) and isinstance(wanted, dict):
        for key in sorted(set(saved) | set(wanted)):
            found = _first_difference(saved.get(key), wanted.get(key), f"{prefix}{key}.")
            if found:
                return found
        return None
    if saved != wanted:
        return f"{prefix[:-1]}: saved {saved!r}, configured {wanted!r}"
    return None


def check_or_write_settings(workdir: str, wanted: dict) -> None:
    """Records `wanted` in a fresh workdir; in a used one, they must be what it saved."""
    saved = read_settings(workdir)
    if saved is None:
        write_json(os.path.join(workdir, SETTINGS_FILE), wanted)
        return
    difference = _first_difference(saved, wanted)
    if difference:
        raise ConfigError(
            f"the tokenizer in {workdir} was trained with other settings ({difference}); "
            "use the config it was trained with or a fresh --workdir"
        )
