#!/usr/bin/env bash
# Prompt tuning on NVIDIA GPUs: one host with all its GPUs (one process), or several hosts
# through jax.distributed, either under SLURM (srun starts one process per GPU; JAX reads
# the SLURM environment) or by hand (one process per host, coordinator given explicitly).
# docs/launch.md has the details; --help lists the options.
set -euo pipefail

DEFAULT_SIZE=xxl DEFAULT_NUM_PARTITIONS=4  # the paper's recipe (README)
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  cat <<EOF
Usage: launch/gpu.sh --task NAME (--checkpoint PATH | --size mini) --model-dir DIR
         [--class-labels LIST] [--install]
         [--slurm --gpus-per-node G [--nodes N] [--srun-arg ARG]...
          | --coordinator HOST:PORT --num-processes N --process-id I]
         [options] [-- train flags]

Without --slurm or --coordinator: one process on this host, using every visible GPU.

GPU options:
  --install               first run python3 -m pip install -c constraints.txt 'jax[cuda12]' -e .
                          here (with --slurm: on this node only, so the nodes must share
                          the Python environment, as they usually do under SLURM)
  --slurm                 run with srun: G processes per node, one per GPU (JAX's SLURM
                          detection gives each process the GPU of its SLURM_LOCALID)
  --gpus-per-node G       with --slurm: the GPUs of each node
  --nodes N               with --slurm: how many nodes (default: srun's, i.e. the whole
                          allocation inside sbatch/salloc)
  --srun-arg ARG          with --slurm: one more srun argument, e.g. --srun-arg=--partition=gpu;
                          repeatable
  --coordinator HOST:PORT without SLURM: process 0's host and a free port; run this script
                          on every host with the same options but its own --process-id
  --num-processes N       without SLURM: how many hosts (processes) in all
  --process-id I          without SLURM: this host's index, 0 to N-1
Training adds --gin.ACTIVATION_DTYPE=bfloat16 (override it after --).

$(common_usage)
EOF
}

INSTALL=0 SLURM=0 GPUS_PER_NODE="" NODES="" SRUN_ARGS=()
COORDINATOR="" NUM_PROCESSES="" PROCESS_ID=""
usage_without_options "$@"
while (($# > 0)); do
  if [[ $1 == --*=* ]]; then set -- "${1%%=*}" "${1#*=}" "${@:2}"; fi  # --opt=v -> --opt v
  case $1 in
    --) shift; EXTRA=("$@"); break ;;
    --install) INSTALL=1; shift ;;
    --slurm) SLURM=1; shift ;;
    --gpus-per-node) need_value "$@"; check_int "$@"; GPUS_PER_NODE=$2; shift 2 ;;
    --nodes) need_value "$@"; check_int "$@"; NODES=$2; shift 2 ;;
    --srun-arg) need_any_value "$@"; SRUN_ARGS+=("$2"); shift 2 ;;
    --coordinator) need_value "$@"; COORDINATOR=$2; shift 2 ;;
    --num-processes) need_value "$@"; check_int "$@"; NUM_PROCESSES=$2; shift 2 ;;
    --process-id) need_value "$@"; PROCESS_ID=$2; shift 2 ;;
    *) common_option "$@"; shift "$SHIFT" ;;
  esac
done

require TASK CHECKPOINT MODEL_DIR
MANUAL=$COORDINATOR$NUM_PROCESSES$PROCESS_ID
if ((SLURM)); then
  require GPUS_PER_NODE
  if [[ -n $MANUAL ]]; then
    usage_error "--slurm finds the processes itself:" \
      "drop --coordinator, --num-processes, --process-id"
  fi
else
  if [[ -n $GPUS_PER_NODE$NODES || ${#SRUN_ARGS[@]} -gt 0 ]]; then
    usage_error "--gpus-per-node, --nodes and --srun-arg need --slurm"
  fi
  if [[ -n $MANUAL ]]; then
    require COORDINATOR NUM_PROCESSES PROCESS_ID
    if ! [[ $PROCESS_ID =~ ^(0|[1-9][0-9]*)$ ]] || ((PROCESS_ID >= NUM_PROCESSES)); then
      usage_error "--process-id must be 0 to $((NUM_PROCESSES - 1)), not '$PROCESS_ID'"
    fi
  fi
fi
check_run_options
DEFAULT_FLAGS=(--gin.ACTIVATION_DTYPE=bfloat16)
build_train_command

if ((INSTALL)); then
  pip_install 'jax[cuda12]'
fi
if ((SLURM)); then
  LAUNCH=(srun --ntasks-per-node="$GPUS_PER_NODE" --gpus-per-node="$GPUS_PER_NODE")
  if [[ -n $NODES ]]; then LAUNCH+=(--nodes="$NODES"); fi
  run "${LAUNCH[@]}" "${SRUN_ARGS[@]}" "${TRAIN[@]}"
elif [[ -n $MANUAL ]]; then
  run "${TRAIN[@]}" --coordinator_address="$COORDINATOR" --num_processes="$NUM_PROCESSES" \
    --process_id="$PROCESS_ID"
else
  run "${TRAIN[@]}"
fi
