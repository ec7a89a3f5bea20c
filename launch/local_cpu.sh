#!/usr/bin/env bash
# Prompt tuning on this machine's CPU: the embedded tiny model and demo task by default.
#   launch/local_cpu.sh [MODEL_DIR] [extra --gin.X=Y flags]
set -euo pipefail
MODEL_DIR=${1:-/tmp/prompt_tuning_demo}
shift || true
export TF_CPP_MIN_LOG_LEVEL=3
python3 -m prompt_tuning.train --gin_file=models/t5_1_1_tiny_prompt.gin \
  --gin_file=prompts/class_labels.gin --gin_file=runs/prompt_finetune.gin \
  --gin_file=data/demo.gin --gin.INITIAL_CHECKPOINT_PATH=None \
  --gin.MODEL_DIR="$MODEL_DIR" --gin.TRAIN_STEPS=200 --gin.BATCH_SIZE=8 \
  --gin.CHECKPOINT_PERIOD=100 --gin.EVAL_PERIOD=100 --gin.PROMPT_LENGTH=8 "$@"
