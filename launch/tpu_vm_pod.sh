#!/usr/bin/env bash
# Prompt tuning on a Cloud TPU VM pod slice: the same command runs on every worker; JAX finds
# the other hosts itself (jax.distributed.initialize detects TPU pods).
#
#   TPU=my-v4-64 ZONE=us-central2-b MODEL_DIR=gs://bucket/runs/sst2 \
#   CHECKPOINT=gs://t5-data/pretrained_models/t5x/t5_1_1_lm100k_xxl/checkpoint_1100000 \
#   TASK=glue_sst2 launch/tpu_vm_pod.sh [extra --gin.X=Y flags]
set -euo pipefail
: "${TPU:?set TPU}" "${ZONE:?set ZONE}" "${MODEL_DIR:?set MODEL_DIR}" "${CHECKPOINT:?set CHECKPOINT}" "${TASK:?set TASK}"
SIZE=${SIZE:-xxl}
NUM_PARTITIONS=${NUM_PARTITIONS:-4}
CMD="cd ~/prompt_tuning && python3 -m prompt_tuning.train \
  --gin_file=models/t5_1_1_${SIZE}_prompt.gin --gin_file=prompts/class_labels.gin \
  --gin_file=runs/prompt_finetune.gin --gin.ACTIVATION_DTYPE=bfloat16 \
  --gin.INITIAL_CHECKPOINT_PATH=${CHECKPOINT} --gin.MIXTURE_OR_TASK_NAME=${TASK} \
  --gin.MODEL_DIR=${MODEL_DIR} --gin.NUM_PARTITIONS=${NUM_PARTITIONS} $*"
gcloud compute tpus tpu-vm ssh "$TPU" --zone="$ZONE" --worker=all --command="$CMD"
