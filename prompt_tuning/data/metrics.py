"""The benchmarks' metrics, as seqio metric functions `fn(targets, predictions) -> dict`.

All values are percentages (0-100), like the GLUE/SuperGLUE leaderboards and T5's reports.
Inputs are what the postprocessors return: class indices with -1 for text that is no label,
floats with NaN for STS-B text that is no number. Such an invalid prediction always counts as
wrong:
- accuracy / exact match: it matches nothing;
- binary F1 and Matthews correlation (positive class 1): it is taken as the opposite of the
  target, so it is a false negative or a false positive;
- macro-F1: it is a false negative of the target's class (and a false positive of none);
- Pearson / Spearman: it is taken as the score at the far end of [0, 5] from the target.
A score whose denominator is zero (e.g. F1 with no positives anywhere, a correlation with a
constant side) is 0.
"""

import collections
import re
import string
from typing import Any, Hashable, Mapping, Sequence

import numpy as np


def _check_lengths(targets: Sequence[Any], predictions: Sequence[Any]) -> None:
  if len(targets) != len(predictions):
    raise ValueError(f"{len(targets)} targets but {len(predictions)} predictions.")


def _ratio(numerator: float, denominator: float) -> float:
  return float(numerator) / denominator if denominator else 0.0


def accuracy(targets: Sequence[Any], predictions: Sequence[Any]) -> dict[str, float]:
  """Percentage of predictions equal to their target (labels or normalised strings)."""
  _check_lengths(targets, predictions)
  correct = sum(t == p for t, p in zip(targets, predictions))
  return {"accuracy": 100.0 * _ratio(correct, len(targets))}


