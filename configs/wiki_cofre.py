"""CoFRe's consistency stage (docs/method.md §2.4) on the real-text FP-MDLM
(configs/wiki.py, trained in runs/wiki), with configs/synthetic_cofre.py's stage:
lambda 0 -> 0.1 over 50 steps, at most 300 steps, stopped at the first checkpoint more
than 15% above the starting validation perplexity.
    python -m cofre_jax.main --config=configs/wiki_cofre.py --workdir=runs/wiki_cofre
"""

from configs import synthetic_cofre, wiki


def get_config():
    return synthetic_cofre.consistency_stage(wiki.get_config(), "runs/wiki")
