"""What a model without a prompt answers the jobs, shared by the T5 and decoder-only models."""

from typing import Any

import jax
import numpy as np

from prompt_tuning import host_memory


class FrozenModel:
  """Init, export, serving and random weights of a model with no trainable additions.

  A subclass sets `network` (its network module: `init_params(config, rng)`) and `config`;
  a prompted subclass overrides what its prompt changes.
  """
  network: Any

  def init_params(self, rng: jax.Array, frozen_params: Any) -> Any:
    """The full tree from the loaded frozen one; nothing to add here."""
    del rng
    return frozen_params

  def export_prompt(self, trainable: Any) -> np.ndarray | None:
    """The prompt file's content for these trained leaves; None: no prompt."""
    del trainable
    return None

  def serving_model(self) -> "FrozenModel":
    """The model that evaluates this one's exported files: itself."""
    return self

  def random_params(self, rng: jax.Array) -> Any:
    """Random frozen weights (as the network initialises them) then `init_params`."""
    frozen_rng, init_rng = jax.random.split(rng)
    params = self.init_params(init_rng, self.network.init_params(self.config, frozen_rng))
    host_memory.release_free_heap()  # what the op-by-op initialisation freed
    return params
