"""The infer job: `python -m prompt_tuning.infer ... --gin_file=runs/prompt_infer.gin` (decoded
predictions) or `runs/prompt_score.gin` (log-likelihood of the given targets).

Writes `{INFER_OUTPUT_DIR}/{task}.jsonl`, one line per example in dataset order, with `inputs`,
`targets` (when present) and `prediction` (text) or `score` (sum over target tokens, EOS
included, of natural-log probabilities); with PROMPTS, a line that named its prompt keeps it
as `prompt`; with PROMPT_ENSEMBLE, `member_predictions` lists each prompt's prediction beside
the vote. A file appears only once complete, and one already there is never replaced unless
INFER_OVERWRITE=True (checked before any compute).
"""

import json
import os
from typing import Any, Mapping, Sequence

import jax
from absl import logging
from flax import linen as nn

from prompt_tuning import eval as eval_lib
from prompt_tuning import gin_utils, job_io, job_utils, optim, partitioning
from prompt_tuning.data import rank_classification, tasks
import tensorflow as tf  # after gin_utils, which imports it without its start-up chatter

MODES = ("predict", "score", "rank")


class OutputExistsError(ValueError):
  """An output file is already there and INFER_OVERWRITE is not set."""


def infer(*, model: Any, initial_checkpoint_path: str | None, mixture_or_task_name: str,
          task_feature_lengths: dict[str, int], batch_size: int, output_dir: str,
          split: str = "test", mode: str = "predict", model_dir: str | None = None,
          prompt_file: str | None = None, decode_method: str = "greedy",
          vocabulary_path: str | None = None, num_partitions: int = 1,
          trainable_regex: str = optim.PROMPT_REGEX,
          rules: partitioning.Rules = partitioning.DEFAULT_RULES,
          prompts: Mapping[str, str] | None = None,
          prompt_ensemble: Sequence[str] | None = None, overwrite: bool = False) -> list[str]:
  """Runs every task of the mixture with `split`; returns the paths written.

  `overwrite` (INFER_OVERWRITE) lets the outputs replace files of an earlier run; without it
  an existing `{task}.jsonl` stops the job before any compute.

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
  name = tasks.with_vocabulary(mixture_or_task_name, vocabulary_path)
  chosen = eval_lib.tasks_with_split(name, split)
  arch = job_io.for_model(model)
  for task in chosen:
    arch.check_task(model, task.name)
  if mode == "rank":
    for task in chosen:
      if not rank_classification.get_class_labels(task):
        raise ValueError(f"mode='rank' needs class labels, and task {task.name!r} has none; "
                         "set CLASS_LABELS or use mode='predict'.")
  paths = [output_path(output_dir, task) for task in chosen]
  if not overwrite:
    _refuse_existing(paths)
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
    groups = []
    if names is None:  # a multi-task (MPT) model runs each example under its task's prompt
      names = eval_lib.task_prompt_names(model.serving_model(), chosen)
    for task in chosen:
      examples = arch.get_examples(model, task.name, split, task_feature_lengths)
      groups.append((task, examples, eval_lib.with_prompts(task, examples, names, members)))
    serving = model.serving_model()  # the params are for the model that reads prompt files
    outputs = _outputs(mode, serving, params, groups, batch_size, task_feature_lengths,
                       decode_method, mesh, members)
    for (_, examples, _), path, (results, each) in zip(groups, paths, outputs):
      if jax.process_index() == 0:
        write_jsonl(path, [_record(ex, out, mode, [m[i] for m in each] if members > 1 else None)
                           for i, (ex, out) in enumerate(zip(examples, results))],
                    overwrite=overwrite)
      written.append(path)
      logging.info("Wrote %d lines to %s.", len(examples), path)
  return written


def _outputs(mode, model, params, groups, batch_size, lengths, method, mesh, members):
  """[(outputs, each member's outputs)] for each (task, examples, rows) group, in one pass."""
  pairs = [(task, rows) for task, _, rows in groups]
  if mode == "score":
    return [(out, [out]) for out in eval_lib.run_groups(model, params, pairs, "score",
                                                         batch_size, lengths, mesh)]
  return eval_lib.predictions(model, params, pairs, use_rank_classification=mode == "rank",
                              batch_size=batch_size, feature_lengths=lengths, mesh=mesh,
                              decode_method=method, members=members)


def output_path(output_dir: str, task: Any) -> str:
  """Where the lines of `task` go: {INFER_OUTPUT_DIR}/{task}.jsonl."""
  return os.path.join(output_dir, f"{tasks.base_name(task.name)}.jsonl")


def _refuse_existing(paths: Sequence[str]) -> None:
  existing = [path for path in paths if tf.io.gfile.exists(path)]
  if existing:
    raise OutputExistsError(
        f"{', '.join(existing)} already exist{'s' if len(existing) == 1 else ''}; pass "
        "--gin.INFER_OVERWRITE=True to replace the output of an earlier run, or choose "
        "another INFER_OUTPUT_DIR.")


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


def write_jsonl(path: str, records: list[dict], overwrite: bool = False) -> None:
  """Writes all lines to a temporary file, then renames it: no half file ever looks done.

  Without `overwrite` an existing `path` is kept: OutputExistsError (a file that appeared
  since the job checked, e.g. written by another run).
  """
  tf.io.gfile.makedirs(os.path.dirname(path) or ".")
  tmp = f"{path}.tmp-{os.getpid()}"
  try:
    with tf.io.gfile.GFile(tmp, "w") as f:
      for record in records:
        f.write(json.dumps(record, ensure_ascii=False) + "\n")
    tf.io.gfile.rename(tmp, path, overwrite=overwrite)
  except tf.errors.AlreadyExistsError:
    raise OutputExistsError(f"{path} appeared while this job ran; it is kept, and these "
                            "outputs are not written. Pass --gin.INFER_OVERWRITE=True to "
                            "replace it.") from None
  finally:
    if tf.io.gfile.exists(tmp):
      tf.io.gfile.remove(tmp)


def main() -> None:
  gin_utils.call_configured(infer, "runs/prompt_infer.gin")


if __name__ == "__main__":
  from prompt_tuning import infer as infer_module  # the copy gin configures, not __main__
  gin_utils.run(infer_module.main)
