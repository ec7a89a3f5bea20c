"""Pieces shared by the checkpoint readers: the error type, lazy arrays, paths and flat trees.

A reader turns a checkpoint into a flat dict `{'encoder/layers_0/mlp/wo/kernel': LazyArray}`
without reading array data, so the loader can check every key and shape first and then read
each array whole (numpy) or slice by slice into its sharded placement.
"""

import dataclasses
import os
import re
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

Index = tuple[slice, ...]


class CheckpointError(ValueError):
  """A checkpoint that cannot be read into the requested parameter tree."""


@dataclasses.dataclass(frozen=True)
class LazyArray:
  """One array of a checkpoint, not yet read.

  `read(index)` returns `array[index]` as float32 numpy, where `index` is a tuple of slices
  (one per dimension, as `jax.make_array_from_callback` passes them).
  """
  shape: tuple[int, ...]
  read: Callable[[Index], np.ndarray]
  source: str  # where it lives, for error messages

  def read_all(self) -> np.ndarray:
    return self.read(tuple(slice(None) for _ in self.shape))


def from_numpy(array: Any, source: str) -> LazyArray:
  """Wraps an in-memory array (numpy, jax) as a LazyArray."""
  return LazyArray(tuple(array.shape), lambda index: np.asarray(array[index], np.float32),
                   source)


# ---------------------------------------------------------------------------------------------
# Paths: local directories and gs://bucket/dir, the latter through TensorStore's gcs kvstore.

_GCS = re.compile(r"^gs://([^/]+)/?(.*)$")


def is_gcs(path: str) -> bool:
  return path.startswith("gs://")


def join(directory: str, name: str) -> str:
  """`directory/name`; `name` if it is already absolute (as os.path.join, for gs:// too)."""
  if os.path.isabs(name) or is_gcs(name):
    return name
  return directory.rstrip("/") + "/" + name


def kvstore_spec(path: str) -> dict[str, Any]:
  """TensorStore kvstore spec of a directory: 'gcs' (bucket, path) for gs://, else 'file'."""
  match = _GCS.match(path)
  if match:
    bucket, prefix = match.groups()
    return {"driver": "gcs", "bucket": bucket, "path": prefix.rstrip("/") + "/" if prefix else ""}
  return {"driver": "file", "path": os.path.abspath(path) + "/"}


# The first reads of a gs:// checkpoint (which files it has, its msgpack file) give up after
# about 8 s, so a wrong bucket, no network or no credentials end in one clear error rather
# than TensorStore's many minutes of retries; the array reads that follow keep its default.
_FIRST_READ_RETRIES = {"max_retries": 4, "initial_delay": "0.5s", "max_delay": "4s"}


def _gcs_store(directory: str, what: str):
  """A TensorStore KvStore of the gs:// `directory`, for first reads; CheckpointError if not."""
  import tensorstore as ts  # pylint: disable=g-import-not-at-top
  spec = {**kvstore_spec(directory), "gcs_request_retries": _FIRST_READ_RETRIES}
  try:
    return ts.KvStore.open(spec).result()
  except ValueError as e:
    raise _unreadable(what, e) from None


def _unreadable(path: str, error: Exception) -> CheckpointError:
  reason = str(error).split(" [tensorstore_spec")[0]
  return CheckpointError(
      f"Cannot read {path!r} ({reason}). Check the bucket name, the network and the "
      "credentials (GOOGLE_APPLICATION_CREDENTIALS, or `gcloud auth application-default "
      "login`).")


def _gcs_read(path: str, probe: bool):
  directory, name = path.rstrip("/").rsplit("/", 1)
  store = _gcs_store(directory, path)
  try:
    return store.read(name, byte_range=slice(0, 0) if probe else None).result()
  except ValueError as e:
    raise _unreadable(path, e) from None


def gcs_is_empty(path: str) -> bool:
  """Whether no object at all lies under the gs:// directory `path` (it does not exist)."""
  store = _gcs_store(path, path)
  try:
    return not store.list().result()
  except ValueError as e:
    raise _unreadable(path, e) from None


def file_exists(path: str) -> bool:
  """Whether a file exists (local or gs://)."""
  if is_gcs(path):
    return _gcs_read(path, probe=True).state == "value"
  return os.path.isfile(path)


def read_bytes(path: str) -> bytes:
  """The contents of a file (local or gs://); FileNotFoundError naming it if absent."""
  if not is_gcs(path):
    with open(path, "rb") as f:
      return f.read()
  result = _gcs_read(path, probe=False)
  if result.state != "value":
    raise FileNotFoundError(f"No file at {path!r}.")
  return result.value


# ---------------------------------------------------------------------------------------------
# Trees: nested dicts <-> flat dicts keyed by '/'-joined paths.

MAX_PROBLEMS = 20  # lines of a tree mismatch shown in one error


def tree_problems(found: Mapping[str, Any], expected: Mapping[str, Any],
                  mismatch: Callable[[str, str, str], str]) -> tuple[str, str]:
  """What differs between two {'/'-path: array with .shape} trees, for one error message:
  ('N mis-shaped, M missing, K unexpected', the lines, at most MAX_PROBLEMS), or ('', '')
  if they agree. `mismatch(path, found shape, expected shape)` words a mis-shaped line."""
  mismatched = [k for k in sorted(expected)
                if k in found and tuple(found[k].shape) != tuple(expected[k].shape)]
  missing = [k for k in sorted(expected) if k not in found]
  unexpected = [k for k in sorted(found) if k not in expected]
  problems = [mismatch(k, shape_str(found[k].shape), shape_str(expected[k].shape))
              for k in mismatched]
  problems += [f"missing: {k} {shape_str(expected[k].shape)}" for k in missing]
  problems += [f"unexpected: {k} {shape_str(found[k].shape)}" for k in unexpected]
  if not problems:
    return "", ""
  shown = problems[:MAX_PROBLEMS]
  if len(problems) > MAX_PROBLEMS:
    shown.append(f"... and {len(problems) - MAX_PROBLEMS} more")
  counts = f"{len(mismatched)} mis-shaped, {len(missing)} missing, {len(unexpected)} unexpected"
  return counts, "\n  ".join(shown)


def link_new(source: str, path: str) -> bool:
  """Hard-links local `source` as `path`: the file appears whole, and an existing `path` is
  never replaced (FileExistsError, atomically); False on a file system without hard links
  (the caller renames instead)."""
  try:
    os.link(source, path)
    return True
  except FileExistsError:
    raise
  except OSError:
    return False


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
  """{'a': {'b': x}} -> {'a/b': x}; any non-mapping is a leaf."""
  flat = {}
  for key, value in tree.items():
    path = f"{prefix}{key}"
    if isinstance(value, Mapping):
      flat.update(flatten(value, path + "/"))
    else:
      flat[path] = value
  return flat


def unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
  """{'a/b': x} -> {'a': {'b': x}}."""
  tree: dict[str, Any] = {}
  for path, value in flat.items():
    *parents, leaf = path.split("/")
    node = tree
    for name in parents:
      node = node.setdefault(name, {})
    node[leaf] = value
  return tree


def shape_str(shape) -> str:
  return "[" + ", ".join(str(d) for d in shape) + "]"
