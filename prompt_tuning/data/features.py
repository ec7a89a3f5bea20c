"""Model-ready batches for an encoder-decoder, without packing (the paper's setting).

Every batch is a dict of int32 numpy arrays, seqio.EncDecFeatureConverter(pack=False)
semantics:
  encoder_input_tokens  [batch, inputs_length]   the input ids, EOS-terminated, 0-padded
  decoder_target_tokens [batch, targets_length]  the target ids, EOS-terminated, 0-padded
  decoder_input_tokens  [batch, targets_length]  the targets shifted right, 0 as BOS
  decoder_loss_weights  [batch, targets_length]  1 on target tokens (EOS included), 0 on pads
A sequence longer than its TASK_FEATURE_LENGTHS entry is cut to that length, keeping its final
EOS; how many examples were cut is logged once per task, split and shard.
"""

from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import seqio
import tensorflow as tf
from absl import logging

from prompt_tuning.data import errors, tasks

FEATURE_KEYS = ("inputs", "targets")
_LOGGED_CUTS: set[tuple[Any, ...]] = set()


def check_feature_lengths(feature_lengths: Mapping[str, int]) -> dict[str, int]:
  """Returns {"inputs": int, "targets": int}, or raises naming TASK_FEATURE_LENGTHS."""
  try:
    lengths = {k: feature_lengths[k] for k in FEATURE_KEYS}
  except (KeyError, TypeError):
    raise errors.DataError(
        f"TASK_FEATURE_LENGTHS={feature_lengths!r} must be a dict with 'inputs' and 'targets', "
        "e.g. {'inputs': 512, 'targets': 8}.") from None
  for key, value in lengths.items():
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
      raise errors.DataError(f"TASK_FEATURE_LENGTHS[{key!r}]={value!r} must be a positive int.")
  return {k: int(v) for k, v in lengths.items()}


def to_model_batch(inputs: np.ndarray, targets: np.ndarray) -> dict[str, np.ndarray]:
  """inputs [batch, inputs_length], targets [batch, targets_length] (0-padded) -> model batch."""
  inputs = np.asarray(inputs, dtype=np.int32)
  targets = np.asarray(targets, dtype=np.int32)
  shifted = np.concatenate([np.zeros_like(targets[:, :1]), targets[:, :-1]], axis=1)
  return {"encoder_input_tokens": inputs,
          "decoder_input_tokens": shifted,
          "decoder_target_tokens": targets,
          "decoder_loss_weights": (targets > 0).astype(np.int32)}


def _trim(tokens: tf.Tensor, length: int) -> tuple[tf.Tensor, tf.Tensor]:
  """tokens [n] -> (tokens [min(n, length)] keeping the last (EOS) token, whether cut)."""
  cut = tf.size(tokens) > length
  trimmed = tf.concat([tokens[:length - 1], tokens[-1:]], axis=0)
  return tf.cond(cut, lambda: trimmed, lambda: tokens), cut


def _trim_features(ds: tf.data.Dataset, lengths: Mapping[str, int]) -> tf.data.Dataset:
  """Trims inputs and targets; adds `_cut` (bool: either was cut)."""

  def fn(ex):
    ex = dict(ex)
    ex["inputs"], cut_inputs = _trim(ex["inputs"], lengths["inputs"])
    ex["targets"], cut_targets = _trim(ex["targets"], lengths["targets"])
    ex["_cut"] = tf.logical_or(cut_inputs, cut_targets)
    return ex

  return ds.map(fn, num_parallel_calls=tf.data.AUTOTUNE)


def _num_examples_known(task: seqio.Task, split: str) -> bool:
  # seqio's in-memory caching asks the source for its size, which TFDS cannot always tell
  # (e.g. before the data is prepared); caching is only a speed-up, so skip it then.
  try:
    return bool(task.source.num_input_examples(split))
  except Exception:  # pylint: disable=broad-except
    return False


def _task_dataset(task: seqio.Task, split: str, lengths: Mapping[str, int], *, shuffle: bool,
                  seed: int | None, shard: seqio.ShardInfo | None) -> tf.data.Dataset:
  """One epoch of `task`'s tokenized, trimmed examples (all features, plus `_cut`)."""
  ds = task.get_dataset(sequence_length=None, split=split, shuffle=shuffle, seed=seed,
                        shard_info=shard, num_epochs=1, trim_output_features=False,
                        try_in_mem_cache=_num_examples_known(task, split))
  return _trim_features(ds, lengths)


def _log_cuts(task_name: str, split: str, lengths: Mapping[str, int], shard: tuple[int, int],
              cut: int, total: int) -> None:
  key = (task_name, split, tuple(sorted(lengths.items())), shard)
  if key in _LOGGED_CUTS:
    return
  _LOGGED_CUTS.add(key)
  where = f" (shard {shard[0] + 1} of {shard[1]})" if shard[1] > 1 else ""
  log = logging.warning if cut else logging.info
  log("%s/%s%s: %d of %d examples were longer than TASK_FEATURE_LENGTHS=%s and were cut.",
      task_name, split, where, cut, total, dict(lengths))


