"""A VQ image tokenizer (docs/method.md §2.7): the model and its losses
(cofre_jax/vq/model.py, cofre_jax/vq/quantize.py), a small training loop
(cofre_jax/vq/train.py) and an importer of LlamaGen's published tokenizer
(cofre_jax/vq/llamagen.py)."""
