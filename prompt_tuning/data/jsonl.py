"""Tasks from the user's own JSON Lines files, with no Python: see gin_configs/data/jsonl.gin.

Each line is an object {"inputs": "...", "targets": "..."} (strings; other fields are
ignored; blank lines are skipped). In the test file "targets" may be left out (it is then "").
An optional "prompt" string names the prompt the line runs under when eval or infer serve
several prompts at once (PROMPTS); it reaches the examples as their `prompt` feature.
Files are checked completely when the task is registered, so a bad line fails the job at start
with its file and line number, never later inside tf.data.
"""

import functools
import json
import os
from typing import Iterator, Mapping, Sequence

import gin
import seqio
import tensorflow as tf

from prompt_tuning.data import errors, metrics, postprocessors, registry, vocabularies

SPLIT_MACROS = {"train": "JSONL_TRAIN", "validation": "JSONL_VALIDATION", "test": "JSONL_TEST"}
DEFAULT_TASK_NAME = "jsonl"
SHUFFLE_BUFFER_SIZE = 10_000
_REGISTERED: dict[str, tuple] = {}  # task name -> the configuration it was registered with


def parse_line(line: bytes | str, path: str, line_number: int, *,
               require_targets: bool = True) -> tuple[str, str, str] | None:
  """(inputs, targets, prompt) of one JSONL line ("" for absent fields), None if blank.

  Raises:
    JsonlFormatError: naming `path`, `line_number` and what is wrong.
  """
  where = f"{path}, line {line_number}"
  if isinstance(line, bytes):
    try:
      line = line.decode("utf-8")
    except UnicodeDecodeError as e:
      raise errors.JsonlFormatError(f"{where}: not UTF-8 text ({e.reason}).") from None
  if not line.strip():
    return None
  line = line.rstrip("\r\n")  # JSON would count the newline: an unclosed object at "column 1"
  try:
    record = json.loads(line)
  except json.JSONDecodeError as e:
    at = ("the line ends before the JSON is complete" if e.pos >= len(line.rstrip())
          else f"column {e.pos + 1}")
    raise errors.JsonlFormatError(
        f"{where}: not valid JSON ({e.msg}; {at}); each line must be one object "
        'like {"inputs": "...", "targets": "..."}.') from None
  if not isinstance(record, dict):
    raise errors.JsonlFormatError(
        f"{where}: a JSON {type(record).__name__}, not an object with \"inputs\" and "
        '"targets".')
  fields = ("inputs", "targets") if require_targets else ("inputs",)
  for field in fields:
    if field not in record:
      raise errors.JsonlFormatError(f"{where}: the field {field!r} is missing.")
  values = []
  for field in ("inputs", "targets", "prompt"):
    value = record.get(field, "")
    if not isinstance(value, str):
      raise errors.JsonlFormatError(
          f"{where}: the field {field!r} is a {type(value).__name__} ({value!r:.40}), not a "
          "string; quote it.")
    values.append(value)
  return values[0], values[1], values[2]


def read_jsonl(path: str, *,
               require_targets: bool = True) -> Iterator[tuple[str, str, str, int]]:
  """(inputs, targets, prompt, line number) of each non-blank line of `path`, checked."""
  with tf.io.gfile.GFile(path, "rb") as f:
    for line_number, line in enumerate(f, start=1):
      parsed = parse_line(line, path, line_number, require_targets=require_targets)
      if parsed is not None:
        yield (*parsed, line_number)


def check_file(path: str, split: str, *,
               class_labels: Sequence[str] | None = None) -> int:
  """Reads all of `path` for `split`; returns its number of examples.

  Raises:
    FileNotFoundError; JsonlFormatError (a bad line, or a target not in CLASS_LABELS);
    EmptySplitError (no examples).
  """
  macro = SPLIT_MACROS.get(split, split)
  try:
    exists = tf.io.gfile.exists(path)
    is_dir = exists and tf.io.gfile.isdir(path)
  except tf.errors.OpError as e:
    raise _unreadable(macro, path, e) from None
  if not exists or is_dir:
    raise FileNotFoundError(f"{macro}={path!r}: {'a directory' if is_dir else 'no such file'}; "
                            "give the path of a JSONL file (one {\"inputs\": ..., "
                            "\"targets\": ...} object per line).")
  require_targets = split != "test"
  count = 0
  try:
    for _, targets, _, line_number in read_jsonl(path, require_targets=require_targets):
      if (class_labels is not None and (require_targets or targets)
          and targets not in class_labels):
        raise errors.JsonlFormatError(
            f"{path}, line {line_number}: target {targets!r} is not one of CLASS_LABELS "
            f"{list(class_labels)}; fix the line or CLASS_LABELS.")
      count += 1
  except tf.errors.OpError as e:
    raise _unreadable(macro, path, e) from None
  if count == 0:
    raise errors.EmptySplitError(f"{macro}={path!r} has no examples; give a file with at least "
                                 f"one line, or None to leave out the {split} split.")
  return count


def _unreadable(macro: str, path: str, error: tf.errors.OpError) -> errors.DataError:
  """A file that exists, or may, but cannot be read: an unreachable bucket, no credentials."""
  reason = " ".join(error.message.split())
  return errors.DataError(f"{macro}={path!r} cannot be read ({reason}); check the path, the "
                          "network and the credentials.")


