"""MDLM PyTorch checkpoint import: safe reading, key/shape mapping, identical logits.

A minimal PyTorch re-expression of MDLM's DIT (module names as in MDLM's
`models/dit.py`, so its `state_dict()` has MDLM's key layout) is saved Lightning-style,
read back without torch by `cofre_jax.convert`, and its logits compared with our DiT.

Letters: B batch, L length, D hidden, H heads, K head dim, C cond dim, V vocabulary.
"""

import dataclasses
import json
import math
import os
import struct

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cofre_jax.config.typed import ModelConfig
from cofre_jax.convert import (
    TorchCheckpointError,
    check_mdlm_hyperparameters,
    load_mdlm_params,
    load_torch_state_dict,
    mdlm_parameter_names,
    mdlm_params_from_state_dict,
)
from cofre_jax.io import OpaqueObject, load_checkpoint
from cofre_jax.models.dit import DiT

CONFIG = ModelConfig(
    kind="mdlm",
    vocab_size=37,
    hidden_size=32,
    num_layers=2,
    num_heads=4,
    mlp_ratio=4,
    cond_dim=16,
    time_conditioning=True,
    dropout=0.0,
    dtype="float32",
    param_dtype="float32",
    k_pre=1,
    k_fp=1,
    k_post=1,
    injection="fpdm",
)


# ---------------------------------------------------------------------------- torch reference


