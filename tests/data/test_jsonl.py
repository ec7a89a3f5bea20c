"""JSONL tasks: every malformed-file case gives its error; gin registration; idempotency."""

import gin
import numpy as np
import pytest
import seqio

from prompt_tuning.data import demo, errors, evaluation, features, jsonl, rank_classification
from tests.data.conftest import write_lines

VOCAB = demo.VOCABULARY_PATH
GOOD = ['{"inputs": "a fine day", "targets": "positive"}',
        '{"inputs": "a bad day", "targets": "negative"}']


def _register(path, **kwargs):
  return jsonl.jsonl_task(train=path, vocabulary_path=VOCAB, name="jsonl_test", **kwargs)


@pytest.mark.parametrize("bad_line,message", [
    ('{"inputs": "x", "targets": ', r"line 3: not valid JSON"),
    ('["inputs", "targets"]', r"line 3: a JSON list, not an object"),
    ('{"inputs": "x"}', r"line 3: the field 'targets' is missing"),
    ('{"targets": "x"}', r"line 3: the field 'inputs' is missing"),
    ('{"inputs": 3, "targets": "x"}', r"line 3: the field 'inputs' is a int"),
    ('{"inputs": "x", "targets": null}', r"line 3: the field 'targets' is a NoneType"),
])
def test_malformed_line_names_file_and_line(tmp_path, bad_line, message):
  # Line 2 is blank (skipped, but still counted), the bad line is line 3.
  path = write_lines(tmp_path / "train.jsonl", [GOOD[0], "", bad_line, GOOD[1]])
  with pytest.raises(errors.JsonlFormatError, match="train.jsonl, " + message):
    _register(path)


def test_non_utf8_line(tmp_path):
  path = tmp_path / "train.jsonl"
  path.write_bytes(GOOD[0].encode() + b"\n\xff\xfe\n")
  with pytest.raises(errors.JsonlFormatError, match="line 2: not UTF-8"):
    _register(str(path))


def test_target_outside_class_labels(tmp_path):
  path = write_lines(tmp_path / "train.jsonl", GOOD + ['{"inputs": "x", "targets": "meh"}'])
  with pytest.raises(errors.JsonlFormatError, match="line 3: target 'meh' is not one of"):
    _register(path, class_labels=["positive", "negative"])


def test_missing_empty_and_no_files(tmp_path):
  with pytest.raises(FileNotFoundError, match=r"JSONL_TRAIN=.*missing\.jsonl"):
    _register(str(tmp_path / "missing.jsonl"))
  with pytest.raises(errors.EmptySplitError, match=r"JSONL_TRAIN=.*empty\.jsonl.*no examples"):
    _register(write_lines(tmp_path / "empty.jsonl", ["", "  "]))
  with pytest.raises(errors.DataError, match="at least one of JSONL_TRAIN"):
    jsonl.jsonl_task(vocabulary_path=VOCAB, name="jsonl_test")
  with pytest.raises(errors.DataError, match="CLASS_LABELS='positive'"):
    _register(write_lines(tmp_path / "t.jsonl", GOOD), class_labels="positive")


def test_idempotent_registration_and_test_split_without_targets(tmp_path):
  train = write_lines(tmp_path / "train.jsonl", GOOD)
  test = write_lines(tmp_path / "test.jsonl", ['{"inputs": "no label here"}'])
  kwargs = dict(train=train, test=test, vocabulary_path=VOCAB, name="jsonl_idem")
  assert jsonl.jsonl_task(**kwargs) == "jsonl_idem"
  task = seqio.TaskRegistry.get("jsonl_idem")
  assert jsonl.jsonl_task(**kwargs) == "jsonl_idem"
  assert seqio.TaskRegistry.get("jsonl_idem") is task  # not re-registered
  assert list(task.splits) == ["train", "test"]
  (example,) = features.get_examples("jsonl_idem", "test", {"inputs": 16, "targets": 4})
  assert example["inputs_pretokenized"] == "no label here" and example["targets_pretokenized"] == ""
  assert rank_classification.get_class_labels(task) is None
  write_lines(tmp_path / "train.jsonl", GOOD[:1])  # the file changed: registers again
  jsonl.jsonl_task(**kwargs)
  assert seqio.TaskRegistry.get("jsonl_idem") is not task