class _CutCounter:
  """Counts cut examples over each task's first epoch of a stream, then logs once.

  Rows carry (`_task`, `_index` = position within the epoch); an index that does not grow
  means the task's next epoch has begun.
  """

  def __init__(self, task_names: Sequence[str], split: str, lengths: Mapping[str, int],
               shard: tuple[int, int]):
    self._names, self._split, self._lengths, self._shard = task_names, split, lengths, shard
    self._last = [-1] * len(task_names)
    self._cut = [0] * len(task_names)
    self._done = [False] * len(task_names)

  def update(self, task_ids: np.ndarray, indices: np.ndarray, cut: np.ndarray) -> None:
    for t, i, c in zip(task_ids.tolist(), indices.tolist(), cut.tolist()):
      if self._done[t]:
        continue
      if i <= self._last[t]:
        self._finish(t)
      else:
        self._last[t] = i
        self._cut[t] += int(c)

  def finish(self) -> None:
    for t in range(len(self._names)):
      if not self._done[t] and self._last[t] >= 0:
        self._finish(t)

  def _finish(self, t: int) -> None:
    self._done[t] = True
    _log_cuts(self._names[t], self._split, self._lengths, self._shard, self._cut[t],
              self._last[t] + 1)


def _tag(ds: tf.data.Dataset, task_id: int) -> tf.data.Dataset:
  """Keeps the model features; adds `_task` and `_index` (position within the epoch)."""

  def fn(index, ex):
    return {"inputs": ex["inputs"], "targets": ex["targets"], "_cut": ex["_cut"],
            "_index": index, "_task": tf.constant(task_id, tf.int32)}

  return ds.enumerate().map(fn)


def _check_split(task: seqio.Task, split: str) -> None:
  if split not in task.splits:
    raise errors.UnknownSplitError(
        f"Task {task.name!r} has no split {split!r}; its splits are {sorted(task.splits)}.")


def _shard_info(shard_index: int, num_shards: int) -> seqio.ShardInfo | None:
  if num_shards < 1 or not 0 <= shard_index < num_shards:
    raise errors.DataError(f"shard_index={shard_index} must be in [0, num_shards={num_shards}).")
  return seqio.ShardInfo(index=shard_index, num_shards=num_shards) if num_shards > 1 else None


def get_batches(name: str | seqio.Task | seqio.Mixture, split: str,
                feature_lengths: Mapping[str, int], batch_size: int, *, shuffle: bool,
                seed: int | None, num_epochs: int | None, shard_index: int = 0,
                num_shards: int = 1, drop_remainder: bool = True, skip_batches: int = 0,
                task_ids: bool = False) -> Iterator[dict[str, np.ndarray]]:
  """Model batches (see the module docstring) of a task or mixture, from tf.data.

  Args:
    name: a registered task or mixture (or the object itself).
    split: e.g. "train"; every task (of a mixture) must have it.
    feature_lengths: TASK_FEATURE_LENGTHS, {"inputs": int, "targets": int}.
    batch_size: rows per batch on this process.
    shuffle, seed: shuffle files and examples (reshuffled each epoch), reproducibly by seed.
    num_epochs: passes over the data; None repeats forever. A mixture samples its tasks in
      proportion to their rates, each task repeating on its own.
    shard_index, num_shards: this process's slice of the data (seqio.ShardInfo), for
      multi-host input: each process reads a disjoint part.
    drop_remainder: drop a last batch smaller than batch_size.
    skip_batches: batches to pass over first (inside tf.data, without converting them), so
      a resumed run continues exactly where its checkpoint left the data.
    task_ids: add `prompt_ids` [batch] int32, each example's task index among the tasks
      `tasks.get_subtasks(name)` lists (its mixture's order), for multi-task prompts.

  Returns:
    An iterator of dicts of int32 arrays [batch_size, length]. Problems with the arguments
    raise here; a split that yields no batch raises EmptySplitError on the first `next`.
  """
  provider = tasks.as_provider(name)
  lengths = check_feature_lengths(feature_lengths)
  if batch_size < 1:
    raise errors.DataError(f"batch_size={batch_size} must be >= 1.")
  shard = _shard_info(shard_index, num_shards)
  subtasks = tasks.get_subtasks(provider)
  for task in subtasks:
    _check_split(task, split)
  datasets = []
  for task_id, task in enumerate(subtasks):
    ds = _task_dataset(task, split, lengths, shuffle=shuffle, seed=seed, shard=shard)
    datasets.append(_tag(ds, task_id).repeat(num_epochs))
  if len(datasets) == 1:
    ds = datasets[0]
  else:
    rates = [float(provider.get_rate(t)) for t in subtasks]
    ds = tf.data.Dataset.sample_from_datasets(datasets, weights=[r / sum(rates) for r in rates],
                                              seed=seed, stop_on_empty_dataset=False)
  ds = ds.padded_batch(
      batch_size, padded_shapes={"inputs": [lengths["inputs"]], "targets": [lengths["targets"]],
                                 "_cut": [], "_index": [], "_task": []},
      drop_remainder=drop_remainder).skip(skip_batches).prefetch(tf.data.AUTOTUNE)
  counter = _CutCounter([t.name for t in subtasks], split, lengths, (shard_index, num_shards))
  return _iterate(ds, counter, provider.name, split, batch_size, task_ids)


