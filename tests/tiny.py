"""The tiny, offline configurations the tests share: a byte-level MDLM on a pseudo-English
corpus (`tiny_config`), a small FP-MDLM (`fp_config`), and perturbed initial parameters."""

import json
import random

import jax
import jax.numpy as jnp

from cofre_jax.config.typed import from_config_dict
from configs import base, quickstart_mdlm

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
