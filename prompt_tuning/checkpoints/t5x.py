"""Reads T5X checkpoints (msgpack + TensorStore zarr) without importing t5x.

A T5X checkpoint directory holds a msgpack file `checkpoint` with the whole train state:
`{'version': 3, 'optimizer': {'target': params, 'state': ...}}` (or `{'target': params,
'state': ...}` in newer versions). In `params`, small arrays are inline (flax's msgpack
ndarray extension type), and large ones are replaced by the TensorStore spec of a zarr array
stored in a folder of the checkpoint named by dotted path, e.g.
`target.encoder.layers_0.attention.query.kernel`. The spec records the kvstore driver of the
machine that wrote it ('gfile', 'file', 'gcs'); like T5X we ignore it and resolve the folder
relative to where the checkpoint is now. Only `params` is ever decoded, never the optimizer
state.
"""

import os
from typing import Any

import ml_dtypes
import msgpack
import numpy as np

from prompt_tuning.checkpoints import base
from prompt_tuning.checkpoints.base import CheckpointError, LazyArray

CHECKPOINT_FILE = "checkpoint"

# flax.serialization's msgpack extension type codes.
_EXT_NDARRAY, _EXT_COMPLEX, _EXT_NPSCALAR = 1, 2, 3


class _Packed:
  """An undecoded msgpack extension value: decoded only if it is a weight we read."""

  def __init__(self, code: int, data: bytes):
    self.code, self.data = code, data


def _decode_ndarray(data: bytes) -> np.ndarray:
  """flax's ndarray encoding: msgpack of (shape, dtype name, raw bytes), C order."""
  shape, dtype_name, buffer = msgpack.unpackb(data, raw=True)
  name = dtype_name.decode()
  dtype = ml_dtypes.bfloat16 if name == "bfloat16" else np.dtype(name)
  return np.frombuffer(buffer, dtype=dtype).reshape(shape).copy()  # writable, owns its data


def _is_chunked(value: Any) -> bool:
  return isinstance(value, dict) and "__msgpack_chunked_array__" in value


def _is_ts_spec(value: Any) -> bool:
  return isinstance(value, dict) and isinstance(value.get("driver"), str) and (
      "kvstore" in value or "path" in value)


def _flatten_raw(tree: dict, prefix: str = "") -> dict[str, Any]:
  """Flattens the params tree down to its array leaves: _Packed, chunked dicts, specs."""
  flat = {}
  for key, value in tree.items():
    path = f"{prefix}{key}"
    if isinstance(value, dict) and not _is_chunked(value) and not _is_ts_spec(value):
      flat.update(_flatten_raw(value, path + "/"))
    else:
      flat[path] = value
  return flat


def _read_state(path: str) -> dict:
  """The msgpack train state with extension values left undecoded."""
  file = base.join(path, CHECKPOINT_FILE)
  try:
    data = base.read_bytes(file)
  except FileNotFoundError:
    raise FileNotFoundError(
        f"No T5X checkpoint at {path!r}: the msgpack file {file!r} does not exist.") from None
  try:
    state = msgpack.unpackb(data, ext_hook=_Packed, raw=False, strict_map_key=False)
  except (ValueError, msgpack.UnpackException) as e:
    raise CheckpointError(f"{file!r} is not a T5X msgpack checkpoint: {e}") from e
  if not isinstance(state, dict):
    raise CheckpointError(f"{file!r} is not a T5X msgpack checkpoint (it holds a "
                          f"{type(state).__name__}, not a dict).")
  return state


def raw_params(path: str) -> tuple[dict[str, Any], int]:
  """Flat `{'encoder/.../kernel': raw leaf}` of the model weights, and the format version."""
  path = os.fspath(path)
  state = _read_state(path)
  if isinstance(state.get("optimizer"), dict) and "target" in state["optimizer"]:
    params = state["optimizer"]["target"]  # version <= 3 (flax.optim)
  elif isinstance(state.get("target"), dict):
    params = state["target"]
  else:
    raise CheckpointError(
        f"T5X checkpoint {path!r} has neither 'optimizer/target' nor 'target' (top-level keys: "
        f"{sorted(state)}).")
  return _flatten_raw(params), int(state.get("version", 3))


