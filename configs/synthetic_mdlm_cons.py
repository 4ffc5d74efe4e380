"""The control of docs/method.md §2.8: the consistency stage applied to the plain
12-block MDLM (configs/synthetic_mdlm.py, trained in runs/synthetic_mdlm), with the
stage settings of configs/synthetic_cofre.py. Published: L_CONS helps MDLM far less
than it helps FP-MDLM.
    python -m cofre_jax.main --config=configs/synthetic_mdlm_cons.py \
        --workdir=runs/synthetic_mdlm_cons
"""

from configs import synthetic_cofre, synthetic_mdlm


def get_config():
    return synthetic_cofre.consistency_stage(synthetic_mdlm.get_config(), "runs/synthetic_mdlm")
