"""Model-ready batches for a decoder-only language model: one sequence per example, no packing.

The examples come from the same seqio tasks as the encoder-decoder's (JSONL, GLUE, ...),
tokenized with a decoder vocabulary (data/hf_tokenizers.py), which encodes without special
tokens. Here an example is `inputs` (the input text's ids) and `targets` (the target text's
ids, EOS last); one row of a batch is

  [BOS] + inputs + targets        (BOS only when the tokenizer adds one)

in L = TASK_FEATURE_LENGTHS["inputs"] + TASK_FEATURE_LENGTHS["targets"] slots, where the
inputs length counts BOS and the input tokens and the targets length counts the target
tokens and EOS. A batch (numpy):
  tokens        [batch, L] int32  the rows, the other slots holding the pad id
  mask          [batch, L] bool   True on the rows' tokens
  positions     [batch, L] int32  cumsum(mask) - 1 on tokens, 0 on padding: a left-padded
                                  row gets the positions it has alone
  target_mask   [batch, L] bool   True on the target tokens, EOS included: the tokens whose
                                  log-probabilities make the loss and the score, each
                                  predicted from the position before it
  inputs_length [batch] int32     BOS + input tokens: how many of a row's tokens precede its
                                  targets
Rows are padded on the right (padding_side="right": training, scoring) or the left ("left").
With no BOS and empty inputs the first target token is the row's first token: only a prompt
placed before the row gives it a context. Prompt batches (`batch_prompts`, for decoding) hold
BOS + inputs alone, left-padded to the inputs length: tokens, mask, positions, inputs_length.

Truncation mirrors data/features.py: input tokens beyond the inputs length (BOS counted) are
cut from the end; targets longer than the targets length are cut keeping EOS last. The
tf.data paths (`get_batches`, `get_examples`) count the cut examples and log them once per
task, split and shard; `batch_examples` refuses a row that does not fit (a cut target would
change its score).
"""

# The tf.data plumbing (shards, splits, tagging, cut counting) is data/features.py's own.
# pylint: disable=protected-access

from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import seqio
import tensorflow as tf

from prompt_tuning.data import errors, features, hf_tokenizers, tasks
from prompt_tuning.data.hf_tokenizers import SpecialIds

PADDING_SIDES = ("right", "left")
BATCH_KEYS = ("tokens", "mask", "positions", "target_mask", "inputs_length")


def check_padding_side(padding_side: str) -> str:
  if padding_side not in PADDING_SIDES:
    raise errors.DataError(f"padding_side={padding_side!r} must be 'right' (training, scoring) "
                           "or 'left' (prompts for decoding).")
  return padding_side


def task_special_ids(name: str | seqio.Task | seqio.Mixture) -> SpecialIds:
  """The BOS/EOS/pad ids of a task's (every task of a mixture's) vocabulary.

  Raises:
    DataError: tasks, or a task's inputs and targets, whose vocabularies disagree on them.
  """
  found = {}
  for task in tasks.get_subtasks(name):
    for key in features.FEATURE_KEYS:
      found[(task.name, key)] = hf_tokenizers.special_ids(task.output_features[key].vocabulary)
  if len(set(found.values())) > 1:
    raise errors.DataError(f"The vocabularies of {tasks.as_provider(name).name!r} disagree on "
                           f"BOS/EOS/pad: {found}; tokenize every task with one decoder "
                           "vocabulary (VOCABULARY_PATH).")
  return next(iter(found.values()))


def layout(tokens: np.ndarray, lengths: np.ndarray, inputs_lengths: np.ndarray,
           padding_side: str = "right") -> dict[str, np.ndarray]:
  """The batch (module docstring) of right-padded rows.

  Args:
    tokens: [batch, L] rows at the start, the rest pad ids.
    lengths: [batch] tokens in each row.
    inputs_lengths: [batch] BOS + input tokens of each row (its targets follow).
    padding_side: "right" keeps the rows where they are; "left" moves each to the end.
  """
  check_padding_side(padding_side)
  tokens = np.asarray(tokens, np.int32)
  lengths = np.asarray(lengths, np.int32)
  inputs_lengths = np.asarray(inputs_lengths, np.int32)
  slots = np.arange(tokens.shape[1], dtype=np.int32)[None]
  mask = slots < lengths[:, None]
  target_mask = mask & (slots >= inputs_lengths[:, None])
  if padding_side == "left":  # slot j takes the right-padded row's slot j - (L - length)
    source = (slots - (tokens.shape[1] - lengths[:, None])) % tokens.shape[1]
    tokens, mask, target_mask = (np.take_along_axis(a, source, axis=1)
                                 for a in (tokens, mask, target_mask))
  positions = np.where(mask, np.cumsum(mask, axis=1, dtype=np.int32) - 1, 0).astype(np.int32)
  return {"tokens": tokens, "mask": mask, "positions": positions,
          "target_mask": target_mask, "inputs_length": inputs_lengths}


