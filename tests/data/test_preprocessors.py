"""Text-to-text formatting on hand-made raw examples, against the expected strings."""

import tensorflow as tf

from prompt_tuning.data import preprocessors


def _run(fn, examples):
  ds = tf.data.Dataset.from_tensor_slices(examples) if isinstance(examples, dict) else examples
  return list(fn(ds).as_numpy_iterator())


def test_classification_is_taskless_with_label_words():
  raw = {"premise": ["A cat sat.", "Rain."], "hypothesis": ["An animal sat.", "Sun."],
         "label": [0, -1], "idx": [4, 5]}
  out = _run(lambda ds: preprocessors.classification(
      ds, fields=[("premise", "premise"), ("hypothesis", "hypothesis")],
      label_names=("entailment", "not_entailment")), raw)
  assert out[0]["inputs"] == b"premise: A cat sat. hypothesis: An animal sat."
  assert out[0]["targets"] == b"entailment" and out[0]["idx"] == 4
  assert out[1]["targets"] == b"<unk>"  # test split: no label


def test_classification_renames_fields():
  raw = {"sentence1": ["x"], "sentence2": ["y"], "label": [1], "idx": [0]}
  out = _run(lambda ds: preprocessors.classification(
      ds, fields=[("premise", "sentence1"), ("hypothesis", "sentence2")],
      label_names=("entailment", "not_entailment")), raw)
  assert out[0]["inputs"] == b"premise: x hypothesis: y"
  assert out[0]["targets"] == b"not_entailment"


def test_stsb_rounds_to_point_two():
  raw = {"sentence1": ["a"] * 5, "sentence2": ["b"] * 5,
         "label": [3.85, 4.91, 1.0, 0.33, -1.0], "idx": list(range(5))}
  out = _run(lambda ds: preprocessors.stsb(
      ds, fields=[("sentence1", "sentence1"), ("sentence2", "sentence2")]), raw)
  assert [o["targets"] for o in out] == [b"3.8", b"5.0", b"1.0", b"0.4", b"<unk>"]
  assert out[0]["inputs"] == b"sentence1: a sentence2: b"


def test_record_format_and_train_expansion():
  raw = tf.data.Dataset.from_tensors({
      "passage": "First.\n@highlight\nSecond\n@highlight\nThird",
      "query": "Who is @placeholder?", "entities": ["Ann", "Bob"],
      "answers": ["Ann", "ann"], "idx": {"passage": 0, "query": 1}})
  out = _run(preprocessors.record, raw)
  assert out[0]["inputs"] == (b"query: Who is @placeholder? entities: Ann, Bob passage: "
                              b"First. Second. Third")
  assert out[0]["targets"] == b"Ann" and list(out[0]["answers"]) == [b"Ann", b"ann"]
  expanded = _run(lambda ds: preprocessors.record(preprocessors.one_per_answer(ds)), raw)
  assert [(o["targets"], list(o["answers"])) for o in expanded] == [
      (b"Ann", [b"Ann"]), (b"ann", [b"ann"])]


def test_record_without_answers():
  raw = tf.data.Dataset.from_tensors({
      "passage": "P", "query": "Q", "entities": ["E"],
      "answers": tf.constant([], tf.string), "idx": {"passage": 0, "query": 0}})
  assert _run(preprocessors.record, raw)[0]["targets"] == b"<unk>"
  assert not _run(preprocessors.one_per_answer, raw)


def test_mark_span():
  text = "Mark told Pete many lies about himself ."
  assert preprocessors.mark_span(tf.constant(text), 6, tf.constant("himself")).numpy() == (
      b"Mark told Pete many lies about *himself* .")
  assert preprocessors.mark_span(tf.constant(text), 0, tf.constant("Mark told")).numpy() == (
      b"*Mark told* Pete many lies about himself .")
  # Out of range: clipped to the last word, never an error.
  assert preprocessors.mark_span(tf.constant("a b"), 9, tf.constant("x")).numpy() == b"a *b*"
  assert preprocessors.mark_span(tf.constant(""), 0, tf.constant("x")).numpy() == b""


def test_wsc_formats():
  raw = {"text": ["The councilmen refused because they feared violence ."],
         "span1_index": [0], "span2_index": [4], "span1_text": ["The councilmen"],
         "span2_text": ["they"], "label": [1], "idx": [0]}
  simple = _run(preprocessors.wsc_simple, raw)[0]
  assert simple["inputs"] == b"text: The councilmen refused because *they* feared violence ."
  assert simple["targets"] == b"The councilmen" and simple["label"] == 1
  classified = _run(lambda ds: preprocessors.wsc(ds, label_names=("False", "True")), raw)[0]
  assert classified["inputs"] == (b"text: The councilmen refused because *they* feared "
                                  b"violence . span1: The councilmen span2: they")
  assert classified["targets"] == b"True"
  both = {k: v * 2 for k, v in raw.items()}
  both["label"] = [1, 0]
  assert len(_run(preprocessors.positives_only, both)) == 1
