"""Each bad input through the entry point is one clear line on stderr, no traceback."""

import os
import subprocess
import sys

import pytest
import tiny

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = [
    "--config=configs/quickstart_mdlm.py",
    "--config.model.hidden_size=32",
    "--config.model.num_layers=1",
    "--config.model.num_heads=2",
    "--config.model.cond_dim=16",
    "--config.data.seq_len=32",
    "--config.data.val_docs=4",
    "--config.train.batch_size=2",
    "--config.train.num_steps=1",
    "--config.train.eval_batches=1",
]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    (root / "empty.txt").write_text("")
    return {"root": root, "empty": root / "empty.txt", "small": tiny.write_corpus(root / "s.jsonl")}


CASES = {
    "empty corpus": (
        ["--config.data.source=text_files", "--config.data.path={empty}"],
        "has no documents",
    ),
    "missing corpus": (
        ["--config.data.source=text_files", "--config.data.path={root}/nope.txt"],
        "matches no file or folder",
    ),
    "sequence longer than the data": (
        [
            "--config.data.source=text_files",
            "--config.data.path={small}",
            "--config.data.seq_len=100000",
        ],
        "fewer than one batch",
    ),
    "unknown tokenizer": (["--config.data.tokenizer=bpe"], "'data.tokenizer' = 'bpe'"),
    "unknown dataset": (
        ["--config.data.source=tfds", "--config.data.tfds_name=no_such_dataset"],
        "tfds dataset 'no_such_dataset' is not prepared",
    ),
    "unknown embedded corpus": (
        ["--config.data.source=embedded", "--config.data.path=nosuch"],
        "unknown embedded corpus 'nosuch'",
    ),
    "unwritable workdir": (["--workdir=/proc/cannot_write_here"], "error: workdir"),
    "mistyped config path": (["--config=configs/owt_mdl.py", "--mode=describe"], "does not exist"),
    "non-numeric value": (
        ["--config.optim.lr=abc"],
        "config error: --config.optim.lr=abc: could not convert string to float",
    ),
    "missing workdir": (["--workdir="], "error: --mode=train needs --workdir=DIR"),
    "non-finite loss": (
        [
            "--config=configs/quickstart.py",
            "--config.train.num_steps=8",
            "--config.train.log_every=4",
            "--config.optim.lr=0.99",
            "--config.optim.warmup_steps=0",
            "--config.optim.grad_clip=0",
            "--config.fixed_point.solver=anderson",
        ],
        "error: non-finite loss or gradient",
    ),
    "unknown scorer": (
        ["--mode=eval", "--config.eval.scorer=nosuch.gguf"],
        "error: eval.scorer='nosuch.gguf' is neither",
    ),
    "unknown fixed-point gradient": (
        ["--config=configs/quickstart.py", "--config.fixed_point.gradient=bogus"],
        "config error: config field 'fixed_point.gradient' = 'bogus'",
    ),
    "unknown fixed-point solver": (
        ["--config=configs/quickstart.py", "--config.fixed_point.solver=newton"],
        "config error: config field 'fixed_point.solver' = 'newton'",
    ),
    "budget below one step": (
        [
            "--config=configs/quickstart.py",
            "--mode=sample",
            "--config.sample.budget=2",
            "--config.sample.budget_steps=1",
        ],
        "budget 2 block passes is below the minimum",
    ),
    "bad synthetic setting": (
        [
            "--config.data.source=synthetic",
            "--config.data.tokenizer=synthetic",
            "--config.data.synthetic_branching=999",
        ],
        "'data.synthetic_branching' = 999",
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_clear_error(name, files):
    flags, message = CASES[name]
    flags = [f.format(**files) for f in flags]
    args = [*TINY, *flags]
    if not any(f.startswith("--workdir=") for f in flags):
        args.append(f"--workdir={files['root'] / name.replace(' ', '_')}")
    configs = [a for a in args if a.startswith("--config=")]
    args = [configs[-1], *(a for a in args if not a.startswith("--config="))]  # file first
    _assert_one_line_error(args, message)


def _assert_one_line_error(args: list[str], message: str) -> None:
    env = {**os.environ, "XLA_FLAGS": "", "JAX_PLATFORMS": "cpu"}
    out = subprocess.run(
        [sys.executable, "-m", "cofre_jax.main", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env=env,
    )
    assert out.returncode != 0
    assert "Traceback" not in out.stderr, out.stderr[-2000:]
    lines = out.stderr.strip().splitlines()
    assert message in lines[-1], out.stderr[-2000:]
    # One line: the error is the only line on stderr (no usage text, no library noise).
    assert len(lines) == 1, out.stderr[-2000:]


# --- images: the same promise through the image configs --------------------------------

IMAGE_TINY = [
    "--config=configs/quickstart_images.py",
    "--config.data.source=image_folder",
    "--config.data.image_size=16",
    "--config.data.grid_size=4",
    "--config.data.num_classes=2",
    "--config.model.num_classes=2",
    "--config.model.codebook_size=16",
    "--config.data.tokenizer.steps=1",
]
IMAGE_CASES = {
    "missing image folder": (
        ["--mode=train_tokenizer", "--config.data.path={root}/no_images"],
        "does not exist",
    ),
    "more classes than configured": (
        ["--mode=train_tokenizer", "--config.data.path={images}"],
        "config field 'data.num_classes' is 2 but",
    ),
    "tokenizer grid that does not match the model": (
        ["--config.data.path={images}", "--config.data.grid_size=8"],
        "a tokenizer grid that does not match the model",
    ),
    "no tokenizer trained yet": (
        [
            "--config.data.path={images}",
            "--config.data.num_classes=3",
            "--config.model.num_classes=3",
            "--config.data.tokenizer_path={root}/no_tokenizer",
        ],
        "--mode=train_tokenizer --workdir=",
    ),
    "text-only mode": (["--mode=convert", "--config.data.path={images}"], "not available"),
}


@pytest.fixture(scope="module")
def image_files(files):
    from PIL import Image

    root = files["root"]
    for label in range(3):  # three classes on disk, 20 images each (one held out)
        (root / "images" / f"c{label}").mkdir(parents=True)
        for i in range(20):
            Image.new("L", (16, 16), 40 * label + i).save(
                root / "images" / f"c{label}" / f"{i}.png"
            )
    return {"root": root, "images": root / "images"}


@pytest.mark.parametrize("name", list(IMAGE_CASES))
def test_bad_image_input_is_one_clear_error(name, image_files):
    flags, message = IMAGE_CASES[name]
    args = [*IMAGE_TINY, *(f.format(**image_files) for f in flags)]
    args.append(f"--workdir={image_files['root'] / name.replace(' ', '_')}")
    _assert_one_line_error(args, message)
