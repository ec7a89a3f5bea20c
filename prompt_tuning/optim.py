"""What trains, and how: one regex labels the trainable leaves of the parameter tree.

The same labels split the tree for differentiation (gradients exist only for trainable
leaves; frozen leaves are closed over) and define the optimizer's domain, so frozen leaves
have neither a gradient nor an optimizer slot. Prompt tuning matches `prompt/prompt`; model
tuning (the paper's baseline) is the same code with a regex that matches everything.
"""

import re
from typing import Any

import optax
from flax import traverse_util

Params = Any

PROMPT_REGEX = r"prompt/.*"
ALL_REGEX = r".*"


def flat(tree: Params) -> dict[str, Any]:
  """{'encoder/layers_0/mlp/wo/kernel': leaf, ...}: the paths the regex is matched against."""
  return traverse_util.flatten_dict(tree, sep="/")


def trainable_paths(params: Params, regex: str) -> list[str]:
  """'/'-joined paths of the leaves whose full path matches `regex`."""
  try:
    pattern = re.compile(regex)
  except re.error as e:
    raise ValueError(f"PROMPT_REGEX={regex!r} is not a valid regular expression ({e}).") from e
  return [p for p in flat(params) if pattern.fullmatch(p)]


def partition(params: Params, regex: str) -> tuple[Params, Params]:
  """Splits params into (trainable, frozen) nested dicts by `regex` on leaf paths."""
  leaves = flat(params)
  chosen = set(trainable_paths(params, regex))
  if not chosen:
    raise ValueError(f"PROMPT_REGEX={regex!r} matches no parameter; paths look like "
                     f"{sorted(leaves)[:3]}. Use 'prompt/.*' for prompt tuning, '.*' for model "
                     "tuning.")
  trainable = {p: v for p, v in leaves.items() if p in chosen}
  frozen = {p: v for p, v in leaves.items() if p not in chosen}
  return (traverse_util.unflatten_dict(trainable, sep="/"),
          traverse_util.unflatten_dict(frozen, sep="/"))


def merge(trainable: Params, frozen: Params) -> Params:
  """Inverse of `partition`: one nested dict with every leaf."""
  return traverse_util.unflatten_dict({**flat(frozen), **flat(trainable)}, sep="/")


def adafactor(learning_rate: float = 0.3, decay_rate: float = 0.8,
              multiply_by_parameter_scale: bool = False, weight_decay_rate: float = 1e-5,
              clipping_threshold: float = 1.0) -> optax.GradientTransformation:
  """The paper's optimizer: Adafactor at a constant rate, no parameter scaling.

  The learning rate is kept in the state (inject_hyperparams) so the job can log it.
  """
  return optax.inject_hyperparams(optax.adafactor, static_args=(
      "multiply_by_parameter_scale", "factored", "min_dim_size_to_factor"))(
          learning_rate=learning_rate, decay_rate=decay_rate,
          multiply_by_parameter_scale=multiply_by_parameter_scale,
          weight_decay_rate=weight_decay_rate, clipping_threshold=clipping_threshold)


def adam(learning_rate: float = 1e-4, weight_decay: float = 0.0) -> optax.GradientTransformation:
  """AdamW, for comparison runs (two slots per trainable weight)."""
  return optax.inject_hyperparams(optax.adamw)(learning_rate=learning_rate,
                                               weight_decay=weight_decay)


def learning_rate(opt_state: Any):
  """The current learning rate held by an inject_hyperparams state, or None."""
  hyperparams = getattr(opt_state, "hyperparams", None)
  return None if hyperparams is None else hyperparams.get("learning_rate")
