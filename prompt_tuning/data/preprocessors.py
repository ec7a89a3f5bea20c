"""Text-to-text formatting of benchmark examples (tf.data, runs inside the input pipeline).

Every task here is in the paper's "taskless" form: inputs are "field: value field: value ..."
with no dataset-name prefix, and targets are the label word (the TFDS class name). Examples
without a label (test splits, label -1) get the target "<unk>", as in T5.
"""

from typing import Mapping, Sequence

import tensorflow as tf

UNKNOWN_TARGET = "<unk>"
_AUTOTUNE = tf.data.AUTOTUNE


def join_fields(example: Mapping[str, tf.Tensor],
                fields: Sequence[tuple[str, str]]) -> tf.Tensor:
  """Returns the string "name1: text1 name2: text2 ..." for (name, feature key) `fields`."""
  parts = []
  for name, key in fields:
    parts += [f"{name}:", example[key]]
  return tf.strings.join(parts, separator=" ")


def label_word(label: tf.Tensor, label_names: Sequence[str]) -> tf.Tensor:
  """Maps a class index (scalar int) to its word; a negative index (no label) to "<unk>"."""
  label = tf.cast(label, tf.int32)
  word = tf.gather(tf.constant(list(label_names)), tf.maximum(label, 0))
  return tf.where(label >= 0, word, UNKNOWN_TARGET)


def classification(ds: tf.data.Dataset, *, fields: Sequence[tuple[str, str]],
                   label_names: Sequence[str], keep: Sequence[str] = ("idx",)) -> tf.data.Dataset:
  """{fields..., label} -> {inputs: "name: text ...", targets: label word, kept features}."""

  def fn(ex):
    out = {"inputs": join_fields(ex, fields), "targets": label_word(ex["label"], label_names)}
    out.update({k: ex[k] for k in keep if k in ex})
    return out

  return ds.map(fn, num_parallel_calls=_AUTOTUNE)


def stsb(ds: tf.data.Dataset, *, fields: Sequence[tuple[str, str]]) -> tf.data.Dataset:
  """STS-B: targets are the similarity score in [0, 5] rounded to 0.2, as text ("3.8").

  Test examples (label -1) get "<unk>".
  """

  def fn(ex):
    label = tf.cast(ex["label"], tf.float32)
    score = tf.clip_by_value(label, 0.0, 5.0)
    target = tf.strings.as_string(tf.round(score * 5.0) / 5.0, precision=1)
    target = tf.where(label < 0, UNKNOWN_TARGET, target)
    return {"inputs": join_fields(ex, fields), "targets": target, "idx": ex["idx"]}

  return ds.map(fn, num_parallel_calls=_AUTOTUNE)


def clean_record_passage(passage: tf.Tensor) -> tf.Tensor:
  """ReCoRD passages separate their CNN/Daily Mail highlights with "\\n@highlight\\n"."""
  passage = tf.strings.regex_replace(passage, r"([.?!\"'])\n@highlight\n", r"\1 ")
  return tf.strings.regex_replace(passage, r"\n@highlight\n", ". ")


def record(ds: tf.data.Dataset) -> tf.data.Dataset:
  """ReCoRD: inputs "query: ... entities: e1, e2 passage: ...", target the first answer.

  `answers` is kept (a [num_answers] string vector) for the max-over-answers metric; the
  train split is expanded to one example per answer at the source (see `one_per_answer`).
  """

  def fn(ex):
    entities = tf.strings.reduce_join(ex["entities"], separator=", ")
    inputs = tf.strings.join(["query:", ex["query"], "entities:", entities, "passage:",
                              clean_record_passage(ex["passage"])], separator=" ")
    answers = ex["answers"]
    first = tf.concat([answers, [UNKNOWN_TARGET]], axis=0)[0]
    return {"inputs": inputs, "targets": first, "answers": answers, "idx": ex["idx"]}

  return ds.map(fn, num_parallel_calls=_AUTOTUNE)


def one_per_answer(ds: tf.data.Dataset) -> tf.data.Dataset:
  """Raw ReCoRD examples -> one example per answer (answers = [that answer]); none if none."""

  def expand(ex):
    rest = {k: v for k, v in ex.items() if k != "answers"}
    answers = tf.data.Dataset.from_tensor_slices(ex["answers"])
    return answers.map(lambda a: {**rest, "answers": tf.reshape(a, [1])})

  return ds.flat_map(expand)


def mark_span(text: tf.Tensor, word_index: tf.Tensor, span_text: tf.Tensor) -> tf.Tensor:
  """Puts asterisks around the words of `span_text` that start at whitespace word `word_index`.

  "Mark told Pete many lies about himself" with index 5 and span "himself" gives
  "Mark told Pete many lies about *himself*". Indices out of range are clipped (never fails).
  """
  words = tf.strings.split(text)
  n = tf.size(words)
  width = tf.maximum(tf.size(tf.strings.split(span_text)), 1)
  start = tf.clip_by_value(tf.cast(word_index, tf.int32), 0, tf.maximum(n - 1, 0))
  end = tf.minimum(start + width, n)
  marked = tf.strings.join(["*", tf.strings.reduce_join(words[start:end], separator=" "), "*"])
  joined = tf.strings.reduce_join(tf.concat([words[:start], [marked], words[end:]], axis=0),
                                  separator=" ")
  return tf.where(n > 0, joined, text)


def wsc(ds: tf.data.Dataset, *, label_names: Sequence[str]) -> tf.data.Dataset:
  """WSC as classification: "text: <text with *pronoun*> span1: <noun> span2: <pronoun>"."""

  def fn(ex):
    text = mark_span(ex["text"], ex["span2_index"], ex["span2_text"])
    inputs = tf.strings.join(["text:", text, "span1:", ex["span1_text"], "span2:",
                              ex["span2_text"]], separator=" ")
    return {"inputs": inputs, "targets": label_word(ex["label"], label_names), "idx": ex["idx"]}

  return ds.map(fn, num_parallel_calls=_AUTOTUNE)


def wsc_simple(ds: tf.data.Dataset) -> tf.data.Dataset:
  """T5's simplified WSC: inputs "text: <text with *pronoun*>", target the candidate noun.

  `label` (1 when the candidate is the referent) is kept for evaluation; training uses only
  the positive examples (filtered at the source, see `positives_only`).
  """

  def fn(ex):
    text = mark_span(ex["text"], ex["span2_index"], ex["span2_text"])
    return {"inputs": tf.strings.join(["text:", text], separator=" "),
            "targets": ex["span1_text"], "label": ex["label"], "idx": ex["idx"]}

  return ds.map(fn, num_parallel_calls=_AUTOTUNE)


def positives_only(ds: tf.data.Dataset) -> tf.data.Dataset:
  """Keeps the raw examples whose label is 1 (the candidate is the pronoun's referent)."""
  return ds.filter(lambda ex: tf.equal(ex["label"], 1))
