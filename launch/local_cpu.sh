#!/usr/bin/env bash
# Prompt tuning in one process on this machine's CPU. Without a task it runs the README's
# CPU demo: a prompt for the shipped mini T5 (pretrained, no checkpoint to give) on the
# wordnet_topic task (data/wordnet_topic.gin), 300 steps, evaluated every 100.
# docs/launch.md has the details; --help lists the options.
set -euo pipefail

DEFAULT_SIZE=mini DEFAULT_NUM_PARTITIONS=1
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  cat <<EOF
Usage: launch/local_cpu.sh --model-dir DIR [--task NAME --class-labels LIST]
         [--size SIZE [--checkpoint PATH]] [--install] [--devices N] [options]
         [-- train flags]

$(local_defaults_usage)

CPU options:
  --install             first run python3 -m pip install -c constraints.txt 'jax[cpu]' -e .
  --devices N           split the CPU into N JAX devices (XLA_FLAGS), e.g. to try
                        --num-partitions above 1 (default 1)

$(common_usage)
EOF
}

INSTALL=0 DEVICES=1
usage_without_options "$@"
while (($# > 0)); do
  if [[ $1 == --*=* ]]; then set -- "${1%%=*}" "${1#*=}" "${@:2}"; fi  # --opt=v -> --opt v
  case $1 in
    --) shift; EXTRA=("$@"); break ;;
    --install) INSTALL=1; shift ;;
    --devices) need_value "$@"; check_int "$@"; DEVICES=$2; shift 2 ;;
    *) common_option "$@"; shift "$SHIFT" ;;
  esac
done

prepare_local_run

# TensorFlow (seqio's data pipeline) is noisy on stderr; keep the job's own log readable.
ENV=(TF_CPP_MIN_LOG_LEVEL=3)
if ((DEVICES > 1)); then
  ENV+=("XLA_FLAGS=${XLA_FLAGS:+$XLA_FLAGS }--xla_force_host_platform_device_count=$DEVICES")
fi
if ((INSTALL)); then
  pip_install 'jax[cpu]'
fi
run env "${ENV[@]}" "${TRAIN[@]}"
