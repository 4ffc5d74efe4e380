"""Every allowed-values tuple of the config, in one place.

The config validates against these; the implementations (model registry, noise
schedules, divergences, solvers, ...) import them from here instead of writing their
own copies, and tests/test_registries.py checks that each dispatch covers exactly its
tuple. This module imports nothing (the config package is a leaf of cofre_jax).
"""

from __future__ import annotations

# The tasks a config can describe: each has its own data and model sections
# (cofre_jax/config/tasks.py), the other sections are shared.
TASKS = ("text", "image")
# model
MODEL_KINDS = ("mdlm", "fp_mdlm", "maskgit", "fp_maskgit")
# The task each model kind belongs to (keys: MODEL_KINDS); model.kind picks the task.
MODEL_TASKS = {"mdlm": "text", "fp_mdlm": "text", "maskgit": "image", "fp_maskgit": "image"}
INJECTIONS = ("fpdm", "add")
# model.qk_norm of the image MaskGIT (cofre_jax/models/maskgit.py)
QK_NORMS = ("joint", "per_head")
DTYPES = ("float32", "bfloat16")
# diffusion.schedule: the noise schedule (cofre_jax/diffusion.py)
SCHEDULES = ("loglinear", "linear", "cosine")
# data
TOKENIZERS = ("gpt2", "byte", "synthetic")
DATA_SOURCES = ("embedded", "text_files", "hf_folder", "tfds", "owt", "synthetic")
RAW_SOURCES = ("text_files", "hf_folder", "tfds")
# data.source of the image task (cofre_jax/config/image.py)
IMAGE_SOURCES = ("fashion_mnist", "image_folder", "tfds")
# optim.lr_schedule
LR_SCHEDULES = ("constant", "cosine")
# stage
STAGE_KINDS = ("pretrain", "consistency", "distill")
DIVERGENCES = ("mse", "normalized_mse", "kl", "cosine")
# sample: the allocation of fixed-point iterations over the steps (cofre_jax/sampling/budget.py)
# and the solver's start per step (cofre_jax/sampling/warm_start.py)
ALLOCATION_SCHEDULES = ("fixed", "decreasing", "increasing", "cosine", "front_loaded")
WARM_STARTS = ("cold", "reuse", "3sr")
# the reveal rule of a step (cofre_jax/sampling/rules.py) and the classifier-free
# guidance ramp (cofre_jax/sampling/guidance.py)
REVEAL_RULES = ("ancestral", "confidence", "halton")
GUIDANCE_RAMPS = ("constant", "linear")
# eval.fid_features: the network whose features the image distance uses
# (cofre_jax/evaluation/images.py): the in-domain classifier, or FID's InceptionV3
FID_FEATURES = ("domain", "inception")
# fixed_point (cofre_jax/fixed_point)
SOLVER_METHODS = ("picard", "anderson")
TOL_KINDS = ("relative", "absolute")
NONCONVERGENCE_POLICIES = ("best", "last", "raise")
GRADIENT_METHODS = ("implicit", "sjfb", "phantom", "jfb", "unrolled")
# eval.scorer: these names, or a .gguf file / Hugging Face folder path
# (cofre_jax/evaluation/scorer.py)
NAMED_SCORERS = ("none", "oracle", "smollm2")
# --mode (cofre_jax/main.py, cofre_jax/modes/)
MODES = ("train", "eval", "sample", "describe", "prepare", "convert", "train_tokenizer")
