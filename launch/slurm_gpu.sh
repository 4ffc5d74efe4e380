#!/usr/bin/env bash
# Submits a cofre_jax run to a SLURM GPU cluster: one process per GPU (default) or one
# per node, all started by srun; process 0's node is the jax.distributed coordinator,
# and each process gets the coordinator address, the process count and its own index.
#
#   launch/slurm_gpu.sh --nodes=4 --gpus-per-node=8 --partition=gpu \
#       --workdir=/shared/runs/owt --config=configs/owt.py --config.train.num_steps=1000
#   launch/slurm_gpu.sh --dry-run ...     # prints the batch script and the sbatch command
#
# The batch script is piped to `sbatch --parsable`; the job's output goes to
# WORKDIR/slurm-JOBID.out (only process 0 prints training logs).
#
# Options (--key=value or --key value):
#   --nodes               default 1
#   --gpus-per-node       default 8
#   --per                 gpu (default: one process per GPU, each sees only its GPU)
#                         or node (one process per node, each sees all its GPUs)
#   --partition, --account, --qos   passed to #SBATCH when given
#   --time                default 24:00:00
#   --job-name            default cofre_jax
#   --cpus-per-task       default 8
#   --port                coordinator port on the first node, default 12355
#   --sbatch-arg          an extra #SBATCH line, e.g. --sbatch-arg=--exclusive (repeatable)
#   --chdir               repository on the shared file system (default: this checkout)
#   --setup               shell line run before srun, e.g. 'source .venv/bin/activate'
#   --python              default python3
#   --config              default configs/owt.py
#   --workdir             run directory on the shared file system (required)
#   --mode                train (default), eval, sample, ...
#   --config.a.b=v        config overrides; anything after `--` is passed on verbatim
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

usage() { sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; }

NODES=1 GPUS=8 PER="gpu" PARTITION="" ACCOUNT="" QOS="" TIME="24:00:00" JOB="cofre_jax"
CPUS=8 PORT=12355 CHDIR="$REPO_ROOT" SETUP="" PYTHON="python3" CONFIG="configs/owt.py"
WORKDIR="" MODE="train"
SBATCH_ARGS=() OVERRIDES=()

while (($#)); do
  arg="$1"
  shift
  case "$arg" in
    --) OVERRIDES+=("$@"); break ;;
    --dry-run) DRY_RUN=1; continue ;;
    -h | --help) usage; exit 0 ;;
    --config.*) OVERRIDES+=("$arg"); continue ;;
    --*=*) key="${arg%%=*}" value="${arg#*=}" ;;
    --*) key="$arg"; (($#)) || die "$key needs a value"; value="$1"; shift ;;
    *) die "unexpected argument '$arg' (config overrides are --config.a.b=v)" ;;
  esac
  case "$key" in
    --nodes) NODES="$value" ;;
    --gpus-per-node) GPUS="$value" ;;
    --per) PER="$value" ;;
    --partition) PARTITION="$value" ;;
    --account) ACCOUNT="$value" ;;
    --qos) QOS="$value" ;;
    --time) TIME="$value" ;;
    --job-name) JOB="$value" ;;
    --cpus-per-task) CPUS="$value" ;;
    --port) PORT="$value" ;;
    --sbatch-arg) SBATCH_ARGS+=("$value") ;;
    --chdir) CHDIR="$value" ;;
    --setup) SETUP="$value" ;;
    --python) PYTHON="$value" ;;
    --config) CONFIG="$value" ;;
    --workdir) WORKDIR="$value" ;;
    --mode) MODE="$value" ;;
    *) die "unknown option $key (see --help)" ;;
  esac
done

require_int --nodes "$NODES"
require_int --gpus-per-node "$GPUS"
require_int --cpus-per-task "$CPUS"
require_int --port "$PORT"
[[ "$PER" == gpu || "$PER" == node ]] || die "--per must be gpu or node, got '$PER'"
[[ -n "$WORKDIR" ]] || die "--workdir is required (a directory every node can write)"
[[ "$WORKDIR" == /* ]] || WORKDIR="$PWD/$WORKDIR"

if [[ "$PER" == gpu ]]; then
  TASKS_PER_NODE="$GPUS"
  # Each task sees the one GPU of its node-local rank.
  # shellcheck disable=SC2016  # expanded in the task, not here
  VISIBLE='CUDA_VISIBLE_DEVICES="$SLURM_LOCALID" '
else
  TASKS_PER_NODE=1
  VISIBLE=""
fi

# The command each task runs: the SLURM variables are expanded by the task's shell.
MAIN="$(quote_words "$PYTHON" -m cofre_jax.main "--config=$CONFIG" "--workdir=$WORKDIR" \
  "--mode=$MODE" --distributed=on)"
# shellcheck disable=SC2016  # expanded in the task, not here
TASK="${VISIBLE}exec $MAIN"' --coordinator="$COFRE_COORDINATOR" --num_processes="$SLURM_NTASKS" --process_id="$SLURM_PROCID"'
if ((${#OVERRIDES[@]})); then
  TASK+=" $(quote_words "${OVERRIDES[@]}")"
fi

batch_script() {
  local line
  echo '#!/bin/bash'
  echo "#SBATCH --job-name=$JOB"
  echo "#SBATCH --nodes=$NODES"
  echo "#SBATCH --ntasks-per-node=$TASKS_PER_NODE"
  echo "#SBATCH --gpus-per-node=$GPUS"
  echo "#SBATCH --cpus-per-task=$CPUS"
  echo "#SBATCH --time=$TIME"
  echo "#SBATCH --output=$WORKDIR/slurm-%j.out"
  [[ -z "$PARTITION" ]] || echo "#SBATCH --partition=$PARTITION"
  [[ -z "$ACCOUNT" ]] || echo "#SBATCH --account=$ACCOUNT"
  [[ -z "$QOS" ]] || echo "#SBATCH --qos=$QOS"
  for line in "${SBATCH_ARGS[@]}"; do
    echo "#SBATCH $line"
  done
  echo 'set -euo pipefail'
  echo "cd $(quote_words "$CHDIR")"
  [[ -z "$SETUP" ]] || echo "$SETUP"
  echo '# The first node of the allocation hosts the jax.distributed coordinator.'
  # shellcheck disable=SC2016  # lines of the batch script, expanded when it runs
  echo 'COFRE_COORDINATOR="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | sed -n 1p):'"$PORT"'"'
  echo 'export COFRE_COORDINATOR'
  # shellcheck disable=SC2016
  echo 'echo "coordinator $COFRE_COORDINATOR; $SLURM_NTASKS processes"'
  echo '# One task per process; each expands its own SLURM variables.'
  echo '# shellcheck disable=SC2016'
  echo "srun --kill-on-bad-exit=1 bash -c $(quote_words "$TASK")"
}

SCRIPT="$(batch_script)"
note "$NODES node(s) x $TASKS_PER_NODE process(es); log: $WORKDIR/slurm-JOBID.out"
run mkdir -p "$WORKDIR"
if ((DRY_RUN)); then
  printf '%s\n%s\n%s\n' "sbatch --parsable <<'COFRE_SBATCH'" "$SCRIPT" "COFRE_SBATCH"
else
  printf '+ sbatch --parsable  (batch script below)\n%s\n' "$SCRIPT" >&2
  JOB_ID="$(printf '%s\n' "$SCRIPT" | sbatch --parsable)"
  echo "submitted job $JOB_ID; follow it with: tail -F $WORKDIR/slurm-${JOB_ID%%;*}.out"
fi
