"""FP-MDLM 1/1/1 on real text, the counterpart of configs/wiki_mdlm.py (the 12-block
MDLM): configs/synthetic.py's recipe (SJFB, the published 2:3 lr ratio, 3SR sampling
on the decreasing schedule) on UTF-8 bytes of the offline Wikipedia summaries.
    python -m cofre_jax.main --config=configs/wiki.py --workdir=runs/wiki
"""

from configs import base, wiki_mdlm


def get_config():
    cfg = base.fp_mdlm_overlay(wiki_mdlm.get_config())
    cfg.fixed_point.eval_iterations = 10
    cfg.optim.lr = wiki_mdlm.get_config().optim.lr * 2 / 3
    cfg.sample.warm_start = "3sr"
    cfg.sample.schedule = "decreasing"
    return cfg
