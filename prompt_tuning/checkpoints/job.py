"""The training job's own checkpoints: trainable leaves, optimizer state, step, data position.

Frozen weights are never saved again (they come from INITIAL_CHECKPOINT_PATH). Orbax writes
each step into a temporary directory and renames it only when complete, so a crash mid-save
never leaves a checkpoint that looks complete; restarting the same command resumes from the
latest finished step. A finished step whose files were damaged afterwards (a truncated data
file, an emptied manifest) is set aside as `{STEP}.damaged-{TIME}`, never deleted, and the
run resumes from the newest intact one.

    {MODEL_DIR}/checkpoints/{STEP}/trainable   the trainable leaves (eval and infer read these)
    {MODEL_DIR}/checkpoints/{STEP}/optimizer   optimizer state and step
    {MODEL_DIR}/checkpoints/{STEP}/meta        JSON: step, batches consumed, batch size
    {MODEL_DIR}/run_config.json             what this MODEL_DIR trains (checked on restart)
"""

import contextlib
import json
import os
import re
import time
from typing import Any, Iterator

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from flax import traverse_util
import tensorflow as tf

from prompt_tuning.checkpoints import prompts_io

CHECKPOINTS = "checkpoints"
RUN_CONFIG = "run_config.json"


class RunMismatchError(ValueError):
  """MODEL_DIR already holds a run of another model, prompt or batch size."""


class DamagedCheckpointError(ValueError):
  """A finished checkpoint step whose files cannot be read."""


ITEMS = ("trainable", "optimizer", "meta")


def manager(model_dir: str, max_to_keep: int | None = None,
            create: bool = True) -> ocp.CheckpointManager:
  """The orbax manager of {model_dir}/checkpoints, created if absent only with `create`."""
  options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=create,
                                         enable_async_checkpointing=False)
  handlers = {"trainable": ocp.StandardCheckpointHandler(),
              "optimizer": ocp.StandardCheckpointHandler(), "meta": ocp.JsonCheckpointHandler()}
  return ocp.CheckpointManager(os.path.join(model_dir, CHECKPOINTS), options=options,
                               item_handlers=handlers)


def save(mgr: ocp.CheckpointManager, state: dict, meta: dict) -> None:
  """Writes a train state {'step', 'trainable', 'opt_state'} (arrays, possibly sharded) and
  `meta` (JSON) at meta['step']."""
  optimizer = {"step": state["step"], "opt_state": state["opt_state"]}
  mgr.save(meta["step"], args=ocp.args.Composite(
      trainable=ocp.args.StandardSave(state["trainable"]),
      optimizer=ocp.args.StandardSave(optimizer), meta=ocp.args.JsonSave(meta)), force=True)
  mgr.wait_until_finished()


def _abstract(tree: Any) -> Any:
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
                      tree)


def restore_latest(mgr: ocp.CheckpointManager, like: dict) -> tuple[dict, dict] | None:
  """The newest intact (train state, meta), arrays placed like `like`'s; None if none.

  A step that cannot be read is set aside (renamed, with a warning) and the next newest is
  tried; every process agrees, so all resume from the same step.
  """
  optimizer = {"step": like["step"], "opt_state": like["opt_state"]}
  for step in sorted(mgr.all_steps(), reverse=True):
    try:
      restored, error = _restore_step(mgr, step, like["trainable"], optimizer=optimizer), None
    except DamagedCheckpointError as e:
      restored, error = None, e
    if _on_every_process(error is None):
      state = {"trainable": restored["trainable"], **restored["optimizer"]}
      return state, restored["meta"]
    _set_aside(mgr, step, error)
  return None


def restore_trainable(model_dir: str, like: Any, step: int | None = None) -> tuple[Any, int]:
  """The trainable leaves of MODEL_DIR's latest (or given) step, placed like `like`'s.

  Reads only: a missing MODEL_DIR is an error, never created.
  """
  try:
    found = tf.io.gfile.isdir(os.path.join(model_dir, CHECKPOINTS))
    what = "does not exist" if not tf.io.gfile.isdir(model_dir) else "has no checkpoints/"
  except tf.errors.OpError as e:
    raise FileNotFoundError(f"MODEL_DIR={model_dir} cannot be read ({e.message}); check the "
                            "path and your access to it.") from None
  if not found:
    raise FileNotFoundError(f"MODEL_DIR={model_dir} {what}; give the MODEL_DIR of a train "
                            "job, or the prompt itself with PROMPT_FILE.")
  mgr = manager(model_dir, create=False)
  step = mgr.latest_step() if step is None else step
  if step is None:
    raise FileNotFoundError(f"MODEL_DIR={model_dir} holds no finished checkpoint to evaluate; "
                            "train first, or give PROMPT_FILE.")
  try:
    restored = _restore_step(mgr, step, like)
  except DamagedCheckpointError as e:
    older = [s for s in sorted(mgr.all_steps(), reverse=True) if s < step]
    raise DamagedCheckpointError(f"{e} {_what_is_intact(mgr, model_dir, older, like)}"
                                 ) from None
  return restored["trainable"], step


