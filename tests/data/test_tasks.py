"""Registered tasks: names, label words (vs TFDS), batches under TFDS mock data, lookup errors."""

import importlib.util
import subprocess
import sys

import pytest
import seqio
import tensorflow_datasets as tfds

from prompt_tuning.data import demo, errors, evaluation, features, list_tasks, registry, tasks

LENGTHS = {"inputs": 16, "targets": 8}
EVAL_SPLIT = {"super_glue_axb": "test", "super_glue_axg": "test"}


@pytest.fixture(scope="module")
def mock_tfds():
  with tfds.testing.mock_data(policy=tfds.testing.MockPolicy.USE_CODE, num_examples=6):
    yield


def test_registered_names():
  assert set(tasks.BUILTIN_TASKS) == {
      "glue_cola", "glue_sst2", "glue_mrpc", "glue_qqp", "glue_stsb", "glue_mnli", "glue_qnli",
      "glue_rte", "glue_wnli", "super_glue_boolq", "super_glue_cb", "super_glue_copa",
      "super_glue_multirc", "super_glue_record", "super_glue_rte", "super_glue_wic",
      "super_glue_wsc", "super_glue_wsc_simple", "super_glue_axb", "super_glue_axg",
      "wordnet_topic", "wordnet_pos", "wordnet_hypernym", "wordnet_senses",
      "wordnet_hypernym_word", "demo_sentiment"}
  mixture = tasks.get_mixture_or_task("super_glue_proportional")
  assert sorted(t.name for t in mixture.tasks) == sorted(
      f"super_glue_{n}" for n in ("boolq", "cb", "copa", "multirc", "record", "rte", "wic",
                                  "wsc"))
  assert mixture.get_rate(tasks.get_mixture_or_task("super_glue_cb")) == 250
  assert "validation_mismatched" in tasks.get_mixture_or_task("glue_mnli").splits


def test_label_words_are_the_tfds_class_names():
  for name in tasks.BUILTIN_TASKS:
    labels = registry.class_labels(name)
    source = tasks.get_mixture_or_task(name).source
    if labels is None or not isinstance(source, seqio.TfdsDataSource):
      continue
    builder = tfds.builder(source.tfds_dataset.name)
    assert labels == tuple(builder.info.features["label"].names), name
  assert registry.class_labels("glue_stsb") is None
  assert registry.class_labels("super_glue_record") is None


def test_unknown_task_suggests_close_names():
  with pytest.raises(errors.UnknownTaskError, match=r"'glue_sst'.*closest: \['glue_sst2'"):
    tasks.get_mixture_or_task("glue_sst")
  with pytest.raises(errors.UnknownTaskError, match="none is close"):
    tasks.get_mixture_or_task("zzzzzzzz")


@pytest.mark.parametrize("name", tasks.BUILTIN_TASKS + tasks.BUILTIN_MIXTURES)
def test_every_task_builds_batches(mock_tfds, name):
  # The default vocabulary lives on GCS; the demo's tokenizes the mock text offline.
  name = tasks.with_vocabulary(name, demo.VOCABULARY_PATH)
  train_split = EVAL_SPLIT.get(name.split(".")[0], "train")
  batch = next(features.get_batches(name, train_split, LENGTHS, 3, shuffle=True, seed=0,
                                    num_epochs=None))
  assert sorted(batch) == ["decoder_input_tokens", "decoder_loss_weights",
                           "decoder_target_tokens", "encoder_input_tokens"]
  assert batch["encoder_input_tokens"].shape == (3, 16)
  for key in ("decoder_input_tokens", "decoder_target_tokens", "decoder_loss_weights"):
    assert batch[key].shape == (3, 8) and batch[key].dtype == "int32"
  assert (batch["decoder_loss_weights"].sum(axis=1) >= 1).all()  # at least EOS
  subtasks = tasks.get_subtasks(name)
  if len(subtasks) == 1:
    split = EVAL_SPLIT.get(name.split(".")[0], "validation")
    examples = features.get_examples(name, split, LENGTHS)
    assert all(len(ex["inputs"]) <= 16 and ex["inputs"][-1] == 1 for ex in examples)
    assert isinstance(examples[0]["inputs_pretokenized"], str)
    # Targets given as predictions: the metrics run and are perfect, except for WSC-simple,
    # where naming the candidate is right only for the positive examples.
    targets = [ex["targets_pretokenized"] for ex in examples]
    scores = evaluation.compute_metrics(subtasks[0], examples, targets)
    expected = 100.0
    if name.startswith("super_glue_wsc_simple"):
      expected = 100.0 * sum(int(ex["label"]) for ex in examples) / len(examples)
    assert scores and all(v == pytest.approx(expected) for k, v in scores.items()
                          if k in ("accuracy", "exact_match", "f1", "f1a")), scores


