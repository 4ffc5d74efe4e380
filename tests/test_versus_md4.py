"""benchmarks/versus_md4.py refuses a path that is not an MD4 checkout in one line,
before it imports JAX, MD4 or this package (MD4 needs a separate venv; see its
docstring)."""

import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "versus_md4.py"


def _run(*args):
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=60
    )


def test_missing_md4_path_is_one_line(tmp_path):
    missing = tmp_path / "no_such_checkout"
    done = _run(f"--md4_path={missing}")
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert str(missing) in lines[0] and "google-deepmind/md4" in lines[0]
    assert "md4/train.py" in lines[0]


def test_a_folder_without_md4_is_one_line(tmp_path):
    (tmp_path / "md4").mkdir()
    (tmp_path / "md4" / "train.py").write_text("")  # the model and config are absent
    done = _run(f"--md4_path={tmp_path}")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "md4/models/utils.py" in lines[0], done.stderr


def test_md4_path_is_required():
    done = _run()
    assert done.returncode == 2 and "--md4_path" in done.stderr
