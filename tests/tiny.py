"""A tiny, offline configuration shared by the training tests."""

import json
import random

from configs import quickstart_mdlm

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
