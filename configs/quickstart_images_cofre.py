"""CoFRe's consistency stage (docs/method.md §2.4) on the offline FP-MaskGIT
(configs/quickstart_images.py, trained in runs/quickstart_images), then its evaluation:
in-domain FID and IS at two budgets with 3SR and guidance, and a sample grid per budget.

The stage is the text recipe's (configs/synthetic_cofre.py): lambda rises 0 -> 0.1,
the fixed point of the same model at a less-masked time is the target (states
standardised over D), a constant lr of a third of the pretraining peak, and the 15%
early-stop rule checked at every checkpoint; on the arccos schedule here
(cofre_jax/tasks/image.py).
    python -m cofre_jax.main --config=configs/quickstart_images_cofre.py \
        --workdir=runs/quickstart_images_cofre [--mode=eval]
"""

from configs import quickstart_images
from configs.synthetic_cofre import consistency_stage


def get_config():
    cfg = consistency_stage(quickstart_images.get_config(), "runs/quickstart_images")
    cfg.train.num_steps = 100
    cfg.train.eval_every = cfg.train.checkpoint_every = 50
    # Two budgets of the published four (48/96/192/384), 3SR as the stage's sampler.
    cfg.eval.budgets = (48, 192)
    cfg.sample.warm_start = "3sr"
    return cfg
