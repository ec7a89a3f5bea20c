"""Rank classification: score every candidate label, predict the most likely one.

The data side only: `candidate_batch` makes the labels one decoder batch, which
`model.score_candidates` scores against every input (sum of log-probabilities of a label's
target tokens, EOS included), encoding each input once; `choose` turns those scores into one
label per example, which then goes through the task's usual postprocessor and metrics like
generated text. `expand_candidates` makes the same pairs as plain (inputs, target) rows, for
scoring with `model.score` one row at a time.
"""

from typing import Any, Mapping, Sequence

import numpy as np
import seqio

from prompt_tuning.data import errors, registry, tasks


def get_class_labels(task: str | seqio.Task) -> list[str] | None:
  """The fixed label words of a classification task (None for free text, ReCoRD, STS-B,
  WSC-simple, mixtures and tasks not registered here)."""
  name = task if isinstance(task, str) else task.name
  labels = registry.class_labels(name)
  return list(labels) if labels is not None else None


def label_targets(labels: Sequence[str], task: str | seqio.Task,
                  feature_lengths: Mapping[str, int] | None = None) -> list[np.ndarray]:
  """Each label's target ids (EOS included, as the task's targets feature adds it).

  Raises DataError for no labels, or (with `feature_lengths`) a label longer than `targets`,
  since a cut candidate would be scored wrongly.
  """
  if not labels:
    raise errors.DataError("Rank classification needs at least one candidate label "
                           "(CLASS_LABELS).")
  feature = tasks.as_provider(task).output_features["targets"]
  targets = []
  for label in labels:
    ids = list(feature.vocabulary.encode(label))
    if feature.add_eos:
      ids.append(feature.vocabulary.eos_id)
    if feature_lengths is not None and len(ids) > feature_lengths["targets"]:
      raise errors.DataError(
          f"Label {label!r} is {len(ids)} target tokens (EOS included) but "
          f"TASK_FEATURE_LENGTHS['targets'] is {feature_lengths['targets']}; raise it.")
    targets.append(np.asarray(ids, dtype=np.int32))
  return targets


def candidate_batch(labels: Sequence[str], task: str | seqio.Task,
                    feature_lengths: Mapping[str, int] | None = None) -> dict[str, np.ndarray]:
  """The labels as one decoder batch for `model.score_candidates`: `decoder_input_tokens`,
  `decoder_target_tokens`, `decoder_loss_weights`, each [num_labels, longest label] int32."""
  targets = label_targets(labels, task, feature_lengths)
  padded = np.zeros((len(targets), max(len(t) for t in targets)), np.int32)
  for row, ids in zip(padded, targets):
    row[:len(ids)] = ids
  shifted = np.concatenate([np.zeros_like(padded[:, :1]), padded[:, :-1]], axis=1)
  return {"decoder_input_tokens": shifted, "decoder_target_tokens": padded,
          "decoder_loss_weights": (padded > 0).astype(np.int32)}


def expand_candidates(examples: Sequence[Mapping[str, Any]], labels: Sequence[str],
                      task: str | seqio.Task,
                      feature_lengths: Mapping[str, int] | None = None) -> list[dict[str, Any]]:
  """One row per (example, label), example-major: row e * len(labels) + c is example e with
  label c as its target.

  Args:
    examples: with `inputs` (token ids [n]), e.g. from `features.get_examples`.
    labels: the candidate label words.
    task: the task (or name) whose targets vocabulary tokenizes the labels.
    feature_lengths: if given, a label longer than `targets` (EOS included) raises, since a
      cut candidate would be scored wrongly.

  Returns:
    Dicts with `inputs` [n] int32, `targets` [m] int32 (label ids + EOS), `example_index`,
    `candidate_index`; ready for `features.batch_examples`.
  """
  candidates = label_targets(labels, task, feature_lengths)
  rows = []
  for e, example in enumerate(examples):
    inputs = np.asarray(example["inputs"], dtype=np.int32)
    for c, target in enumerate(candidates):
      rows.append({"inputs": inputs, "targets": target, "example_index": e,
                   "candidate_index": c})
  return rows


def choose(scores: Sequence[float] | np.ndarray, labels: Sequence[str],
           num_examples: int | None = None, *,
           candidates: Sequence[Mapping[str, Any]] | None = None) -> list[str]:
  """The highest-scoring label of each example.

  Args:
    scores: [num_rows] log-likelihood of each row of `expand_candidates`.
    labels: the candidate labels, in the order given to `expand_candidates`.
    num_examples: number of examples; default len(scores) // len(labels).
    candidates: the rows themselves; when given, their `example_index` /
      `candidate_index` place each score (any order, any subset of labels per example),
      otherwise the rows are taken as example-major.

  Returns:
    [num_examples] label strings; ties go to the earlier label; an example with no scored
    (or only NaN) candidates gets "" (no label, which the metrics count as wrong).
  """
  scores = np.asarray(scores, dtype=np.float64).reshape(-1)
  if candidates is None:
    if len(scores) % len(labels):
      raise errors.DataError(f"{len(scores)} scores do not split into rows of {len(labels)} "
                             "labels; pass the candidates to place them.")
    example_index = np.repeat(np.arange(len(scores) // len(labels)), len(labels))
    candidate_index = np.tile(np.arange(len(labels)), len(scores) // len(labels))
  else:
    if len(candidates) != len(scores):
      raise errors.DataError(f"{len(scores)} scores for {len(candidates)} candidates.")
    example_index = np.asarray([c["example_index"] for c in candidates], dtype=np.int64)
    candidate_index = np.asarray([c["candidate_index"] for c in candidates], dtype=np.int64)
  if num_examples is None:
    num_examples = int(example_index.max()) + 1 if len(example_index) else 0
  if len(example_index) and (example_index.max() >= num_examples or example_index.min() < 0
                             or candidate_index.max() >= len(labels) or candidate_index.min() < 0):
    raise errors.DataError(f"Candidate indices out of range for {num_examples} examples and "
                           f"{len(labels)} labels.")
  table = np.full((num_examples, len(labels)), -np.inf)
  table[example_index, candidate_index] = np.where(np.isnan(scores), -np.inf, scores)
  best = np.argmax(table, axis=1)
  found = np.isfinite(table[np.arange(num_examples), best])
  return [labels[b] if ok else "" for b, ok in zip(best.tolist(), found.tolist())]
