"""The Colab demos in notebooks/ run headless on CPU (nbclient, a fresh python3 kernel each)
at the tiny sizes they are written for, offline, and say what they should.

The kernels share a JAX compilation cache in a temporary folder, so the 3SR notebook
reuses the quick start's compiled training step (same tiny model); it changes no result.
"""

import json
import os
import pathlib

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = (
    "images.ipynb",
    "quickstart.ipynb",
    "sampling_3sr.ipynb",
    "solver_playground.ipynb",
)


def _read(name: str):
    return nbformat.read(ROOT / "notebooks" / name, as_version=4)


def test_every_notebook_is_tested_and_committed_clean():
    assert sorted(p.name for p in (ROOT / "notebooks").glob("*.ipynb")) == sorted(NOTEBOOKS)
    for name in NOTEBOOKS:
        nb = _read(name)
        nbformat.validate(nb)
        assert nb.metadata.kernelspec.name == "python3"
        code = [cell for cell in nb.cells if cell.cell_type == "code"]
        # The first cell installs the package, and only where it is not importable.
        assert 'find_spec("cofre_jax") is None' in code[0].source, name
        assert '"pip", "install"' in code[0].source, name
        assert all(not cell.outputs and cell.execution_count is None for cell in code), name


@pytest.fixture(scope="module")
def compile_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("jax_compilation_cache")


def _kernel_env(tmp_path, compile_cache) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("MPLBACKEND", None)  # the kernel's inline backend, as in Colab
    # One CPU device, as on a Colab CPU runtime (conftest simulates 8 for the tests).
    flags = env.get("XLA_FLAGS", "").split()
    env["XLA_FLAGS"] = " ".join(f for f in flags if "host_platform_device_count" not in f)
    env.update(
        JAX_PLATFORMS="cpu",
        JAX_COMPILATION_CACHE_DIR=str(compile_cache),
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
        TMPDIR=str(tmp_path),  # the notebooks' corpora and run folders
    )
    return env


def _outputs(nb) -> tuple[str, int]:
    """All stream text of the executed notebook, and the number of images it shows."""
    text, images = [], 0
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.output_type == "stream":
                text.append(out.text)
            images += "image/png" in out.get("data", {})
    return "".join(text), images


# CI runs the quick start at a third of its training steps (every cell and output is the
# same, the model is just less trained): 150 + 20 steps would take about two minutes.
# The images notebook likewise at 100 tokenizer, 100 FP-MaskGIT and 10 consistency
# steps instead of 300, 300 and 30 (about four minutes at its own size on 2 cores).
CI_SIZE = {
    "quickstart.ipynb": (("steps=150", "steps=40"), ("steps=20", "steps=10")),
    "images.ipynb": (
        (
            "tok.steps, tok.batch_size, tok.warmup_steps = 300,",
            "tok.steps, tok.batch_size, tok.warmup_steps = 100,",
        ),
        ("steps=300)", "steps=100)"),
        ("steps=30)", "steps=10)"),
    ),
}


def _at_ci_size(nb, name: str):
    for old, new in CI_SIZE.get(name, ()):
        cells = [cell for cell in nb.cells if old in cell.source]
        assert len(cells) == 1, f"{name}: expected one cell with {old!r}"
        cells[0].source = cells[0].source.replace(old, new)
    return nb


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_headless_on_cpu(name, tmp_path, compile_cache):
    nb = _at_ci_size(_read(name), name)
    client = NotebookClient(
        nb,
        timeout=600,  # per cell; a guard against a hang, not a performance check
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute(env=_kernel_env(tmp_path, compile_cache))  # raises on any cell error
    text, images = _outputs(nb)
    if name == "quickstart.ipynb":
        assert "model_kind: fp_mdlm" in text and "final validation" in text
        assert "starting stage 'consistency' from the EMA parameters" in text
        assert "budget: 96\n" in text
        used = int(text.split("block_passes_used: ")[1].split()[0])
        assert 0 < used <= 96
        (report,) = (tmp_path).glob("cofre_*/cofre/samples_step*.json")
        assert json.loads(report.read_text())["block_passes_used"] == used
    elif name == "images.ipynb":
        assert "train: (60000, 28, 28, 1), test: (10000, 28, 28, 1), 10 classes" in text
        assert "model_kind: fp_maskgit" in text and "block_passes_per_step: 1 + 1*N + 1" in text
        # The tokenizer's report, and the same figures read back in the next cell.
        assert "tokenizer after 100 steps: held-out reconstruction MSE" in text
        mse = float(text.split("held-out MSE ")[1].split()[0])
        assert 0 < mse < 0.3  # 0.9 at init
        assert "final validation (EMA params, step 100)" in text
        assert "starting stage 'consistency' from the EMA parameters" in text
        assert "final validation (EMA params, step 10)" in text
        lines = [line for line in text.splitlines() if line.startswith("budget ")]
        assert [int(line.split()[1].rstrip(":")) for line in lines] == [24, 48, 96]
        for line in lines:  # "budget B: T steps, block passes used U <= B, with guidance G, ..."
            budget = int(line.split()[1].rstrip(":"))
            used = int(line.split("block passes used ")[1].split()[0])
            guided = int(line.split("with guidance ")[1].split(",")[0])
            assert 0 < used <= budget and guided == 2 * used, line
        assert "7 x 7 reveals per step: [ 3  4  4  5  5  5  7 16]" in text
        # Data, tokenizer round trip, sample grids at three budgets, the Halton order.
        assert images == 4
    elif name == "sampling_3sr.ipynb":
        assert "gamma: [1.    1.    0.2   0.795" in text  # the 3SR rule on the handcrafted row
        assert images == 1 and text.count("block passes used") == 3
    else:
        assert "check_grads passed" in text and images == 2
