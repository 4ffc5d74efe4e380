"""The VQ tokenizer: shapes, the nearest-code quantiser and its straight-through gradient,
codebook usage statistics, and a short training run on a few distinct images.

Letters: B batch, H W C image, h w code grid, D code dim, K codebook size, N positions.
"""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cofre_jax.vq.model import (
    VQConfig,
    VQModel,
    decode,
    encode,
    images_from_model,
    images_to_model,
    init_params,
    vq_loss,
)
from cofre_jax.vq.quantize import VectorQuantizer, codebook_usage
from cofre_jax.vq.train import (
    VQTrainConfig,
    evaluate,
    init_state,
    make_optimizer,
    train_step,
    train_vq,
)

# Fashion-MNIST scale: 28x28x1 -> 7x7 codes (two downsamplings).
FMNIST = VQConfig(
    in_channels=1, base_channels=8, channel_mult=(1, 2, 2), z_channels=8, codebook_size=256
)
# A 16x16 grid as in method.md §2.7 (ImageNette's tokenizer), at 64x64x3 and tiny width,
# with LlamaGen's attention blocks.
GRID16 = VQConfig(
    in_channels=3,
    base_channels=8,
    channel_mult=(1, 1, 2),
    num_res_blocks=2,
    z_channels=16,
    codebook_size=64,
    code_dim=4,
    norm_groups=4,
    attention=True,
)
TOY = VQConfig(
    in_channels=1,
    base_channels=8,
    channel_mult=(1, 2),
    z_channels=8,
    codebook_size=64,
    code_dim=8,
    norm_groups=4,
)


@pytest.mark.parametrize(
    ("config", "size", "grid"), [(FMNIST, (28, 28), (7, 7)), (GRID16, (64, 64), (16, 16))]
)
def test_encode_decode_shapes(config, size, grid):
    params = jax.jit(init_params, static_argnums=(0, 2))(config, jax.random.PRNGKey(0), size)
    images_BxHxWxC = jax.random.uniform(
        jax.random.PRNGKey(1), (2, *size, config.in_channels), minval=-1.0, maxval=1.0
    )
    codes_Bxhxw = jax.jit(encode, static_argnums=1)(params, config, images_BxHxWxC)
    assert codes_Bxhxw.shape == (2, *grid) and codes_Bxhxw.dtype == jnp.int32
    assert int(codes_Bxhxw.min()) >= 0 and int(codes_Bxhxw.max()) < config.codebook_size
    decoded = jax.jit(decode, static_argnums=1)(params, config, codes_Bxhxw)
    assert decoded.shape == images_BxHxWxC.shape and decoded.dtype == jnp.float32
    out = jax.jit(VQModel(config).apply)({"params": params}, images_BxHxWxC)
    np.testing.assert_array_equal(out.codes_Bxhxw, codes_Bxhxw)
    # The straight-through forward value is the code itself, so both paths decode alike.
    np.testing.assert_allclose(out.images_BxHxWxC, decoded, atol=1e-5)
    assert ("attn_0" in params["encoder"]["conv_blocks_2"]) == config.attention


def test_config_rejects_groups_that_do_not_divide_widths():
    with pytest.raises(ValueError, match="norm_groups"):
        dataclasses.replace(FMNIST, norm_groups=3)


def test_image_scaling_round_trips():
    images = jnp.arange(256, dtype=jnp.uint8).reshape(1, 16, 16, 1)
    scaled = images_to_model(images)
    assert float(scaled.min()) == -1.0 and float(scaled.max()) == 1.0
    np.testing.assert_array_equal(images_from_model(scaled), images)


@pytest.mark.parametrize("l2", [False, True])
def test_quantiser_returns_the_nearest_code(l2):
    K, D = 37, 5
    key_z, key_e = jax.random.split(jax.random.PRNGKey(l2))
    z_Bxhxwxd = jax.random.normal(key_z, (3, 4, 6, D))
    codebook_KxD = jax.random.normal(key_e, (K, D))
    quantiser = VectorQuantizer(K, D, l2)
    zq, codes_Bxhxw, codebook_loss, commitment_loss = quantiser.apply(
        {"params": {"embedding": codebook_KxD}}, z_Bxhxwxd
    )
    z_NxD, e_KxD = np.asarray(z_Bxhxwxd).reshape(-1, D), np.asarray(codebook_KxD)
    if l2:
        z_NxD = z_NxD / np.linalg.norm(z_NxD, axis=-1, keepdims=True)
        e_KxD = e_KxD / np.linalg.norm(e_KxD, axis=-1, keepdims=True)
    dist_NxK = ((z_NxD[:, None, :] - e_KxD[None, :, :]) ** 2).sum(-1)
    want_N = dist_NxK.argmin(-1)
    np.testing.assert_array_equal(np.asarray(codes_Bxhxw).reshape(-1), want_N)
    np.testing.assert_allclose(np.asarray(zq).reshape(-1, D), e_KxD[want_N], atol=1e-5)
    mean_sq = dist_NxK.min(-1).mean() / D
    np.testing.assert_allclose([codebook_loss, commitment_loss], [mean_sq, mean_sq], rtol=1e-4)