def _what_is_intact(mgr: ocp.CheckpointManager, model_dir: str, steps: list[int],
                    like: Any) -> str:
  """Which of `steps` (newest first) is the newest whose trainable leaves read, and what to
  do, for a job that only reads MODEL_DIR and found its latest step damaged."""
  damaged = []
  for step in steps:
    try:
      _restore_step(mgr, step, like)
    except DamagedCheckpointError:
      damaged.append(step)
      continue
    prompt = prompts_io.prompt_path(model_dir, step)
    use = (f"evaluate its prompt with --gin.PROMPT_FILE={prompt}, or "
           if tf.io.gfile.exists(prompt) else "")
    return (f"{_also_damaged(damaged)}The newest intact checkpoint is step {step}: {use}"
            "restart the train job on this MODEL_DIR, which sets the damaged steps aside "
            f"(renamed, not deleted) and resumes from step {step}.")
  none = "No older checkpoint is intact" if steps else "There is no older checkpoint"
  return (f"{_also_damaged(damaged)}{none}; give the prompt with PROMPT_FILE, or train "
          "again in a new MODEL_DIR.")


def _also_damaged(steps: list[int]) -> str:
  if not steps:
    return ""
  if len(steps) == 1:
    return f"Step {steps[0]} is damaged too. "
  return f"Steps {', '.join(map(str, steps))} are damaged too. "


# Tensorstore's status codes (and orbax's JSON files) for files that are cut, emptied,
# missing or garbled; access errors (PERMISSION_DENIED, UNAVAILABLE, ...) are not damage. A
# data file that decodes wrongly (a missing one reads as empty) fails its read with
# FAILED_PRECONDITION.
_DAMAGE = re.compile(r"\b(DATA_LOSS|OUT_OF_RANGE|NOT_FOUND|FAILED_PRECONDITION(?=: Error "
                     r"reading)):")


def _restore_step(mgr: ocp.CheckpointManager, step: int, trainable: Any,
                  optimizer: Any = None) -> dict:
  """Items of `step` (trainable; optimizer and meta when `optimizer` is given).

  Raises RunMismatchError if the trainable leaves differ in shape from `trainable`, and
  DamagedCheckpointError if the step's files cannot be read.
  """
  where = os.path.join(str(mgr.directory), str(step))
  with _reading(where):
    stored = mgr.item_metadata(step)["trainable"]
  _check_shapes(stored, trainable, where)
  args = {"trainable": ocp.args.StandardRestore(_abstract(trainable))}
  if optimizer is not None:
    args.update(optimizer=ocp.args.StandardRestore(_abstract(optimizer)),
                meta=ocp.args.JsonRestore())
  with _reading(where):
    return mgr.restore(step, args=ocp.args.Composite(**args))


@contextlib.contextmanager
def _reading(where: str) -> Iterator[None]:
  """Turns the errors of unreadable checkpoint files into DamagedCheckpointError; any other
  error (a bug, an access error) passes unchanged."""
  try:
    yield
  except Exception as e:  # pylint: disable=broad-except; re-raised unless it is damage
    damage = _damage(e)
    if damage is None:
      raise
    raise DamagedCheckpointError(f"The checkpoint {where} is damaged: {_reason(damage)}."
                                 ) from None


def _damage(error: BaseException) -> BaseException | None:
  """The error, or one it was raised from, that says a checkpoint file is unreadable; None if
  none does.

  Orbax raises a plain Exception ("Encountered error while reading array index ...") from
  tensorstore's ValueError when an array's data file is cut or missing, so the chain of
  causes is searched, not only the error itself.
  """
  while error is not None:
    if (isinstance(error, (json.JSONDecodeError, FileNotFoundError))
        or isinstance(error, ValueError) and _DAMAGE.search(str(error))):
      return error
    error = error.__cause__
  return None


def _reason(error: Exception) -> str:
  """The telling end of a tensorstore error: its code and what failed in which file."""
  text = str(error).split(" [tensorstore_spec")[0].splitlines()[0]
  parts = text.split(": ")
  named = [i for i, part in enumerate(parts) if 'file "' in part]
  if not named or not _DAMAGE.match(text):
    return text[:400]
  return f"{parts[0]}: " + ": ".join(parts[named[-1]:])


