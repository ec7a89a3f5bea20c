#!/usr/bin/env bash
# Several JAX processes on this machine's CPU, talking through gloo on 127.0.0.1: the way a
# multi-host job runs (each process feeds its slice of every batch, process 0 writes the
# summaries and prompt files), to try multi-host behaviour without a cluster. Without a task
# it runs the README's CPU demo: the shipped mini T5 on the wordnet_topic task.
# docs/launch.md has the details; --help lists the options.
set -euo pipefail

DEFAULT_SIZE=mini DEFAULT_NUM_PARTITIONS=1
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  cat <<EOF
Usage: launch/local_multiprocess_cpu.sh --model-dir DIR [--task NAME --class-labels LIST]
         [--size SIZE [--checkpoint PATH]] [--num-processes N] [--devices-per-process D]
         [--port PORT] [--install] [options] [-- train flags]

Starts N copies of the train command at once (the same flags plus --process_id), waits for
all, and stops the others as soon as one fails. --dry-run prints them with a trailing &.

$(local_defaults_usage)
BATCH_SIZE must divide by N and by the data-parallel size (N*D / NUM_PARTITIONS).

Multi-process options:
  --num-processes N       how many processes (default 2)
  --devices-per-process D CPU devices per process (XLA_FLAGS; default 4)
  --port PORT             the coordinator's port on 127.0.0.1 (default 12355)
  --install               first run python3 -m pip install -c constraints.txt 'jax[cpu]' -e .

$(common_usage)
EOF
}

INSTALL=0 NUM_PROCESSES=2 DEVICES_PER_PROCESS=4 PORT=12355
usage_without_options "$@"
while (($# > 0)); do
  if [[ $1 == --*=* ]]; then set -- "${1%%=*}" "${1#*=}" "${@:2}"; fi  # --opt=v -> --opt v
  case $1 in
    --) shift; EXTRA=("$@"); break ;;
    --num-processes) need_value "$@"; check_int "$@"; NUM_PROCESSES=$2; shift 2 ;;
    --devices-per-process) need_value "$@"; check_int "$@"; DEVICES_PER_PROCESS=$2; shift 2 ;;
    --port) need_value "$@"; check_int "$@"; PORT=$2; shift 2 ;;
    --install) INSTALL=1; shift ;;
    *) common_option "$@"; shift "$SHIFT" ;;
  esac
done

prepare_local_run

ENV=(TF_CPP_MIN_LOG_LEVEL=3
  "XLA_FLAGS=${XLA_FLAGS:+$XLA_FLAGS }--xla_force_host_platform_device_count=$DEVICES_PER_PROCESS")
# Multi-host outside TPU/SLURM: the coordinator and each process's place are given
# explicitly; gloo carries the CPU collectives.
MULTI=(--coordinator_address="127.0.0.1:$PORT" --num_processes="$NUM_PROCESSES"
  --cpu_collectives=gloo)
if ((INSTALL)); then
  pip_install 'jax[cpu]'
fi

PIDS=()
stop_others() {  # the processes this script started that may still run
  local pid
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
}
trap stop_others EXIT
for ((i = 0; i < NUM_PROCESSES; i++)); do
  CMD=(env "${ENV[@]}" "${TRAIN[@]}" "${MULTI[@]}" --process_id="$i")
  if ((DRY_RUN)); then
    echo "$(quote "${CMD[@]}") &"
  else
    echo "+ $(quote "${CMD[@]}") &" >&2
    "${CMD[@]}" &
    PIDS+=("$!")
  fi
done
if ((DRY_RUN)); then
  echo wait
  exit 0
fi
# A process that fails leaves the others waiting on it: stop them (trap) and fail.
for ((i = 0; i < NUM_PROCESSES; i++)); do
  status=0
  wait -n || status=$?
  if ((status != 0)); then
    echo "$(basename "$0"): a process exited with status $status; stopping the others" >&2
    exit "$status"
  fi
done
PIDS=()