def _iterate(ds: tf.data.Dataset, counter: _CutCounter, name: str, split: str,
             batch_size: int, task_ids: bool = False) -> Iterator[dict[str, np.ndarray]]:
  empty = True
  for batch in ds.as_numpy_iterator():
    empty = False
    counter.update(batch["_task"], batch["_index"], batch["_cut"])
    model_batch = to_model_batch(batch["inputs"], batch["targets"])
    if task_ids:
      model_batch["prompt_ids"] = batch["_task"].astype(np.int32)
    yield model_batch
  counter.finish()
  if empty:
    raise errors.EmptySplitError(
        f"{name}/{split} yielded no batch of {batch_size} examples: the split is empty, or "
        "smaller than the batch (pass drop_remainder=False to keep a short batch).")


def _to_python(value: Any) -> Any:
  """Bytes -> str (also inside object arrays and dicts); other arrays stay numpy."""
  if isinstance(value, bytes):
    return value.decode("utf-8", errors="replace")
  if isinstance(value, dict):
    return {k: _to_python(v) for k, v in value.items()}
  if isinstance(value, np.ndarray) and value.dtype == object:
    return [_to_python(v) for v in value.tolist()]
  return value


def get_examples(name: str | seqio.Task, split: str, feature_lengths: Mapping[str, int], *,
                 shard_index: int = 0, num_shards: int = 1) -> list[dict[str, Any]]:
  """All examples of one task's split, in dataset order, un-batched, for eval and infer.

  Each example has `inputs` and `targets` (int32 token ids [n] <= the feature length, EOS
  last), `inputs_pretokenized` and `targets_pretokenized` (str), and the task's other
  features (e.g. `idx`, ReCoRD's `answers`), with bytes decoded to str.

  Raises:
    UnknownTaskError, UnknownSplitError, DataError (a mixture: evaluate its tasks one by
    one), EmptySplitError.
  """
  provider = tasks.as_provider(name)
  if isinstance(provider, seqio.Mixture):
    raise errors.DataError(
        f"{provider.name!r} is a mixture; get the examples of each of its tasks "
        f"({[t.name for t in provider.tasks]}) instead.")
  lengths = check_feature_lengths(feature_lengths)
  _check_split(provider, split)
  ds = _task_dataset(provider, split, lengths, shuffle=False, seed=None,
                     shard=_shard_info(shard_index, num_shards))
  examples, cut = [], 0
  for ex in ds.as_numpy_iterator():
    cut += int(ex.pop("_cut"))
    examples.append(_to_python(ex))
  if not examples:
    raise errors.EmptySplitError(f"{provider.name}/{split} has no examples"
                                 f"{' in this shard' if num_shards > 1 else ''}.")
  _log_cuts(provider.name, split, lengths, (shard_index, num_shards), cut, len(examples))
  return examples


def _pad_row(tokens: np.ndarray, length: int, key: str) -> np.ndarray:
  tokens = np.asarray(tokens, dtype=np.int32).reshape(-1)
  if len(tokens) > length:
    raise errors.DataError(
        f"An example's {key!r} has {len(tokens)} tokens, more than TASK_FEATURE_LENGTHS"
        f"[{key!r}]={length}; raise the length (or cut the example before batching).")
  return np.pad(tokens, (0, length - len(tokens)))


def batch_examples(examples: Sequence[Mapping[str, Any]], batch_size: int,
                   feature_lengths: Mapping[str, int]
                   ) -> Iterator[tuple[dict[str, np.ndarray], np.ndarray]]:
  """Model batches of `examples` in order, every batch full: (batch, real [batch_size] bool).

  The final batch is filled up with copies of its last example (a real row, so no fully
  padded sequence reaches the model) whose `real` entry is False; drop those outputs.
  Rows longer than `feature_lengths` raise DataError (silently cutting a scored target
  would change its score). Rows with a `prompt_id` add `prompt_ids` [batch] to the batch.
  """
  lengths = check_feature_lengths(feature_lengths)
  if batch_size < 1:
    raise errors.DataError(f"batch_size={batch_size} must be >= 1.")
  for start in range(0, len(examples), batch_size):
    chunk = list(examples[start:start + batch_size])
    real = np.arange(batch_size) < len(chunk)
    chunk += [chunk[-1]] * (batch_size - len(chunk))
    inputs = np.stack([_pad_row(ex["inputs"], lengths["inputs"], "inputs") for ex in chunk])
    targets = np.stack([_pad_row(ex["targets"], lengths["targets"], "targets") for ex in chunk])
    batch = to_model_batch(inputs, targets)
    if "prompt_id" in chunk[0]:  # a row of the model's prompt table (mixed-prompt batches)
      batch["prompt_ids"] = np.asarray([ex["prompt_id"] for ex in chunk], np.int32)
    yield batch, real