def _check_row(inputs: np.ndarray, targets: np.ndarray, lengths: Mapping[str, int],
               ids: SpecialIds) -> None:
  bos = int(ids.bos_id is not None)
  if bos + len(inputs) > lengths["inputs"]:
    raise errors.DataError(
        f"An example's inputs are {bos + len(inputs)} tokens{' (BOS included)' if bos else ''}, "
        f"more than TASK_FEATURE_LENGTHS['inputs']={lengths['inputs']}; raise the length (or "
        "cut the example before batching).")
  if len(targets) > lengths["targets"]:
    raise errors.DataError(
        f"An example's targets are {len(targets)} tokens (EOS included), more than "
        f"TASK_FEATURE_LENGTHS['targets']={lengths['targets']}; raise the length.")
  if not len(targets) or targets[-1] != ids.eos_id:
    raise errors.DataError(
        f"An example's targets {targets.tolist()} do not end in EOS (id {ids.eos_id}); the "
        "decoder layout scores the targets with their EOS (tokenize them with the task, whose "
        "targets feature adds it).")


def to_model_batch(inputs: Sequence[Sequence[int]], targets: Sequence[Sequence[int]],
                   feature_lengths: Mapping[str, int], ids: SpecialIds, *,
                   padding_side: str = "right") -> dict[str, np.ndarray]:
  """The batch of rows [BOS] + inputs[i] + targets[i], each targets[i] ending in EOS.

  Raises:
    DataError: a row longer than `feature_lengths`, targets without EOS, a bad padding side.
  """
  lengths = features.check_feature_lengths(feature_lengths)
  check_padding_side(padding_side)
  bos = [] if ids.bos_id is None else [ids.bos_id]
  width = lengths["inputs"] + lengths["targets"]
  tokens = np.full((len(inputs), width), ids.pad_id, np.int32)
  row_lengths, inputs_lengths = [], []
  for row, x, y in zip(tokens, inputs, targets):
    x, y = np.asarray(x, np.int32).reshape(-1), np.asarray(y, np.int32).reshape(-1)
    _check_row(x, y, lengths, ids)
    sequence = np.concatenate([np.asarray(bos, np.int32), x, y])
    row[:len(sequence)] = sequence
    row_lengths.append(len(sequence))
    inputs_lengths.append(len(bos) + len(x))
  return layout(tokens, row_lengths, inputs_lengths, padding_side)


def to_prompt_batch(inputs: Sequence[Sequence[int]], inputs_length: int,
                    ids: SpecialIds) -> dict[str, np.ndarray]:
  """[BOS] + inputs[i], left-padded to `inputs_length`: tokens, mask, positions [batch,
  inputs_length] and inputs_length [batch] (the prompt's tokens), for decoding."""
  bos = [] if ids.bos_id is None else [ids.bos_id]
  tokens = np.full((len(inputs), inputs_length), ids.pad_id, np.int32)
  row_lengths = []
  for row, x in zip(tokens, inputs):
    x = np.asarray(x, np.int32).reshape(-1)
    if len(bos) + len(x) > inputs_length:
      raise errors.DataError(
          f"An example's inputs are {len(bos) + len(x)} tokens"
          f"{' (BOS included)' if bos else ''}, more than TASK_FEATURE_LENGTHS['inputs']="
          f"{inputs_length}; raise the length (or cut the example before batching).")
    row[:len(bos) + len(x)] = np.concatenate([np.asarray(bos, np.int32), x])
    row_lengths.append(len(bos) + len(x))
  batch = layout(tokens, row_lengths, row_lengths, "left")
  del batch["target_mask"]
  return batch


def _decoder_example(ds: tf.data.Dataset, task: seqio.Task, lengths: Mapping[str, int],
                     ids: SpecialIds) -> tf.data.Dataset:
  """The task's tokenized examples -> inputs without EOS, targets with it, both trimmed;
  adds `_cut` (bool: either was cut)."""
  input_budget = lengths["inputs"] - int(ids.bos_id is not None)
  targets_have_eos = task.output_features["targets"].add_eos
  eos = tf.constant([ids.eos_id], tf.int32)

  def fn(ex):
    ex = dict(ex)
    inputs = tf.cast(ex["inputs"], tf.int32)
    if task.output_features["inputs"].add_eos:  # the T5 layout's EOS after the inputs
      ends_in_eos = tf.reduce_any(tf.equal(inputs[-1:], ids.eos_id))
      inputs = tf.cond(ends_in_eos, lambda: inputs[:-1], lambda: inputs)
    targets = tf.cast(ex["targets"], tf.int32)
    if not targets_have_eos:
      targets = tf.concat([targets, eos], axis=0)
    cut_inputs = tf.size(inputs) > input_budget
    ex["inputs"] = inputs[:input_budget]
    ex["targets"], cut_targets = features._trim(targets, lengths["targets"])
    ex["_cut"] = tf.logical_or(cut_inputs, cut_targets)
    return ex

  return ds.map(fn, num_parallel_calls=tf.data.AUTOTUNE)


