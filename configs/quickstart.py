"""The embedded default: a small FP-MDLM (CoFRe's denoiser) that trains on 2 CPU cores.

One explicit block, one weight-tied block iterated to a fixed point (SJFB with the
published N_ng ~ U{0..4}, N_g ~ U{3..6}) and one explicit block, on the offline
Wikipedia-summaries corpus (docs/design.md §4) with UTF-8 bytes as tokens. The MDLM baseline
at the same width is configs/quickstart_mdlm.py; the consistency stage that follows
this run is configs/quickstart_cofre.py.
    python -m cofre_jax.main --config=configs/quickstart.py --workdir=runs/quickstart
"""

from configs import base, quickstart_mdlm


def get_config():
    cfg = base.fp_mdlm_overlay(quickstart_mdlm.get_config())
    # Eval and sampling iterate F 8 times: 1 + 8 + 1 = 10 block passes per step.
    cfg.fixed_point.eval_iterations = 8

    # An SJFB step costs about 2.4x an MDLM-4-layer step at this width (F is iterated
    # 6.5 times on average and its injection layers add half a block each time), so
    # the default run halves the batch to stay within a few minutes on 2 cores.
    cfg.train.batch_size = 16
    cfg.train.num_steps = 360
    cfg.train.log_every = 40
    cfg.train.eval_every = 120
    cfg.train.checkpoint_every = 60
    return cfg
