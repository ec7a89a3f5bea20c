#!/usr/bin/env bash
# Prompt tuning on GPUs under SLURM: one process per node (all its GPUs); JAX reads the SLURM
# environment in jax.distributed.initialize. Submit with e.g.
#   sbatch --nodes=2 --ntasks-per-node=1 --gpus-per-node=8 launch/gpu_slurm.sh \
#     --gin.INITIAL_CHECKPOINT_PATH=/ckpt/flan-t5-xl --gin.MIXTURE_OR_TASK_NAME=glue_sst2 \
#     --gin.MODEL_DIR=/runs/sst2
#SBATCH --job-name=prompt_tuning
#SBATCH --exclusive
set -euo pipefail
SIZE_GIN=${SIZE_GIN:-models/hf_t5_prompt.gin}
srun python3 -m prompt_tuning.train --gin_file="$SIZE_GIN" \
  --gin_file=prompts/class_labels.gin --gin_file=runs/prompt_finetune.gin \
  --gin.ACTIVATION_DTYPE=bfloat16 "$@"
