"""The tiny, offline configurations the tests share: a byte-level MDLM on a pseudo-English
corpus (`tiny_config`), a small FP-MDLM (`fp_config`), and perturbed initial parameters."""

import functools
import json
import random

import jax
import jax.numpy as jnp
import numpy as np

from cofre_jax.config.typed import from_config_dict
from cofre_jax.models import build_model
from configs import base, quickstart_images, quickstart_mdlm

WORDS = (
    "the of and to in is was for on that with as by at from his her an it were are "
    "which this be or has had first new one two their after also its time who year"
).split()


def write_corpus(path, num_docs: int = 400, seed: int = 0) -> str:
    """Writes a jsonl corpus of short pseudo-English documents."""
    rng = random.Random(seed)
    lines = []
    for _ in range(num_docs):
        words = [rng.choice(WORDS) for _ in range(rng.randint(8, 40))]
        lines.append(json.dumps({"text": " ".join(words).capitalize() + "."}))
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def tiny_config(corpus_path: str, **overrides):
    """Quickstart shrunk to seconds: byte tokenizer, 2 layers of width 32."""
    cfg = quickstart_mdlm.get_config()
    cfg.model.hidden_size = 32
    cfg.model.num_layers = 2
    cfg.model.num_heads = 2
    cfg.model.cond_dim = 16
    cfg.model.dropout = 0.1  # exercised so determinism covers the dropout keys
    cfg.data.source = "text_files"
    cfg.data.path = corpus_path
    cfg.data.seq_len = 32
    cfg.data.val_docs = 40
    cfg.train.batch_size = 8
    cfg.train.num_steps = 6
    cfg.train.log_every = 2
    cfg.train.eval_every = 1000
    cfg.train.eval_batches = 2
    cfg.train.checkpoint_every = 2
    cfg.optim.warmup_steps = 2
    cfg.sample.num_samples = 2
    cfg.sample.steps = 8
    cfg.eval.budgets = ()  # likelihood only unless a test asks for samples
    cfg.eval.budget_steps = ()
    cfg.eval.scorer = "none"
    for dotted, value in overrides.items():
        section, key = dotted.split("__")
        cfg[section][key] = value
    return cfg


def fp_config(**overrides):
    """A tiny FP-MDLM (hidden 32, byte tokens, length 16), `section.key` overrides."""
    cfg = base.get_config()
    cfg.model.kind = "fp_mdlm"
    cfg.model.hidden_size, cfg.model.num_heads, cfg.model.cond_dim = 32, 2, 16
    cfg.model.dropout, cfg.model.dtype = 0.0, "float32"
    cfg.data.source, cfg.data.tokenizer, cfg.data.seq_len = "embedded", "byte", 16
    for dotted, value in overrides.items():
        section, key = dotted.split(".")
        cfg[section][key] = value
    return from_config_dict(cfg)


def perturbed_init(model, seq_len):
    """Zero-initialised adaLN and head make an untrained model nearly token-independent;
    perturbed weights make the sampler's choices depend on the states."""

    @jax.jit
    def init():  # one compilation instead of one per eagerly run op
        z = jnp.zeros((1, seq_len), jnp.int32)
        params = model.init(jax.random.PRNGKey(0), z, jnp.zeros((1,)), train=False)["params"]
        leaves, treedef = jax.tree.flatten(params)
        keys = jax.random.split(jax.random.PRNGKey(3), len(leaves))
        return jax.tree.unflatten(
            treedef, [x + 0.05 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)]
        )

    return init()


def image_config(kind: str = "maskgit", **overrides):
    """A tiny class-conditional image model (hidden 32, 3 classes, a 4 x 4 grid of 16
    codes over 8 x 8 grayscale images), `section.key` overrides."""
    cfg = quickstart_images.get_config()
    cfg.model.kind = kind
    cfg.model.hidden_size, cfg.model.num_heads, cfg.model.num_layers = 32, 2, 2
    cfg.model.k_pre, cfg.model.k_post, cfg.model.codebook_size = 1, 1, 16
    cfg.model.num_classes = cfg.data.num_classes = 3
    cfg.data.image_size, cfg.data.grid_size = 8, 4
    cfg.data.tokenizer.channel_mult = (1, 2)  # one downsampling: 8 x 8 -> 4 x 4
    cfg.fixed_point.eval_iterations = 2
    cfg.train.batch_size = 6
    for dotted, value in overrides.items():
        section, key = dotted.split(".")
        cfg[section][key] = value
    return from_config_dict(cfg)


def image_params(config, seed: int = 0):
    """Random parameters of an image config's model: its shapes (traced, not compiled:
    compiling the FP-MaskGIT init alone takes seconds), kernels N(0, 1 / fan_in), norm
    scales near 1, everything else N(0, 0.3^2) (the zero-initialised adaLN of a fresh
    model would hide the class). Built once per model settings."""
    return _image_params(config.model, config.fixed_point, config.data.seq_len, seed)


@functools.lru_cache(maxsize=8)
def _image_params(model_cfg, fixed_point_cfg, seq_len: int, seed: int):
    model = build_model(model_cfg, fixed_point_cfg)
    inputs = jnp.zeros((1, seq_len), jnp.int32), jnp.zeros((1,)), jnp.zeros((1,), jnp.int32)
    shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), *inputs, train=False))
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        name = jax.tree_util.keystr(path)
        noise = rng.standard_normal(leaf.shape).astype(np.float32)
        if name.endswith("['scale']"):
            return jnp.asarray(1.0 + 0.1 * noise)
        if name.endswith("['kernel']"):
            return jnp.asarray(noise / np.sqrt(np.prod(leaf.shape[:-1])))
        return jnp.asarray(0.3 * noise)

    return jax.tree_util.tree_map_with_path(draw, shapes)["params"]