def _binary(targets: Sequence[int], predictions: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
  """Returns int arrays [n] with invalid predictions (not 0/1) set to 1 - target."""
  t = np.asarray(targets, dtype=np.int64).reshape(-1)
  p = np.asarray(predictions, dtype=np.int64).reshape(-1)
  return t, np.where((p == 0) | (p == 1), p, 1 - t)


def _confusion(t: np.ndarray, p: np.ndarray) -> tuple[int, int, int, int]:
  """(true positives, false positives, false negatives, true negatives) for class 1."""
  return (int(np.sum((p == 1) & (t == 1))), int(np.sum((p == 1) & (t == 0))),
          int(np.sum((p == 0) & (t == 1))), int(np.sum((p == 0) & (t == 0))))


def binary_f1(targets: Sequence[int], predictions: Sequence[int]) -> float:
  """F1 of the positive class (1), in [0, 1]; invalid predictions count as wrong."""
  _check_lengths(targets, predictions)
  tp, fp, fn, _ = _confusion(*_binary(targets, predictions))
  return _ratio(2 * tp, 2 * tp + fp + fn)


def f1_and_accuracy(targets: Sequence[int], predictions: Sequence[int]) -> dict[str, float]:
  """MRPC / QQP: F1 of the positive class and accuracy."""
  return {"f1": 100.0 * binary_f1(targets, predictions), **accuracy(targets, predictions)}


def matthews_corr(targets: Sequence[int], predictions: Sequence[int]) -> dict[str, float]:
  """CoLA: Matthews correlation coefficient of binary labels, x100."""
  _check_lengths(targets, predictions)
  tp, fp, fn, tn = _confusion(*_binary(targets, predictions))
  denominator = np.sqrt(float(tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
  return {"matthews_corr": 100.0 * _ratio(tp * tn - fp * fn, denominator)}


def macro_f1(targets: Sequence[int], predictions: Sequence[int], num_classes: int) -> float:
  """Unweighted mean over classes 0..num_classes-1 of each class's F1, in [0, 1]."""
  _check_lengths(targets, predictions)
  t = np.asarray(targets, dtype=np.int64).reshape(-1)
  p = np.asarray(predictions, dtype=np.int64).reshape(-1)
  scores = []
  for c in range(num_classes):
    tp = np.sum((p == c) & (t == c))
    fp = np.sum((p == c) & (t != c))
    fn = np.sum((p != c) & (t == c))
    scores.append(_ratio(2 * tp, 2 * tp + fp + fn))
  return float(np.mean(scores))


def macro_f1_and_accuracy(targets: Sequence[int], predictions: Sequence[int],
                          num_classes: int) -> dict[str, float]:
  """CB (3 classes) and class-label JSONL tasks: macro-F1 and accuracy."""
  return {"macro_f1": 100.0 * macro_f1(targets, predictions, num_classes),
          **accuracy(targets, predictions)}


def _ranks(x: np.ndarray) -> np.ndarray:
  """Ranks 0..n-1 of `x` [n], ties sharing the mean of their ranks."""
  order = np.argsort(x, kind="stable")
  ranks = np.empty(len(x), dtype=np.float64)
  ranks[order] = np.arange(len(x), dtype=np.float64)
  _, group, counts = np.unique(x, return_inverse=True, return_counts=True)
  return (np.bincount(group, weights=ranks) / counts)[group]


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
  x = x - x.mean()
  y = y - y.mean()
  return _ratio(float(np.sum(x * y)), float(np.sqrt(np.sum(x * x) * np.sum(y * y))))


def pearson_and_spearman(targets: Sequence[float], predictions: Sequence[float],
                         score_range: tuple[float, float] = (0.0, 5.0)) -> dict[str, float]:
  """STS-B: Pearson and Spearman correlation (x100) of predicted and gold scores.

  A NaN prediction (text that is no number) becomes the end of `score_range` farther from
  its target: the worst answer in range.
  """
  _check_lengths(targets, predictions)
  t = np.asarray(targets, dtype=np.float64).reshape(-1)
  p = np.asarray(predictions, dtype=np.float64).reshape(-1)
  low, high = score_range
  worst = np.where(t - low < high - t, high, low)
  p = np.where(np.isfinite(p), p, worst)
  if len(t) == 0:
    return {"pearson": 0.0, "spearman": 0.0}
  return {"pearson": 100.0 * _pearson(t, p), "spearman": 100.0 * _pearson(_ranks(t), _ranks(p))}


def multirc(targets: Sequence[Mapping[str, Any]], predictions: Sequence[int]) -> dict[str, float]:
  """MultiRC: F1 over all answer options ("f1a") and exact match per question.

  Args:
    targets: per answer option, {"group": hashable id of its question, "label": 0 or 1}.
    predictions: per answer option, 0, 1, or -1 (invalid, counts as wrong).

  Returns:
    {"f1a": binary F1 over all options, "exact_match": percentage of questions whose options
    are all predicted correctly}.
  """
  _check_lengths(targets, predictions)
  labels = [int(t["label"]) for t in targets]
  t, p = _binary(labels, predictions)
  all_right: dict[Hashable, bool] = collections.defaultdict(lambda: True)
  for target, label, pred in zip(targets, t, p):
    all_right[target["group"]] &= bool(label == pred)
  exact = _ratio(sum(all_right.values()), len(all_right))
  return {"f1a": 100.0 * binary_f1(labels, predictions), "exact_match": 100.0 * exact}


_PUNCTUATION = frozenset(string.punctuation)


def squad_normalize(text: str) -> str:
  """SQuAD answer normalisation: lower case, no punctuation, no articles, single spaces."""
  text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
  text = re.sub(r"\b(a|an|the)\b", " ", text)
  return " ".join(text.split())


def token_f1(prediction: str, answer: str) -> float:
  """SQuAD token F1 of two strings after normalisation, in [0, 1]."""
  pred_tokens = squad_normalize(prediction).split()
  answer_tokens = squad_normalize(answer).split()
  common = sum((collections.Counter(pred_tokens) & collections.Counter(answer_tokens)).values())
  if common == 0:
    return 0.0
  precision, recall = common / len(pred_tokens), common / len(answer_tokens)
  return 2 * precision * recall / (precision + recall)


def record(targets: Sequence[Sequence[str]], predictions: Sequence[str]) -> dict[str, float]:
  """ReCoRD: exact match and token F1, each the max over the example's gold answers.

  Args:
    targets: per example, the list of acceptable answers (an empty list scores 0).
    predictions: per example, the predicted text.
  """
  _check_lengths(targets, predictions)
  em, f1 = [], []
  for answers, pred in zip(targets, predictions):
    em.append(max((float(squad_normalize(pred) == squad_normalize(a)) for a in answers),
                  default=0.0))
    f1.append(max((token_f1(pred, a) for a in answers), default=0.0))
  n = len(targets)
  return {"exact_match": 100.0 * _ratio(sum(em), n), "f1": 100.0 * _ratio(sum(f1), n)}
