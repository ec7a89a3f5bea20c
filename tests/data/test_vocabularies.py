"""Vocabulary paths: defaults, .model files, Hugging Face directories, missing files."""

import shutil

import pytest

from prompt_tuning.data import demo, tasks, vocabularies
from tests.data.conftest import T5_SPM, needs_t5_vocabulary


def test_defaults_are_t5_and_mt5_with_100_extra_ids():
  t5 = vocabularies.get_vocabulary()
  assert t5.sentencepiece_model_file == (
      "gs://t5-data/vocabs/cc_all.32000.100extra/sentencepiece.model")
  assert t5.extra_ids == 100
  assert vocabularies.get_vocabulary(kind="mt5").sentencepiece_model_file == (
      "gs://t5-data/vocabs/mc4.250000.100extra/sentencepiece.model")
  with pytest.raises(ValueError, match="Unknown vocabulary kind 'byt5'"):
    vocabularies.get_vocabulary(kind="byt5")


def test_missing_files_name_the_path(tmp_path):
  with pytest.raises(FileNotFoundError, match="nope.model"):
    vocabularies.get_vocabulary(str(tmp_path / "nope.model"))
  with pytest.raises(FileNotFoundError, match="has no spiece.model"):
    vocabularies.get_vocabulary(str(tmp_path))


def test_hugging_face_directory_and_equality(tmp_path):
  shutil.copy(demo.VOCABULARY_PATH, tmp_path / "spiece.model")
  vocab = vocabularies.get_vocabulary(str(tmp_path))
  assert vocab.sentencepiece_model_file == str(tmp_path / "spiece.model")
  own = vocabularies.get_vocabulary(demo.VOCABULARY_PATH)
  assert vocab.vocab_size == own.vocab_size == 512 + 100
  assert vocab.encode("the movie was great") == own.encode("the movie was great")
  # Same bytes under another name: the task keeps its own name, no copy is registered.
  assert tasks.with_vocabulary(demo.TASK_NAME, str(tmp_path)) == demo.TASK_NAME
  assert tasks.with_vocabulary(demo.TASK_NAME, None) == demo.TASK_NAME


@needs_t5_vocabulary()
def test_t5_fixture_and_task_copy_with_another_vocabulary():
  vocab = vocabularies.get_vocabulary(str(T5_SPM))
  assert vocab.vocab_size == 32100 and vocab.eos_id == 1 and vocab.pad_id == 0
  assert vocab.encode("Hello world") == [8774, 296]
  name = tasks.with_vocabulary(demo.TASK_NAME, str(T5_SPM))
  assert name.startswith(demo.TASK_NAME + ".vocab_") and name != demo.TASK_NAME
  task = tasks.get_mixture_or_task(name)
  assert task.output_features["targets"].vocabulary is vocab
  assert tasks.with_vocabulary(demo.TASK_NAME, str(T5_SPM)) == name  # registered once
  from prompt_tuning.data import rank_classification  # pylint: disable=g-import-not-at-top
  assert rank_classification.get_class_labels(name) == ["positive", "negative"]
