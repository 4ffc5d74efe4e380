"""The image task's base config (docs/method.md §2.7): a class-conditional MaskGIT over a
grid of VQ codes, with the published training recipe. The shared sections (fixed_point,
optim, train, sample, eval, mesh, ...) are configs/base.py's, documented there; this
file replaces the text task's `model` and `data` sections and documents every field.

Build on it: configs/imagenette_maskgit.py (MaskGIT-Large, 24 blocks),
configs/imagenette_maskgit12.py, configs/imagenette.py (FP-MaskGIT 4/1/4) and the
offline configs/quickstart_images.py.
"""

import ml_collections

from configs import base


def get_config() -> ml_collections.ConfigDict:
    cfg = base.get_config()

    # ---- model: the class-conditional MaskGIT (Halton-MaskGIT style) ----
    cfg.model = ml_collections.ConfigDict()
    # "maskgit" (an explicit stack of num_layers blocks) or "fp_maskgit" (the
    # P -> G -> Fix(F) -> H stack with k_pre / k_fp / k_post blocks).
    cfg.model.kind = "maskgit"
    # Codes of the VQ tokenizer; the MASK id is codebook_size (the published VQ: 4096).
    cfg.model.codebook_size = 4096
    # Class labels; label num_classes is the null class of classifier-free guidance.
    cfg.model.num_classes = 10
    # Width of the residual stream, and of the class embedding that drives adaLN.
    cfg.model.hidden_size = 1024
    # maskgit: number of blocks (MaskGIT-Large: 24).
    cfg.model.num_layers = 24
    # Attention heads (hidden_size must divide by it).
    cfg.model.num_heads = 16
    # The MLP's width before the SwiGLU rule below, as a multiple of hidden_size.
    cfg.model.mlp_ratio = 4
    # SwiGLU width: 0 keeps mlp_ratio * hidden_size; k >= 1 takes Halton-MaskGIT's rule,
    # two thirds of it rounded up to a multiple of k (width 1024: 2816), which keeps the
    # three SwiGLU matrices near a 4x GELU MLP's parameters.
    cfg.model.mlp_multiple_of = 256
    # QK-norm: "joint" RMS-normalises the queries and keys over all heads' D dims without
    # a learned scale (Halton-MaskGIT); "per_head" over each head's dims, with a scale.
    cfg.model.qk_norm = "joint"
    # Learned register tokens prepended to the codes (Halton-MaskGIT uses one).
    cfg.model.register_tokens = 1
    # Dropout on the attention and MLP branches (the published 0.1).
    cfg.model.dropout = 0.1
    # Training: a label is replaced by the null class with this probability.
    cfg.model.label_dropout = 0.1
    # Compute dtype of activations: "float32" or "bfloat16".
    cfg.model.dtype = "bfloat16"
    # Storage dtype of parameters (and optimiser state).
    cfg.model.param_dtype = "float32"
    # fp_maskgit: explicit blocks before and after the fixed point, and the weight-tied
    # blocks inside it (the published 4 / 1 / 4).
    cfg.model.k_pre = 4
    cfg.model.k_fp = 1
    cfg.model.k_post = 4
    # How the injection u enters F: "fpdm" (fc1 over [h, u]) or "add" (h + u).
    cfg.model.injection = "fpdm"

    # ---- data: images, their labels and their codes ----
    cfg.data = ml_collections.ConfigDict()
    # "fashion_mnist" (offline, from the Debian package dataset-fashion-mnist),
    # "image_folder" (one subfolder per class) or "tfds" (e.g. ImageNette).
    cfg.data.source = "tfds"
    # image_folder: the folder whose subfolders are the classes.
    cfg.data.path = ""
    # tfds: dataset name and data_dir.
    cfg.data.tfds_name = "imagenette/full-size-v2"
    cfg.data.tfds_data_dir = ""
    # Where offline datasets and cached codes are kept ("" = ~/.cache/cofre_jax or
    # $COFRE_CACHE).
    cfg.data.cache_dir = ""
    # Images are square: center crop, then resize to image_size x image_size.
    cfg.data.image_size = 256
    # 3 for RGB, 1 for grayscale.
    cfg.data.channels = 3
    # Classes of the dataset (ImageNette: 10).
    cfg.data.num_classes = 10
    # The tokenizer's code grid is grid_size x grid_size (the published VQ: 16 x 16).
    cfg.data.grid_size = 16
    # The VQ tokenizer that turns images into the grid of codes (cofre_jax/vq/). Its
    # codebook size is model.codebook_size and its image channels data.channels. These
    # defaults are the layout of LlamaGen's VQ-16 (256x256 -> 16x16 with 4096 codes, as
    # the published recipe's tokenizer): a LlamaGen-layout file with 4096 codes loads as
    # is; LlamaGen's public vq_ds16_c2i.pt has 16384 codes (model.codebook_size=16384).
    cfg.data.tokenizer = ml_collections.ConfigDict()
    # "vq": trained here by --mode=train_tokenizer (data.tokenizer_path is its
    # --workdir); "llamagen": a LlamaGen tokenizer file (data.tokenizer_path is the
    # .pt/.pth/.bin/.safetensors), whose layout must be the settings below.
    cfg.data.tokenizer.kind = "llamagen"
    # Width of the first level; level i has base_channels * channel_mult[i] channels.
    cfg.data.tokenizer.base_channels = 128
    # One entry per level; each level but the last halves the image, so the grid is
    # image_size / 2**(len(channel_mult) - 1) and must equal data.grid_size.
    cfg.data.tokenizer.channel_mult = (1, 1, 2, 2, 4)
    # Residual blocks per encoder level (the decoder has one more per level).
    cfg.data.tokenizer.num_res_blocks = 2
    # Channels of the encoder output and the decoder input around the codebook.
    cfg.data.tokenizer.z_channels = 256
    # Dimension of each codebook vector.
    cfg.data.tokenizer.code_dim = 8
    # Nearest-code search on l2-normalised latents and codes (LlamaGen: True).
    cfg.data.tokenizer.l2_normalised_codes = True
    # Weight of the commitment loss that pulls the encoder towards its codes.
    cfg.data.tokenizer.commitment_beta = 0.25
    # GroupNorm groups; must divide every level's width (LlamaGen: 32).
    cfg.data.tokenizer.norm_groups = 32
    # Self-attention blocks at the lowest resolution and in the middle (LlamaGen: True).
    cfg.data.tokenizer.attention = True
    # kind "vq" training (MSE + the VQ losses; no perceptual or GAN loss): optimiser
    # steps, images per step, peak AdamW learning rate and its linear warm-up (then
    # cosine decay to 0).
    cfg.data.tokenizer.steps = 50_000
    cfg.data.tokenizer.batch_size = 64
    cfg.data.tokenizer.learning_rate = 1e-4
    cfg.data.tokenizer.warmup_steps = 1000
    # Progress lines every log_every steps; an orbax checkpoint (with the data
    # iterator's position, for an exact resume) every checkpoint_every steps.
    cfg.data.tokenizer.log_every = 100
    cfg.data.tokenizer.checkpoint_every = 2000
    # Seed of the tokenizer's initialisation and of its training order.
    cfg.data.tokenizer.seed = 0
    # Where the tokenizer lives ("" until one exists): for kind "vq" the --workdir of
    # --mode=train_tokenizer, for kind "llamagen" the checkpoint file.
    cfg.data.tokenizer_path = ""
    # Seed of the training order.
    cfg.data.shuffle_buffer_seed = 0
    # grain worker processes per host (0 = in the main process).
    cfg.data.worker_count = 0
    # Batches grain reads ahead per host.
    cfg.data.prefetch_batches = 4

    # ---- the published image recipe over the shared sections ----
    cfg.optim.lr = 5e-4
    cfg.optim.weight_decay = 0.03
    cfg.optim.warmup_steps = 1500
    cfg.optim.lr_schedule = "cosine"
    cfg.train.batch_size = 128
    cfg.train.num_steps = 50_000
    cfg.eval.scorer = "none"  # images are scored by FID and IS, not by a scorer LM

    # ---- sampling: Halton-MaskGIT's released sampler (valeoai/Halton-MaskGIT, its
    # Config/base_cls2img.yaml and main.py defaults) ----
    # The Halton order with arccos counts ("sampler: halton").
    cfg.sample.reveal_rule = "halton"
    # Their cfg_w = 3, with the same (1 + w) cond - w uncond, kept constant over the steps
    # (their sampler has no ramp); 0 samples the conditional model alone at half the cost.
    cfg.sample.guidance_scale = 3.0
    cfg.sample.guidance_ramp = "constant"
    # Their sm_temp = sm_temp_min = 1: the model's softmax as it is.
    cfg.sample.temperature = 1.0
    # Their r_temp, the confidence rule's Gumbel scale (the halton rule has no noise).
    cfg.sample.confidence_tau = 4.5
    # Their step = 32 (sample.budget = 0); a step reveals >= 1 code, so <= grid_size^2.
    cfg.sample.steps = 32
    return cfg


def fp_maskgit_overlay(cfg: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """FP-MaskGIT (docs/method.md §2.7): 4 explicit blocks, 1 weight-tied block iterated
    to a fixed point, 4 explicit blocks, trained with SJFB as FP-MDLM is."""
    cfg.model.kind = "fp_maskgit"
    cfg.model.k_pre, cfg.model.k_fp, cfg.model.k_post = 4, 1, 4
    cfg.fixed_point.gradient = "sjfb"
    cfg.fixed_point.nograd_min, cfg.fixed_point.nograd_max = 0, 4
    cfg.fixed_point.grad_min, cfg.fixed_point.grad_max = 3, 6
    cfg.fixed_point.solver = "picard"
    return cfg
