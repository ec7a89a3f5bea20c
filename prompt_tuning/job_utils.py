"""What the train, eval and infer jobs share: parameters placed on the mesh, summaries.

Parameters are created or read straight into their shards: the frozen T5 from
INITIAL_CHECKPOINT_PATH (or at random, for the tiny config only), then the model's own
additions (the prompt) on top.
"""

import dataclasses
import os
from typing import Any

import jax
import numpy as np
import tensorflow as tf
from absl import logging

from prompt_tuning import partitioning
from prompt_tuning.checkpoints import loading
from prompt_tuning.t5 import config as t5_config
from prompt_tuning.t5 import network

_ARCHITECTURE_IGNORES = ("dtype", "dropout_rate", "vocab_size")


def is_tiny(config: t5_config.T5Config) -> bool:
  """Whether `config` has the tiny test architecture (whatever its dtype, dropout, vocab)."""
  tiny = t5_config.CONFIGS["t5_1_1_tiny"]
  fields = [f.name for f in dataclasses.fields(tiny) if f.name not in _ARCHITECTURE_IGNORES]
  return all(getattr(config, f) == getattr(tiny, f) for f in fields)


def frozen_params(config: t5_config.T5Config, path: str | None, shardings: Any,
                  rng: jax.Array, from_scratch: bool = False) -> Any:
  """The T5, read from `path` into `shardings`, or random when path is None: for the tiny
  config (tests, demos) or, with `from_scratch`, any config (pretraining)."""
  if path is None:
    if from_scratch:
      logging.info("INITIAL_CHECKPOINT_PATH=None: training from random weights.")
    elif not is_tiny(config):
      raise ValueError("INITIAL_CHECKPOINT_PATH=None (a random frozen model) is only for the "
                       "tiny config; give the path of a T5X or Hugging Face checkpoint.")
    else:
      logging.warning("*** INITIAL_CHECKPOINT_PATH=None: the frozen model is RANDOM (tiny "
                      "config, for tests and demos). Its outputs mean nothing. ***")
    init = jax.jit(lambda r: network.init_params(config, r), out_shardings=shardings)
    return init(rng)
  return loading.load_params(path, config, shardings=shardings)


def place_params(model: Any, initial_checkpoint_path: str | None, mesh: jax.sharding.Mesh,
                 rules: partitioning.Rules, rng: jax.Array, from_scratch: bool = False) -> Any:
  """Every parameter of `model`, each in its sharding: frozen T5 plus initialised additions."""
  frozen_rng, init_rng = jax.random.split(rng)
  shardings = param_shardings(model, mesh, rules)
  frozen_shardings = partitioning.logical_to_sharding(
      network.param_axes(model.config), mesh, rules, network.param_shapes(model.config))
  frozen = frozen_params(model.config, initial_checkpoint_path, frozen_shardings, frozen_rng,
                         from_scratch)
  return jax.jit(model.init_params, out_shardings=shardings, donate_argnums=1)(init_rng, frozen)


def param_shardings(model: Any, mesh: jax.sharding.Mesh, rules: partitioning.Rules) -> Any:
  return partitioning.logical_to_sharding(model.param_axes(), mesh, rules,
                                          model.abstract_params())


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