def _task_dataset(task: seqio.Task, split: str, lengths: Mapping[str, int], ids: SpecialIds,
                  *, shuffle: bool, seed: int | None,
                  shard: seqio.ShardInfo | None) -> tf.data.Dataset:
  """One epoch of `task`'s examples in the decoder form (all features, plus `_cut`)."""
  known = features._num_examples_known(task, split)
  ds = task.get_dataset(sequence_length=None, split=split, shuffle=shuffle, seed=seed,
                        shard_info=shard, num_epochs=1, trim_output_features=False,
                        try_in_mem_cache=known)
  return _decoder_example(ds, task, lengths, ids)


def _row(ids: SpecialIds):
  """{inputs, targets, ...} -> {tokens [n], length, inputs_length, _cut, _index, _task}."""
  bos = tf.constant([] if ids.bos_id is None else [ids.bos_id], tf.int32)

  def fn(ex):
    tokens = tf.concat([bos, ex["inputs"], ex["targets"]], axis=0)
    return {"tokens": tokens, "length": tf.size(tokens, tf.int32),
            "inputs_length": tf.size(bos, tf.int32) + tf.size(ex["inputs"], tf.int32),
            "_cut": ex["_cut"], "_index": ex["_index"], "_task": ex["_task"]}

  return fn


def get_batches(name: str | seqio.Task | seqio.Mixture, split: str,
                feature_lengths: Mapping[str, int], batch_size: int, *, shuffle: bool,
                seed: int | None, num_epochs: int | None, shard_index: int = 0,
                num_shards: int = 1, drop_remainder: bool = True, skip_batches: int = 0,
                padding_side: str = "right") -> Iterator[dict[str, np.ndarray]]:
  """Decoder batches (module docstring) of a task or mixture, from tf.data.

  The arguments are `features.get_batches`'s (shuffling, epochs, mixture rates, shards,
  skipping on resume), plus `padding_side`. BOS/EOS/pad come from the task's vocabulary.

  Returns:
    An iterator of batches; problems with the arguments raise here; a split that yields no
    batch raises EmptySplitError on the first `next`.
  """
  provider = tasks.as_provider(name)
  lengths = features.check_feature_lengths(feature_lengths)
  check_padding_side(padding_side)
  if batch_size < 1:
    raise errors.DataError(f"batch_size={batch_size} must be >= 1.")
  shard = features._shard_info(shard_index, num_shards)
  subtasks = tasks.get_subtasks(provider)
  for task in subtasks:
    features._check_split(task, split)
  ids = task_special_ids(provider)
  datasets = []
  for task_id, task in enumerate(subtasks):
    ds = _task_dataset(task, split, lengths, ids, shuffle=shuffle, seed=seed, shard=shard)
    datasets.append(features._tag(ds, task_id).repeat(num_epochs))
  if len(datasets) == 1:
    ds = datasets[0]
  else:
    rates = [float(provider.get_rate(t)) for t in subtasks]
    ds = tf.data.Dataset.sample_from_datasets(datasets, weights=[r / sum(rates) for r in rates],
                                              seed=seed, stop_on_empty_dataset=False)
  width = lengths["inputs"] + lengths["targets"]
  ds = ds.map(_row(ids), num_parallel_calls=tf.data.AUTOTUNE).padded_batch(
      batch_size, padded_shapes={"tokens": [width], "length": [], "inputs_length": [],
                                 "_cut": [], "_index": [], "_task": []},
      padding_values={"tokens": np.int32(ids.pad_id), "length": np.int32(0),
                      "inputs_length": np.int32(0), "_cut": False, "_index": np.int64(0),
                      "_task": np.int32(0)},
      drop_remainder=drop_remainder).skip(skip_batches).prefetch(tf.data.AUTOTUNE)
  counter = features._CutCounter([t.name for t in subtasks], split, lengths,
                                 (shard_index, num_shards))
  return _iterate(ds, counter, provider.name, split, batch_size, padding_side)


