"""Pretraining objectives as seqio preprocessors, and text tasks that train with them.

Three objectives, on token ids (after `seqio.preprocessors.tokenize`):

  span_corruption  T5's objective. Texts are concatenated and cut into chunks of a fixed
                   length; in each chunk about `noise_density` of the tokens, in spans of
                   mean length `mean_noise_span_length`, are replaced in the inputs by one
                   sentinel per span, and the targets are those spans, each after its
                   sentinel:  inputs  "Thank you <X> me to your party <Y> week"
                              targets "<X> for inviting <Y> last"
                   Sentinels count down from the top of the vocabulary (<extra_id_0> is
                   vocab_size - 1), as in every T5.
  prefix_lm        LM adaptation (Lester et al. 2021, section 3.2): texts are concatenated
                   and cut into chunks as above; each chunk is split at a uniformly random
                   point: the inputs are the prefix, the targets the rest.
  causal_lm        next-token prediction, for decoder-only models: each text ends in EOS,
                   texts are concatenated and cut into chunks as above; the inputs are
                   empty and the targets the whole chunk, so the loss covers every token
                   (but the first of a row, which nothing precedes). A chunk's EOS marks
                   where a text ended; none is added at a chunk's end.

`text_task` registers either objective over plain text files, a TFDS dataset or the source of
a registered seqio task; gin_configs/runs/{pretrain,lm_adapt}.gin use it (runs/pretrain.gin
picks span_corruption for a T5 and causal_lm for a decoder-only model, job_io.py).
"""

import codecs
import functools
import os
from typing import Mapping, Sequence

import gin
import seqio
import tensorflow as tf

from prompt_tuning.data import errors, hf_tokenizers, metrics, postprocessors, tasks
from prompt_tuning.data import vocabularies

OBJECTIVES = ("span_corruption", "prefix_lm", "causal_lm")
SHUFFLE_BUFFER_SIZE = 10_000


# ---------------------------------------------------------------------------------------------
# Checks of the objectives' settings (each names its macro)

def check_noise(noise_density: float, mean_noise_span_length: float) -> None:
  if not 0.0 < noise_density < 1.0:
    raise errors.DataError(f"NOISE_DENSITY={noise_density!r} must be in (0, 1), e.g. 0.15 "
                           "(T5's fraction of corrupted tokens).")
  if not mean_noise_span_length >= 1.0:
    raise errors.DataError(f"MEAN_NOISE_SPAN_LENGTH={mean_noise_span_length!r} must be >= 1, "
                           "e.g. 3.0 (T5's mean span length in tokens).")


def check_chunk_length(chunk_length: int) -> int:
  """causal_lm's chunks: at least 2 tokens, so that one is predicted from another."""
  if isinstance(chunk_length, bool) or not isinstance(chunk_length, int) or chunk_length < 2:
    raise errors.DataError(f"PRETRAIN_CHUNK_LENGTH={chunk_length!r} must be an int >= 2 (a "
                           "token predicted from the one before it); use e.g. 64.")
  return chunk_length


def noise_counts(length: int, noise_density: float,
                 mean_noise_span_length: float) -> tuple[int, int]:
  """(noise tokens, noise spans) of a chunk of `length` tokens (length >= 2).

  At least one token is noise and one is not; at least one span, and no more spans than
  either kind of token can fill.
  """
  num_noise = min(max(int(round(length * noise_density)), 1), length - 1)
  num_spans = max(int(round(num_noise / mean_noise_span_length)), 1)
  return num_noise, min(num_spans, num_noise, length - num_noise)


def span_corruption_lengths(chunk_length: int, noise_density: float = 0.15,
                            mean_noise_span_length: float = 3.0) -> dict[str, int]:
  """Feature lengths of the inputs and targets made from chunks of `chunk_length` tokens,
  EOS included: every sentinel and token fits, nothing is ever cut.

  Raises:
    DataError: a chunk too short to corrupt (< 2 tokens) or bad noise settings.
  """
  check_noise(noise_density, mean_noise_span_length)
  if chunk_length < 2:
    raise errors.DataError(f"PRETRAIN_CHUNK_LENGTH={chunk_length!r} is too short to corrupt: a "
                           "chunk needs at least 2 tokens (one kept, one noise); use e.g. 64.")
  num_noise, num_spans = noise_counts(chunk_length, noise_density, mean_noise_span_length)
  return {"inputs": chunk_length - num_noise + num_spans + 1, "targets": num_noise + num_spans + 1}


