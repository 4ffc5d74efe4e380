"""LlamaGen VQ tokenizer import: key/shape mapping, clear errors, identical codes and
reconstructions.

A minimal PyTorch re-expression of LlamaGen's `tokenizer/tokenizer_image/vq_model.py`
(module names as there, so its `state_dict()` has LlamaGen's key layout, including the
`quantize.codebook_used` buffer) is saved as {"model": state_dict} at a tiny width, read
back without torch by `cofre_jax.vq.llamagen`, and compared with our VQModel.

Letters: B batch, C channels, H W image, h w code grid, N positions, D code dim.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cofre_jax.io import TorchCheckpointError
from cofre_jax.vq.llamagen import (
    LLAMAGEN_VQ16,
    llamagen_layout,
    llamagen_params_from_state_dict,
    load_llamagen_params,
)
from cofre_jax.vq.model import VQModel, decode, encode, init_params

TINY = dataclasses.replace(
    LLAMAGEN_VQ16,
    base_channels=8,
    channel_mult=(1, 2),
    z_channels=8,
    codebook_size=16,
    code_dim=4,
    norm_groups=4,
)


# ---------------------------------------------------------------------------- torch reference


def swish(x):
    return x * torch.sigmoid(x)


class ResnetBlock(nn.Module):
    def __init__(self, c_in, c_out, groups):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, c_in, eps=1e-6)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, 1, 1)
        self.norm2 = nn.GroupNorm(groups, c_out, eps=1e-6)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1)
        if c_in != c_out:
            self.nin_shortcut = nn.Conv2d(c_in, c_out, 1)

    def forward(self, x):
        h = self.conv2(swish(self.norm2(self.conv1(swish(self.norm1(x))))))
        return (self.nin_shortcut(x) if hasattr(self, "nin_shortcut") else x) + h


class AttnBlock(nn.Module):
    def __init__(self, c, groups):
        super().__init__()
        self.norm = nn.GroupNorm(groups, c, eps=1e-6)
        self.q, self.k, self.v, self.proj_out = (nn.Conv2d(c, c, 1) for _ in range(4))

    def forward(self, x):
        h_ = self.norm(x)
        q, k, v = self.q(h_), self.k(h_), self.v(h_)
        b, c, h, w = q.shape
        w_ = torch.bmm(q.reshape(b, c, h * w).permute(0, 2, 1), k.reshape(b, c, h * w))
        w_ = F.softmax(w_ * c**-0.5, dim=2)
        h_ = torch.bmm(v.reshape(b, c, h * w), w_.permute(0, 2, 1)).reshape(b, c, h, w)
        return x + self.proj_out(h_)


class Resample(nn.Module):
    def __init__(self, c, down):
        super().__init__()
        self.down = down
        self.conv = nn.Conv2d(c, c, 3, 2 if down else 1, 0 if down else 1)

    def forward(self, x):
        if self.down:
            return self.conv(F.pad(x, (0, 1, 0, 1)))
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def mid(c, groups):
    return nn.ModuleList(
        [ResnetBlock(c, c, groups), AttnBlock(c, groups), ResnetBlock(c, c, groups)]
    )


class Encoder(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        ch, mult, g, n = cfg.base_channels, cfg.channel_mult, cfg.norm_groups, cfg.num_res_blocks
        self.conv_in = nn.Conv2d(cfg.in_channels, ch, 3, 1, 1)
        self.conv_blocks = nn.ModuleList()
        block_in = ch
        for i, m in enumerate(mult):
            block = nn.Module()
            block.res, block.attn = nn.ModuleList(), nn.ModuleList()
            for _ in range(n):
                block.res.append(ResnetBlock(block_in, ch * m, g))
                block_in = ch * m
                if i == len(mult) - 1:
                    block.attn.append(AttnBlock(block_in, g))
            if i != len(mult) - 1:
                block.downsample = Resample(block_in, down=True)
            self.conv_blocks.append(block)
        self.mid = mid(block_in, g)
        self.norm_out = nn.GroupNorm(g, block_in, eps=1e-6)
        self.conv_out = nn.Conv2d(block_in, cfg.z_channels, 3, 1, 1)

    def forward(self, x):
        h = self.conv_in(x)
        for block in self.conv_blocks:
            for i, res in enumerate(block.res):
                h = block.attn[i](res(h)) if len(block.attn) else res(h)
            h = block.downsample(h) if hasattr(block, "downsample") else h
        for m in self.mid:
            h = m(h)
        return self.conv_out(swish(self.norm_out(h)))


class Decoder(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        ch, mult, g, n = cfg.base_channels, cfg.channel_mult, cfg.norm_groups, cfg.num_res_blocks
        block_in = ch * mult[-1]
        self.conv_in = nn.Conv2d(cfg.z_channels, block_in, 3, 1, 1)
        self.mid = mid(block_in, g)
        self.conv_blocks = nn.ModuleList()
        for i in reversed(range(len(mult))):
            block = nn.Module()
            block.res, block.attn = nn.ModuleList(), nn.ModuleList()
            for _ in range(n + 1):
                block.res.append(ResnetBlock(block_in, ch * mult[i], g))
                block_in = ch * mult[i]
                if i == len(mult) - 1:
                    block.attn.append(AttnBlock(block_in, g))
            if i != 0:
                block.upsample = Resample(block_in, down=False)
            self.conv_blocks.append(block)
        self.norm_out = nn.GroupNorm(g, block_in, eps=1e-6)
        self.conv_out = nn.Conv2d(block_in, cfg.in_channels, 3, 1, 1)

    def forward(self, z):
        h = self.conv_in(z)
        for m in self.mid:
            h = m(h)
        for block in self.conv_blocks:
            for i, res in enumerate(block.res):
                h = block.attn[i](res(h)) if len(block.attn) else res(h)
            h = block.upsample(h) if hasattr(block, "upsample") else h
        return self.conv_out(swish(self.norm_out(h)))


class VectorQuantizer(nn.Module):
    def __init__(self, n_e, e_dim):
        super().__init__()
        self.embedding = nn.Embedding(n_e, e_dim)
        self.register_buffer("codebook_used", torch.zeros(65536))

    def forward(self, z_BxCxhxw):
        z = F.normalize(torch.einsum("bchw->bhwc", z_BxCxhxw), p=2, dim=-1)
        z_NxD = z.reshape(-1, z.shape[-1])
        e = F.normalize(self.embedding.weight, p=2, dim=-1)
        d = (z_NxD**2).sum(1, keepdim=True) + (e**2).sum(1) - 2 * z_NxD @ e.T
        codes_N = torch.argmin(d, dim=1)
        z_q = e[codes_N].view(z.shape)
        return torch.einsum("bhwc->bchw", z_q), codes_N.view(z.shape[:-1])


class TorchVQModel(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        self.quantize = VectorQuantizer(cfg.codebook_size, cfg.code_dim)
        self.quant_conv = nn.Conv2d(cfg.z_channels, cfg.code_dim, 1)
        self.post_quant_conv = nn.Conv2d(cfg.code_dim, cfg.z_channels, 1)

    def forward(self, x):
        quant, codes = self.quantize(self.quant_conv(self.encoder(x)))
        return self.decoder(self.post_quant_conv(quant)), codes


def random_torch_model(seed: int = 0) -> TorchVQModel:
    """Default conv init, plus random GroupNorm affines and codebook, so every mapped
    tensor moves the output."""
    torch.manual_seed(seed)
    model = TorchVQModel(TINY).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".norm" in name or "norm_out" in name:
                p.copy_((1.0 if name.endswith("weight") else 0.0) + 0.3 * torch.randn_like(p))
            elif "embedding" in name:
                p.copy_(torch.randn_like(p))
    return model


def save_llamagen(model, path, **extra) -> str:
    torch.save({"model": model.state_dict(), **extra}, path)
    return str(path)


# ---------------------------------------------------------------------------- tests


def test_codes_and_reconstructions_match_torch_reference(tmp_path):
    model = random_torch_model()
    params = load_llamagen_params(save_llamagen(model, tmp_path / "vq.pt", steps=3), TINY)
    images_BxHxWxC = np.random.default_rng(0).uniform(-1, 1, (2, 16, 16, 3)).astype(np.float32)
    with torch.no_grad():
        want_images, want_codes = model(torch.from_numpy(images_BxHxWxC).permute(0, 3, 1, 2))
    want_images = want_images.permute(0, 2, 3, 1).numpy()
    codes_Bxhxw = encode(params, TINY, jnp.asarray(images_BxHxWxC))
    assert codes_Bxhxw.shape == (2, 8, 8)
    assert len(np.unique(want_codes.numpy())) > 4  # the comparison is not trivial
    np.testing.assert_array_equal(np.asarray(codes_Bxhxw), want_codes.numpy())
    np.testing.assert_allclose(decode(params, TINY, codes_Bxhxw), want_images, atol=1e-4)
    out = VQModel(TINY).apply({"params": params}, jnp.asarray(images_BxHxWxC))
    np.testing.assert_allclose(out.images_BxHxWxC, want_images, atol=1e-4)


def test_param_tree_matches_flax_init(tmp_path):
    params = load_llamagen_params(save_llamagen(random_torch_model(), tmp_path / "vq.pt"), TINY)
    init = jax.eval_shape(lambda: init_params(TINY, jax.random.PRNGKey(0), (16, 16)))
    shapes = jax.tree.map(lambda a: (a.shape, a.dtype), params)
    assert shapes == jax.tree.map(lambda a: (a.shape, a.dtype), init)


def test_published_vq16_layout_matches_the_torch_module():
    """Every key and shape of the full-size VQ-16 state dict (built on the meta device:
    no memory), against our layout for LLAMAGEN_VQ16."""
    with torch.device("meta"):
        model = TorchVQModel(LLAMAGEN_VQ16)
    want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got = {key: shape for key, _, shape in llamagen_layout(LLAMAGEN_VQ16)}
    assert want.pop("quantize.codebook_used") == (65536,)
    assert got == want
    assert got["quantize.embedding.weight"] == (16384, 8)
    assert 70e6 < sum(int(np.prod(s)) for s in got.values()) < 74e6  # LlamaGen's 72M


def test_missing_unexpected_and_misshapen_keys_are_named(tmp_path):
    state_dict = {k: v.numpy() for k, v in random_torch_model().state_dict().items()}
    del state_dict["decoder.conv_out.bias"]
    state_dict["discriminator.weight"] = np.zeros(3, np.float32)
    state_dict["quant_conv.weight"] = np.zeros((4, 8, 3, 3), np.float32)
    with pytest.raises(TorchCheckpointError) as err:
        llamagen_params_from_state_dict(state_dict, TINY)
    message = str(err.value)
    assert "missing (1): decoder.conv_out.bias" in message
    assert "unexpected (1): discriminator.weight" in message
    assert "quant_conv.weight: checkpoint (4, 8, 3, 3)" in message
    # A file without a "model" entry, or with one that is not the tokenizer, is refused.
    torch.save({"optimizer": {}, "model": {"w": "not a tensor"}}, tmp_path / "bad.pt")
    with pytest.raises(TorchCheckpointError, match="not a tensor"):
        load_llamagen_params(str(tmp_path / "bad.pt"), TINY)
    torch.save({"model": random_torch_model().state_dict()}, tmp_path / "m.pt")
    with pytest.raises(TorchCheckpointError, match="no 'ema'"):
        load_llamagen_params(str(tmp_path / "m.pt"), TINY, use_ema=True)
