"""Loads frozen T5 weights from a path into the parameter tree, whatever the checkpoint format.

    fmt = detect_format(path)                       # 't5x' | 'huggingface' | 'orbax'
    params = load_params(path, config)              # nested dict of float32 numpy arrays
    params = load_params(path, config, shardings=s) # nested dict of sharded jax.Arrays

Every reader returns a flat `{'/'-path: LazyArray}` without reading data; the loader checks it
against `param_shapes(config)` (every key, no extras, every shape) before reading anything,
so a wrong checkpoint fails in one message and nothing is ever left randomly initialised.
With shardings, each device's slice is read on its own (`jax.make_array_from_callback`), so
no host ever holds a whole array it does not need.

Readers are looked up in `READERS` by format, each `reader(path, config) -> {path: LazyArray
or array}` (a flat or nested dict; plain numpy/jax arrays are accepted as leaves).
"""

import os
import re
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np

from prompt_tuning.checkpoints import base, huggingface, job, t5x
from prompt_tuning.checkpoints.base import CheckpointError, LazyArray
from prompt_tuning.t5 import network
from prompt_tuning.t5.config import T5Config

__all__ = ["CheckpointError", "READERS", "detect_format", "load_params", "read_checkpoint"]

Reader = Callable[[str, T5Config], Mapping[str, Any]]

ORBAX_METADATA = "_CHECKPOINT_METADATA"

READERS: dict[str, Reader] = {
    "t5x": lambda path, config: t5x.read_t5x(path),
    "huggingface": huggingface.read_huggingface,
    "orbax": job.read_trainable_leaves,  # a model-tuning run of this library's train job
}



def _subfolders(path: str) -> list[str]:
  """Names of the folders directly in the directory `path` (local or gs://)."""
  if base.is_gcs(path):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    try:
      return [name.rstrip("/") for name in tf.io.gfile.listdir(path) if name.endswith("/")]
    except tf.errors.OpError as e:
      raise CheckpointError(f"Cannot list {path!r}: {e.message}") from None
  if not os.path.isdir(path):
    return []
  return [name for name in os.listdir(path) if os.path.isdir(os.path.join(path, name))]


def _is_orbax_steps(path: str) -> bool:
  """A directory of orbax step folders (`<step>/_CHECKPOINT_METADATA`)."""
  return any(name.isdigit() and base.file_exists(base.join(path, f"{name}/{ORBAX_METADATA}"))
             for name in _subfolders(path))


def detect_format(path: str) -> str:
  """'t5x', 'huggingface' or 'orbax', from the files in the directory `path`.

  T5X: a msgpack file `checkpoint`; Hugging Face: `config.json`; orbax: `_CHECKPOINT_METADATA`
  in it or in its numbered step folders. Raises FileNotFoundError for a missing path and
  CheckpointError for a directory that is none of these.
  """
  path = os.fspath(path)
  if not base.is_gcs(path):
    if not os.path.exists(path):
      raise FileNotFoundError(f"Checkpoint path {path!r} does not exist.")
    if not os.path.isdir(path):
      raise CheckpointError(f"Checkpoint path {path!r} is a file; pass the checkpoint directory "
                            f"(T5X checkpoint_<step>/, or a Hugging Face model folder).")
  probes = [("t5x", t5x.CHECKPOINT_FILE), ("huggingface", huggingface.CONFIG_FILE),
            ("orbax", ORBAX_METADATA)]
  for fmt, name in probes:
    if base.file_exists(base.join(path, name)):
      return fmt
  if base.is_gcs(path) and base.gcs_is_empty(path):
    raise FileNotFoundError(f"Checkpoint path {path!r} does not exist (no file in the bucket "
                            "under it); check the bucket and the path.")
  if _is_orbax_steps(path):
    return "orbax"
  raise CheckpointError(
      f"{path!r} is not a checkpoint directory this library reads: looked for "
      f"'{t5x.CHECKPOINT_FILE}' (T5X), '{huggingface.CONFIG_FILE}' (Hugging Face) and "
      f"'{ORBAX_METADATA}' (orbax, also in <step>/ folders) and found none."
      + _t5x_steps_hint(path))


