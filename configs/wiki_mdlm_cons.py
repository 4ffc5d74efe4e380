"""The MDLM + L_CONS control on real text: configs/wiki_cofre.py's stage applied to the
12-block MDLM (configs/wiki_mdlm.py, trained in runs/wiki_mdlm).
    python -m cofre_jax.main --config=configs/wiki_mdlm_cons.py --workdir=runs/wiki_mdlm_cons
"""

from configs import synthetic_cofre, wiki_mdlm


def get_config():
    return synthetic_cofre.consistency_stage(wiki_mdlm.get_config(), "runs/wiki_mdlm")
