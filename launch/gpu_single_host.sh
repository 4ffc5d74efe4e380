#!/usr/bin/env bash
# Runs cofre_jax on the GPUs of this machine: one process that sees the chosen GPUs
# and shards over them (the mesh of the config's `mesh` section); no jax.distributed.
#
#   launch/gpu_single_host.sh --workdir=runs/owt --config=configs/owt.py --gpus=0,1,2,3 \
#       --config.train.batch_size=128
#   launch/gpu_single_host.sh --install ...   # first: pip install "jax[cuda12]" and this package
#   launch/gpu_single_host.sh --dry-run ...   # prints the commands, runs none
#
# Options (--key=value or --key value):
#   --gpus            CUDA_VISIBLE_DEVICES, e.g. 0,1 (default: all GPUs)
#   --mem-fraction    XLA_PYTHON_CLIENT_MEM_FRACTION, e.g. .9 (default: JAX's)
#   --install         pip install --upgrade "jax[cuda12]" -e <repo> first
#   --python          default: this checkout's .venv/bin/python (what `make setup`
#                     creates) when it exists, else python3
#   --config          default configs/owt.py (relative to the repository)
#   --workdir         run directory (required)
#   --mode            train (default), eval, sample, describe, ...
#   --config.a.b=v    config overrides; anything after `--` is passed on verbatim
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

usage() { sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; }

GPUS="" MEM_FRACTION="" INSTALL=0 PYTHON="python3" CONFIG="configs/owt.py" WORKDIR="" MODE="train"
# The venv that has this package installed, not whatever python3 is first on PATH.
[[ ! -x "$REPO_ROOT/.venv/bin/python" ]] || PYTHON="$REPO_ROOT/.venv/bin/python"
OVERRIDES=()

while (($#)); do
  arg="$1"
  shift
  case "$arg" in
    --) OVERRIDES+=("$@"); break ;;
    --dry-run) DRY_RUN=1; continue ;;
    --install) INSTALL=1; continue ;;
    -h | --help) usage; exit 0 ;;
    --config.*) OVERRIDES+=("$arg"); continue ;;
    --*=*) key="${arg%%=*}" value="${arg#*=}" ;;
    --*) key="$arg"; (($#)) || die "$key needs a value"; value="$1"; shift ;;
    *) die "unexpected argument '$arg' (config overrides are --config.a.b=v)" ;;
  esac
  case "$key" in
    --gpus) GPUS="$value" ;;
    --mem-fraction) MEM_FRACTION="$value" ;;
    --python) PYTHON="$value" ;;
    --config) CONFIG="$value" ;;
    --workdir) WORKDIR="$value" ;;
    --mode) MODE="$value" ;;
    *) die "unknown option $key (see --help)" ;;
  esac
done

[[ -z "$GPUS" || "$GPUS" =~ ^[0-9]+(,[0-9]+)*$ ]] || die "--gpus must look like 0,1,2, got '$GPUS'"
[[ -n "$WORKDIR" || "$MODE" == describe ]] || die "--workdir is required"
[[ -z "$WORKDIR" || "$WORKDIR" == /* ]] || WORKDIR="$PWD/$WORKDIR"

ENV=()
[[ -z "$GPUS" ]] || ENV+=("CUDA_VISIBLE_DEVICES=$GPUS")
[[ -z "$MEM_FRACTION" ]] || ENV+=("XLA_PYTHON_CLIENT_MEM_FRACTION=$MEM_FRACTION")
MAIN=("$PYTHON" -m cofre_jax.main "--config=$CONFIG" "--mode=$MODE" --distributed=off)
[[ -z "$WORKDIR" ]] || MAIN+=("--workdir=$WORKDIR")

run cd "$REPO_ROOT"
if ((INSTALL)); then
  run "$PYTHON" -m pip install --upgrade "jax[cuda12]" -e .
fi
if ((${#ENV[@]})); then
  run env "${ENV[@]}" "${MAIN[@]}" "${OVERRIDES[@]}"
else
  run "${MAIN[@]}" "${OVERRIDES[@]}"
fi