class TorchLayerNorm(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return F.layer_norm(x.float(), [x.shape[-1]]) * self.weight


class TorchTimestepEmbedder(nn.Module):
    def __init__(self, cond_dim, frequency_size=256):
        super().__init__()
        self.frequency_size = frequency_size
        self.mlp = nn.Sequential(
            nn.Linear(frequency_size, cond_dim), nn.SiLU(), nn.Linear(cond_dim, cond_dim)
        )

    def forward(self, sigma_B):
        half = self.frequency_size // 2
        freqs = torch.exp(-math.log(10_000.0) * torch.arange(half, dtype=torch.float32) / half)
        args = sigma_B[:, None].float() * freqs[None]
        return self.mlp(torch.cat([torch.cos(args), torch.sin(args)], dim=-1))


class TorchRotary(nn.Module):
    def __init__(self, head_dim):
        super().__init__()
        # A buffer, so the state dict carries `rotary_emb.inv_freq` as MDLM's does.
        self.register_buffer(
            "inv_freq", 1.0 / 10_000.0 ** (torch.arange(0, head_dim, 2).float() / head_dim)
        )

    def forward(self, length):
        freqs = torch.arange(length).float()[:, None] * self.inv_freq[None, :]
        emb_LxK = torch.cat([freqs, freqs], dim=-1)
        return emb_LxK.cos(), emb_LxK.sin()


def rotate(x_BxLxHxK, cos_LxK, sin_LxK):
    half = x_BxLxHxK.shape[-1] // 2
    rotated = torch.cat([-x_BxLxHxK[..., half:], x_BxLxHxK[..., :half]], dim=-1)
    return x_BxLxHxK * cos_LxK[None, :, None, :] + rotated * sin_LxK[None, :, None, :]


def modulate(x, shift, scale):
    return x * (1 + scale) + shift


class TorchBlock(nn.Module):
    def __init__(self, dim, heads, cond_dim, mlp_ratio):
        super().__init__()
        self.heads = heads
        self.norm1 = TorchLayerNorm(dim)
        self.attn_qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.attn_out = nn.Linear(dim, dim, bias=False)
        self.norm2 = TorchLayerNorm(dim)
        self.mlp = nn.Sequential(
            nn.Linear(dim, mlp_ratio * dim),
            nn.GELU(approximate="tanh"),
            nn.Linear(mlp_ratio * dim, dim),
        )
        self.adaLN_modulation = nn.Linear(cond_dim, 6 * dim)

    def forward(self, x_BxLxD, rotary, c_BxC):
        B, L, D = x_BxLxD.shape
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.adaLN_modulation(
            c_BxC
        )[:, None].chunk(6, dim=2)
        h = modulate(self.norm1(x_BxLxD), shift_msa, scale_msa)
        qkv = self.attn_qkv(h).view(B, L, 3, self.heads, D // self.heads)  # b s three h d
        q, k, v = (rotate(qkv[:, :, 0], *rotary), rotate(qkv[:, :, 1], *rotary), qkv[:, :, 2])
        attn = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=False
        )
        attn_BxLxD = attn.transpose(1, 2).reshape(B, L, D)
        x_BxLxD = x_BxLxD + gate_msa * self.attn_out(attn_BxLxD)
        h = modulate(self.norm2(x_BxLxD), shift_mlp, scale_mlp)
        return x_BxLxD + gate_mlp * self.mlp(h)


class TorchEmbedding(nn.Module):
    def __init__(self, dim, vocab):
        super().__init__()
        self.embedding = nn.Parameter(torch.empty(vocab, dim))

    def forward(self, tokens_BxL):
        return self.embedding[tokens_BxL]


class TorchFinalLayer(nn.Module):
    def __init__(self, dim, vocab, cond_dim):
        super().__init__()
        self.norm_final = TorchLayerNorm(dim)
        self.linear = nn.Linear(dim, vocab)
        self.adaLN_modulation = nn.Linear(cond_dim, 2 * dim)

    def forward(self, x_BxLxD, c_BxC):
        shift, scale = self.adaLN_modulation(c_BxC)[:, None].chunk(2, dim=2)
        return self.linear(modulate(self.norm_final(x_BxLxD), shift, scale))


class TorchDIT(nn.Module):
    """Registration order follows MDLM's DIT, so `parameters()` has its order too."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        D = cfg.hidden_size
        self.vocab_embed = TorchEmbedding(D, cfg.vocab_size)
        self.sigma_map = TorchTimestepEmbedder(cfg.cond_dim)
        self.rotary_emb = TorchRotary(cfg.head_dim)
        self.blocks = nn.ModuleList(
            TorchBlock(D, cfg.num_heads, cfg.cond_dim, cfg.mlp_ratio) for _ in range(cfg.num_layers)
        )
        self.output_layer = TorchFinalLayer(D, cfg.vocab_size, cfg.cond_dim)

    def forward(self, tokens_BxL, sigma_B):
        x = self.vocab_embed(tokens_BxL)
        c = F.silu(self.sigma_map(sigma_B))
        rotary = self.rotary_emb(tokens_BxL.shape[1])
        for block in self.blocks:
            x = block(x, rotary, c)
        return self.output_layer(x, c)


def random_torch_model(seed: int = 0) -> TorchDIT:
    """Every parameter random, including those MDLM zero-initialises (adaLN, output
    head), so each mapped tensor moves the logits."""
    torch.manual_seed(seed)
    model = TorchDIT(CONFIG).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.randn_like(p) * (0.5 if "weight" in name else 0.2))
    return model


def save_lightning(model: nn.Module, path, **extra) -> str:
    torch.save(
        {"state_dict": {"backbone." + k: v for k, v in model.state_dict().items()}, **extra}, path
    )
    return str(path)


# ---------------------------------------------------------------------------- tests


def test_logits_match_torch_reference(tmp_path):
    model = random_torch_model()
    path = save_lightning(model, tmp_path / "mdlm.ckpt", global_step=7)
    params = mdlm_params_from_state_dict(load_torch_state_dict(path), CONFIG)

    tokens_BxL = np.random.default_rng(0).integers(0, CONFIG.vocab_size, size=(2, 12))
    sigma_B = np.array([0.7, 2.3], dtype=np.float32)
    with torch.no_grad():
        want_BxLxV = model(torch.from_numpy(tokens_BxL), torch.from_numpy(sigma_B)).numpy()
    got_BxLxV = (
        DiT(CONFIG)
        .apply({"params": params}, jnp.asarray(tokens_BxL), jnp.asarray(sigma_B), train=False)
        .logits_BxLxV
    )
    assert np.abs(want_BxLxV).max() > 1.0  # the random head makes logits non-trivial
    np.testing.assert_allclose(np.asarray(got_BxLxV), want_BxLxV, atol=1e-4, rtol=1e-4)


def test_param_tree_matches_flax_init(tmp_path):
    path = save_lightning(random_torch_model(), tmp_path / "mdlm.ckpt")
    config = dataclasses.replace(CONFIG, param_dtype="bfloat16")
    params = load_mdlm_params(path, config)
    init = jax.eval_shape(
        lambda: DiT(config).init(
            jax.random.PRNGKey(0), jnp.zeros((1, 4), jnp.int32), jnp.zeros((1,)), train=False
        )["params"]
    )
    shapes = jax.tree.map(lambda a: (a.shape, a.dtype), params)
    assert shapes == jax.tree.map(lambda a: (a.shape, a.dtype), init)


def test_ema_shadow_params_follow_mdlm_parameter_order(tmp_path):
    model = random_torch_model()
    assert [n for n, _ in model.named_parameters()] == mdlm_parameter_names(CONFIG)
    # Distinct per-tensor factors, so a permuted order cannot pass.
    shadow = [p.detach() * (i + 2) for i, p in enumerate(model.parameters())]
    ema = {"decay": 0.9999, "num_updates": 3, "shadow_params": shadow}
    path = save_lightning(model, tmp_path / "mdlm.ckpt", ema=ema)
    plain = load_mdlm_params(path, CONFIG)
    averaged = load_mdlm_params(path, CONFIG, use_ema=True)
    kernel = plain["blocks_1"]["mlp_0"]["kernel"]
    index = mdlm_parameter_names(CONFIG).index("blocks.1.mlp.0.weight")
    np.testing.assert_allclose(averaged["blocks_1"]["mlp_0"]["kernel"], kernel * (index + 2))


def test_storages_roundtrip_exactly(tmp_path):
    torch.manual_seed(1)
    base = torch.randn(6, 10) * 100
    base[0, :3] = torch.tensor([float("inf"), -float("inf"), 1e-40])
    tensors = {
        "bf16": base.bfloat16(),
        "half": base.half(),
        "transposed": base.t(),  # non-contiguous strides
        "offset_view": base[2:, 3:7],  # storage offset and row stride 10
        "int64": torch.arange(5),
    }
    torch.save(tensors, tmp_path / "t.pt")
    loaded = load_checkpoint(tmp_path / "t.pt")
    for name, tensor in tensors.items():
        want = tensor.float().numpy() if name in ("bf16", "half") else tensor.numpy()
        assert loaded[name].shape == want.shape, name
        np.testing.assert_array_equal(loaded[name], want, err_msg=name)
    assert loaded["bf16"].dtype == np.float32 and loaded["half"].dtype == np.float16


def test_safetensors_file(tmp_path):
    torch.manual_seed(2)
    tensors = {"backbone.a": torch.randn(3, 4), "backbone.b": torch.randn(5).bfloat16()}
    header, blobs, offset = {"__metadata__": {"format": "pt"}}, [], 0
    for name, t in tensors.items():
        data = (
            t.view(torch.int16).numpy().tobytes()
            if t.dtype == torch.bfloat16
            else t.numpy().tobytes()
        )
        dtype = "BF16" if t.dtype == torch.bfloat16 else "F32"
        header[name] = {
            "dtype": dtype,
            "shape": list(t.shape),
            "data_offsets": [offset, offset + len(data)],
        }
        blobs.append(data)
        offset += len(data)
    head = json.dumps(header).encode()
    path = tmp_path / "model.safetensors"
    path.write_bytes(struct.pack("<Q", len(head)) + head + b"".join(blobs))
    loaded = load_torch_state_dict(path)
    assert sorted(loaded) == ["a", "b"]
    np.testing.assert_array_equal(loaded["a"], tensors["backbone.a"].numpy())
    np.testing.assert_array_equal(loaded["b"], tensors["backbone.b"].float().numpy())


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_forbidden_global_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "pwned"
    torch.save(
        {"state_dict": {"w": torch.ones(2)}, "payload": _Exploit(marker)}, tmp_path / "x.ckpt"
    )
    with pytest.raises(TorchCheckpointError, match=r"refusing to unpickle (posix|os)\.system"):
        load_checkpoint(tmp_path / "x.ckpt")
    # The opt-in keeps the object as an inert stand-in: still nothing runs.
    raw = load_checkpoint(tmp_path / "x.ckpt", opaque_unknown_globals=True)
    assert isinstance(raw["payload"], OpaqueObject)
    assert not marker.exists()
    np.testing.assert_array_equal(raw["state_dict"]["w"], np.ones(2, np.float32))


def test_lightning_extras_need_the_opaque_opt_in(tmp_path):
    import argparse

    model = random_torch_model()
    path = save_lightning(
        model, tmp_path / "mdlm.ckpt", hyper_parameters=argparse.Namespace(lr=3e-4)
    )
    with pytest.raises(TorchCheckpointError, match=r"refusing to unpickle argparse\.Namespace"):
        load_mdlm_params(path, CONFIG)
    params = load_mdlm_params(path, CONFIG, opaque_unknown_globals=True)
    np.testing.assert_array_equal(
        params["vocab_embed"]["embedding"], model.vocab_embed.embedding.detach().numpy()
    )


@pytest.mark.parametrize(
    "edit, message",
    [
        (
            lambda sd: sd.pop("blocks.1.mlp.0.bias"),
            r"missing \(1\): blocks\.1\.mlp\.0\.bias",
        ),
        (
            lambda sd: sd.__setitem__("blocks.2.norm1.weight", np.ones(32, np.float32)),
            r"unexpected \(1\): blocks\.2\.norm1\.weight",
        ),
        (
            lambda sd: sd.__setitem__("blocks.0.attn_qkv.weight", np.ones((96, 33), np.float32)),
            r"bad \(1\): blocks\.0\.attn_qkv\.weight: checkpoint \(96, 33\)"
            r".*expects \(96, 32\)",
        ),
    ],
)
def test_state_dict_mismatch_is_one_clear_error(tmp_path, edit, message):
    path = save_lightning(random_torch_model(), tmp_path / "mdlm.ckpt")
    state_dict = load_torch_state_dict(path)
    assert "rotary_emb.inv_freq" in state_dict  # a buffer, ignored without complaint
    edit(state_dict)
    with pytest.raises(TorchCheckpointError, match=message):
        mdlm_params_from_state_dict(state_dict, CONFIG)


def test_wrong_config_is_refused(tmp_path):
    path = save_lightning(random_torch_model(), tmp_path / "mdlm.ckpt")
    with pytest.raises(
        TorchCheckpointError, match=r"vocab_embed\.embedding: checkpoint \(37, 32\)"
    ):
        load_mdlm_params(path, dataclasses.replace(CONFIG, vocab_size=50))


def mdlm_hydra_config(**model):
    """MDLM's Hydra config as its Lightning module saves it (an OmegaConf DictConfig)."""
    from omegaconf import OmegaConf

    dims = dict(hidden_size=32, cond_dim=16, length=12, n_blocks=2, n_heads=4, dropout=0.0)
    return OmegaConf.create(
        {
            "backbone": "dit",
            "parameterization": "subs",
            "time_conditioning": True,
            "T": 0,
            "noise": {"type": "loglinear", "sigma_min": 1e-4},
            "model": {"name": "tiny", "type": "ddit", "scale_by_sigma": True, **dims, **model},
            "optim": {"lr": 3e-4, "betas": [0.9, 0.999]},
            "eval": {"checkpoint_path": "${oc.env:HOME}/mdlm.ckpt", "compute_entropy": None},
        }
    )


def save_real_lightning(model, path, hparams_config) -> str:
    """The layout PyTorch Lightning writes for MDLM's `Diffusion` module: the state dict
    under `state_dict`, MDLM's EMA under `ema`, `hyper_parameters` = {"config":
    DictConfig} (from `save_hyperparameters()`), and loop, callback and optimizer state."""
    shadow = [p.detach() * 2 for p in model.parameters()]
    return save_lightning(
        model,
        path,
        epoch=0,
        global_step=7,
        **{"pytorch-lightning_version": "2.2.1"},
        ema={"decay": 0.9999, "num_updates": 7, "shadow_params": shadow},
        hparams_name="kwargs",
        hyper_parameters={"config": hparams_config},
        loops={"fit_loop": {"state_dict": {}, "epoch_progress": {"total": {"ready": 1}}}},
        callbacks={"ModelCheckpoint{'monitor': 'val/nll'}": {"best_model_score": None}},
        optimizer_states=[{"state": {0: {"step": torch.tensor(7.0)}}, "param_groups": []}],
        lr_schedulers=[{"last_epoch": 7}],
    )


def test_lightning_checkpoint_with_omegaconf_hyperparameters(tmp_path):
    model = random_torch_model()
    path = save_real_lightning(model, tmp_path / "mdlm.ckpt", mdlm_hydra_config())
    # No opaque opt-in: the OmegaConf classes are allow-listed and come back plain.
    raw = load_checkpoint(path)
    config = raw["hyper_parameters"]["config"]
    assert type(config) is dict and type(config["model"]) is dict
    assert config["model"]["hidden_size"] == 32 and config["optim"]["betas"] == [0.9, 0.999]
    assert config["eval"] == {"checkpoint_path": "${oc.env:HOME}/mdlm.ckpt",
                              "compute_entropy": None}  # fmt: skip
    params = load_mdlm_params(path, CONFIG)
    np.testing.assert_array_equal(
        params["vocab_embed"]["embedding"], model.vocab_embed.embedding.detach().numpy()
    )
    averaged = load_mdlm_params(path, CONFIG, use_ema=True)
    np.testing.assert_allclose(
        averaged["vocab_embed"]["embedding"], 2 * params["vocab_embed"]["embedding"]
    )


def test_lightning_hyperparameters_disagreeing_with_the_config_are_one_clear_error(tmp_path):
    path = save_real_lightning(
        random_torch_model(), tmp_path / "mdlm.ckpt", mdlm_hydra_config(n_blocks=12, n_heads=12)
    )
    with pytest.raises(TorchCheckpointError) as info:
        load_mdlm_params(path, CONFIG)
    message = str(info.value)
    assert "\n" not in message
    assert message == (
        "checkpoint hyper-parameters disagree with the model config: model.n_blocks = 12 "
        "(config: model.num_layers = 2); model.n_heads = 12 (config: model.num_heads = 4)"
    )
    raw = {"hyper_parameters": {"config": {"parameterization": "sedd"}}}
    with pytest.raises(TorchCheckpointError, match=r"parameterization = 'sedd' \(config: the"):
        check_mdlm_hyperparameters(raw, CONFIG)


class _CallsInt:
    def __reduce__(self):
        return (int, ("5",))


def test_allow_listed_type_names_are_never_called(tmp_path):
    """OmegaConf metadata names builtins types; those names load as inert markers, so a
    pickle that calls one is refused, not run."""
    torch.save({"x": _CallsInt()}, tmp_path / "x.pt")
    with pytest.raises(TorchCheckpointError, match="cannot rebuild the pickled object"):
        load_checkpoint(tmp_path / "x.pt")
