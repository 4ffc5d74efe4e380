"""The embedded default's consistency stage and evaluation (`make run`): CoFRe's stage
(docs/method.md §2.4, the recipe of configs/synthetic_cofre.py) from the FP-MDLM of
configs/synthetic_demo.py, then `--mode=eval` samples with 3SR at budgets 96 and 384
and scores them by the generator's exact likelihood. The last lines print the excess
NLL next to three references: 0 (the generator), rows of i.i.d. symbols with the
data's frequencies, and the committed MDLM-12 / CoFRe figures of
benchmarks/results/quality_vs_budget.json (2000 training steps instead of 1200).
    python -m cofre_jax.main --config=configs/synthetic_demo_cofre.py \
        --workdir=runs/synthetic_demo_cofre [--mode=eval]
"""

from configs import synthetic_cofre, synthetic_demo


def get_config():
    cfg = synthetic_cofre.consistency_stage(synthetic_demo.get_config(), "runs/synthetic_demo")
    cfg.train.num_steps = 100
    cfg.train.eval_every = 25
    cfg.train.checkpoint_every = 25
    cfg.train.log_every = 25

    cfg.eval.budgets = (96, 384)
    # Two fixed-point iterations per step (T = budget // 4), the split the benchmark's
    # sweep found best for CoFRe at both budgets.
    cfg.eval.budget_steps = (24, 96)
    cfg.eval.num_samples = 64
    cfg.eval.reference = "benchmarks/results/quality_vs_budget.json"
    return cfg