def _iterate(ds: tf.data.Dataset, counter: Any, name: str, split: str, batch_size: int,
             padding_side: str) -> Iterator[dict[str, np.ndarray]]:
  empty = True
  for batch in ds.as_numpy_iterator():
    empty = False
    counter.update(batch["_task"], batch["_index"], batch["_cut"])
    yield layout(batch["tokens"], batch["length"], batch["inputs_length"], padding_side)
  counter.finish()
  if empty:
    raise errors.EmptySplitError(
        f"{name}/{split} yielded no batch of {batch_size} examples: the split is empty, or "
        "smaller than the batch (pass drop_remainder=False to keep a short batch).")


def get_examples(name: str | seqio.Task, split: str, feature_lengths: Mapping[str, int], *,
                 shard_index: int = 0, num_shards: int = 1) -> list[dict[str, Any]]:
  """All examples of one task's split, in dataset order, in the decoder form, for eval and
  infer: `inputs` (int32 ids, no BOS, no EOS; BOS + inputs fit the inputs length),
  `targets` (int32 ids, EOS last, within the targets length), the pretokenized texts and
  the task's other features (bytes as str); cut examples are counted and logged once.

  Raises:
    as `features.get_examples`.
  """
  provider = tasks.as_provider(name)
  if isinstance(provider, seqio.Mixture):
    raise errors.DataError(
        f"{provider.name!r} is a mixture; get the examples of each of its tasks "
        f"({[t.name for t in provider.tasks]}) instead.")
  lengths = features.check_feature_lengths(feature_lengths)
  features._check_split(provider, split)
  shard = features._shard_info(shard_index, num_shards)
  ds = _task_dataset(provider, split, lengths, task_special_ids(provider), shuffle=False,
                     seed=None, shard=shard)
  examples, cut = [], 0
  for ex in ds.as_numpy_iterator():
    cut += int(ex.pop("_cut"))
    examples.append(features._to_python(ex))
  if not examples:
    raise errors.EmptySplitError(f"{provider.name}/{split} has no examples"
                                 f"{' in this shard' if num_shards > 1 else ''}.")
  features._log_cuts(provider.name, split, lengths, (shard_index, num_shards), cut,
                     len(examples))
  return examples


def _chunks(examples: Sequence[Mapping[str, Any]], batch_size: int):
  """(chunk of batch_size examples, real [batch_size] bool): the last filled up with copies
  of its last example (a real row, so no empty sequence reaches the model)."""
  if batch_size < 1:
    raise errors.DataError(f"batch_size={batch_size} must be >= 1.")
  for start in range(0, len(examples), batch_size):
    chunk = list(examples[start:start + batch_size])
    real = np.arange(batch_size) < len(chunk)
    yield chunk + [chunk[-1]] * (batch_size - len(chunk)), real


def _with_prompt_ids(batch: dict[str, np.ndarray], chunk: Sequence[Mapping[str, Any]]):
  if "prompt_id" in chunk[0]:  # a row of the model's prompt table (mixed-prompt batches)
    batch["prompt_ids"] = np.asarray([ex["prompt_id"] for ex in chunk], np.int32)
  return batch


def batch_examples(examples: Sequence[Mapping[str, Any]], batch_size: int,
                   feature_lengths: Mapping[str, int], ids: SpecialIds, *,
                   padding_side: str = "right"
                   ) -> Iterator[tuple[dict[str, np.ndarray], np.ndarray]]:
  """Decoder batches of `examples` (`get_examples`'s form) in order, every batch full:
  (batch, real [batch_size] bool), like `features.batch_examples` (filled last batch, rows
  that do not fit raise DataError, `prompt_id` -> `prompt_ids`)."""
  lengths = features.check_feature_lengths(feature_lengths)
  check_padding_side(padding_side)
  for chunk, real in _chunks(examples, batch_size):
    batch = to_model_batch([ex["inputs"] for ex in chunk], [ex["targets"] for ex in chunk],
                           lengths, ids, padding_side=padding_side)
    yield _with_prompt_ids(batch, chunk), real


def batch_prompts(examples: Sequence[Mapping[str, Any]], batch_size: int,
                  feature_lengths: Mapping[str, int], ids: SpecialIds
                  ) -> Iterator[tuple[dict[str, np.ndarray], np.ndarray]]:
  """Prompt batches (`to_prompt_batch`: BOS + inputs, left-padded) of `examples` in order,
  for decoding: (batch, real [batch_size] bool); targets are not read."""
  lengths = features.check_feature_lengths(feature_lengths)
  for chunk, real in _chunks(examples, batch_size):
    batch = to_prompt_batch([ex["inputs"] for ex in chunk], lengths["inputs"], ids)
    yield _with_prompt_ids(batch, chunk), real
