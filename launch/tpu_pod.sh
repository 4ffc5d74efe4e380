#!/usr/bin/env bash
# Runs cofre_jax on a Cloud TPU VM pod slice: create the slice, copy this checkout (or
# clone a git repository) and install it on every worker, start the same command on
# all workers, stream worker 0's log until the run ends, delete the slice.
#
#   launch/tpu_pod.sh --name=cofre-v4 --zone=us-central2-b --workdir=/mnt/cofre/runs/owt \
#       --nfs=10.0.0.2:/cofre --config=configs/owt.py --config.train.num_steps=1000
#   launch/tpu_pod.sh --dry-run ...      # prints every command, runs none
#
# Actions (default: create install run logs delete; give some to run only those):
#   create   gcloud compute tpus tpu-vm create
#   install  copy (--source=copy: a tarball of this checkout) or clone (--source=git)
#            to ~/cofre_jax on all workers, pip install 'jax[tpu]' and the package;
#            with --nfs, mount the share at /mnt/cofre on every worker
#   run      python -m cofre_jax.main on all workers, detached (hangups ignored), log in
#            ~/cofre_jax_run.log on each worker
#   logs     follow worker 0's log (--log-worker) until the run ends; exits with its status
#   delete   gcloud compute tpus tpu-vm delete --quiet (the default flow deletes only
#            after a successful run: a failed one keeps the slice for inspection)
#
# Options (--key=value or --key value):
#   --name, --zone        the TPU slice (required)
#   --project             gcloud project (default: gcloud's configured one)
#   --accelerator-type    default v4-32 (4 hosts)
#   --version             TPU VM runtime, default tpu-ubuntu2204-base (v5p: v2-alpha-tpuv5,
#                         v5e: v2-alpha-tpuv5-lite, v6e: v2-alpha-tpuv6e)
#   --spot                create a Spot slice (after a preemption: delete, launch again
#                         with the same --workdir; the run resumes from its checkpoint)
#   --source              copy (default) or git
#   --repo-url, --ref     what --source=git clones (--ref: branch or tag, default main)
#   --nfs                 HOST:/export of an NFS/Filestore share to mount at /mnt/cofre
#   --config              default configs/owt.py (relative to the repository)
#   --workdir             run directory (required). Every worker writes its part of each
#                         checkpoint there, so on a multi-host slice it must be storage
#                         all workers share (e.g. /mnt/cofre/... with --nfs)
#   --mode                train (default), eval, sample, ...
#   --distributed         on (default; jax.distributed.initialize detects the TPU hosts),
#                         auto or off
#   --python              python on the workers, default python3
#   --log-worker          the worker whose log `logs` follows, default 0
#   --config.a.b=v        config overrides, passed on to cofre_jax.main; anything after
#                         `--` is passed on verbatim too
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

usage() { sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; }

NAME="" ZONE="" PROJECT="" ACCELERATOR="v4-32" VERSION="tpu-ubuntu2204-base" SPOT=0
SOURCE="copy" REPO_URL="" REF="main" NFS="" CONFIG="configs/owt.py" WORKDIR="" MODE="train"
DISTRIBUTED="on" PYTHON="python3" LOG_WORKER=0
ACTIONS=() OVERRIDES=()

while (($#)); do
  arg="$1"
  shift
  case "$arg" in
    --) OVERRIDES+=("$@"); break ;;
    --dry-run) DRY_RUN=1; continue ;;
    --spot) SPOT=1; continue ;;
    -h | --help) usage; exit 0 ;;
    --config.*) OVERRIDES+=("$arg"); continue ;;
    --*=*) key="${arg%%=*}" value="${arg#*=}" ;;
    --*) key="$arg"; (($#)) || die "$key needs a value"; value="$1"; shift ;;
    *) ACTIONS+=("$arg"); continue ;;
  esac
  case "$key" in
    --name) NAME="$value" ;;
    --zone) ZONE="$value" ;;
    --project) PROJECT="$value" ;;
    --accelerator-type) ACCELERATOR="$value" ;;
    --version) VERSION="$value" ;;
    --source) SOURCE="$value" ;;
    --repo-url) REPO_URL="$value" ;;
    --ref) REF="$value" ;;
    --nfs) NFS="$value" ;;
    --config) CONFIG="$value" ;;
    --workdir) WORKDIR="$value" ;;
    --mode) MODE="$value" ;;
    --distributed) DISTRIBUTED="$value" ;;
    --python) PYTHON="$value" ;;
    --log-worker) LOG_WORKER="$value" ;;
    *) die "unknown option $key (see --help)" ;;
  esac
done