def test_straight_through_gradient():
    K, D = 16, 4
    codebook_KxD = jax.random.normal(jax.random.PRNGKey(0), (K, D))
    z_NxD = jax.random.normal(jax.random.PRNGKey(1), (1, 1, 10, D))
    quantise = lambda z: VectorQuantizer(K, D, False).apply(
        {"params": {"embedding": codebook_KxD}}, z
    )[0]
    # d zq / d z is the identity (no l2 normalisation).
    cotangent = jax.random.normal(jax.random.PRNGKey(2), z_NxD.shape)
    (grad_z,) = jax.vjp(quantise, z_NxD)[1](cotangent)
    np.testing.assert_allclose(grad_z, cotangent, atol=1e-6)

    # Through the whole model: the reconstruction term reaches the encoder but not the
    # codebook (which only the codebook loss moves).
    size = (16, 16)
    params = init_params(TOY, jax.random.PRNGKey(3), size)
    images = jax.random.uniform(jax.random.PRNGKey(4), (2, *size, 1), minval=-1, maxval=1)

    def recon_mse(p):
        out = VQModel(TOY).apply({"params": p}, images)
        return jnp.mean((out.images_BxHxWxC - images) ** 2)

    grads = jax.jit(jax.grad(recon_mse))(params)
    assert float(jnp.abs(grads["encoder"]["conv_in"]["kernel"]).max()) > 0
    assert float(jnp.abs(grads["quant_conv"]["kernel"]).max()) > 0
    assert float(jnp.abs(grads["quantize"]["embedding"]).max()) == 0
    full = jax.jit(jax.grad(lambda p: vq_loss(p, TOY, images)[0]))(params)
    assert float(jnp.abs(full["quantize"]["embedding"]).max()) > 0


def test_codebook_usage_on_a_hand_made_assignment():
    codes = jnp.array([[0, 0], [1, 3]])
    usage = codebook_usage(codes, codebook_size=8)
    assert float(usage["codebook_used"]) == pytest.approx(3 / 8)
    # p = (1/2, 1/4, 1/4): H = 1.5 bits, perplexity 2**1.5
    assert float(usage["codebook_perplexity"]) == pytest.approx(2**1.5, rel=1e-5)
    uniform = codebook_usage(jnp.arange(8), codebook_size=8)
    assert float(uniform["codebook_used"]) == 1.0
    assert float(uniform["codebook_perplexity"]) == pytest.approx(8.0, rel=1e-5)
    single = codebook_usage(jnp.full((5,), 2), codebook_size=8)
    assert float(single["codebook_perplexity"]) == pytest.approx(1.0)
    assert float(single["codebook_used"]) == pytest.approx(1 / 8)
    assert math.isfinite(float(single["codebook_perplexity"]))


def test_train_step_is_a_pure_function_of_state_and_batch():
    train = VQTrainConfig(steps=10, learning_rate=1e-3, warmup_steps=1)
    tx = make_optimizer(train)
    state = init_state(TOY, tx, jax.random.PRNGKey(0), (16, 16))
    pixels = np.random.default_rng(0).integers(0, 256, (2, 16, 16, 1), dtype=np.uint8)
    batch = {"images": jnp.asarray(pixels)}
    step = jax.jit(lambda s, b: train_step(s, b, config=TOY, tx=tx))
    a, metrics_a = step(state, batch)
    b, metrics_b = step(state, batch)
    assert int(a.step) == 1
    assert float(metrics_a["loss"]) == float(metrics_b["loss"])
    jax.tree.map(np.testing.assert_array_equal, a.params, b.params)
    a2, _ = step(a, batch)  # the warm-up's learning rate is 0 at step 0
    changed = jax.tree.map(lambda x, y: bool(jnp.any(x != y)), a2.params, a.params)
    assert all(jax.tree.leaves(changed))


def blocky_images(count: int, size: int = 16, cell: int = 4, seed: int = 0) -> np.ndarray:
    """`count` distinct binary images made of cell x cell blocks."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 2, size=(count, size // cell, size // cell, 1)) * 255
    assert len({b.tobytes() for b in blocks}) == count
    return np.repeat(np.repeat(blocks, cell, 1), cell, 2).astype(np.uint8)


def test_training_on_a_few_images_reconstructs_and_codes_round_trip():
    images = blocky_images(6)
    train = VQTrainConfig(steps=100, batch_size=6, learning_rate=3e-3, warmup_steps=10)
    logged = []
    params, report = train_vq(TOY, train, images, images, callback=lambda s, m: logged.append(s))
    assert logged == [100]
    assert report.heldout_recon_mse_at_init > 0.3
    assert report.heldout_recon_mse < 0.02 * report.heldout_recon_mse_at_init
    assert report.heldout_codebook_used > 1 / TOY.codebook_size
    assert evaluate(params, TOY, images)["recon_mse"] == pytest.approx(report.heldout_recon_mse)
    # Decoding an image's codes and re-encoding the decoder output gives the same codes.
    codes_Bxhxw = encode(params, TOY, images_to_model(images))
    again_Bxhxw = encode(params, TOY, decode(params, TOY, codes_Bxhxw))
    assert float(jnp.mean(codes_Bxhxw == again_Bxhxw)) >= 0.95
    # Distinct images get distinct code grids.
    assert len({np.asarray(c).tobytes() for c in codes_Bxhxw}) == len(images)


def test_bfloat16_compute_keeps_codes_and_outputs_float32():
    config = dataclasses.replace(TOY, dtype="bfloat16")
    params = jax.jit(init_params, static_argnums=(0, 2))(config, jax.random.PRNGKey(0), (8, 8))
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(params))
    images = jax.random.uniform(jax.random.PRNGKey(1), (2, 8, 8, 1), minval=-1, maxval=1)
    loss, metrics = jax.jit(vq_loss, static_argnums=1)(params, config, images)
    assert loss.dtype == jnp.float32 and bool(jnp.isfinite(loss))
    assert metrics["codebook_used"] > 0