def _dataset_fn(split: str, shuffle_files: bool, seed: int | None = None, *,
                files: Mapping[str, str]) -> tf.data.Dataset:
  """{"inputs", "targets", "prompt"} strings of the file for `split`, in file order (seqio
  shuffles)."""
  del shuffle_files, seed  # one file: nothing to shuffle at the file level
  path = files[split]

  def generate():
    for inputs, targets, prompt, _ in read_jsonl(path, require_targets=split != "test"):
      yield {"inputs": inputs, "targets": targets, "prompt": prompt}

  spec = tf.TensorSpec([], tf.string)
  return tf.data.Dataset.from_generator(
      generate, output_signature={"inputs": spec, "targets": spec, "prompt": spec})


class JsonlDataSource(seqio.FunctionDataSource):
  """seqio's FunctionDataSource without its warning against training on it uncached.

  The warning is about file-level shuffling on restarts; a JSONL task is one file per split
  whose examples seqio shuffles with a buffer, reproducibly by seed, which is what a
  resumed job wants.
  """

  def get_dataset(self, split=None, shuffle=True, seed=None, shard_info=None, **kwargs):
    del kwargs  # sequence_length, use_cached, num_epochs: unused, as in the parent
    if shard_info and shard_info.num_shards > 1:
      raise ValueError("JSONL sources are sharded on examples, not at the source.")
    return self._dataset_fn(split=split or "train", shuffle_files=shuffle, seed=seed)


def _check_class_labels(class_labels: Sequence[str] | None) -> tuple[str, ...] | None:
  if class_labels is None:
    return None
  if (isinstance(class_labels, str) or not class_labels
      or not all(isinstance(c, str) and c.strip() for c in class_labels)):
    raise errors.DataError(f"CLASS_LABELS={class_labels!r} must be a non-empty list of "
                           "non-empty strings, e.g. ['positive', 'negative'].")
  if len(set(class_labels)) != len(class_labels):
    raise errors.DataError(f"CLASS_LABELS={list(class_labels)!r} has duplicates.")
  return tuple(class_labels)


def _file_key(path: str) -> tuple:
  try:
    stat = tf.io.gfile.stat(path) if tf.io.gfile.exists(path) else None
  except tf.errors.OpError:  # unreadable: check_file says so when the task is registered
    stat = None
  return (path, stat.length if stat else None, stat.mtime_nsec if stat else None)


def register_jsonl_task(name: str, files: Mapping[str, str | None], *,
                        vocabulary: seqio.Vocabulary,
                        class_labels: Sequence[str] | None = None) -> seqio.Task:
  """Checks the files and registers task `name` with their splits (any of train/validation/
  test; None entries are left out). With `class_labels`: macro-F1, accuracy and rank
  classification; without: accuracy of the whitespace-normalised text.
  """
  labels = _check_class_labels(class_labels)
  unknown = set(files) - set(SPLIT_MACROS)
  if unknown:
    raise errors.DataError(f"Unknown JSONL splits {sorted(unknown)}; use {list(SPLIT_MACROS)}.")
  files = {split: os.fspath(path) for split, path in files.items() if path is not None}
  if not files:
    raise errors.DataError("No JSONL file given: set at least one of JSONL_TRAIN, "
                           "JSONL_VALIDATION, JSONL_TEST "
                           "(e.g. --gin.JSONL_TRAIN=/data/train.jsonl).")
  sizes = {split: check_file(path, split, class_labels=labels) for split, path in files.items()}
  if labels:
    postprocess_fn = functools.partial(postprocessors.label_index, label_names=labels)
    metric_fns = [functools.partial(metrics.macro_f1_and_accuracy, num_classes=len(labels))]
  else:
    postprocess_fn, metric_fns = postprocessors.stripped_text, [metrics.accuracy]
  source = JsonlDataSource(functools.partial(_dataset_fn, files=files), splits=list(files),
                           num_input_examples=sizes)
  return registry.add_task(name, source=source, preprocessors=[], vocabulary=vocabulary,
                           postprocess_fn=postprocess_fn, metric_fns=metric_fns,
                           class_labels=labels, shuffle_buffer_size=SHUFFLE_BUFFER_SIZE)


@gin.configurable(module="prompt_tuning.data.jsonl")
def jsonl_task(train: str | None = None, validation: str | None = None,
               test: str | None = None, class_labels: Sequence[str] | None = None,
               vocabulary_path: str | None = None, name: str = DEFAULT_TASK_NAME) -> str:
  """Registers the JSONL files as seqio task `name` and returns the name (gin: the value of
  MIXTURE_OR_TASK_NAME). Idempotent: a second call with the same files (unchanged on disk),
  labels and vocabulary does nothing; with anything different it re-registers.

  Args:
    train, validation, test: JSONL_TRAIN / JSONL_VALIDATION / JSONL_TEST; None = no split.
    class_labels: CLASS_LABELS, the possible targets, or None for free text.
    vocabulary_path: VOCABULARY_PATH; None is T5's default vocabulary.
    name: the task name.
  """
  files = {"train": train, "validation": validation, "test": test}
  key = (tuple((s, _file_key(os.fspath(p))) for s, p in files.items() if p is not None),
         None if class_labels is None else tuple(class_labels),
         vocabularies.resolve_vocabulary_path(vocabulary_path))
  if _REGISTERED.get(name) == key and name in seqio.TaskRegistry.names():
    return name
  register_jsonl_task(name, files, vocabulary=vocabularies.get_vocabulary(vocabulary_path),
                      class_labels=class_labels)
  _REGISTERED[name] = key
  return name
