"""The training job's own checkpoints: trainable leaves, optimizer state, step, data position.

Frozen weights are never saved again (they come from INITIAL_CHECKPOINT_PATH). Orbax writes
each step into a temporary directory and renames it only when complete, so a crash mid-save
never leaves a checkpoint that looks complete; restarting the same command resumes from the
latest finished step.

    {MODEL_DIR}/checkpoints/{STEP}/trainable   the trainable leaves (eval and infer read these)
    {MODEL_DIR}/checkpoints/{STEP}/optimizer   optimizer state and step
    {MODEL_DIR}/checkpoints/{STEP}/meta        JSON: step, batches consumed, batch size
    {MODEL_DIR}/run_config.json             what this MODEL_DIR trains (checked on restart)
"""

import json
import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import traverse_util
import tensorflow as tf

CHECKPOINTS = "checkpoints"
RUN_CONFIG = "run_config.json"


class RunMismatchError(ValueError):
  """MODEL_DIR already holds a run of another model, prompt or batch size."""


def manager(model_dir: str, max_to_keep: int | None = None) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                         enable_async_checkpointing=False)
  return ocp.CheckpointManager(os.path.join(model_dir, CHECKPOINTS), options=options,
                               item_names=ITEMS)


ITEMS = ("trainable", "optimizer", "meta")


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
  """The latest finished (train state, meta), arrays placed like `like`'s; None if none."""
  step = mgr.latest_step()
  if step is None:
    return None
  optimizer = {"step": like["step"], "opt_state": like["opt_state"]}
  restored = mgr.restore(step, args=ocp.args.Composite(
      trainable=ocp.args.StandardRestore(_abstract(like["trainable"])),
      optimizer=ocp.args.StandardRestore(_abstract(optimizer)), meta=ocp.args.JsonRestore()))
  state = {"trainable": restored["trainable"], **restored["optimizer"]}
  return state, restored["meta"]


def restore_trainable(model_dir: str, like: Any, step: int | None = None) -> tuple[Any, int]:
  """The trainable leaves of MODEL_DIR's latest (or given) step, placed like `like`'s."""
  mgr = manager(model_dir)
  step = mgr.latest_step() if step is None else step
  if step is None:
    raise FileNotFoundError(f"MODEL_DIR={model_dir} holds no finished checkpoint to evaluate; "
                            "train first, or give PROMPT_FILE.")
  restored = mgr.restore(step, args=ocp.args.Composite(
      trainable=ocp.args.StandardRestore(_abstract(like))))
  return restored["trainable"], step


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