# ---------------------------------------------------------------------------------------------
# The noise mask and the sentinel substitution (TF, inside the input pipeline)

def _random_partition(num_items: tf.Tensor, num_parts: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
  """[num_parts] positive int32 lengths summing to `num_items`, uniform over compositions."""
  cut_candidates = tf.range(1, num_items)
  order = tf.argsort(tf.random.stateless_uniform([num_items - 1], seed=seed))
  cuts = tf.sort(tf.gather(cut_candidates, order[:num_parts - 1]))
  bounds = tf.concat([[0], cuts, [num_items]], axis=0)
  return bounds[1:] - bounds[:-1]


def random_spans_noise_mask(length: tf.Tensor, noise_density: float,
                            mean_noise_span_length: float, seed: tf.Tensor) -> tf.Tensor:
  """bool [length]: True on noise tokens. Spans alternate kept, noise, kept, noise, ...
  starting with kept tokens; `seed` is a stateless seed [2]."""
  length = tf.cast(length, tf.int32)
  lengthf = tf.cast(length, tf.float32)
  num_noise = tf.clip_by_value(tf.cast(tf.round(lengthf * noise_density), tf.int32), 1,
                               length - 1)
  num_spans = tf.maximum(tf.cast(tf.round(tf.cast(num_noise, tf.float32)
                                          / mean_noise_span_length), tf.int32), 1)
  num_spans = tf.minimum(num_spans, tf.minimum(num_noise, length - num_noise))
  seeds = tf.random.experimental.stateless_split(seed, 2)
  noise_lengths = _random_partition(num_noise, num_spans, seeds[0])
  kept_lengths = _random_partition(length - num_noise, num_spans, seeds[1])
  span_lengths = tf.reshape(tf.stack([kept_lengths, noise_lengths], axis=1), [-1])
  span_starts = tf.cumsum(span_lengths)[:-1]
  starts = tf.scatter_nd(span_starts[:, None], tf.ones_like(span_starts), [length])
  return tf.math.floormod(tf.cumsum(starts), 2) == 1


def spans_to_sentinels(tokens: tf.Tensor, mask: tf.Tensor, vocab_size: int) -> tf.Tensor:
  """tokens [n], mask bool [n] -> each masked span replaced by one sentinel: the i-th span
  (from 0) by vocab_size - 1 - i."""
  previous = tf.concat([[False], mask[:-1]], axis=0)
  first = tf.logical_and(mask, tf.logical_not(previous))
  sentinels = vocab_size - tf.cumsum(tf.cast(first, tokens.dtype))
  replaced = tf.where(first, sentinels, tokens)
  return tf.boolean_mask(replaced, tf.logical_or(first, tf.logical_not(mask)))


def corrupt(tokens: tf.Tensor, vocab_size: int, noise_density: float,
            mean_noise_span_length: float, seed: tf.Tensor) -> dict[str, tf.Tensor]:
  """tokens [n >= 2] -> {"inputs": kept tokens and sentinels, "targets": sentinels and noise}."""
  mask = random_spans_noise_mask(tf.size(tokens), noise_density, mean_noise_span_length, seed)
  return {"inputs": spans_to_sentinels(tokens, mask, vocab_size),
          "targets": spans_to_sentinels(tokens, tf.logical_not(mask), vocab_size)}


# ---------------------------------------------------------------------------------------------
# seqio preprocessors

def text_to_targets(ds: tf.data.Dataset, *, text_key: str = "text") -> tf.data.Dataset:
  """{text_key: str, ...} -> {"targets": str}: the text, for seqio's tokenizer."""
  return ds.map(lambda ex: {"targets": ex[text_key]}, num_parallel_calls=tf.data.AUTOTUNE)


def pack_tokens(ds: tf.data.Dataset, *, chunk_length: int) -> tf.data.Dataset:
  """Concatenates the "targets" token ids of consecutive examples and cuts the stream into
  chunks of exactly `chunk_length` (the last partial chunk is dropped)."""
  tokens = ds.map(lambda ex: ex["targets"]).unbatch()
  return tokens.batch(chunk_length, drop_remainder=True).map(lambda t: {"targets": t})


def span_corruption(ds: tf.data.Dataset, output_features: Mapping[str, seqio.Feature], *,
                    noise_density: float = 0.15, mean_noise_span_length: float = 3.0
                    ) -> tf.data.Dataset:
  """{"targets": token ids [n >= 2]} -> {"inputs", "targets"} of T5's span corruption."""
  check_noise(noise_density, mean_noise_span_length)
  vocab_size = output_features["targets"].vocabulary.vocab_size

  @seqio.map_over_dataset(num_seeds=1)
  def fn(ex, seed):
    return corrupt(ex["targets"], vocab_size, noise_density, mean_noise_span_length, seed)

  return fn(ds.filter(lambda ex: tf.size(ex["targets"]) >= 2))


def prefix_lm(ds: tf.data.Dataset) -> tf.data.Dataset:
  """{"targets": token ids [n]} -> {"inputs": ids[:k], "targets": ids[k:]}, k uniform in
  [1, n - 1]. Sequences of fewer than 2 tokens cannot be split and are dropped."""

  @seqio.map_over_dataset(num_seeds=1)
  def fn(ex, seed):
    tokens = ex["targets"]
    split = tf.random.stateless_uniform([], seed, minval=1, maxval=tf.size(tokens),
                                        dtype=tf.int32)
    return {"inputs": tokens[:split], "targets": tokens[split:]}

  return fn(ds.filter(lambda ex: tf.size(ex["targets"]) >= 2))


def end_texts_with_eos(ds: tf.data.Dataset, output_features: Mapping[str, seqio.Feature]
                       ) -> tf.data.Dataset:
  """Appends EOS to each text's "targets" ids, so that packed chunks keep the boundaries."""
  eos = hf_tokenizers.special_ids(output_features["targets"].vocabulary).eos_id
  return ds.map(lambda ex: {"targets": tf.concat([ex["targets"], [eos]], axis=0)},
                num_parallel_calls=tf.data.AUTOTUNE)


def causal_lm(ds: tf.data.Dataset) -> tf.data.Dataset:
  """{"targets": a chunk [n]} -> {"inputs": [], "targets": the chunk}: the whole chunk is
  the loss's (data/decoder_features.py puts it in one row, after BOS if there is one)."""
  return ds.map(lambda ex: {"inputs": tf.zeros([0], ex["targets"].dtype),
                            "targets": ex["targets"]}, num_parallel_calls=tf.data.AUTOTUNE)


def append_eos(ds: tf.data.Dataset, output_features: Mapping[str, seqio.Feature]
               ) -> tf.data.Dataset:
  """Appends EOS to "inputs" and "targets" (both objectives make both from "targets")."""
  eos = output_features["targets"].vocabulary.eos_id

  def fn(ex):
    return {k: tf.concat([ex[k], [eos]], axis=0) for k in ("inputs", "targets")}

  return ds.map(fn, num_parallel_calls=tf.data.AUTOTUNE)


# ---------------------------------------------------------------------------------------------
# Text sources and task registration

def check_text_file(path: str) -> int:
  """Reads `path` through; returns its number of non-blank lines.

  Raises:
    FileNotFoundError; DataError for a file that is not UTF-8 (with the byte offset) or has
    no text. Both name the file and the macro.
  """
  if not tf.io.gfile.exists(path) or tf.io.gfile.isdir(path):
    raise FileNotFoundError(f"PRETRAIN_TEXT_FILES: {path!r} is not a file; give plain-text "
                            "files with one document per line.")
  decoder = codecs.getincrementaldecoder("utf-8")()
  lines, offset, tail = 0, 0, ""
  with tf.io.gfile.GFile(path, "rb") as f:
    while chunk := f.read(1 << 20):
      try:
        text = tail + decoder.decode(chunk)
      except UnicodeDecodeError as e:
        raise errors.DataError(f"PRETRAIN_TEXT_FILES: {path!r} is not UTF-8 text (byte "
                               f"{offset + e.start}: {e.reason}); convert it to UTF-8.") from None
      offset += len(chunk)
      *complete, tail = text.split("\n")
      lines += sum(1 for line in complete if line.strip())
  try:
    tail += decoder.decode(b"", final=True)
  except UnicodeDecodeError as e:
    raise errors.DataError(f"PRETRAIN_TEXT_FILES: {path!r} is not UTF-8 text (it ends inside "
                           f"a character: {e.reason}); convert it to UTF-8.") from None
  lines += bool(tail.strip())
  if not lines:
    raise errors.DataError(f"PRETRAIN_TEXT_FILES: {path!r} has no text; give files with one "
                           "document per line.")
  return lines


def _text_lines_fn(split: str, shuffle_files: bool, seed: int | None = None, *,
                   files: Mapping[str, Sequence[str]]) -> tf.data.Dataset:
  del shuffle_files, seed  # seqio shuffles the examples
  ds = tf.data.TextLineDataset(list(files[split]))
  return ds.filter(lambda line: tf.strings.length(tf.strings.strip(line)) > 0).map(
      lambda line: {"text": line})


class _TextFileSource(seqio.FunctionDataSource):
  """Plain-text files, one document per line, as {"text"} examples; seqio shuffles them."""

  def get_dataset(self, split=None, shuffle=True, seed=None, shard_info=None, **kwargs):
    del kwargs
    ds = self._dataset_fn(split=split or "train", shuffle_files=shuffle, seed=seed)
    if shard_info and shard_info.num_shards > 1:
      ds = ds.shard(shard_info.num_shards, shard_info.index)
    return ds


def text_file_source(train: Sequence[str] | str,
                     validation: Sequence[str] | str | None = None) -> seqio.DataSource:
  """A seqio source of plain-text files (each checked now: exists, UTF-8, not empty)."""
  files = {"train": _as_list(train)}
  if validation:
    files["validation"] = _as_list(validation)
  if not files["train"]:
    raise errors.DataError("PRETRAIN_TEXT_FILES is empty; give at least one text file.")
  sizes = {split: sum(check_text_file(p) for p in paths) for split, paths in files.items()}
  return _TextFileSource(functools.partial(_text_lines_fn, files=files), splits=list(files),
                         num_input_examples=sizes)


def _as_list(paths: Sequence[str] | str) -> list[str]:
  return [os.fspath(paths)] if isinstance(paths, (str, os.PathLike)) else [os.fspath(p)
                                                                            for p in paths]


def objective_preprocessors(objective: str, *, text_key: str, chunk_length: int,
                            noise_density: float, mean_noise_span_length: float) -> list:
  """The preprocessors from a source's text to model-ready token ids, EOS appended."""
  if objective not in OBJECTIVES:
    raise errors.DataError(f"PRETRAIN_OBJECTIVE={objective!r} is not one of {list(OBJECTIVES)}.")
  tokenize = [functools.partial(text_to_targets, text_key=text_key),
              seqio.preprocessors.tokenize]
  if objective == "causal_lm":
    check_chunk_length(chunk_length)
    return [*tokenize, end_texts_with_eos,
            functools.partial(pack_tokens, chunk_length=chunk_length), causal_lm]
  if objective == "span_corruption":
    span_corruption_lengths(chunk_length, noise_density, mean_noise_span_length)  # checks
    return [*tokenize, functools.partial(pack_tokens, chunk_length=chunk_length),
            functools.partial(span_corruption, noise_density=noise_density,
                              mean_noise_span_length=mean_noise_span_length), append_eos]
  if chunk_length < 2:
    raise errors.DataError(f"PRETRAIN_CHUNK_LENGTH={chunk_length!r} must be >= 2 to split a "
                           "text into a prefix and a rest.")
  return [*tokenize, functools.partial(pack_tokens, chunk_length=chunk_length), prefix_lm,
          append_eos]


def register_text_task(name: str, source: seqio.DataSource, objective: str, *,
                       vocabulary: seqio.Vocabulary, text_key: str = "text",
                       chunk_length: int = 64, noise_density: float = 0.15,
                       mean_noise_span_length: float = 3.0) -> seqio.Task:
  """Registers `name`: `source`'s texts under `objective` (one of OBJECTIVES). Its metric is the accuracy of
  the whole decoded target, which a pretraining run rarely evaluates."""
  seqio.TaskRegistry.remove(name)
  # causal_lm's targets carry their EOS inside (where texts end): the decoder layout must not
  # add one after each chunk. The other objectives append EOS themselves (append_eos).
  features = {k: seqio.Feature(vocabulary, add_eos=objective == "causal_lm" and k == "targets")
              for k in ("inputs", "targets")}
  return seqio.TaskRegistry.add(
      name, source=source, output_features=features,
      preprocessors=objective_preprocessors(
          objective, text_key=text_key, chunk_length=chunk_length, noise_density=noise_density,
          mean_noise_span_length=mean_noise_span_length),
      postprocess_fn=postprocessors.stripped_text, metric_fns=[metrics.accuracy],
      shuffle_buffer_size=SHUFFLE_BUFFER_SIZE)


@gin.configurable(module="prompt_tuning.data.pretraining")
def text_task(objective: str, *, text_files: Sequence[str] | str | None = None,
              validation_text_files: Sequence[str] | str | None = None,
              tfds_name: str | None = None, source_task: str | None = None,
              text_key: str = "text", vocabulary_path: str | None = None,
              chunk_length: int = 64, noise_density: float = 0.15,
              mean_noise_span_length: float = 3.0) -> str:
  """Registers a pretraining task and returns its name, "{objective}.{source}" (gin: the
  value of MIXTURE_OR_TASK_NAME). Exactly one source: `text_files` (PRETRAIN_TEXT_FILES,
  one document per line), `tfds_name` (PRETRAIN_TFDS_NAME, e.g. 'c4/en:3.0.1') or
  `source_task` (PRETRAIN_SOURCE_TASK, a registered seqio task whose source is read);
  `text_key` is the feature holding the text.
  """
  given = [n for n, v in (("PRETRAIN_TEXT_FILES", text_files), ("PRETRAIN_TFDS_NAME", tfds_name),
                          ("PRETRAIN_SOURCE_TASK", source_task)) if v]
  if len(given) != 1:
    raise errors.DataError(f"Give exactly one pretraining text source, not {given or 'none'}: "
                           "PRETRAIN_TEXT_FILES, PRETRAIN_TFDS_NAME or PRETRAIN_SOURCE_TASK.")
  if text_files:
    source, label, text_key = (text_file_source(text_files, validation_text_files),
                               "text_files", "text")
  elif tfds_name:
    source, label = seqio.TfdsDataSource(tfds_name=tfds_name), tfds_name.split(":")[0]
  else:
    source, label = tasks.get_mixture_or_task(source_task).source, source_task
  name = f"{objective}.{label}".replace("/", "_")
  register_text_task(name, source, objective,
                     vocabulary=vocabularies.get_vocabulary(vocabulary_path),
                     text_key=text_key, chunk_length=chunk_length, noise_density=noise_density,
                     mean_noise_span_length=mean_noise_span_length)
  return name


@gin.configurable(module="prompt_tuning.data.pretraining")
def feature_lengths(objective: str, chunk_length: int = 64, noise_density: float = 0.15,
                    mean_noise_span_length: float = 3.0) -> dict[str, int]:
  """TASK_FEATURE_LENGTHS that fit every example of `objective` on chunks of
  `chunk_length` tokens: nothing is cut, little is padded."""
  if objective == "span_corruption":
    return span_corruption_lengths(chunk_length, noise_density, mean_noise_span_length)
  if objective == "prefix_lm":
    return {"inputs": chunk_length, "targets": chunk_length}
  if objective == "causal_lm":  # one inputs slot: room for a BOS (a pad slot without one)
    return {"inputs": 1, "targets": check_chunk_length(chunk_length)}
  raise errors.DataError(f"PRETRAIN_OBJECTIVE={objective!r} is not one of {list(OBJECTIVES)}.")