def test_split_specific_sources(mock_tfds):
  record = tasks.with_vocabulary("super_glue_record", demo.VOCABULARY_PATH)
  validation = features.get_examples(record, "validation", LENGTHS)
  train = features.get_examples(record, "train", LENGTHS)
  # Train: one example per answer; validation: one per question with all its answers.
  assert len(train) == sum(len(ex["answers"]) for ex in validation) > len(validation)
  assert all(ex["answers"] == [ex["targets_pretokenized"]] for ex in train)
  wsc = tasks.with_vocabulary("super_glue_wsc_simple", demo.VOCABULARY_PATH)
  train = features.get_examples(wsc, "train", LENGTHS)
  assert {int(ex["label"]) for ex in train} == {1}
  assert len(train) < len(features.get_examples(wsc, "validation", LENGTHS))


def test_empty_and_unknown_splits(mock_tfds):
  name = tasks.with_vocabulary("glue_sst2", demo.VOCABULARY_PATH)
  with pytest.raises(errors.UnknownSplitError, match=r"no split 'dev'.*\['test', 'train', "):
    features.get_examples(name, "dev", LENGTHS)
  with tfds.testing.mock_data(policy=tfds.testing.MockPolicy.USE_CODE, num_examples=0):
    with pytest.raises(errors.EmptySplitError, match="validation has no examples"):
      features.get_examples(name, "validation", LENGTHS)
    batches = features.get_batches(name, "train", LENGTHS, 2, shuffle=False, seed=None,
                                   num_epochs=None)
    with pytest.raises(errors.EmptySplitError, match="yielded no batch"):
      next(batches)


def test_list_tasks_lists_every_task_with_splits_features_metrics():
  text = list_tasks.listing()
  for name in tasks.BUILTIN_TASKS + tasks.BUILTIN_MIXTURES:
    assert f"\n{name}  [" in "\n" + text
  assert "super_glue_cb  [task, TFDS super_glue/cb:1.0.2]" in text
  assert "macro_f1_and_accuracy(num_classes=3)" in text
  assert "validation_mismatched" in text and "pearson_and_spearman" in text


@pytest.mark.skipif(importlib.util.find_spec("prompt_tuning.gin_configs") is None,
                    reason="gin_configs/ resolves only once the package is installed")
def test_list_tasks_command_with_jsonl_gin(tmp_path):
  train = tmp_path / "train.jsonl"
  train.write_text('{"inputs": "a", "targets": "b"}\n')
  out = subprocess.run(
      [sys.executable, "-m", "prompt_tuning.data.list_tasks", "--gin_file=data/jsonl.gin",
       f"--gin.JSONL_TRAIN={train}", f"--gin.VOCABULARY_PATH={demo.VOCABULARY_PATH}",
       "--gin.JSONL_TASK_NAME='my_task'"],
      capture_output=True, text=True, timeout=120, check=False)
  assert out.returncode == 0, out.stderr[-2000:]
  assert "my_task  [task, JsonlDataSource]\n  splits:   train" in out.stdout
  assert "glue_rte  [task" in out.stdout
