"""The published FP-MDLM OpenWebText setup (docs/method.md §2.2-2.3), ~104M parameters.

MDLM's recipe (configs/owt_mdlm.py) with the 12-block stack replaced by 1 pre block,
1 weight-tied block iterated to a fixed point and 1 post block, trained with SJFB
(N_ng ~ U{0..4}, N_g ~ U{3..6}) at lr 2e-4 with clip 1.0.
    python -m cofre_jax.main --config=configs/owt.py --workdir=runs/owt
"""

from configs import base, owt_mdlm


def get_config():
    cfg = base.fp_mdlm_overlay(owt_mdlm.get_config())
    # Budget 96 at 8 steps: 96 / 8 = 12 block passes = 1 + 10 + 1.
    cfg.fixed_point.eval_iterations = 10

    cfg.optim.lr = 2e-4
    cfg.optim.grad_clip = 1.0
    return cfg
