"""The benchmarks' `--quick` smoke runs still work against the library as it is now.

A benchmark is only run by hand, so a refactor of the library can break it unseen:
`sampler_vs_mdlm.py` once indexed `load()`'s old four-tuple after it had become a
triple. Each quick run uses tiny shapes and writes nothing under benchmarks/results/
(the ones that write at all write to $TMPDIR, pointed here at the test's own folder).
`fp_vs_mdlm_cost.py --quick` compiles the OWT-shape steps (minutes) and `gpu_check.sh`
has its own dry-run test, so neither is here.
"""

import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

# benchmark -> the JSON its quick run writes to $TMPDIR (None: it only prints)
QUICK_RUNS = {
    "sampler_vs_mdlm": "sampler_vs_mdlm.json",
    "sampler_budget": "sampler_budget.json",
    "solvers": None,
    "train_throughput": None,
}


def _results_untouched() -> dict[str, float]:
    folder = ROOT / "benchmarks" / "results"
    return {p.name: p.stat().st_mtime for p in folder.iterdir() if p.is_file()}


@pytest.mark.parametrize("name", sorted(QUICK_RUNS))
def test_quick_run_succeeds(name, tmp_path):
    before = _results_untouched()
    env = {**os.environ, "TMPDIR": str(tmp_path), "JAX_PLATFORMS": "cpu"}
    out = subprocess.run(
        [sys.executable, f"benchmarks/{name}.py", "--quick"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert _results_untouched() == before, "a smoke run rewrote committed results"
    written = QUICK_RUNS[name]
    if written is not None:
        result = json.loads((tmp_path / written).read_text())
        assert result["meta"]["command"].startswith(f"python benchmarks/{name}.py")
        assert result["budgets"], "no budget was measured"
    if name == "sampler_vs_mdlm":  # the split of CoFRe's extra time is reported
        assert set(result["pass_seconds"]) == {"block", "f_fpdm"}
        attribution = result["budgets"][0]["attribution"]
        assert attribution["f_iterations"] == sum(
            result["budgets"][0]["methods"]["cofre"]["iterations_per_step"]
        )
        assert "## Where CoFRe's extra time goes" in (tmp_path / "sampler_vs_mdlm.md").read_text()
