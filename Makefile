# Two commands on a fresh machine: `make run` and `make test` (see README).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# `run` needs the runtime dependencies only; `test` adds the test extra (torch,
# transformers, the notebook stack) on top of the same venv.
STAMP := $(VENV)/.installed-stamp
TEST_STAMP := $(VENV)/.installed-test-stamp
MAIN := $(PY) -m cofre_jax.main
# Two workers, one test file each (module fixtures are built once per file).
PYTEST_ARGS ?= -n 2 --dist loadfile

.PHONY: setup setup-test run run-text run-images run-mdlm convert quality quality-text test lint format clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e .
	touch $(STAMP)

$(TEST_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(TEST_STAMP)

setup: $(STAMP)

setup-test: $(TEST_STAMP)

# CoFRe on the embedded default, the synthetic corpus with an exact likelihood: trains
# the FP-MDLM 1/1/1 of the committed comparison (SJFB), runs its consistency stage, then
# scores 3SR samples at budgets 96 and 384 next to the committed MDLM-12 figures.
# Every step resumes.
run: setup
	$(MAIN) --config=configs/synthetic.py --workdir=runs/synthetic
	$(MAIN) --config=configs/synthetic_demo_cofre.py --workdir=runs/synthetic_demo_cofre
	$(MAIN) --config=configs/synthetic_demo_cofre.py --workdir=runs/synthetic_demo_cofre --mode=eval

# The same recipe on real text (UTF-8 bytes of the offline Wikipedia summaries), with
# samples to read and a scorer LM's generative perplexity.
run-text: setup
	$(MAIN) --config=configs/quickstart.py --workdir=runs/quickstart
	$(MAIN) --config=configs/quickstart_cofre.py --workdir=runs/quickstart_cofre
	$(MAIN) --config=configs/quickstart_cofre.py --workdir=runs/quickstart_cofre --mode=sample
	$(MAIN) --config=configs/quickstart_cofre.py --workdir=runs/quickstart_cofre --mode=eval

# Class-conditional images on Fashion-MNIST (offline, from the Debian package): the VQ
# tokenizer (28x28 -> 7x7 codes), FP-MaskGIT 2/1/2, CoFRe's consistency stage, then
# in-domain FID and IS at budgets 48 and 192 with a sample grid per budget
# (runs/quickstart_images_cofre/eval_images_budget*.png). Every step resumes.
run-images: setup
	$(MAIN) --config=configs/quickstart_images.py --workdir=runs/quickstart_images_tokenizer --mode=train_tokenizer
	$(MAIN) --config=configs/quickstart_images.py --workdir=runs/quickstart_images
	$(MAIN) --config=configs/quickstart_images_cofre.py --workdir=runs/quickstart_images_cofre
	$(MAIN) --config=configs/quickstart_images_cofre.py --workdir=runs/quickstart_images_cofre --mode=eval

# The MDLM baseline at the same width (4 blocks).
run-mdlm: setup
	$(MAIN) --config=configs/quickstart_mdlm.py --workdir=runs/quickstart_mdlm
	$(MAIN) --config=configs/quickstart_mdlm.py --workdir=runs/quickstart_mdlm --mode=sample

# FP-MDLM converted from the MDLM baseline and distilled from it (docs/method.md §2.6).
convert: run-mdlm
	$(MAIN) --config=configs/quickstart_convert.py --workdir=runs/quickstart_convert --mode=convert
	$(MAIN) --config=configs/quickstart_convert.py --workdir=runs/quickstart_convert --mode=sample

# The published text comparison (docs/method.md §2.8) on the synthetic corpus with an
# exact likelihood: MDLM-12 vs FP-MDLM 1/1/1 at equal steps, the consistency stages, and
# every method's excess NLL at budgets 96/192/384/768 (about 2 h on 2 shared CPU cores;
# resumable). Its plot needs matplotlib, from the test extra.
quality: setup-test
	$(PY) benchmarks/quality_vs_budget.py

# Its secondary table on real text (wiki bytes) at the same depths, scored by SmolLM2
# per token and per byte next to real held-out rows (about 1 h; resumable).
quality-text: setup-test
	$(PY) benchmarks/text_quality_vs_budget.py

lint: setup-test
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: lint
	$(VENV)/bin/pytest -q $(PYTEST_ARGS)

format: setup-test
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# The asset cache outside the checkout (corpus, BPE ranks, scorer) is kept: it would
# only be fetched again.
clean:
	rm -rf $(VENV) runs .cache
	@echo "kept the asset cache $${COFRE_CACHE:-$$HOME/.cache/cofre_jax}; remove it to fetch the assets again"
