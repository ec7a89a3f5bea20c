"""Small JSONL tasks and their mixture for the MPT tests (demo vocabulary)."""

import json

import numpy as np

from prompt_tuning.data import demo, jsonl, registry, vocabularies
from prompt_tuning.t5 import config as t5_config

import batch_helpers

# A tiny model and a batch of three rows for two tasks.
TINY = t5_config.get_config("t5_1_1_tiny").replace(vocab_size=64)
P, D = 3, 4  # the tiny model's d_model is 4
TASKS = ("task_a", "task_b")
INPUTS = np.array([[5, 6, 7, 8, 1], [9, 10, 1, 0, 0], [11, 12, 1, 0, 0]], np.int32)
TARGETS = np.array([[3, 4, 1, 0], [5, 6, 7, 1], [8, 1, 0, 0]], np.int32)
BATCH = batch_helpers.teacher_forced(INPUTS, TARGETS)


def register_mixture(directory, mixture: str, task_lines: dict) -> list[str]:
  """Registers each {task: [(inputs, targets)]} as a JSONL task (train and validation: the
  lines four times) and `mixture` over them at equal rates; the task names, sorted."""
  vocabulary = vocabularies.get_vocabulary(demo.vocabulary_path())
  for name, lines in task_lines.items():
    path = directory / f"{name}.jsonl"
    path.write_text("".join(json.dumps({"inputs": i, "targets": t}) + "\n"
                            for i, t in lines * 4))
    jsonl.register_jsonl_task(name, {"train": str(path), "validation": str(path)},
                              vocabulary=vocabulary)
  registry.add_mixture(mixture, [(name, 1.0) for name in task_lines])
  return sorted(task_lines)
