"""What the train, eval and infer jobs share: parameters placed on the mesh, summaries, the
checks of their output directories and the lock that keeps one live run per MODEL_DIR.

Parameters are created or read straight into their shards: the frozen network from
INITIAL_CHECKPOINT_PATH (or at random, for the tiny T5 config only), then the model's own
additions (the prompt) on top; job_io reads the checkpoint the model's architecture needs.
"""

import contextlib
import functools
import json
import os
import socket
import time
from typing import Any, Iterator

import jax
import jax.numpy as jnp
import numpy as np
import tensorflow as tf
from absl import logging

from prompt_tuning import host_memory, job_io, optim, partitioning
from prompt_tuning.checkpoints import base


def frozen_params(model: Any, path: str | None, shardings: Any, rng: jax.Array,
                  from_scratch: bool = False) -> Any:
  """The frozen network of `model`, read from `path` into `shardings`, or random when path
  is None: for the tiny T5 config (tests, demos) or, with `from_scratch`, any config
  (pretraining)."""
  arch = job_io.for_model(model)
  if path is None:
    check_initial_checkpoint(model, path, from_scratch)
    if from_scratch:
      logging.info("INITIAL_CHECKPOINT_PATH=None: training from random weights.")
    else:
      logging.warning("*** INITIAL_CHECKPOINT_PATH=None: the frozen model is RANDOM (tiny "
                      "config, for tests and demos). Its outputs mean nothing. ***")
    leaves, treedef = jax.tree.flatten(shardings)
    return _random_init(arch.random_frozen, model.config, tuple(leaves), treedef)(rng)
  logging.info("Loading the frozen model from %s.", path)
  return arch.load(path, model.config, shardings)


def check_initial_checkpoint(model: Any, path: str | None, from_scratch: bool = False) -> None:
  """Fails unless `path` holds weights of `model.config`'s shapes; reads no weights.

  None (random weights) is for the tiny T5 config, or any with `from_scratch`. A job checks
  this before it creates anything; `frozen_params` reads the weights later.
  """
  job_io.for_model(model).check_checkpoint(model.config, path, from_scratch)


@functools.lru_cache(maxsize=8)
def _random_init(init: Any, config: Any, shardings: tuple, treedef: Any) -> Any:
  """The jitted random initialisation of `config` (compiling it takes seconds even for the
  tiny config, so every run in a process with the same config and shardings shares one)."""
  return jax.jit(lambda r: init(config, r),
                 out_shardings=jax.tree.unflatten(treedef, shardings))


def place_params(model: Any, initial_checkpoint_path: str | None, mesh: jax.sharding.Mesh,
                 rules: partitioning.Rules, rng: jax.Array, from_scratch: bool = False) -> Any:
  """Every parameter of `model`, each in its sharding: frozen network plus initialised
  additions."""
  frozen_rng, init_rng = jax.random.split(rng)
  arch = job_io.for_model(model)
  shardings = param_shardings(model, mesh, rules)
  frozen_shardings = partitioning.logical_to_sharding(
      arch.frozen_axes(model.config), mesh, rules, arch.frozen_shapes(model.config))
  frozen = frozen_params(model, initial_checkpoint_path, frozen_shardings, frozen_rng,
                         from_scratch)
  frozen = store_frozen(frozen, model.frozen_dtype)
  params = jax.jit(model.init_params, out_shardings=shardings, donate_argnums=1)(init_rng,
                                                                                  frozen)
  host_memory.release_free_heap()  # what reading (or initialising) the weights freed
  return params


def store_frozen(params: Any, dtype: Any) -> Any:
  """The checkpoint's float32 weights in FROZEN_DTYPE, in their shardings (the float32
  copies are freed once the caller drops them, so loading briefly holds both)."""
  if dtype == jnp.float32:
    return params
  cast = lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x
  return jax.jit(lambda tree: jax.tree.map(cast, tree),
                 out_shardings=jax.tree.map(lambda x: x.sharding, params))(params)


def check_frozen_dtype(model: Any, trainable_regex: str) -> None:
  """FROZEN_DTYPE='bfloat16' stores the checkpoint's weights for reading only: refuse to
  train them (model tuning) before anything is loaded."""
  if model.frozen_dtype == jnp.float32:
    return
  checkpoint_leaves = optim.flat(job_io.for_model(model).frozen_shapes(model.config))
  trained = sorted(set(checkpoint_leaves) & set(optim.trainable_paths(
      model.abstract_params(), trainable_regex)))
  if trained:
    raise ValueError(f"FROZEN_DTYPE={model.frozen_dtype.name!r} stores the checkpoint's "
                     f"weights in {model.frozen_dtype.name}, but PROMPT_REGEX="
                     f"{trainable_regex!r} trains {len(trained)} of them (e.g. {trained[0]}); "
                     "use FROZEN_DTYPE='float32' to train them.")