def test_jsonl_gin_registers_the_task(tmp_path):
  train = write_lines(tmp_path / "train.jsonl", GOOD * 3)
  validation = write_lines(tmp_path / "validation.jsonl", GOOD)

  @gin.configurable("jsonl_gin_probe")
  def probe(name, lengths):
    return name, lengths

  gin.clear_config()
  try:
    gin.parse_config_files_and_bindings(
        ["gin_configs/data/jsonl.gin"],
        [f"JSONL_TRAIN = '{train}'", f"JSONL_VALIDATION = '{validation}'",
         f"VOCABULARY_PATH = '{VOCAB}'", "CLASS_LABELS = ['positive', 'negative']",
         "TASK_FEATURE_LENGTHS = {'inputs': 8, 'targets': 4}",
         "jsonl_gin_probe.name = %MIXTURE_OR_TASK_NAME",
         "jsonl_gin_probe.lengths = %TASK_FEATURE_LENGTHS"], finalize_config=False)
    name, lengths = probe()
    assert probe()[0] == name == "jsonl"  # evaluated twice: idempotent
  finally:
    gin.clear_config()
  task = seqio.TaskRegistry.get(name)
  assert sorted(task.splits) == ["train", "validation"]
  assert rank_classification.get_class_labels(task) == ["positive", "negative"]
  batch = next(features.get_batches(name, "train", lengths, 4, shuffle=True, seed=0,
                                    num_epochs=None))
  assert batch["decoder_target_tokens"].shape == (4, 4)
  examples = features.get_examples(name, "validation", lengths)
  got = evaluation.compute_metrics(task, examples, [" Positive ", "positive"])
  # Targets [pos, neg], predictions [pos, pos]: accuracy 1/2; F1 pos 2/3, neg 0.
  assert got == pytest.approx({"accuracy": 50.0, "macro_f1": 100 * (2 / 3) / 2})
  assert np.array_equal(examples[0]["targets"],
                        task.output_features["targets"].vocabulary.encode("positive") + [1])


def test_demo_gin_sets_the_demo_macros():
  @gin.configurable("demo_gin_probe")
  def probe(name, vocabulary_path, labels, lengths):
    return name, vocabulary_path, labels, lengths

  gin.clear_config()
  try:
    gin.parse_config_files_and_bindings(
        ["gin_configs/data/demo.gin"],
        ["demo_gin_probe.name = %MIXTURE_OR_TASK_NAME",
         "demo_gin_probe.vocabulary_path = %VOCABULARY_PATH",
         "demo_gin_probe.labels = %CLASS_LABELS",
         "demo_gin_probe.lengths = %TASK_FEATURE_LENGTHS"], finalize_config=False)
    name, vocabulary_path, labels, lengths = probe()
  finally:
    gin.clear_config()
  assert (name, labels, lengths) == ("demo_sentiment", ["positive", "negative"],
                                     {"inputs": 32, "targets": 4})
  assert vocabulary_path == demo.VOCABULARY_PATH
  vocab = seqio.get_mixture_or_task(name).output_features["inputs"].vocabulary
  assert vocab.sentencepiece_model_file == vocabulary_path and vocab.vocab_size == 612
  # Every demo example fits the demo's lengths: nothing is cut.
  for split in ("train", "validation", "test"):
    for ex in features.get_examples(name, split, {"inputs": 1000, "targets": 1000}):
      assert len(ex["inputs"]) <= 32 and len(ex["targets"]) <= 4


def test_demo_assets_are_rebuilt_identically_by_their_script(tmp_path):
  import importlib.util  # pylint: disable=g-import-not-at-top
  spec = importlib.util.spec_from_file_location(
      "make_demo", f"{demo.ASSETS_DIR}/make_demo.py")
  make_demo = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(make_demo)
  make_demo.main(str(tmp_path))
  total = 0
  for name in ("demo_train.jsonl", "demo_validation.jsonl", "demo_test.jsonl",
               "demo_sentiment.model"):
    with open(f"{demo.ASSETS_DIR}/{name}", "rb") as f:
      data = f.read()
    assert (tmp_path / name).read_bytes() == data, name
    total += len(data)
  assert total < 1_000_000
