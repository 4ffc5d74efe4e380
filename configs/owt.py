"""The published FP-MDLM OpenWebText setup (docs/method.md §2.2-2.3), ~104M parameters.

MDLM's recipe (configs/owt_mdlm.py) with the 12-block stack replaced by 1 pre block,
1 weight-tied block iterated to a fixed point and 1 post block, trained with SJFB
(N_ng ~ U{0..4}, N_g ~ U{3..6}) at lr 2e-4 with clip 1.0.
    python -m cofre_jax.main --config=configs/owt.py --workdir=runs/owt
"""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
import owt_mdlm  # noqa: E402


def get_config():
    cfg = owt_mdlm.get_config()
    cfg.model.kind = "fp_mdlm"
    cfg.model.k_pre = 1
    cfg.model.k_fp = 1
    cfg.model.k_post = 1
    cfg.model.injection = "fpdm"

    cfg.fixed_point.gradient = "sjfb"
    cfg.fixed_point.nograd_min, cfg.fixed_point.nograd_max = 0, 4
    cfg.fixed_point.grad_min, cfg.fixed_point.grad_max = 3, 6
    cfg.fixed_point.solver = "picard"
    # Budget 96 at 8 steps: 96 / 8 = 12 block passes = 1 + 10 + 1.
    cfg.fixed_point.eval_iterations = 10

    cfg.optim.lr = 2e-4
    cfg.optim.grad_clip = 1.0
    return cfg
