"""Rank classification rows and choices, fed through the task's metrics."""

import numpy as np
import pytest

from prompt_tuning.data import demo, errors, evaluation, features, rank_classification, tasks

LENGTHS = {"inputs": 32, "targets": 4}


@pytest.fixture(scope="module")
def examples():
  return features.get_examples(demo.TASK_NAME, "validation", LENGTHS)[:6]


def test_expand_candidates(examples):
  labels = rank_classification.get_class_labels(demo.TASK_NAME)
  assert labels == ["positive", "negative"]
  rows = rank_classification.expand_candidates(examples, labels, demo.TASK_NAME, LENGTHS)
  vocab = tasks.get_mixture_or_task(demo.TASK_NAME).output_features["targets"].vocabulary
  assert len(rows) == 12
  assert [(r["example_index"], r["candidate_index"]) for r in rows[:4]] == [
      (0, 0), (0, 1), (1, 0), (1, 1)]
  np.testing.assert_array_equal(rows[3]["inputs"], examples[1]["inputs"])
  assert rows[3]["targets"].tolist() == vocab.encode("negative") + [1]
  batch, real = next(features.batch_examples(rows, 8, LENGTHS))
  assert batch["decoder_target_tokens"].shape == (8, 4) and real.all()
  with pytest.raises(errors.DataError, match="Label 'positive' is 2 target tokens"):
    rank_classification.expand_candidates(examples, labels, demo.TASK_NAME,
                                          {"inputs": 32, "targets": 1})


def test_choose_and_metrics(examples):
  labels = ["positive", "negative"]
  gold = [ex["targets_pretokenized"] for ex in examples]
  # Score the gold label highest except for example 2; example 5 gets NaN for both.
  scores = np.array([[-1.0, -3.0] if g == "positive" else [-3.0, -1.0] for g in gold])
  scores[2] = scores[2][::-1]
  scores[5] = np.nan
  chosen = rank_classification.choose(scores.reshape(-1), labels, num_examples=6)
  wrong = {"positive": "negative", "negative": "positive"}
  assert chosen == [g if i not in (2, 5) else (wrong[g] if i == 2 else "")
                    for i, g in enumerate(gold)]
  metrics = evaluation.compute_metrics(demo.TASK_NAME, examples, chosen)
  assert metrics["accuracy"] == pytest.approx(100 * 4 / 6)


def test_choose_with_explicit_indices_and_ties():
  candidates = [{"example_index": 1, "candidate_index": 1},
                {"example_index": 0, "candidate_index": 0},
                {"example_index": 1, "candidate_index": 0},
                {"example_index": 0, "candidate_index": 1}]
  assert rank_classification.choose([-0.5, -2.0, -1.0, -2.0], ["a", "b"],
                                    candidates=candidates) == ["a", "b"]  # tie -> first
  with pytest.raises(errors.DataError, match="do not split into rows of 2"):
    rank_classification.choose([0.0, 1.0, 2.0], ["a", "b"])


def test_get_class_labels_for_tasks_without_fixed_labels():
  assert rank_classification.get_class_labels("super_glue_record") is None
  assert rank_classification.get_class_labels("glue_stsb") is None
  assert rank_classification.get_class_labels(
      tasks.get_mixture_or_task("super_glue_cb")) == ["entailment", "contradiction", "neutral"]


def test_compute_metrics_multirc_from_examples():
  def example(paragraph, question, label):
    return {"targets_pretokenized": label, "idx": {"paragraph": paragraph, "question": question,
                                                   "answer": 0}}
  examples = [example(0, 0, "True"), example(0, 1, "False"), example(0, 0, "False"),
              example(1, 0, "True")]
  # q(0,0): right, right; q(0,1): "" is wrong; q(1,0): " TRUE " right.
  # Options: tp 2, fn 0, fp 1 (the invalid one, target False) -> F1 4/5.
  got = evaluation.compute_metrics("super_glue_multirc", examples,
                                   ["True", "", "false", " TRUE "])
  assert got == pytest.approx({"f1a": 80.0, "exact_match": 100 * 2 / 3})
  with pytest.raises(errors.DataError, match="4 examples but 3 predictions"):
    evaluation.compute_metrics("super_glue_multirc", examples, ["True"] * 3)