((${#ACTIONS[@]})) || ACTIONS=(create install run logs delete)
for action in "${ACTIONS[@]}"; do
  case "$action" in
    create | install | run | logs | delete) ;;
    *) die "unknown action '$action'; actions: create install run logs delete" ;;
  esac
done
[[ -n "$NAME" ]] || die "--name is required (the TPU slice)"
[[ -n "$ZONE" ]] || die "--zone is required"
[[ "$SOURCE" == copy || "$SOURCE" == git ]] || die "--source must be copy or git, got '$SOURCE'"
[[ "$SOURCE" == copy || -n "$REPO_URL" ]] || die "--source=git needs --repo-url"
[[ "$DISTRIBUTED" =~ ^(auto|on|off)$ ]] || die "--distributed must be auto, on or off"
[[ "$LOG_WORKER" =~ ^[0-9]+$ ]] || die "--log-worker must be a worker index, got '$LOG_WORKER'"
if [[ " ${ACTIONS[*]} " == *" run "* ]]; then
  [[ -n "$WORKDIR" ]] || die "--workdir is required (storage all workers share)"
fi

REMOTE_DIR="cofre_jax"
# Paths on the workers, expanded there (in the home directory of the ssh user).
# shellcheck disable=SC2088
LOG="~/cofre_jax_run.log" PID_FILE="~/cofre_jax_run.pid" RC_FILE="~/cofre_jax_run.rc"
TARBALL="${TMPDIR:-/tmp}/cofre_jax_${NAME}.tar.gz"
TPU=(gcloud compute tpus tpu-vm)
WHERE=("--zone=$ZONE")
[[ -z "$PROJECT" ]] || WHERE+=("--project=$PROJECT")

ssh_workers() {  # ssh_workers WORKER COMMAND
  run "${TPU[@]}" ssh "$NAME" "${WHERE[@]}" "--worker=$1" "--command=$2"
}

do_create() {
  note "create the slice"
  local extra=()
  ((SPOT == 0)) || extra=(--spot)
  run "${TPU[@]}" create "$NAME" "${WHERE[@]}" "--accelerator-type=$ACCELERATOR" \
    "--version=$VERSION" "${extra[@]}"
}

do_install() {
  local get pip
  pip="$PYTHON -m pip install --quiet --upgrade \"jax[tpu]\" -e ./$REMOTE_DIR"
  if [[ "$SOURCE" == copy ]]; then
    note "copy this checkout to every worker"
    run tar -C "$REPO_ROOT" -czf "$TARBALL" --exclude=./.venv --exclude=./.git \
      --exclude=./runs --exclude=__pycache__ .
    run "${TPU[@]}" scp "$TARBALL" "$NAME:cofre_jax.tar.gz" "${WHERE[@]}" --worker=all
    get="rm -rf $REMOTE_DIR && mkdir -p $REMOTE_DIR && tar -xzf cofre_jax.tar.gz -C $REMOTE_DIR"
  else
    note "clone $REPO_URL at $REF on every worker"
    get="rm -rf $REMOTE_DIR && $(quote_words git clone --depth=1 "--branch=$REF" "$REPO_URL" \
      "$REMOTE_DIR")"
  fi
  note "install on every worker"
  ssh_workers all "set -e; $get && $pip"
  if [[ -n "$NFS" ]]; then
    note "mount $NFS at /mnt/cofre on every worker"
    ssh_workers all "set -e; sudo apt-get -qq update && sudo apt-get -qq install -y nfs-common \
&& sudo mkdir -p /mnt/cofre && (mountpoint -q /mnt/cofre || sudo mount -t nfs -o rw,hard \
$(quote_words "$NFS") /mnt/cofre)"
  fi
}

do_run() {
  note "start the run on every worker (detached, immune to hangups; log in $LOG on each)"
  local main
  main="$(quote_words "$PYTHON" -m cofre_jax.main "--config=$CONFIG" "--workdir=$WORKDIR" \
    "--mode=$MODE" "--distributed=$DISTRIBUTED" "${OVERRIDES[@]}")"
  ssh_workers all "cd $REMOTE_DIR || exit 1; rm -f $RC_FILE; (trap \"\" HUP; $main; \
echo \$? > $RC_FILE) > $LOG 2>&1 < /dev/null & echo \$! > $PID_FILE"
}

do_logs() {
  note "follow worker $LOG_WORKER's log until the run ends"
  ssh_workers "$LOG_WORKER" "tail -n +1 --pid=\"\$(cat $PID_FILE)\" -f $LOG; \
exit \"\$(cat $RC_FILE 2>/dev/null || echo 1)\""
}

do_delete() {
  note "delete the slice"
  run "${TPU[@]}" delete "$NAME" "${WHERE[@]}" --quiet
}

for action in "${ACTIONS[@]}"; do
  if [[ "$action" == logs ]]; then
    status=0
    do_logs || status=$?
    if ((status)); then
      note "the run failed (status $status); $NAME is kept for inspection. Delete it with:"
      note "$(quote_words "$0" "--name=$NAME" "--zone=$ZONE" delete)"
      exit "$status"
    fi
  else
    "do_$action"
  fi
done