def param_shardings(model: Any, mesh: jax.sharding.Mesh, rules: partitioning.Rules) -> Any:
  return partitioning.logical_to_sharding(model.param_axes(), mesh, rules,
                                          model.abstract_params())


def exists(path: str) -> bool:
  """Whether a file or directory is at `path` (local or gs://)."""
  return tf.io.gfile.exists(path)


def to_host(x: jax.Array) -> np.ndarray:
  """A global array as one numpy array on every process (gathers when it spans hosts)."""
  if x.is_fully_addressable:
    return np.asarray(x)
  if x.sharding.is_fully_replicated:
    return np.asarray(x.addressable_data(0))
  from jax.experimental import multihost_utils
  return np.asarray(multihost_utils.process_allgather(x, tiled=True))


class Summaries:
  """TensorBoard event files under MODEL_DIR/{name}; written by process 0 alone."""

  def __init__(self, model_dir: str, name: str):
    self._writer = None
    if jax.process_index() == 0:
      self._writer = tf.summary.create_file_writer(os.path.join(model_dir, name))

  def scalars(self, step: int, values: dict[str, float]) -> None:
    if self._writer is None:
      return
    with self._writer.as_default(step=step):
      for name, value in values.items():
        tf.summary.scalar(name, float(value))
    self._writer.flush()


# ---- output directories ---------------------------------------------------------------------

class OutputPathError(ValueError):
  """A directory a job writes into is a file, cannot be created, or is not writable."""


def check_output_dir(name: str, path: str, create: bool = True) -> None:
  """Fails before any compute if this process could not write files into the directory `path`.

  `name` is the macro that set it (MODEL_DIR, INFER_OUTPUT_DIR), for the message. Nothing is
  created: an absent directory is checked to be creatable (what is in the way, a missing
  bucket, a parent that refuses a file), and `make_output_dir` creates it once every input
  has been checked. Without `create` (eval: MODEL_DIR is read, and only its metrics are
  written there) an absent directory is an error.
  """
  try:
    if tf.io.gfile.exists(path) and not tf.io.gfile.isdir(path):
      raise OutputPathError(f"{name}={path} is a file, not a directory; give a directory "
                            "(it is created if absent).")
    probe_dir = path
    if not tf.io.gfile.exists(path):
      if not create:
        raise OutputPathError(f"{name}={path} does not exist; check the path (it is the "
                              "MODEL_DIR of a finished train job).")
      _refuse_file_above(name, path)
      _refuse_missing_bucket(name, path)
      if "://" not in path:  # object stores have no directories to create: probe at `path`
        probe_dir = _nearest_existing(path)
    probe = os.path.join(probe_dir, f".write_test.{socket.gethostname()}.{os.getpid()}")
    with tf.io.gfile.GFile(probe, "w") as f:
      f.write("")
    tf.io.gfile.remove(probe)
  except tf.errors.OpError as e:
    reason = " ".join(e.message.split())  # TensorFlow's messages span lines
    raise OutputPathError(f"{name}={path} is not writable or cannot be reached ({reason}); "
                          "give a directory this job can create and write into.") from None


def make_output_dir(path: str) -> None:
  """Creates the directory `path` (and its parents) if absent; see check_output_dir."""
  tf.io.gfile.makedirs(path)


def _nearest_existing(path: str) -> str:
  """The closest directory above the local `path` that exists."""
  parent = os.path.dirname(os.path.abspath(path))
  while not os.path.exists(parent):
    parent = os.path.dirname(parent)
  return parent


def _refuse_missing_bucket(name: str, path: str) -> None:
  """gfile's makedirs never returns under a bucket that does not exist: check the bucket."""
  if not path.startswith("gs://"):
    return
  bucket = "gs://" + path[len("gs://"):].split("/", 1)[0]
  if not tf.io.gfile.isdir(bucket):
    raise OutputPathError(f"{name}={path}: the bucket {bucket} does not exist or cannot be "
                          "reached; create it, or give a path in a bucket this job can write.")


def _refuse_file_above(name: str, path: str) -> None:
  """A local `path` under a regular file can never be created: say which file is in the way."""
  if "://" in path:
    return
  parent = _nearest_existing(path)
  if not os.path.isdir(parent):
    raise OutputPathError(f"{name}={path} cannot be created: {parent} is a file; give a "
                          "directory path.")


# ---- one live run per MODEL_DIR -------------------------------------------------------------

LOCK_FILE = "train.lock"


class RunInUseError(ValueError):
  """Another train job, still alive, holds the MODEL_DIR."""


