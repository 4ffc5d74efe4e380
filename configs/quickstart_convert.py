"""--mode=convert on the quickstart: the 4-block MDLM (configs/quickstart_mdlm.py in
runs/quickstart_mdlm) becomes a 1/1/1 FP-MDLM and is distilled from the frozen MDLM.

Blocks 1 / 2 / 4 play the roles of the published 1 / 6 / 12 at a quarter of the depth.
docs/method.md §2.6 trains ~40k steps with a 5k-step lambda warm-up; this run keeps the same
proportion (1/8 of the run) at a CPU-sized length.
    python -m cofre_jax.main --config=configs/quickstart_convert.py --mode=convert \
        --workdir=runs/quickstart_convert
"""

from configs import quickstart


def get_config():
    cfg = quickstart.get_config()
    cfg.convert.teacher = "runs/quickstart_mdlm"
    cfg.convert.teacher_num_layers = 4
    cfg.convert.layer_map = (1, 2, 4)
    cfg.convert.injection_scale = 0.1

    cfg.stage.lambda_max = 0.1
    cfg.stage.lambda_warmup_steps = 15
    cfg.stage.temperature = 1.5

    cfg.optim.lr = 3e-4
    cfg.optim.warmup_steps = 10
    cfg.train.num_steps = 120
    cfg.train.log_every = 20
    cfg.train.eval_every = 60
    cfg.train.checkpoint_every = 60
    return cfg
