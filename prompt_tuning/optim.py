"""What trains, and how: one regex labels the trainable leaves of the parameter tree.

The same labels split the tree for differentiation (gradients exist only for trainable
leaves; frozen leaves are closed over) and define the optimizer's domain, so frozen leaves
have neither a gradient nor an optimizer slot. Prompt tuning matches `prompt/prompt`; model
tuning (the paper's baseline) is the same code with a regex that matches everything.

`per_part` gives parts of the trainable leaves their own transform (DePT's two learning rates:
methods/dept.gin).
"""

import re
from typing import Any, Mapping

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


SCHEDULES = ("constant", "linear", "cosine")


def schedule(learning_rate: float, kind: str = "constant", train_steps: int | None = None):
  """The learning rate at each step: constant (the paper's), or decayed to 0 at train_steps
  ('linear', 'cosine'), which ends a short run at a settled prompt rather than wherever the
  last large step left it (docs/methods.md measures it on the mini T5)."""
  if kind == "constant":
    return learning_rate
  if kind not in SCHEDULES:
    raise ValueError(f"LEARNING_RATE_SCHEDULE={kind!r} is not one of {list(SCHEDULES)}.")
  if not isinstance(train_steps, int) or train_steps < 1:
    raise ValueError(f"LEARNING_RATE_SCHEDULE={kind!r} decays over TRAIN_STEPS, which is "
                     f"{train_steps!r}; set --gin.TRAIN_STEPS to a positive step count.")
  if kind == "linear":
    return optax.linear_schedule(learning_rate, 0.0, train_steps)
  return optax.cosine_decay_schedule(learning_rate, train_steps)


def adafactor(learning_rate: float = 0.3, decay_rate: float = 0.8,
              multiply_by_parameter_scale: bool = False, weight_decay_rate: float = 1e-5,
              clipping_threshold: float = 1.0, learning_rate_schedule: str = "constant",
              train_steps: int | None = None) -> optax.GradientTransformation:
  """The paper's optimizer: Adafactor at a constant rate, no parameter scaling (or the rate
  decayed over train_steps: `schedule`).

  The learning rate is kept in the state (inject_hyperparams) so the job can log it.
  """
  return optax.inject_hyperparams(optax.adafactor, static_args=(
      "multiply_by_parameter_scale", "factored", "min_dim_size_to_factor"))(
          learning_rate=schedule(learning_rate, learning_rate_schedule, train_steps),
          decay_rate=decay_rate, multiply_by_parameter_scale=multiply_by_parameter_scale,
          weight_decay_rate=weight_decay_rate, clipping_threshold=clipping_threshold)


def adam(learning_rate: float = 1e-4, weight_decay: float = 0.0) -> optax.GradientTransformation:
  """AdamW, for comparison runs (two slots per trainable weight)."""
  return optax.inject_hyperparams(optax.adamw)(learning_rate=learning_rate,
                                               weight_decay=weight_decay)


DEFAULT_PART = "default"


def per_part(default: optax.GradientTransformation,
             parts: Mapping[str, optax.GradientTransformation]) -> optax.GradientTransformation:
  """`parts[regex]` updates the trainable leaves whose path (e.g. 'prompt/low_rank_a') fully
  matches `regex` (the first that does, in order), `default` all others; each part keeps its
  own state. E.g. DePT: per_part(adafactor(0.3), {'prompt/low_rank_.*': adafactor(5e-2)}).

  A regex that matches no trainable leaf is an error when the optimizer is initialised.
  """
  if not isinstance(parts, Mapping) or not parts:
    raise ValueError(f"per_part parts={parts!r} must be a non-empty mapping {{regex: "
                     "optimizer}}.")
  patterns = {}
  for regex in parts:
    if regex == DEFAULT_PART:
      raise ValueError(f"per_part cannot name a part {DEFAULT_PART!r}; it is the rest.")
    try:
      patterns[regex] = re.compile(regex)
    except (re.error, TypeError) as e:
      raise ValueError(f"per_part regex {regex!r} is not a valid regular expression ({e})."
                       ) from None

  def labels(tree: Params) -> Params:
    paths = flat(tree)
    chosen = {p: next((r for r, pattern in patterns.items() if pattern.fullmatch(p)),
                      DEFAULT_PART) for p in paths}
    unused = [r for r in parts if r not in chosen.values()]
    if unused:
      raise ValueError(f"The optimizer's part {unused[0]!r} matches no trainable parameter "
                       f"(they are {sorted(paths)}); use the gin file that sets it with the "
                       "model it is for (methods/dept.gin sets both).")
    return traverse_util.unflatten_dict(chosen, sep="/")

  return optax.multi_transform({DEFAULT_PART: default, **parts}, labels)


def _hyperparam_states(opt_state: Any) -> dict[str, Any]:
  """{part: inject_hyperparams state} of a plain or `per_part` optimizer state."""
  inner = getattr(opt_state, "inner_states", None)
  if inner is None:
    return {DEFAULT_PART: opt_state}
  return {label: getattr(state, "inner_state", state) for label, state in inner.items()}


def learning_rate(opt_state: Any):
  """The current learning rate held by an inject_hyperparams state (of `per_part`: its
  default part's), or None."""
  hyperparams = getattr(_hyperparam_states(opt_state).get(DEFAULT_PART), "hyperparams", None)
  return None if hyperparams is None else hyperparams.get("learning_rate")


def with_fresh_hyperparams(restored: Any, fresh: Any) -> Any:
  """The restored optimizer state with the hyperparameters (learning rates) of `fresh`, this
  run's own initial state: a changed LEARNING_RATE takes effect on resume, in every part."""
  def refresh(old, new):
    return old._replace(hyperparams=new.hyperparams) if hasattr(new, "hyperparams") else old
  inner = getattr(restored, "inner_states", None)
  if inner is None:
    return refresh(restored, fresh)
  states = {}
  for label, state in inner.items():
    new = fresh.inner_states[label]
    if hasattr(state, "inner_state"):  # multi_transform masks each part's state
      states[label] = state._replace(inner_state=refresh(state.inner_state, new.inner_state))
    else:
      states[label] = refresh(state, new)
  return restored._replace(inner_states=states)
