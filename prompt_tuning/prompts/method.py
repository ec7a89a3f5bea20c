"""What a prompt kind changes in a prompted model: the `Method` object.

A `model.PromptedT5Model(..., method=...)` asks its method these things, and this base class
answers them for the plain prompt (Lester et al. 2021); each other kind (prompts/residual.py,
prompts/dept.py, prompts/deep.py) overrides only what differs:

    for_config(config)                 the method for this network (deep prompts take its
                                       encoder's layer count); itself here
    module(prompt_length, embed_dim)   the Flax module at `prompt/`; calling it gives the
                                       prompt ([p, d]; deep prompts: [layers, p, d])
    input_prompt(prompt)               the part of it the combination inserts (all here)
    layer_hook(prompt, combine, tokens, prompt_lengths)   the encoder's per-layer hook (deep
                                       prompts replace the prompt positions); None here
    embed_inputs(module, embedded, tokens)   a change to the embedded inputs before the
                                       combination (DePT's low-rank update); none here
    init_params(module, rng, embedding, initializer)   the first `prompt/` subtree, through
      init_prompt(model, rng, frozen_params)   which a kind may also read the frozen network
    export(module, params)             the prompt file's content for a trained `prompt/` subtree
    serving()                          the method whose model reads such a file, and
      params_from_file(value, ...)     how it turns a file's value into its `prompt/` subtree
    routes_by_task                     True: each batch row picks its task's prompt by
      task_prompts(module, params, ids)  `prompt_ids` (multi-task prompts, prompts/mpt.py)

Every trainable parameter of a kind stays under `prompt/`, so PROMPT_REGEX 'prompt/.*' trains
all of them and the frozen T5 none. Its raw prompt is `prompt/prompt` (`prompts.prompt_parameter`)
whatever else the kind adds, so the initializers fill it. Methods are frozen dataclasses:
hashable, so a Flax module may hold one.
"""

import dataclasses
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from prompt_tuning import prompts
from prompt_tuning.t5 import network

Array = jax.Array
Params = Any


@dataclasses.dataclass(frozen=True)
class Method:
  """The plain prompt: `prompt/prompt` [PROMPT_LENGTH, d_model], exported as it is."""
  name: ClassVar[str] = "prompt"
  routes_by_task: ClassVar[bool] = False  # batches carry each row's task id as prompt_ids

  def prompt_rows(self, prompt_length: int) -> int:
    """Rows of the raw prompt `prompt/prompt` (what an initializer fills) for PROMPT_LENGTH."""
    return prompt_length

  def for_config(self, config: Any) -> "Method":
    """This method for a network of `config` (a T5Config); a kind whose parameters follow
    the network's shape (deep prompts: one prompt per encoder layer) fills it in here."""
    del config
    return self

  def module(self, prompt_length: int, embed_dim: int) -> nn.Module:
    """The module at `prompt/`: `module()` -> the prompt [p, embed_dim] float32."""
    return prompts.Prompt(self.prompt_rows(prompt_length), embed_dim)

  def input_prompt(self, prompt: Array) -> Array:
    """The prompt the combination inserts, from the module's output (or a mixed-prompt
    batch's [batch, ...] rows): all of it here, [..., p, d]."""
    return prompt

  def layer_hook(self, prompt: Array, combine: Any, tokens: Array,
                 prompt_lengths: Array | None = None) -> network.LayerHook | None:
    """The encoder's per-layer hook for this prompt (the module's output, or a mixed-prompt
    batch's [batch, ...] rows of prompt_lengths [batch]) on inputs `tokens` placed by
    `combine`; None: the layers above the input are left alone, as here."""
    del prompt, combine, tokens, prompt_lengths
    return None

  def embed_inputs(self, module: nn.Module, embedded: Array, tokens: Array) -> Array:
    """embedded [batch, length, embed] as the combination should see it (unchanged here)."""
    del module, tokens
    return embedded

  def init_params(self, module: nn.Module, rng: Array, embedding: Array,
                  initializer: prompts.Initializer) -> Params:
    """The `prompt/` subtree: the module's own initialisation, with `prompt` from
    `initializer(rng, embedding, shape)` (the same rng the plain prompt always used)."""
    shapes = network.strip_axes(  # abstract: any key will do (`rng` may be None)
        jax.eval_shape(module.init, jax.random.PRNGKey(0))["params"])
    params = {}
    if set(shapes) != {"prompt"}:  # the kind's other parameters, from their own initializers
      params = network.strip_axes(module.init(jax.random.fold_in(rng, 1))["params"])
    shape = tuple(shapes["prompt"].shape)
    prompt = jnp.asarray(initializer(rng, embedding, shape), jnp.float32)
    if prompt.shape != shape:
      raise ValueError(f"The prompt initializer returned shape {prompt.shape}, expected "
                       f"{shape} [PROMPT_LENGTH, d_model].")
    return {**params, "prompt": prompt}

  def init_prompt(self, model: Any, rng: Array, frozen_params: Params) -> Params:
    """The `prompt/` subtree of `model` (a PromptedT5Model) on its loaded frozen tree:
    `init_params` with the embedding table, the only frozen weights most kinds read (so
    `frozen_params` may be abstract for `prompts.from_file`)."""
    return self.init_params(model.prompt_module(), rng,
                            frozen_params["token_embedder"]["embedding"],
                            model.prompt_initializer)

  def export(self, module: nn.Module, params: Params) -> np.ndarray:
    """What `{MODEL_DIR}/prompts/step_{STEP}.npy` holds for the trained `prompt/` subtree
    (host arrays): what the module gives the combination, float32 [p, d_model] here."""
    return np.asarray(module.apply({"params": params}), np.float32)

  def serving(self) -> "Method":
    """The method of the model that reads this method's exported files."""
    return self

  def params_from_file(self, value: np.ndarray, prompt_length: int | None, embed_dim: int,
                       source: str) -> Params:
    """The `prompt/` subtree from a prompt file's array, checked: a float [p, d_model] matrix
    (p = PROMPT_LENGTH unless prompt_length is None). Errors name `source`."""
    from prompt_tuning.checkpoints import prompts_io
    rows = None if prompt_length is None else self.prompt_rows(prompt_length)
    value = prompts_io.check_prompt(value, None if rows is None else (rows, embed_dim), source)
    if value.shape[1] != embed_dim:
      raise ValueError(f"Prompt {source} has shape {value.shape} but the model needs [length, "
                       f"{embed_dim}] (its d_model); use a prompt trained on a model of this "
                       "width.")
    return {"prompt": value}


def plain() -> Method:
  """The plain prompt (the default of every models/*_prompt.gin)."""
  return Method()