@contextlib.contextmanager
def model_dir_lock(model_dir: str) -> Iterator[None]:
  """Holds {MODEL_DIR}/train.lock (host, process id) while the train job runs.

  Process 0 takes it for the whole run. A lock whose process is gone from this host (a killed
  run) is taken over with a warning; a live one, or one from another host, refuses the start
  with RunInUseError naming its host and process.
  """
  path = os.path.join(model_dir, LOCK_FILE)
  refused = _take_lock(path) if jax.process_index() == 0 else None
  if jax.process_count() > 1:  # every process stops if process 0 was refused
    from jax.experimental import multihost_utils
    if multihost_utils.broadcast_one_to_all(np.int32(refused is not None)):
      refused = refused or _describe_holder(path, _read_lock(path) or {})
  if refused:
    raise RunInUseError(refused)
  try:
    yield
  finally:
    if jax.process_index() == 0:
      _release_lock(path)


def _this_process() -> dict:
  return {"host": socket.gethostname(), "pid": os.getpid(),
          "start": _process_start(os.getpid()), "since": time.strftime("%Y-%m-%d %H:%M:%S")}


def _take_lock(path: str) -> str | None:
  """None once this process holds the lock at `path`; else why not (who holds it)."""
  for _ in range(3):  # a stale lock removed, then a race with another starting run
    if _create_exclusively(path, json.dumps(_this_process())):
      return None
    holder = _read_lock(path)
    if holder is None:  # removed meanwhile
      continue
    if _alive(holder):
      return _describe_holder(path, holder)
    logging.warning("Taking over %s: the run that held it (host %s, process %s) is gone.",
                    path, holder.get("host"), holder.get("pid"))
    _remove(path)
  return _describe_holder(path, _read_lock(path) or {})


def _describe_holder(path: str, holder: dict) -> str:
  model_dir = os.path.dirname(path)
  return (f"MODEL_DIR={model_dir} is in use by another train job (host "
          f"{holder.get('host', '?')}, process {holder.get('pid', '?')}, since "
          f"{holder.get('since', '?')}). Wait for it to end or stop it, or use another "
          f"MODEL_DIR; if that job is gone, delete {path}.")


def _create_exclusively(path: str, text: str) -> bool:
  """Writes `text` to `path` if no file is there, atomically; False if one is."""
  tmp = f"{path}.{socket.gethostname()}.{os.getpid()}.tmp"
  with tf.io.gfile.GFile(tmp, "w") as f:
    f.write(text)
  try:
    if "://" in path:  # object stores: no atomic create; rename refuses an existing file
      tf.io.gfile.rename(tmp, path, overwrite=False)
    elif not base.link_new(tmp, path):  # a file system without hard links
      with open(path, "x") as f:
        f.write(text)
    return True
  except (FileExistsError, tf.errors.AlreadyExistsError):
    return False
  finally:
    if tf.io.gfile.exists(tmp):
      tf.io.gfile.remove(tmp)


def _read_lock(path: str) -> dict | None:
  """The holder recorded at `path`; None if there is no lock; {} if it is unreadable."""
  try:
    with tf.io.gfile.GFile(path) as f:
      holder = json.loads(f.read())
    return holder if isinstance(holder, dict) else {}
  except tf.errors.NotFoundError:
    return None
  except ValueError:  # garbled: a run killed while writing it
    return {}


def _alive(holder: dict) -> bool:
  """Whether the lock's process may still run: only one of this host can be checked."""
  if holder.get("host") != socket.gethostname():
    return bool(holder)  # another host's lock counts as live; a garbled one does not
  pid = holder.get("pid")
  if not isinstance(pid, int) or pid == os.getpid():
    return False
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # alive, another user's
    pass
  state, start = _process_stat(pid)
  if state == "Z":  # killed, not yet reaped by its parent
    return False
  return holder.get("start") is None or start is None or start == holder["start"]


def _process_stat(pid: int) -> tuple[str | None, str | None]:
  """(state, start time in clock ticks since boot) of `pid` from Linux's /proc; Nones if
  unknown. The start time tells a reused pid from the lock's own process."""
  try:
    with open(f"/proc/{pid}/stat") as f:
      fields = f.read().rsplit(")", 1)[1].split()
    return fields[0], fields[19]
  except (OSError, IndexError):
    return None, None


def _process_start(pid: int) -> str | None:
  return _process_stat(pid)[1]


def _release_lock(path: str) -> None:
  holder = _read_lock(path)
  if holder and holder.get("host") == socket.gethostname() and holder.get("pid") == os.getpid():
    _remove(path)


def _remove(path: str) -> None:
  try:
    tf.io.gfile.remove(path)
  except tf.errors.NotFoundError:
    pass


# ---- preemption -----------------------------------------------------------------------------

class Preempted(Exception):
  """SIGTERM stopped the train job after it saved a checkpoint; the message says how to resume.

  The command line exits with EXIT_CODE (128 + SIGTERM, as a shell reports a signal's end).
  """
  EXIT_CODE = 143
