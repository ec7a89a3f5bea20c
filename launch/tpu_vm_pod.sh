#!/usr/bin/env bash
# Prompt tuning on a Cloud TPU VM (one host or a pod slice), driven from your workstation:
# create the VM (or reuse one), copy this checkout to every worker and install it with the
# pinned dependencies, run the same train command on every worker (JAX finds the other hosts
# itself), stream the output here, and optionally delete the VM at the end.
# docs/launch.md has the details; --help lists the options.
set -euo pipefail

DEFAULT_SIZE=xxl DEFAULT_NUM_PARTITIONS=4  # the paper's recipe (README)
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  cat <<EOF
Usage: launch/tpu_vm_pod.sh --tpu NAME --zone ZONE
         (--accelerator-type TYPE --version RUNTIME | --use-existing)
         --task NAME (--checkpoint PATH | --size mini) --model-dir DIR
         [--class-labels LIST] [options] [-- train flags]

TPU VM options:
  --tpu NAME              the TPU VM's name
  --zone ZONE             its zone, e.g. us-central2-b
  --project PROJECT       Google Cloud project (default: gcloud's configured one)
  --accelerator-type TYPE to create the VM: e.g. v4-32, v5litepod-16
  --version RUNTIME       to create the VM: the TPU software version, e.g. tpu-ubuntu2204-base
                          (its python3, or --python, must be 3.11 or newer for the pinned jax)
  --preemptible           create a preemptible VM
  --spot                  create a Spot VM
  --use-existing          use the VM named by --tpu as it is; create nothing
  --no-install            skip the copy and install (the VM already has this checkout)
  --delete-after          delete the VM when the script ends, whether the run failed or not

Every worker gets this checkout (git's tracked and untracked, not ignored, files) in
~/prompt_tuning_launch, replaced on each launch, and runs
  python3 -m pip install -c constraints.txt 'jax[tpu]' -e .
Training adds --gin.ACTIVATION_DTYPE=bfloat16 (override it after --).

$(common_usage)
EOF
}

TPU="" ZONE="" PROJECT="" ACCELERATOR_TYPE="" VERSION=""
USE_EXISTING=0 INSTALL=1 DELETE_AFTER=0 CREATE_FLAGS=()
usage_without_options "$@"
while (($# > 0)); do
  if [[ $1 == --*=* ]]; then set -- "${1%%=*}" "${1#*=}" "${@:2}"; fi  # --opt=v -> --opt v
  case $1 in
    --) shift; EXTRA=("$@"); break ;;
    --tpu) need_value "$@"; TPU=$2; shift 2 ;;
    --zone) need_value "$@"; ZONE=$2; shift 2 ;;
    --project) need_value "$@"; PROJECT=$2; shift 2 ;;
    --accelerator-type) need_value "$@"; ACCELERATOR_TYPE=$2; shift 2 ;;
    --version) need_value "$@"; VERSION=$2; shift 2 ;;
    --preemptible | --spot) CREATE_FLAGS+=("$1"); shift ;;
    --use-existing) USE_EXISTING=1; shift ;;
    --no-install) INSTALL=0; shift ;;
    --delete-after) DELETE_AFTER=1; shift ;;
    *) common_option "$@"; shift "$SHIFT" ;;
  esac
done

require TPU ZONE TASK CHECKPOINT MODEL_DIR
if ((USE_EXISTING)); then
  if ((${#CREATE_FLAGS[@]} > 0)) || [[ -n $ACCELERATOR_TYPE$VERSION ]]; then
    usage_error "--use-existing creates nothing:" \
      "drop --accelerator-type, --version, --preemptible, --spot"
  fi
else
  require ACCELERATOR_TYPE VERSION
fi
check_run_options
DEFAULT_FLAGS=(--gin.ACTIVATION_DTYPE=bfloat16)
build_train_command
if ((!DRY_RUN)) && ! command -v gcloud >/dev/null; then
  die "gcloud is not on PATH: install the Google Cloud SDK (or use --dry-run)"
fi

TPU_VM=(gcloud compute tpus tpu-vm)
WHERE=(--zone="$ZONE")
if [[ -n $PROJECT ]]; then WHERE+=(--project="$PROJECT"); fi
REMOTE_DIR=prompt_tuning_launch  # relative to the workers' home directories
TARBALL=${TMPDIR:-/tmp}/prompt_tuning_$TPU.tar.gz

if ((!USE_EXISTING)); then
  run "${TPU_VM[@]}" create "$TPU" "${WHERE[@]}" --accelerator-type="$ACCELERATOR_TYPE" \
    --version="$VERSION" "${CREATE_FLAGS[@]}"
fi
if ((DELETE_AFTER)); then
  # On any exit, failures and Ctrl-C included: an idle pod slice still costs money.
  trap 'run "${TPU_VM[@]}" delete "$TPU" "${WHERE[@]}" --quiet' EXIT
fi

if ((INSTALL)); then
  # A tarball of the checkout as it is now (uncommitted edits included, ignored files not),
  # so that every worker runs exactly this code.
  # shellcheck disable=SC2016  # $1 and $2 are the inner bash's arguments
  PACK='git -C "$1" ls-files -z --cached --others --exclude-standard'
  # shellcheck disable=SC2016
  PACK+=' | tar -C "$1" --null --ignore-failed-read -T - -czf "$2"'
  run bash -c "$PACK" _ "$REPO" "$TARBALL"
  run "${TPU_VM[@]}" scp "$TARBALL" "$TPU:$REMOTE_DIR.tar.gz" "${WHERE[@]}" --worker=all
  run rm -f "$TARBALL"
  # The remote shell gets one string: quote the parts that come from options.
  run "${TPU_VM[@]}" ssh "$TPU" "${WHERE[@]}" --worker=all --command="rm -rf $REMOTE_DIR \
&& mkdir $REMOTE_DIR && tar -xzf $REMOTE_DIR.tar.gz -C $REMOTE_DIR && cd $REMOTE_DIR \
&& $(quote "$PYTHON") -m pip install -c constraints.txt 'jax[tpu]' -e ."
fi

# The same command on every worker; gcloud streams all workers' output here.
run "${TPU_VM[@]}" ssh "$TPU" "${WHERE[@]}" --worker=all \
  --command="cd $REMOTE_DIR && $(quote "${TRAIN[@]}")"