def _check_shapes(stored: Any, like: Any, where: str) -> None:
  """RunMismatchError naming the first leaf whose stored shape is not the model's."""
  stored_shapes = {k: tuple(v.shape) for k, v in _flat(stored).items()}
  for key, leaf in _flat(like).items():
    have, want = stored_shapes.get(key), tuple(leaf.shape)
    if have is None or have == want:
      continue  # a missing leaf is orbax's to report
    if key == "prompt/prompt" and have[1:] == want[1:]:
      hint = f"set PROMPT_LENGTH={have[0]}, the run's"
    else:  # another width (or leaf) is another model, whatever PROMPT_LENGTH says
      hint = "use the model settings of the run that wrote it (see its run_config.json)"
    raise RunMismatchError(f"{key} has shape {list(have)} in {where} but this job's model "
                           f"has {list(want)}; {hint}.")


def _flat(tree: Any) -> dict[str, Any]:
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {"/".join(str(getattr(k, "key", k)) for k in path): leaf for path, leaf in leaves}


def _on_every_process(ok: bool) -> bool:
  """`ok` on all processes (one collective, at start-up only)."""
  if jax.process_count() == 1:
    return ok
  from jax.experimental import multihost_utils
  return bool(np.all(multihost_utils.process_allgather(np.int32(ok))))


def _set_aside(mgr: ocp.CheckpointManager, step: int, error: Exception | None) -> None:
  """Renames a damaged step to `{step}.damaged-{time}` (process 0) and warns, naming both."""
  source = os.path.join(str(mgr.directory), str(step))
  target = f"{source}.damaged-{time.strftime('%Y%m%dT%H%M%S')}"
  if jax.process_index() == 0:
    try:
      tf.io.gfile.rename(source, target)
    except tf.errors.OpError as e:
      raise DamagedCheckpointError(f"{error} It could not be set aside ({e.message}); move "
                                   f"{source} away by hand and restart.") from None
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices(f"set aside checkpoint {step}")
  logging.warning("%s Set it aside as %s (not deleted); resuming from the newest intact "
                  "checkpoint.", error or f"The checkpoint {source} is damaged on another "
                  "process.", target)
  mgr.reload()


def check_run_config(model_dir: str, run_config: dict) -> None:
  """Refuses a MODEL_DIR that holds a run of something else (see `record_run_config`)."""
  path = os.path.join(model_dir, RUN_CONFIG)
  if not tf.io.gfile.exists(path):
    return
  with tf.io.gfile.GFile(path) as f:
    previous = json.load(f)
  changed = {k: (previous.get(k), v) for k, v in run_config.items() if previous.get(k) != v}
  if changed:
    detail = "; ".join(f"{k}: {old!r} there, {new!r} now" for k, (old, new) in changed.items())
    raise RunMismatchError(f"MODEL_DIR={model_dir} holds a different run ({detail}). Use a "
                           "new MODEL_DIR, or the settings of the run already there.")


def record_run_config(model_dir: str, run_config: dict) -> None:
  """Binds MODEL_DIR to `run_config` (process 0, atomically), once it holds a checkpoint."""
  path = os.path.join(model_dir, RUN_CONFIG)
  if jax.process_index() == 0 and not tf.io.gfile.exists(path):
    tf.io.gfile.makedirs(model_dir)
    tmp = path + ".tmp"
    with tf.io.gfile.GFile(tmp, "w") as f:
      json.dump(run_config, f, indent=2, sort_keys=True)
    tf.io.gfile.rename(tmp, path, overwrite=True)


def read_trainable_leaves(path: str, config: Any = None) -> dict[str, Any]:
  """The 'trainable' item of a job checkpoint as a flat {'/'-path: numpy array}.

  `path` is a step folder (`{MODEL_DIR}/checkpoints/{STEP}`) or the folder of steps (latest
  is read). A model-tuning run's checkpoint holds every T5 weight, so it can be the
  INITIAL_CHECKPOINT_PATH of a later run; `config` is unused (the loader checks shapes).
  """
  del config
  step_dir = path
  if not tf.io.gfile.exists(os.path.join(path, "trainable")):
    mgr = ocp.CheckpointManager(path, options=ocp.CheckpointManagerOptions(read_only=True),
                                item_names=ITEMS)
    if mgr.latest_step() is None:
      raise FileNotFoundError(f"{path!r} holds no finished orbax checkpoint step.")
    step_dir = os.path.join(path, str(mgr.latest_step()))
  tree = ocp.PyTreeCheckpointer().restore(os.path.join(step_dir, "trainable"))
  return {k: np.asarray(v) for k, v in traverse_util.flatten_dict(tree, sep="/").items()}
