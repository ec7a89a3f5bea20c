"""The infer job: `python -m prompt_tuning.infer ... --gin_file=runs/prompt_infer.gin` (decoded
predictions) or `runs/prompt_score.gin` (log-likelihood of the given targets).

Writes `{INFER_OUTPUT_DIR}/{task}.jsonl`, one line per example in dataset order, with `inputs`,
`targets` (when present) and `prediction` (text) or `score` (sum over target tokens, EOS
included, of natural-log probabilities). A file appears only once complete.
"""

import json
import os
from typing import Any

import jax
from absl import logging
from flax import linen as nn
import tensorflow as tf

from prompt_tuning import eval as eval_lib
from prompt_tuning import gin_utils, optim, partitioning
from prompt_tuning.data import features, rank_classification, tasks

MODES = ("predict", "score", "rank")


def infer(*, model: Any, initial_checkpoint_path: str | None, mixture_or_task_name: str,
          task_feature_lengths: dict[str, int], batch_size: int, output_dir: str,
          split: str = "test", mode: str = "predict", model_dir: str | None = None,
          prompt_file: str | None = None, decode_method: str = "greedy",
          vocabulary_path: str | None = None, num_partitions: int = 1,
          trainable_regex: str = optim.PROMPT_REGEX,
          rules: partitioning.Rules = partitioning.DEFAULT_RULES) -> list[str]:
  """Runs every task of the mixture with `split`; returns the paths written."""
  if mode not in MODES:
    raise ValueError(f"mode={mode!r} is not one of {MODES}.")
  if output_dir is None:
    raise ValueError("INFER_OUTPUT_DIR is not set; pass --gin.INFER_OUTPUT_DIR=/path.")
  mesh = partitioning.make_mesh(num_partitions)
  partitioning.check_batch_size(batch_size, mesh)
  written = []
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    params, source, _ = eval_lib.trained_params(
        model, initial_checkpoint_path=initial_checkpoint_path, model_dir=model_dir,
        prompt_file=prompt_file, trainable_regex=trainable_regex, mesh=mesh, rules=rules)
    logging.info("Inferring with %s.", source)
    name = tasks.with_vocabulary(mixture_or_task_name, vocabulary_path)
    for task in eval_lib.tasks_with_split(name, split):
      examples = features.get_examples(task.name, split, task_feature_lengths)
      outputs = _outputs(mode, model, params, task, examples, batch_size,
                         task_feature_lengths, decode_method, mesh)
      path = os.path.join(output_dir, f"{tasks.base_name(task.name)}.jsonl")
      if jax.process_index() == 0:
        write_jsonl(path, [_record(ex, out, mode) for ex, out in zip(examples, outputs)])
      written.append(path)
      logging.info("Wrote %d lines to %s.", len(examples), path)
  return written


def _outputs(mode, model, params, task, examples, batch_size, lengths, method, mesh):
  if mode == "score":
    return [float(s) for s in eval_lib.scores(model, params, examples, batch_size, lengths,
                                              mesh)]
  if mode == "rank":
    labels = rank_classification.get_class_labels(task)
    if not labels:
      raise ValueError(f"mode='rank' needs class labels, and task {task.name!r} has none; "
                       "set CLASS_LABELS or use mode='predict'.")
    return eval_lib.rank_classify(model, params, task, examples, labels, batch_size, lengths,
                                  mesh)
  return eval_lib.decode_texts(model, params, task, examples, batch_size, lengths, method,
                               mesh)


def _record(example: dict, output: Any, mode: str) -> dict:
  record = {"inputs": _text(example.get("inputs_pretokenized"))}
  if "targets_pretokenized" in example:
    record["targets"] = _text(example["targets_pretokenized"])
  record["score" if mode == "score" else "prediction"] = output
  return record


def _text(value: Any) -> str:
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def write_jsonl(path: str, records: list[dict]) -> None:
  """Writes all lines to a temporary file, then renames it: no half file ever looks done."""
  tf.io.gfile.makedirs(os.path.dirname(path) or ".")
  tmp = path + ".tmp"
  with tf.io.gfile.GFile(tmp, "w") as f:
    for record in records:
      f.write(json.dumps(record, ensure_ascii=False) + "\n")
  tf.io.gfile.rename(tmp, path, overwrite=True)


def main() -> None:
  gin_utils.call_configured(infer, "runs/prompt_infer.gin")


if __name__ == "__main__":
  from prompt_tuning import infer as infer_module  # the copy gin configures, not __main__
  gin_utils.run(infer_module.main)
