"""Metrics of a task from its examples and the model's text predictions."""

from typing import Any, Mapping, Sequence

import seqio

from prompt_tuning.data import errors, tasks


def compute_metrics(task: str | seqio.Task, examples: Sequence[Mapping[str, Any]],
                    predictions: Sequence[str]) -> dict[str, float]:
  """{metric name: value (percent)} of `predictions` against `examples`' targets.

  Applies the task's postprocessor to each example's `targets_pretokenized` (is_target=True)
  and to each prediction (is_target=False), both with the example (MultiRC groups by it,
  ReCoRD reads its answers), then every metric function of the task.

  Args:
    task: a task (or its name).
    examples: from `features.get_examples`, in the same order as `predictions`.
    predictions: generated text, or the labels chosen by rank classification.
  """
  task = tasks.as_provider(task)
  if isinstance(task, seqio.Mixture):
    raise errors.DataError(f"{task.name!r} is a mixture; compute the metrics of each task.")
  if len(examples) != len(predictions):
    raise errors.DataError(f"{len(examples)} examples but {len(predictions)} predictions for "
                           f"{task.name}; they must pair up in order.")
  targets = [task.postprocess_fn(ex.get("targets_pretokenized"), example=ex, is_target=True)
             for ex in examples]
  outputs = [task.postprocess_fn(p, example=ex, is_target=False)
             for p, ex in zip(predictions, examples)]
  results: dict[str, float] = {}
  for metric_fn in task.predict_metric_fns:
    results.update({k: float(v) for k, v in metric_fn(targets, outputs).items()})
  return results