def _inline_array(key: str, raw: Any, path: str) -> np.ndarray:
  if _is_chunked(raw):  # flax splits arrays over 1 GiB into flat chunks
    chunks = [_inline_array(key, raw["chunks"][k], path)
              for k in sorted(raw["chunks"], key=int)]
    shape = tuple(raw["shape"][k] for k in sorted(raw["shape"], key=int))
    return np.concatenate(chunks).reshape(shape)
  if isinstance(raw, _Packed) and raw.code in (_EXT_NDARRAY, _EXT_NPSCALAR):
    return _decode_ndarray(raw.data)
  raise CheckpointError(f"T5X checkpoint {path!r}: {key!r} is not an array ({type(raw)}).")


def _zarr_spec(path: str, key: str, spec: dict) -> dict:
  """The recorded spec, re-rooted at the checkpoint's current location (file or gcs)."""
  relative = spec.get("kvstore", {}).get("path") or spec.get("path")
  if not relative:
    raise CheckpointError(f"T5X checkpoint {path!r}: {key!r} has a TensorStore spec without a "
                          f"path: {spec}")
  return {"driver": spec["driver"], "kvstore": base.kvstore_spec(base.join(path, relative))}


def _to_float32(array: np.ndarray, version: int) -> np.ndarray:
  if version < 3 and array.dtype == np.uint16:  # version 2 stored bfloat16 bits as uint16
    array = array.view(ml_dtypes.bfloat16)
  return np.asarray(array, dtype=np.float32)


def _open(path: str, key: str, leaf: dict):
  """Starts opening a zarr array; returns (folder, future of the TensorStore)."""
  import tensorstore as ts  # pylint: disable=g-import-not-at-top
  spec = _zarr_spec(path, key, leaf)
  return spec["kvstore"]["path"], ts.open(spec, read=True)


def _lazy_leaf(path: str, key: str, leaf: Any, version: int, opening=None) -> LazyArray:
  """A LazyArray of one raw leaf; `opening` is `_open(...)` if already started."""
  if not _is_ts_spec(leaf):
    array = _to_float32(_inline_array(key, leaf, path), version)
    return base.from_numpy(array, f"{path} (inline {key})")
  folder, future = opening or _open(path, key, leaf)
  try:
    store = future.result()
  except ValueError as e:  # TensorStore reports a missing or corrupt array as ValueError
    raise CheckpointError(f"T5X checkpoint {path!r}: cannot open the zarr array of {key!r} at "
                          f"{folder!r}: {e}") from e
  return LazyArray(tuple(store.shape),
                   lambda index: _to_float32(store[index].read().result(), version), folder)


def read_t5x(path: str) -> dict[str, LazyArray]:
  """Flat `{'encoder/layers_0/attention/query/kernel': LazyArray}` of a T5X checkpoint.

  Opens every zarr array concurrently (metadata only), so shapes are known before any data
  is read.
  """
  path = os.fspath(path)
  raw, version = raw_params(path)
  opening = {key: _open(path, key, leaf) for key, leaf in raw.items() if _is_ts_spec(leaf)}
  return {key: _lazy_leaf(path, key, leaf, version, opening.get(key))
          for key, leaf in raw.items()}


def read_t5x_variable(path: str, tree_path: str) -> np.ndarray:
  """One variable of a T5X checkpoint as float32 numpy, e.g. tree_path 'encoder/prompt/prompt'.

  `tree_path` is '/'-separated and relative to the model weights ('target/' may be omitted).
  """
  path = os.fspath(path)
  raw, version = raw_params(path)
  key = tree_path.strip("/")
  key = key[len("target/"):] if key.startswith("target/") else key
  if key not in raw:
    near = sorted(k for k in raw if k.split("/")[-1] == key.split("/")[-1])[:5]
    raise CheckpointError(f"T5X checkpoint {path!r} has no variable {tree_path!r}"
                          + (f"; similar: {near}" if near else f" ({len(raw)} variables)."))
  return _lazy_leaf(path, key, raw[key], version).read_all()
