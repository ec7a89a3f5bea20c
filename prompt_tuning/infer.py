"""The infer job: `python -m prompt_tuning.infer ... --gin_file=runs/prompt_infer.gin` (decoded
predictions) or `runs/prompt_score.gin` (log-likelihood of the given targets).

Writes `{INFER_OUTPUT_DIR}/{task}.jsonl`, one line per example in dataset order, with `inputs`,
`targets` (when present) and `prediction` (text) or `score` (sum over target tokens, EOS
included, of natural-log probabilities); with PROMPTS, a line that named its prompt keeps it
as `prompt`; with PROMPT_ENSEMBLE, `member_predictions` lists each prompt's prediction beside
the vote. A file appears only once complete.
"""

import json
import os
from typing import Any, Mapping, Sequence

import jax
from absl import logging
from flax import linen as nn

from prompt_tuning import eval as eval_lib
from prompt_tuning import gin_utils, job_utils, optim, partitioning
from prompt_tuning.data import features, rank_classification, tasks
import tensorflow as tf  # after gin_utils, which imports it without its start-up chatter

MODES = ("predict", "score", "rank")


def infer(*, model: Any, initial_checkpoint_path: str | None, mixture_or_task_name: str,
          task_feature_lengths: dict[str, int], batch_size: int, output_dir: str,
          split: str = "test", mode: str = "predict", model_dir: str | None = None,
          prompt_file: str | None = None, decode_method: str = "greedy",
          vocabulary_path: str | None = None, num_partitions: int = 1,
          trainable_regex: str = optim.PROMPT_REGEX,
          rules: partitioning.Rules = partitioning.DEFAULT_RULES,
          prompts: Mapping[str, str] | None = None,
          prompt_ensemble: Sequence[str] | None = None) -> list[str]:
  """Runs every task of the mixture with `split`; returns the paths written.

  With PROMPTS, every task (or JSONL line, by its "prompt" field) runs under its own prompt,
  all in shared batches; with PROMPT_ENSEMBLE, every example runs under each prompt and the
  `prediction` is their vote, beside `member_predictions`.
  """
  if mode not in MODES:
    raise ValueError(f"mode={mode!r} is not one of {MODES}.")
  if output_dir is None:
    raise ValueError("INFER_OUTPUT_DIR is not set; pass --gin.INFER_OUTPUT_DIR=/path.")
  job_utils.check_output_dir("INFER_OUTPUT_DIR", output_dir)  # before any compute
  if mode == "score" and prompt_ensemble is not None:
    raise ValueError("INFER_MODE='score' with PROMPT_ENSEMBLE: an ensemble votes on "
                     "predictions; use INFER_MODE='predict' or 'rank'.")
  mesh = partitioning.make_mesh(num_partitions)
  partitioning.check_batch_size(batch_size, mesh)
  written = []
  names, members = None, 1
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    if prompts is not None or prompt_ensemble is not None:
      if prompt_file is not None:
        raise ValueError("PROMPT_FILE is set together with PROMPTS or PROMPT_ENSEMBLE; give "
                         "the prompts in one of them.")
      params, names, members, source = eval_lib.serving_params(
          model, initial_checkpoint_path=initial_checkpoint_path, prompts=prompts,
          prompt_ensemble=prompt_ensemble, mesh=mesh, rules=rules)
    else:
      params, source, _ = eval_lib.trained_params(
          model, initial_checkpoint_path=initial_checkpoint_path, model_dir=model_dir,
          prompt_file=prompt_file, trainable_regex=trainable_regex, mesh=mesh, rules=rules)
    logging.info("Inferring with %s.", source)
    name = tasks.with_vocabulary(mixture_or_task_name, vocabulary_path)
    groups = []
    for task in eval_lib.tasks_with_split(name, split):
      examples = features.get_examples(task.name, split, task_feature_lengths)
      groups.append((task, examples, eval_lib.with_prompts(task, examples, names, members)))
    outputs = _outputs(mode, model, params, groups, batch_size, task_feature_lengths,
                       decode_method, mesh, members)
    for (task, examples, _), (chosen, each) in zip(groups, outputs):
      path = os.path.join(output_dir, f"{tasks.base_name(task.name)}.jsonl")
      if jax.process_index() == 0:
        write_jsonl(path, [_record(ex, out, mode, [m[i] for m in each] if members > 1 else None)
                           for i, (ex, out) in enumerate(zip(examples, chosen))])
      written.append(path)
      logging.info("Wrote %d lines to %s.", len(examples), path)
  return written


def _outputs(mode, model, params, groups, batch_size, lengths, method, mesh, members):
  """[(outputs, each member's outputs)] for each (task, examples, rows) group, in one pass."""
  pairs = [(task, rows) for task, _, rows in groups]
  if mode == "score":
    return [(out, [out]) for out in eval_lib.run_groups(model, params, pairs, "score",
                                                         batch_size, lengths, mesh)]
  if mode == "rank":
    for task, _ in pairs:
      if not rank_classification.get_class_labels(task):
        raise ValueError(f"mode='rank' needs class labels, and task {task.name!r} has none; "
                         "set CLASS_LABELS or use mode='predict'.")
  return eval_lib.predictions(model, params, pairs, use_rank_classification=mode == "rank",
                              batch_size=batch_size, feature_lengths=lengths, mesh=mesh,
                              decode_method=method, members=members)


def _record(example: dict, output: Any, mode: str, member_outputs: list | None = None) -> dict:
  record = {"inputs": _text(example.get("inputs_pretokenized"))}
  if "targets_pretokenized" in example:
    record["targets"] = _text(example["targets_pretokenized"])
  if example.get("prompt"):
    record["prompt"] = _text(example["prompt"])
  record["score" if mode == "score" else "prediction"] = output
  if member_outputs is not None:
    record["member_predictions"] = member_outputs
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
