"""FP-MDLM 1/1/1 (docs/method.md §2.2) at the width of configs/synthetic_mdlm.py, on
the synthetic corpus with an exact likelihood: one explicit block, one weight-tied
block iterated to a fixed point (SJFB, N_ng ~ U{0..4}, N_g ~ U{3..6}), one explicit
block. The published FP run differs from MDLM's only in lr (2e-4 vs 3e-4) and SJFB;
the same 2:3 lr ratio is kept here.
    python -m cofre_jax.main --config=configs/synthetic.py --workdir=runs/synthetic
"""

from configs import base, synthetic_mdlm


def get_config():
    cfg = base.fp_mdlm_overlay(synthetic_mdlm.get_config())
    # Sampling spends the budget by the decreasing schedule; eval_iterations only sets
    # the default number of steps T = budget // (2 + eval_iterations).
    cfg.fixed_point.eval_iterations = 10

    cfg.optim.lr = 1.0e-3
    cfg.sample.warm_start = "3sr"
    cfg.sample.schedule = "decreasing"
    return cfg