def _t5x_steps_hint(path: str) -> str:
  """Points from a T5X model dir to its latest checkpoint_<step> folder, if there is one."""
  steps = [name for name in _subfolders(path) if re.fullmatch(r"checkpoint_\d+", name)]
  if not steps:
    return ""
  latest = max(steps, key=lambda name: int(name.split("_")[1]))
  return f" It has T5X step folders; pass one, e.g. {base.join(path, latest)!r}."


def _as_lazy(flat: Mapping[str, Any], path: str) -> dict[str, LazyArray]:
  """Flattens a reader's result and wraps plain arrays as LazyArrays."""
  flat = base.flatten(flat)
  return {key: leaf if isinstance(leaf, LazyArray) else base.from_numpy(leaf, f"{path}:{key}")
          for key, leaf in flat.items()}


def read_checkpoint(path: str, config: T5Config, readers: Mapping[str, Reader] | None = None
                    ) -> tuple[str, dict[str, LazyArray]]:
  """(format, flat {'/'-path: LazyArray}) of the checkpoint at `path`; no data is read."""
  path = os.fspath(path)
  readers = READERS if readers is None else readers
  fmt = detect_format(path)
  if fmt not in readers:
    raise CheckpointError(f"{path!r} is a {fmt} checkpoint, but no reader is registered for "
                          f"{fmt!r} (register one in prompt_tuning.checkpoints.loading.READERS).")
  return fmt, _as_lazy(readers[fmt](path, config), path)


def check_tree(path: str, fmt: str, lazy: Mapping[str, LazyArray],
               expected: Mapping[str, Any]) -> None:
  """Raises one CheckpointError listing every missing, unexpected and mis-shaped key.

  `expected` maps '/'-paths to objects with `.shape` (e.g. jax.ShapeDtypeStruct).
  """
  counts, lines = base.tree_problems(
      lazy, expected, lambda k, got, want: f"shape mismatch: {k}: checkpoint {got}, model {want}")
  if counts:
    raise CheckpointError(
        f"{fmt} checkpoint {path!r} does not fit the model config ({counts}):\n  " + lines
        + "\nCheck that the config names the checkpoint's architecture (for Hugging Face, "
        "huggingface.config_from_hf(path) reads it).")


def _sharded(array: LazyArray, sharding: jax.sharding.Sharding) -> jax.Array:
  """Reads only the slices this host's devices hold, each distinct slice once."""
  slices: dict[tuple, np.ndarray] = {}

  def read(index):
    key = tuple((s.start, s.stop, s.step) for s in index)
    if key not in slices:  # replicated axes ask for the same slice on several devices
      slices[key] = array.read(index)
    return slices[key]

  return jax.make_array_from_callback(array.shape, sharding, read)


def load_params(path: str, config: T5Config, *, shardings: Any = None,
                readers: Mapping[str, Reader] | None = None) -> dict[str, Any]:
  """The frozen parameter tree of `config`, read from the checkpoint directory `path`.

  Args:
    path: T5X checkpoint dir (local or gs://), Hugging Face model dir, or orbax checkpoint.
    config: the architecture; the result has exactly the keys and shapes of
      `param_shapes(config)`, else CheckpointError names each offending key and shapes.
    shardings: optional tree of jax.sharding.Sharding matching the parameter tree; each array
      is then read slice by slice into that placement.
    readers: format -> reader; defaults to `READERS`.

  Returns:
    Nested dict of float32 numpy arrays (host memory, no device placement), or of jax.Arrays
    with the given shardings.
  """
  path = os.fspath(path)
  fmt, lazy = read_checkpoint(path, config, readers)
  check_tree(path, fmt, lazy, base.flatten(network.param_shapes(config)))
  if shardings is None:
    return base.unflatten({key: array.read_all() for key, array in lazy.items()})
  flat_shardings = base.flatten(shardings)
  missing = sorted(set(lazy) - set(flat_shardings))
  if missing:
    raise ValueError(f"`shardings` has no entry for {missing[:5]}; it must match the "
                     f"parameter tree of the config.")
  return base.unflatten({key: _sharded(array, flat_shardings[key])
                         for key, array in lazy.items()})
