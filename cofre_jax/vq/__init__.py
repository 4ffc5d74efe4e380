"""A VQ image tokenizer (docs/method.md §2.7): the model and its losses
(cofre_jax/vq/model.py, cofre_jax/vq/quantize.py), a small training loop
(cofre_jax/vq/train.py), an importer of LlamaGen's published tokenizer
(cofre_jax/vq/llamagen.py), the --mode=train_tokenizer stage with checkpoints and an
exact resume (cofre_jax/vq/run.py), and the config's tokenizer loaded for encoding and
decoding (cofre_jax/vq/tokenizer.py; its settings: cofre_jax/vq/settings.py)."""
