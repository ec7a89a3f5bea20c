#!/usr/bin/env bash
# Two JAX processes on this host (4 CPU devices each, gloo collectives on 127.0.0.1), the
# way a multi-host job runs: each process feeds its slice of every batch.
#   launch/local_multiprocess_cpu.sh MODEL_DIR [extra flags for both processes]
set -euo pipefail
MODEL_DIR=${1:?MODEL_DIR}
shift
PORT=${PORT:-12355}
export TF_CPP_MIN_LOG_LEVEL=3 XLA_FLAGS=--xla_force_host_platform_device_count=4
for i in 0 1; do
  python3 -m prompt_tuning.train --coordinator_address=127.0.0.1:$PORT --num_processes=2 \
    --process_id=$i --cpu_collectives=gloo --gin_file=models/t5_1_1_tiny_prompt.gin \
    --gin_file=prompts/class_labels.gin --gin_file=runs/prompt_finetune.gin \
    --gin_file=data/demo.gin --gin.INITIAL_CHECKPOINT_PATH=None --gin.MODEL_DIR="$MODEL_DIR" \
    --gin.TRAIN_STEPS=20 --gin.BATCH_SIZE=8 --gin.CHECKPOINT_PERIOD=10 --gin.EVAL_PERIOD=None \
    --gin.PROMPT_LENGTH=8 "$@" &
done
wait
